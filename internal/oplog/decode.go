package oplog

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
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
// without regard to case, and for a field given twice the last wins.
type decoder struct {
	r       *bufio.Reader
	window  int   // r's size
	size    int64 // the body's announced length; -1 when unknown
	chunk   int   // the size of the last payload chunk
	off     int64 // bytes consumed
	charge  *inflight.Charge
	held    int64
	arena   []byte // the free part of the current payload chunk
	scratch []byte // a string read whole
	kinds   map[string]string
}

// decodeAppend decodes body's AppendRequest into entries of worker; size
// is the body's announced length, -1 when unknown.
func decodeAppend(body io.Reader, size int64, worker string, charge *inflight.Charge) ([]contract.Entry, uint64, error) {
	d := &decoder{size: size, charge: charge, kinds: map[string]string{}, window: decodeWindow}
	if size >= 0 {
		d.window = int(min(max(size, minWindow), decodeWindow))
	}
	if err := d.hold(int64(d.window)); err != nil {
		return nil, 0, err
	}
	d.r = bufio.NewReaderSize(body, d.window)
	req, first, err := d.request()
	if err != nil {
		return nil, 0, err
	}
	// Nothing but white space may follow.
	switch c, err := d.skipSpace(); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, 0, err
	default:
		_ = c
		return nil, 0, errTrailing
	}
	for i := range req {
		req[i].WorkerID = worker
	}
	return req, first, nil
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
	_ = d.r.UnreadByte()
	d.off--
}

// skipSpace returns the first byte that is not white space, consumed;
// io.EOF at the end.
func (d *decoder) skipSpace() (byte, error) {
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return 0, err
		}
		d.off++
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return c, nil
		}
	}
}

// next is skipSpace inside a value: the end is unexpected.
func (d *decoder) next() (byte, error) {
	c, err := d.skipSpace()
	if errors.Is(err, io.EOF) {
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

// discard consumes n buffered bytes.
func (d *decoder) discard(n int) {
	m, _ := d.r.Discard(n)
	d.off += int64(m)
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
			grown := make([]contract.Entry, len(out), max(2*cap(out), 16))
			copy(grown, out)
			if err := d.hold(int64(cap(grown)) * entrySize); err != nil {
				return nil, err
			}
			out = grown
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

// literal reads the rest of a true, false or null whose first byte was read.
func (d *decoder) literal(rest string) error {
	for i := 0; i < len(rest); i++ {
		c, err := d.readByte()
		if err != nil {
			return err
		}
		if c != rest[i] {
			return d.syntax("invalid character %q in a literal", c)
		}
	}
	return d.endOfValue()
}

// endOfValue checks that a number or literal ends where it does.
func (d *decoder) endOfValue() error {
	c, err := d.r.ReadByte()
	if err != nil {
		return nil // the caller's next read reports the end
	}
	d.off++
	switch c {
	case ' ', '\t', '\n', '\r', ',', '}', ']':
		d.unread()
		return nil
	}
	return d.syntax("invalid character %q after a value", c)
}

// wrongType is the error of a value that starts with c where the field
// holds want.
func wrongType(c byte, want string) error {
	return fmt.Errorf("json: cannot unmarshal %s into %s", kindOf(c), want)
}

// uint decodes an unsigned integer, or null (nothing set), into v.
func (d *decoder) uint(v *uint64, name string) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	switch {
	case c == 'n':
		return d.literal("ull")
	case c == '-' || (c >= '0' && c <= '9'):
		num, err := d.number(c)
		if err != nil {
			return err
		}
		n, perr := strconv.ParseUint(num, 10, 64)
		if perr != nil {
			return fmt.Errorf("json: cannot unmarshal number %s into an unsigned 64-bit %s", num, name)
		}
		*v = n
		return nil
	case c == '"' || c == '[' || c == '{' || c == 't' || c == 'f':
		return wrongType(c, "an unsigned integer")
	}
	return d.syntax("invalid character %q looking for the beginning of a value", c)
}

// number reads a JSON number that starts with c.
func (d *decoder) number(c byte) (string, error) {
	buf := append(d.scratch[:0], c)
	defer func() { d.scratch = buf[:0] }()
	// peek returns the next byte without consuming it; 0 at the end.
	peek := func() byte {
		b, err := d.r.Peek(1)
		if err != nil {
			return 0
		}
		return b[0]
	}
	take := func() error {
		if len(buf) >= 64 {
			return d.syntax("a number longer than 64 bytes")
		}
		b, _ := d.readByte()
		buf = append(buf, b)
		return nil
	}
	digits := func() (int, error) {
		n := 0
		for b := peek(); b >= '0' && b <= '9'; b = peek() {
			if err := take(); err != nil {
				return n, err
			}
			n++
		}
		return n, nil
	}
	// needDigits reads at least one digit after what buf ends with.
	needDigits := func() error {
		n, err := digits()
		if err == nil && n == 0 {
			if _, rerr := d.readByte(); rerr != nil {
				return rerr
			}
			return d.syntax("invalid character in a number after %q", buf[len(buf)-1])
		}
		return err
	}
	if c == '-' {
		if b := peek(); b < '0' || b > '9' {
			return "", needDigits()
		}
		if err := take(); err != nil {
			return "", err
		}
		c = buf[len(buf)-1]
	}
	if c != '0' {
		if _, err := digits(); err != nil {
			return "", err
		}
	}
	if peek() == '.' {
		if err := take(); err != nil {
			return "", err
		}
		if err := needDigits(); err != nil {
			return "", err
		}
	}
	if b := peek(); b == 'e' || b == 'E' {
		if err := take(); err != nil {
			return "", err
		}
		if b := peek(); b == '+' || b == '-' {
			if err := take(); err != nil {
				return "", err
			}
		}
		if err := needDigits(); err != nil {
			return "", err
		}
	}
	return string(buf), d.endOfValue()
}

// timestamp decodes a timestamp string, or null (nothing set), into t, as
// time.Time's UnmarshalJSON does.
func (d *decoder) timestamp(t *time.Time) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	switch c {
	case 'n':
		return d.literal("ull")
	case '"':
		if lit, ok := d.plainBuffered(); ok {
			defer d.discard(len(lit) + 1)
			return t.UnmarshalText(lit)
		}
		raw, err := d.rawString(4096)
		if err != nil {
			return err
		}
		return t.UnmarshalJSON(raw) // escapes and all, as encoding/json gives it
	}
	if c == '[' || c == '{' || c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9') {
		return wrongType(c, "a timestamp string")
	}
	return d.syntax("invalid character %q looking for the beginning of a value", c)
}

// kind decodes a string, or null (nothing set), into s; the few kinds an
// oplog has are held once.
func (d *decoder) kind(s *string) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	switch c {
	case 'n':
		return d.literal("ull")
	case '"':
		if lit, ok := d.plainBuffered(); ok {
			defer d.discard(len(lit) + 1)
			if len(lit) > MaxKind {
				return fmt.Errorf("%w: kind is %d bytes, at most %d", ErrEntry, len(lit), MaxKind)
			}
			return d.intern(s, lit)
		}
		raw, err := d.rawString(MaxKind*6 + 8)
		if errors.Is(err, errTooLong) {
			return fmt.Errorf("%w: a kind is at most %d bytes", ErrEntry, MaxKind)
		}
		if err != nil {
			return err
		}
		k, err := unquote(raw)
		if err != nil {
			return err
		}
		return d.intern(s, []byte(k))
	}
	if c == '[' || c == '{' || c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9') {
		return wrongType(c, "a string")
	}
	return d.syntax("invalid character %q looking for the beginning of a value", c)
}

// intern sets s to k, held once for the few kinds an oplog has.
func (d *decoder) intern(s *string, k []byte) error {
	if v, ok := d.kinds[string(k)]; ok {
		*s = v
		return nil
	}
	v := string(k)
	if len(d.kinds) < 1024 {
		d.kinds[v] = v
	}
	*s = v
	return d.hold(int64(len(v)))
}

// shortString reads the rest of a string of at most limit bytes in the
// body, and unquotes it.
func (d *decoder) shortString(limit int) (string, error) {
	raw, err := d.rawString(limit)
	if err != nil {
		return "", err
	}
	return unquote(raw)
}

// unquote returns the string of a quoted JSON string, whose bytes are
// already checked: plain ones as they are, others as encoding/json has
// them.
func unquote(raw []byte) (string, error) {
	plain := true
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %v", errSyntax, err)
	}
	return s, nil
}

// rawString reads the rest of a string, whose '"' was read, into scratch,
// quotes included, checking that it holds no control character and that
// its escapes are valid. Past limit bytes it fails.
func (d *decoder) rawString(limit int) ([]byte, error) {
	buf := append(d.scratch[:0], '"')
	defer func() { d.scratch = buf[:0] }()
	for {
		c, err := d.readByte()
		if err != nil {
			return nil, err
		}
		if len(buf) >= limit {
			return nil, fmt.Errorf("%w: a string of more than %d bytes", errTooLong, limit)
		}
		buf = append(buf, c)
		switch {
		case c == '"':
			return buf, nil
		case c < 0x20:
			return nil, d.syntax("invalid control character %#x in a string", c)
		case c == '\\':
			e, err := d.readByte()
			if err != nil {
				return nil, err
			}
			buf = append(buf, e)
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for range 4 {
					h, err := d.readByte()
					if err != nil {
						return nil, err
					}
					if !isHex(h) {
						return nil, d.syntax("invalid character %q in a \\u escape", h)
					}
					buf = append(buf, h)
				}
			default:
				return nil, d.syntax("invalid escape \\%c in a string", e)
			}
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// payload decodes a base64 string, or null (nil), into p. A string that
// the read buffer holds whole, without escapes, is decoded from it into
// the payload chunk; any other is first read whole.
func (d *decoder) payload(p *[]byte) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	switch c {
	case 'n':
		*p = nil
		return d.literal("ull")
	case '"':
	default:
		if c == '[' || c == '{' || c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9') {
			return wrongType(c, "a base64 string")
		}
		return d.syntax("invalid character %q looking for the beginning of a value", c)
	}
	// The common case: the string is in the read buffer, and is plain
	// base64 (which holds no quote, escape, control character or
	// non-ASCII byte: any of those fails to decode, and the string is read
	// again, whole, below).
	if lit, ok := d.toQuote(); ok {
		out, err := d.decode64(lit)
		if errors.Is(err, inflight.ErrExhausted) {
			return err
		}
		if err == nil && len(lit)%4 == 0 && len(out) == plainDecodedLen(lit) {
			d.discard(len(lit) + 1)
			*p = out
			return nil
		}
	}
	before := cap(d.scratch)
	raw, err := d.rawString(int(^uint(0) >> 1))
	if err != nil {
		return err
	}
	if grown := cap(d.scratch) - before; grown > 0 {
		if err := d.hold(int64(grown)); err != nil {
			return err
		}
	}
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			var b []byte
			if err := json.Unmarshal(raw, &b); err != nil {
				return err
			}
			*p = b
			return d.hold(int64(cap(b)))
		}
	}
	out, err := d.decode64(raw[1 : len(raw)-1])
	if err != nil {
		return err
	}
	*p = out
	return nil
}

// toQuote returns the buffered bytes up to the next '"', when the read
// buffer holds one.
func (d *decoder) toQuote() ([]byte, bool) {
	buf, _ := d.r.Peek(d.r.Buffered())
	if i := bytes.IndexByte(buf, '"'); i >= 0 {
		return buf[:i], true
	}
	if len(buf) < d.window { // fill, and look again
		buf, _ = d.r.Peek(d.window)
		if i := bytes.IndexByte(buf, '"'); i >= 0 {
			return buf[:i], true
		}
	}
	return nil, false
}

// plainBuffered returns the rest of a string, without its closing quote,
// when the read buffer holds all of it and it has no escape, no control
// character and nothing but ASCII.
func (d *decoder) plainBuffered() ([]byte, bool) {
	buf, _ := d.r.Peek(d.r.Buffered())
	if len(buf) == 0 {
		buf, _ = d.r.Peek(d.window) // fills the buffer
	}
	for i, c := range buf {
		switch {
		case c == '"':
			return buf[:i], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	if len(buf) < d.window { // the string may end past what is buffered: fill and look again
		if more, _ := d.r.Peek(d.window); len(more) > len(buf) {
			for i, c := range more[len(buf):] {
				switch {
				case c == '"':
					return more[:len(buf)+i], true
				case c == '\\' || c < 0x20 || c >= 0x80:
					return nil, false
				}
			}
		}
	}
	return nil, false
}

// newChunk starts a payload chunk of at least n bytes: twice the last,
// up to arenaChunk, and no more than what the rest of an announced body
// can decode to.
func (d *decoder) newChunk(n int) error {
	size := min(max(2*d.chunk, minChunk), arenaChunk)
	if d.size >= 0 {
		size = int(min(int64(size), max(d.size-d.off, 0)/4*3+4))
	}
	size = max(size, n)
	if err := d.hold(int64(size)); err != nil {
		return err
	}
	d.chunk, d.arena = size, make([]byte, size)
	return nil
}

// plainDecodedLen is what base64 text of a length divisible by 4 decodes
// to when it holds no line break, which the decoder skips but a JSON
// string may not hold: k line breaks among such text (k divisible by 4,
// for it to decode) leave 3k/4 bytes fewer.
func plainDecodedLen(text []byte) int {
	n := len(text) / 4 * 3
	for i := len(text) - 1; i >= 0 && i >= len(text)-2 && text[i] == '='; i-- {
		n--
	}
	return n
}

// decode64 decodes base64 text into a new payload: a small one into the
// current chunk, a large one into its own buffer.
func (d *decoder) decode64(text []byte) ([]byte, error) {
	n := base64.StdEncoding.DecodedLen(len(text))
	var dst []byte
	switch {
	case n > arenaLarge:
		dst = make([]byte, n)
		if err := d.hold(int64(n)); err != nil {
			return nil, err
		}
	default:
		if n > len(d.arena) {
			if err := d.newChunk(n); err != nil {
				return nil, err
			}
		}
		dst = d.arena[:n:n]
	}
	m, err := base64.StdEncoding.Decode(dst, text)
	if err != nil {
		return nil, err
	}
	if n <= arenaLarge {
		d.arena = d.arena[m:]
	}
	if m == 0 {
		return []byte{}, nil
	}
	return dst[:m:m], nil
}
