package oplog

// The scalar values of an append request: literals, numbers, timestamps,
// kinds and strings.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

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
		if n, ok := d.plainUint(c); ok {
			*v = n
			return nil
		}
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

// plainUint is the common case of uint: a number of digits alone, the
// first of them c, at most 19 (no overflow), whose end the read buffer
// holds. Anything else (ok false, nothing consumed) is number's.
func (d *decoder) plainUint(c byte) (uint64, bool) {
	if c < '0' || c > '9' {
		return 0, false
	}
	buf := d.r.buffered()
	i := 0
	for i < len(buf) && i < 19 && buf[i] >= '0' && buf[i] <= '9' {
		i++
	}
	if i == len(buf) || (c == '0' && i > 0) || i+1 > 19 {
		return 0, false
	}
	switch buf[i] {
	case ' ', '\t', '\n', '\r', ',', '}', ']':
	default:
		return 0, false
	}
	n := uint64(c - '0')
	for _, b := range buf[:i] {
		n = n*10 + uint64(b-'0')
	}
	d.discard(i)
	return n, true
}

// number reads a JSON number that starts with c.
func (d *decoder) number(c byte) (string, error) {
	buf := append(d.scratch[:0], c)
	defer func() { d.scratch = buf[:0] }()
	// peek returns the next byte without consuming it; 0 at the end.
	peek := func() byte {
		b := d.r.peek(1)
		if len(b) == 0 {
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

// stringStart reads the start of a value that must be a string or null
// (want names it for the error): true after the string's '"', false
// after a whole null.
func (d *decoder) stringStart(want string) (bool, error) {
	c, err := d.next()
	switch {
	case err != nil:
		return false, err
	case c == '"':
		return true, nil
	case c == 'n':
		return false, d.literal("ull")
	case c == '[' || c == '{' || c == 't' || c == 'f' || c == '-' || (c >= '0' && c <= '9'):
		return false, wrongType(c, want)
	}
	return false, d.syntax("invalid character %q looking for the beginning of a value", c)
}

// timestamp decodes a timestamp string, or null (nothing set), into t, as
// time.Time's UnmarshalJSON does.
func (d *decoder) timestamp(t *time.Time) error {
	if str, err := d.stringStart("a timestamp string"); !str {
		return err
	}
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

// kind decodes a string, or null (nothing set), into s; the few kinds an
// oplog has are held once.
func (d *decoder) kind(s *string) error {
	if str, err := d.stringStart("a string"); !str {
		return err
	}
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
