package oplog

// The decoder's read buffer over a body.

import "io"

// window is the decoder's read buffer over a body: what the decoder needs
// of bufio.Reader, with buffered and discard small enough to be inlined
// into its byte-by-byte walk (ReadByte is not: the walk's hottest loop,
// skipSpace, reads buf itself). Its buffer is taken from chunkPool and
// given back by free.
type window struct {
	src  io.Reader
	buf  []byte
	r, w int   // buf[r:w] is read and not consumed
	err  error // what src last failed with; it stays
}

func newWindow(src io.Reader, size int) window {
	return window{src: src, buf: getSlice[byte](chunkPool, size)}
}

// ReadByte returns the next byte; at the end, src's error (io.EOF).
func (b *window) ReadByte() (byte, error) {
	if b.r == b.w {
		return b.readSlow()
	}
	c := b.buf[b.r]
	b.r++
	return c, nil
}

func (b *window) readSlow() (byte, error) {
	b.fill(1)
	if b.r == b.w {
		return 0, b.err
	}
	c := b.buf[b.r]
	b.r++
	return c, nil
}

// unreadByte gives back the byte ReadByte returned last.
func (b *window) unreadByte() { b.r-- }

// fill moves what is buffered to the start and reads until n bytes are
// buffered, the buffer is full, or src fails.
func (b *window) fill(n int) {
	if b.r > 0 {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	n = min(n, len(b.buf))
	for empty := 0; b.w < n && b.err == nil; {
		m, err := b.src.Read(b.buf[b.w:])
		b.w += m
		b.err = err
		if m == 0 && err == nil {
			if empty++; empty == 100 {
				b.err = io.ErrNoProgress
			}
		}
	}
}

// peek returns the next n bytes without consuming them, fewer when the
// body ends (or fails) first or n is more than the window.
func (b *window) peek(n int) []byte {
	if b.w-b.r < n && b.err == nil {
		b.fill(n)
	}
	return b.buf[b.r:min(b.r+n, b.w)]
}

// size is how many bytes the window holds at most.
func (b *window) size() int { return len(b.buf) }

// buffered returns what is read and not consumed.
func (b *window) buffered() []byte { return b.buf[b.r:b.w] }

// discard consumes n bytes of what is buffered.
func (b *window) discard(n int) { b.r += n }

// free gives the buffer back; b reads nothing after.
func (b *window) free() {
	if b.buf != nil {
		putSlice(chunkPool, b.buf)
	}
	*b = window{err: io.ErrClosedPipe}
}
