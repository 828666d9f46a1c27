package oplog

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unsafe"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/inflight"
)

// MaxAppendEntries is the most entries one append request may carry.
const MaxAppendEntries = 1 << 16

// Sizes of what decoding an append holds besides its payloads.
const (
	decodeWindow = 64 << 10 // the body's read buffer, at most
	minWindow    = 4 << 10
	arenaChunk   = 1 << 20 // payloads up to arenaLarge share chunks of up to this size
	minChunk     = 4 << 10
	arenaLarge   = 64 << 10
	entrySize    = int64(unsafe.Sizeof(contract.Entry{}))
	// recordFixed is a record's bytes besides its kind and payload.
	recordFixed = recHead + bodyFixed
)

// MaxAppendCost is the most memory decoding and writing one append body
// of maxBody bytes may hold, whatever it contains: a budget smaller than
// it cannot hold every request the size limit lets through.
func MaxAppendCost(maxBody int64) int64 {
	// Body bytes become payload and record bytes (3/4 each of base64),
	// or kind and record bytes (1 each); a payload read past the window
	// is first copied whole (4/3 of the largest payload); each entry
	// costs its slot (twice, as the slice grows) and its fixed record.
	scratch := min(maxBody, MaxPayload/3*4+8)
	return 2*maxBody + scratch + MaxAppendEntries*(2*entrySize+recordFixed) + decodeWindow + arenaChunk
}

// RecordBytes is the size of entries' records: what a journal's write
// buffer holds for them.
func RecordBytes(entries []contract.Entry) int64 {
	n := int64(0)
	for i := range entries {
		n += recordFixed + int64(len(entries[i].Kind)+len(entries[i].Payload))
	}
	return n
}

// errSyntax is a body that is not JSON.
var errSyntax = errors.New("invalid JSON")

// errTrailing is a body with more after its object.
var errTrailing = errors.New("the body continues after the append request's JSON object")

// errTooLong is a string longer than its field allows.
var errTooLong = errors.New("too long")

// The fields of AppendRequest and AppendEntry, by their JSON names.
var (
	requestFields = []string{"entries", "first_index"}
	entryFields   = []string{"index", "timestamp", "kind", "payload"}
)

// decoder reads one AppendRequest from a body as it arrives, without
// holding the body: payloads are decoded into a few large chunks, and
// every byte it keeps is charged, as it is allocated, to charge. Its
// rules are encoding/json's for AppendRequest with unknown fields
// disallowed (FuzzDecodeAppend compares the two); a field name is matched
// without regard to case, and for a field given twice the last wins. Its
// read window, chunks and entries slice are taken from pools and given
// back by free, once the journal has the entries.
type decoder struct {
	r       window
	size    int64 // the body's announced length; -1 when unknown
	chunk   int   // the size of the last payload chunk
	off     int64 // bytes consumed
	charge  *inflight.Charge
	held    int64
	arena   []byte // the free part of the current payload chunk
	scratch []byte // a string read whole
	kinds   map[string]string
	chunks  [][]byte         // the payload chunks taken from chunkPool
	out     []contract.Entry // the entries slice, from entryPool when it grew
}

// decodeAppend decodes body's AppendRequest into entries of worker; size
// is the body's announced length, -1 when unknown. The entries' memory is
// the decoder's: once they are no longer used, free gives it back for the
// next append's decoding.
func decodeAppend(body io.Reader, size int64, worker string, charge *inflight.Charge) ([]contract.Entry, uint64, *decoder, error) {
	d := &decoder{size: size, charge: charge, kinds: map[string]string{}}
	n := windowSize(size)
	if err := d.hold(int64(n)); err != nil {
		return nil, 0, nil, err
	}
	d.r = newWindow(body, n)
	req, first, err := d.request()
	if err == nil {
		// Nothing but white space may follow.
		switch _, serr := d.skipSpace(); {
		case errors.Is(serr, io.EOF):
		case serr != nil:
			err = serr
		default:
			err = errTrailing
		}
	}
	d.r.free() // nothing decoded points into it
	if err != nil {
		d.free()
		return nil, 0, nil, err
	}
	for i := range req {
		req[i].WorkerID = worker
	}
	return req, first, d, nil
}

// free gives back the memory of the entries decoded: nothing may use them
// after it.
func (d *decoder) free() {
	for _, c := range d.chunks {
		putSlice(chunkPool, c)
	}
	d.chunks, d.arena = nil, nil
	d.release()
}

// hold charges n more bytes.
func (d *decoder) hold(n int64) error {
	d.held += n
	return d.charge.Grow(d.held)
}

func (d *decoder) syntax(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, d.off, fmt.Sprintf(format, args...))
}

// readByte returns the next byte; io.ErrUnexpectedEOF at the end.
func (d *decoder) readByte() (byte, error) {
	c, err := d.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, err
	}
	d.off++
	return c, nil
}

func (d *decoder) unread() {
	d.r.unreadByte()
	d.off--
}

// skipSpace returns the first byte that is not white space, consumed;
// io.EOF at the end.
func (d *decoder) skipSpace() (byte, error) {
	b := &d.r
	for {
		for b.r < b.w { // the buffer itself: no call per byte
			c := b.buf[b.r]
			b.r++
			d.off++
			switch c {
			case ' ', '\t', '\n', '\r':
			default:
				return c, nil
			}
		}
		if b.fill(1); b.r == b.w {
			return 0, b.err
		}
	}
}

// next is skipSpace inside a value: the end is unexpected.
func (d *decoder) next() (byte, error) {
	c, err := d.skipSpace()
	if err != nil && errors.Is(err, io.EOF) { // the nil check inlines; errors.Is does not
		return 0, io.ErrUnexpectedEOF
	}
	return c, err
}

// request decodes the top-level object.
func (d *decoder) request() ([]contract.Entry, uint64, error) {
	var entries []contract.Entry
	var first uint64
	c, err := d.next()
	if err != nil {
		return nil, 0, err
	}
	if c == 'n' {
		return nil, 0, d.literal("ull") // null: nothing set, as encoding/json
	}
	if c != '{' {
		return nil, 0, d.notObject(c, "AppendRequest")
	}
	err = d.object(requestFields, func(i int) error {
		if i == 0 {
			var err error
			entries, err = d.entries(entries)
			return err
		}
		return d.uint(&first, "first_index")
	})
	return entries, first, err
}

// notObject is the error of a value that starts with c where an object
// must be.
func (d *decoder) notObject(c byte, what string) error {
	switch c {
	case '[', '"', 't', 'f', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return fmt.Errorf("json: cannot unmarshal %s into a %s object", kindOf(c), what)
	}
	return d.syntax("invalid character %q looking for the beginning of a value", c)
}

func kindOf(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a bool"
	case '{':
		return "an object"
	}
	return "a number"
}

// object reads an object's members after its '{': for each, the key must
// be one of names (field i is called, with the reader at its value), else
// it is an unknown field.
func (d *decoder) object(names []string, field func(i int) error) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	if c == '}' {
		return nil
	}
	for {
		if c != '"' {
			return d.syntax("invalid character %q looking for the beginning of an object key", c)
		}
		i, err := d.key(names)
		if err != nil {
			return err
		}
		if c, err = d.next(); err != nil {
			return err
		}
		if c != ':' {
			return d.syntax("invalid character %q after an object key", c)
		}
		if err := field(i); err != nil {
			return err
		}
		if c, err = d.next(); err != nil {
			return err
		}
		switch c {
		case '}':
			return nil
		case ',':
			if c, err = d.next(); err != nil {
				return err
			}
		default:
			return d.syntax("invalid character %q after an object member", c)
		}
	}
}

// key reads an object key, whose '"' was read, and returns which of names
// it is: the same, or the same but for case, as encoding/json matches.
func (d *decoder) key(names []string) (int, error) {
	// The common case: exactly a name, and its closing quote, buffered.
	buf := d.r.buffered()
	for i, n := range names {
		if len(buf) > len(n) && buf[len(n)] == '"' && string(buf[:len(n)]) == n {
			d.discard(len(n) + 1)
			return i, nil
		}
	}
	k, plain := d.plainBuffered()
	if plain {
		defer d.discard(len(k) + 1)
	} else {
		s, err := d.shortString(1024)
		if errors.Is(err, errTooLong) {
			return -1, errors.New("json: unknown field of more than 1024 bytes")
		}
		if err != nil {
			return -1, err
		}
		k = []byte(s)
	}
	for i, n := range names {
		if string(k) == n {
			return i, nil
		}
	}
	for i, n := range names {
		if strings.EqualFold(string(k), n) {
			return i, nil
		}
	}
	return -1, fmt.Errorf("json: unknown field %q", k)
}

// release gives back the entries slice, cleared, so that a later
// decoding starts from zero entries.
func (d *decoder) release() {
	if d.out != nil {
		clear(d.out[:cap(d.out)])
		putSlice(entryPool, d.out)
		d.out = nil
	}
}

// discard consumes n bytes of what is buffered.
func (d *decoder) discard(n int) {
	d.r.discard(n)
	d.off += int64(n)
}

// entries decodes the entries array into prev's elements and more, as
// encoding/json decodes into a slice that holds some.
func (d *decoder) entries(prev []contract.Entry) ([]contract.Entry, error) {
	c, err := d.next()
	if err != nil {
		return nil, err
	}
	if c == 'n' {
		return nil, d.literal("ull")
	}
	if c != '[' {
		if c == '{' {
			return nil, errors.New("json: cannot unmarshal an object into the entries array")
		}
		return nil, d.notArray(c)
	}
	// Element i is decoded into what the slice's array holds there, as
	// encoding/json does; past its capacity, into a zero entry.
	out := prev[:0]
	if c, err = d.next(); err != nil {
		return nil, err
	}
	if c == ']' {
		return out, nil
	}
	d.unread()
	for {
		if len(out) == MaxAppendEntries {
			return nil, fmt.Errorf("%w: more than %d entries in one append", ErrEntry, MaxAppendEntries)
		}
		if len(out) == cap(out) {
			grown := getSlice[contract.Entry](entryPool, max(2*cap(out), minEntries))
			if err := d.hold(int64(cap(grown)) * entrySize); err != nil {
				putSlice(entryPool, grown)
				return nil, err
			}
			grown = grown[:copy(grown, out)]
			d.release() // out's array is always d.out's
			d.out, out = grown, grown
		}
		out = out[:len(out)+1]
		if err := d.entry(&out[len(out)-1], len(out)-1); err != nil {
			return nil, err
		}
		if c, err = d.next(); err != nil {
			return nil, err
		}
		switch c {
		case ']':
			return out, nil
		case ',':
		default:
			return nil, d.syntax("invalid character %q after an array element", c)
		}
	}
}

func (d *decoder) notArray(c byte) error {
	switch c {
	case '"', 't', 'f', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return fmt.Errorf("json: cannot unmarshal %s into the entries array", kindOf(c))
	}
	return d.syntax("invalid character %q looking for the beginning of a value", c)
}

// entry decodes one element of the entries array into e.
func (d *decoder) entry(e *contract.Entry, i int) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	if c == 'n' {
		return d.literal("ull")
	}
	if c != '{' {
		return d.notObject(c, "entry")
	}
	return d.object(entryFields, func(f int) error {
		var err error
		switch f {
		case 0:
			err = d.uint(&e.Index, "index")
		case 1:
			err = d.timestamp(&e.Timestamp)
		case 2:
			err = d.kind(&e.Kind)
		case 3:
			err = d.payload(&e.Payload)
		}
		if err != nil {
			return fmt.Errorf("entry %d: %s: %w", i, entryFields[f], err)
		}
		return nil
	})
}
