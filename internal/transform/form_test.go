package transform

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stdParts reads a form with mime/multipart: the reference.
func stdParts(t *testing.T, body []byte, boundary string) ([]formPart, error) {
	t.Helper()
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out []formPart
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		out = append(out, formPart{name: p.FormName(), filename: p.FileName(), body: b})
	}
}

// TestSplitFormAgreesWithMultipart: on a thousand random forms (binary
// bodies full of CRs, LFs, dashes and near-boundaries, empty parts, files,
// a preamble and an epilogue) splitForm finds the parts mime/multipart
// finds.
func TestSplitFormAgreesWithMultipart(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("\r\n-ab\x00")
	for i := range 1000 {
		var buf bytes.Buffer
		if rng.IntN(3) == 0 {
			buf.WriteString("a preamble\r\n")
		}
		mw := multipart.NewWriter(&buf)
		boundary := mw.Boundary()
		var want []formPart
		for j := range rng.IntN(5) + 1 {
			body := make([]byte, rng.IntN(300))
			for k := range body {
				body[k] = alphabet[rng.IntN(len(alphabet))]
			}
			if rng.IntN(4) == 0 && len(body) > 10 {
				copy(body[rng.IntN(len(body)-5):], "\r\n--"+boundary[:3]) // a near-boundary
			}
			h := textproto.MIMEHeader{}
			name := fmt.Sprintf("p%d", j)
			cd := fmt.Sprintf(`form-data; name="%s"`, name)
			file := ""
			if rng.IntN(4) == 0 {
				file = "f.bin"
				cd += `; filename="f.bin"`
			}
			h.Set("Content-Disposition", cd)
			w, err := mw.CreatePart(h)
			require.NoError(t, err)
			_, _ = w.Write(body)
			want = append(want, formPart{name: name, filename: file, body: body})
		}
		require.NoError(t, mw.Close())
		if rng.IntN(3) == 0 {
			buf.WriteString("an epilogue\r\n")
		}
		got, err := splitForm(buf.Bytes(), boundary)
		require.NoError(t, err, "form %d", i)
		ref, err := stdParts(t, buf.Bytes(), boundary)
		require.NoError(t, err)
		require.Len(t, got, len(ref), "form %d", i)
		for j := range got {
			assert.Equal(t, ref[j].name, got[j].name)
			assert.Equal(t, ref[j].filename, got[j].filename)
			assert.Equal(t, ref[j].body, got[j].body, "form %d part %d", i, j)
			assert.Equal(t, want[j].body, got[j].body)
		}
	}
}

// TestSplitFormRefuses: what is not a whole form is an error, never a
// part taken from a wrong place.
func TestSplitFormRefuses(t *testing.T) {
	const b = "XYZ"
	for _, tc := range []struct{ name, body, msg string }{
		{"empty", "", "no boundary"},
		{"another boundary", "--ABC\r\n\r\nx\r\n--ABC--", "no boundary"},
		{"boundary mid-line", "x--XYZ\r\n\r\nx\r\n--XYZ--", "no boundary"},
		{"cut in a body", "--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nabc", "part 1 does not end"},
		{"cut in the headers", "--XYZ\r\nContent-Disposition: form-data; na", "headers of part 1 do not end"},
		{"garbage after a boundary", "--XYZgarbage\r\n\r\nx\r\n--XYZ--", "not followed by a line end"},
		{"quoted-printable", "--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n--XYZ--", "send it as binary"},
		{"headers too long", "--XYZ\r\nX: " + strings.Repeat("h", maxPartHeader) + "\r\n\r\nx\r\n--XYZ--", "do not end within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := splitForm([]byte(tc.body), b)
			require.ErrorIs(t, err, errForm)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	parts, err := splitForm([]byte("--XYZ\r\n\r\n\r\n--XYZ--\r\n"), b)
	require.NoError(t, err)
	require.Len(t, parts, 1, "a part with no headers and no body")
	assert.Empty(t, parts[0].body)
	assert.Empty(t, parts[0].name)
}

// FuzzSplitForm: any bytes under any boundary split without a panic, into
// parts that lie inside the buffer, in order.
func FuzzSplitForm(f *testing.F) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.SetBoundary("XYZ")
	w, _ := mw.CreateFormField("component")
	_, _ = w.Write([]byte("\x00asm\x01\x00\x00\x00\r\n--XY"))
	w, _ = mw.CreateFormField("metadata")
	_, _ = w.Write([]byte(`{"componentName":"x"}`))
	_ = mw.Close()
	f.Add(buf.Bytes(), "XYZ")
	f.Add([]byte("--XYZ\r\n\r\n\r\n--XYZ--"), "XYZ")
	f.Add([]byte("preamble\r\n--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--b--\r\nepilogue"), "b")
	f.Fuzz(func(t *testing.T, data []byte, boundary string) {
		if boundary == "" {
			return
		}
		parts, err := splitForm(data, boundary)
		if err != nil {
			return
		}
		end := 0
		for _, p := range parts {
			start := cap(data) - cap(p.body)
			if start < end || start+len(p.body) > len(data) {
				t.Fatalf("part %q at %d..%d, outside the buffer or before the last part's end %d", p.name, start, start+len(p.body), end)
			}
			end = start + len(p.body)
		}
	})
}
