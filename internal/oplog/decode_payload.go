package oplog

// Payloads: base64 strings decoded from the read buffer into chunks.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/soplug/soplug/internal/inflight"
)

// payload decodes a base64 string, or null (nil), into p. A string that
// the read buffer holds whole, without escapes, is decoded from it into
// the payload chunk; any other is first read whole.
func (d *decoder) payload(p *[]byte) error {
	str, err := d.stringStart("a base64 string")
	if !str {
		if err == nil {
			*p = nil // null
		}
		return err
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
	buf := d.r.buffered()
	if i := bytes.IndexByte(buf, '"'); i >= 0 {
		return buf[:i], true
	}
	if len(buf) < d.r.size() { // fill, and look again
		buf = d.r.peek(d.r.size())
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
	buf := d.r.buffered()
	if len(buf) == 0 {
		buf = d.r.peek(d.r.size()) // fills the buffer
	}
	for i, c := range buf {
		switch {
		case c == '"':
			return buf[:i], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	if len(buf) < d.r.size() { // the string may end past what is buffered: fill and look again
		if more := d.r.peek(d.r.size()); len(more) > len(buf) {
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
	d.chunk, d.arena = size, getSlice[byte](chunkPool, size)
	d.chunks = append(d.chunks, d.arena)
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
