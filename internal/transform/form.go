package transform

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/textproto"
	"strings"
)

// formPart is one part of a multipart/form-data body held in memory.
type formPart struct {
	name, filename string
	header         textproto.MIMEHeader
	body           []byte // a slice of the form's buffer
}

// maxPartHeader bounds one part's headers.
const maxPartHeader = 16 << 10

// errForm is a body that is not a well-formed multipart form.
var errForm = errors.New("a malformed multipart form")

// splitForm splits a multipart/form-data body (RFC 7578) held in buf into
// its parts, whose bodies are slices of buf: nothing is copied. It finds
// the boundaries with bytes.Index, which is fast; mime/multipart reads a
// part through a 4 KiB buffer and scans each one byte by byte, which costs
// a large component more than its transformation. A preamble before the
// first boundary and an epilogue after the last are ignored, as RFC 2046
// says; parts whose Content-Transfer-Encoding is not the identity are
// refused.
func splitForm(buf []byte, boundary string) ([]formPart, error) {
	delim := []byte("--" + boundary)
	i := bytes.Index(buf, delim)
	if i < 0 || (i > 0 && buf[i-1] != '\n') {
		return nil, fmt.Errorf("%w: no boundary %q at the start of a line", errForm, boundary)
	}
	pos := i + len(delim)
	sep := []byte("\r\n--" + boundary)
	var parts []formPart
	for {
		rest := buf[pos:]
		if bytes.HasPrefix(rest, []byte("--")) {
			return parts, nil // the closing delimiter
		}
		rest = bytes.TrimLeft(rest, " \t") // transport padding
		if !bytes.HasPrefix(rest, []byte("\r\n")) {
			return nil, fmt.Errorf("%w: a boundary not followed by a line end (part %d)", errForm, len(parts)+1)
		}
		pos = len(buf) - len(rest) + 2
		hdrLen := 0
		if !bytes.HasPrefix(buf[pos:], []byte("\r\n")) {
			j := bytes.Index(buf[pos:min(len(buf), pos+maxPartHeader)], []byte("\r\n\r\n"))
			if j < 0 {
				return nil, fmt.Errorf("%w: the headers of part %d do not end within %d bytes", errForm, len(parts)+1, maxPartHeader)
			}
			hdrLen = j + 2
		}
		header, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(buf[pos : pos+hdrLen+2]))).ReadMIMEHeader()
		if err != nil {
			return nil, fmt.Errorf("%w: the headers of part %d: %v", errForm, len(parts)+1, err)
		}
		start := pos + hdrLen + 2
		k := bytes.Index(buf[start:], sep)
		if k < 0 {
			return nil, fmt.Errorf("%w: part %d does not end (no boundary after it: the body was cut short?)", errForm, len(parts)+1)
		}
		p := formPart{header: header, body: buf[start : start+k]}
		if cte := strings.ToLower(header.Get("Content-Transfer-Encoding")); cte != "" && cte != "binary" && cte != "8bit" && cte != "7bit" {
			return nil, fmt.Errorf("%w: part %d has Content-Transfer-Encoding %q; send it as binary", errForm, len(parts)+1, cte)
		}
		if disp, params, err := mime.ParseMediaType(header.Get("Content-Disposition")); err == nil && disp == "form-data" {
			p.name, p.filename = params["name"], params["filename"]
		}
		parts = append(parts, p)
		pos = start + k + len(sep)
	}
}
