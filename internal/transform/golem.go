package transform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/segmentio/asm/base64"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/golem"
	"github.com/soplug/soplug/internal/inflight"
)

// Limits of the parts of Golem's form besides the component.
const (
	// MaxParameterBytes bounds one parameter's value.
	MaxParameterBytes = 64 << 10
	// MaxParameters bounds how many parameters a form carries.
	MaxParameters = 256
	// FormOverhead is what a form may carry besides a component of
	// Config.MaxBytes: the metadata (1.2 and 1.3 send the component's WIT
	// in it, base64), the parameters, and the parts' headers and
	// boundaries. The metadata has no limit of its own but the body's.
	FormOverhead = 5 << 20
)

// Golem's reserved part names.
const (
	partComponent = "component"
	partMetadata  = "metadata"
)

// isGolem reports whether r is Golem's component-transformer call: a
// multipart form, whatever its parameters (readForm refuses bad ones).
func isGolem(r *http.Request) bool {
	mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(mt), "multipart/form-data")
}

// golemAnswer is the JSON Golem reads from a successful call.
type golemAnswer struct {
	AdditionalFiles []golem.File      `json:"additionalFiles,omitempty"`
	Env             map[string]string `json:"env,omitempty"`
}

// serveGolem serves Golem's component-transformer protocol: a multipart
// form with the component's bytes ("component"), its metadata as JSON
// ("metadata"), and one text part per installation parameter, which set
// configuration keys like query overrides do. The answer is what the
// caller's release reads. Golem 1.3 and later (metadata with a top-level
// "env") read JSON, {"data": base64 of the transformed component,
// "additionalFiles": [...], "env": {...}}, with the files and entries the
// plugins added through package golem. Golem 1.1 and 1.2 (no "env") take
// the response body itself as the component: it is answered raw, and files
// or entries a plugin added, which it cannot carry, make the call a 422
// unless every plugin's installation sets golem_drop_extras. The query's
// soplug.answer=raw|json overrides the guess. The parts are read as they
// arrive: the component into one buffer, charged to the budget, and
// nothing is held twice.
//
// Golem retries a 5xx and fails at once on any other status, so what
// cannot succeed on a retry is a 4xx: a plugin that panics or returns no
// WebAssembly is a 422 here (500 on the raw path); only draining, the
// budget, a plugin process being restarted, no acceptable version and a
// timeout are 5xx.
func (s *Service) serveGolem(w http.ResponseWriter, r *http.Request, route []*Plugin, cfgs []contract.Config) {
	first := route[0]
	fail := func(f *failure) {
		if f.code == http.StatusInternalServerError {
			f.code = http.StatusUnprocessableEntity
		}
		s.fail(w, r, *f)
	}
	if r.ContentLength > s.cfg.MaxBytes+FormOverhead {
		fail(s.tooBig(first))
		return
	}
	if err := s.cfg.Budget.Admit(r.ContentLength + Slack); r.ContentLength > 0 && err != nil {
		fail(busy(first, err))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes+FormOverhead)
	charge := s.cfg.Budget.Charge()
	defer charge.Release()
	form, f := s.readForm(r, first, charge)
	if f != nil {
		fail(f)
		return
	}
	if f := override(cfgs, route, form.params, "parameter"); f != nil {
		fail(f)
		return
	}
	raw, err := answerRaw(r, form)
	if err != nil {
		fail(&failure{code: http.StatusBadRequest, p: first, msg: err.Error()})
		return
	}
	req := golem.NewRequest(form.metadata)
	ctx, cancel := context.WithTimeout(golem.NewContext(r.Context(), req), s.cfg.Timeout)
	defer cancel()
	body, f := s.run(ctx, route, form.component, cfgs)
	if f != nil {
		fail(f)
		return
	}
	files, env := req.Files(), req.Env()
	if raw && (len(files) > 0 || len(env) > 0) && !dropsExtras(route) {
		fail(&failure{code: http.StatusUnprocessableEntity, p: first, msg: fmt.Sprintf(
			"the plugins added files (%d) and environment entries (%d), which a raw answer cannot carry: Golem 1.1 and 1.2 (metadata without \"env\") take the component alone; set golem_drop_extras = true in the installation of %s to drop them, or register the URL with ?%s=json for Golem 1.3 or later",
			len(files), len(env), names(route), QueryAnswer)})
		return
	}
	h := w.Header()
	setPluginHeaders(h, route)
	if raw {
		h.Set("Content-Type", "application/wasm")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return
	}
	extra, err := json.Marshal(golemAnswer{AdditionalFiles: files, Env: env})
	if err != nil {
		fail(&failure{code: http.StatusUnprocessableEntity, p: first, msg: "encoding the answer: " + err.Error()})
		return
	}
	// {"data":"<base64>" + the rest of extra, whose first byte is '{'.
	rest := extra[1:]
	if len(rest) > 1 {
		rest = append([]byte{','}, rest...)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(`{"data":""`)+base64.StdEncoding.EncodedLen(len(body))+len(rest)))
	w.WriteHeader(http.StatusOK)
	writeBase64(w, []byte(`{"data":"`), body, append([]byte{'"'}, rest...), charge)
}

// answerRaw tells how to answer a form: the component alone (Golem 1.1
// and 1.2, whose metadata has no "env") or the JSON (1.3 and later), or as
// the query's QueryAnswer says. Another value of it is a 400.
func answerRaw(r *http.Request, f form) (bool, error) {
	switch v := r.URL.Query().Get(QueryAnswer); v {
	case "":
		return !f.hasEnv, nil
	case "raw":
		return true, nil
	case "json":
		return false, nil
	default:
		return false, fmt.Errorf("%s=%q: want raw (Golem 1.1, 1.2) or json (1.3, 1.4)", QueryAnswer, v)
	}
}

// dropsExtras reports whether every plugin of route lets a raw answer drop
// what the plugins added.
func dropsExtras(route []*Plugin) bool {
	for _, p := range route {
		if !p.Installation.GolemDropExtras {
			return false
		}
	}
	return true
}

// names lists route's plugin names.
func names(route []*Plugin) string {
	n := make([]string, len(route))
	for i, p := range route {
		n[i] = p.Name
	}
	return strings.Join(n, ", ")
}

// base64Chunk is how much of a component is encoded at a time: a multiple
// of 3, so that only the last chunk is padded. Large, so that a 1 MiB
// component's answer leaves in two writes: in 256 KiB writes the Golem
// path ran at 0.79 of the raw path's requests/s here, in 1 MiB writes at
// 0.91 (BENCHMARKS.md).
const base64Chunk = 768 << 10

// smallChunk is the chunk when the budget cannot hold a pooled buffer.
const smallChunk = 48 << 10

// writeBase64 writes prefix, b in standard base64, and suffix, a chunk at
// a time, with the SIMD encoder of segmentio/asm: the standard library's
// encodes about 1 GB/s here, which would cost a 1 MiB component a
// millisecond, as much as the rest of its request. The prefix shares the
// first chunk's write and a short suffix the last one's. The chunk buffer
// is pooled (a fresh one per request was 1 MiB to allocate, zero and
// collect each time) and charged to the request while it is in use; when
// the budget cannot hold it, a small buffer does the work in more writes.
func writeBase64(w io.Writer, prefix, b, suffix []byte, charge *inflight.Charge) {
	chunk := min(len(b), base64Chunk)
	var buf []byte
	if chunk > smallChunk && charge.Grow(charge.Held()+int64(base64BufSize)) == nil {
		bp := base64Bufs.Get().(*[]byte)
		defer base64Bufs.Put(bp)
		buf = *bp
	} else {
		chunk = min(chunk, smallChunk)
		buf = make([]byte, base64.StdEncoding.EncodedLen(chunk)+len(prefix)+base64Room)
	}
	out := append(buf[:0], prefix...)
	for {
		n := min(len(b), chunk)
		m := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(out[len(out):len(out)+m], b[:n])
		out = out[:len(out)+m]
		b = b[n:]
		if len(b) == 0 && len(out)+len(suffix) <= cap(out) {
			out = append(out, suffix...)
			suffix = nil
		}
		if _, err := w.Write(out); err != nil {
			return
		}
		if len(b) == 0 {
			break
		}
		out = out[:0]
	}
	if len(suffix) > 0 {
		_, _ = w.Write(suffix)
	}
}

// base64Room is what a chunk buffer holds besides a chunk's encoding: the
// answer's prefix and a short suffix.
const base64Room = 4 << 10

// base64BufSize is the size of a pooled chunk buffer.
var base64BufSize = base64.StdEncoding.EncodedLen(base64Chunk) + base64Room

// base64Bufs are writeBase64's chunk buffers.
var base64Bufs = sync.Pool{New: func() any {
	b := make([]byte, base64BufSize)
	return &b
}}

// form is Golem's multipart form, read.
type form struct {
	component []byte
	metadata  golem.Metadata
	hasEnv    bool // the metadata has a top-level env: Golem 1.3 or later
	params    url.Values
}

// parseMetadata reads Golem's metadata as golem.ParseMetadata does, in the
// same one pass telling whether it has a top-level "env", which Golem
// 1.3 added with the JSON answer: 1.1 and 1.2 send none.
func parseMetadata(b []byte) (golem.Metadata, bool, error) {
	var m struct {
		golem.Metadata
		Env map[string]string `json:"env"` // nil when absent
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return golem.Metadata{}, false, fmt.Errorf("golem: the metadata is not Golem's component JSON: %w", err)
	}
	md := m.Metadata
	md.Env = m.Env
	if md.ComponentID == "" && md.VersionedComponentID != nil {
		md.ComponentID = md.VersionedComponentID.ComponentID
	}
	if md.Env == nil {
		md.Env = map[string]string{}
	}
	return md, m.Env != nil, nil
}

// readForm reads r's multipart form into one buffer as it arrives (see
// readAll), charged to charge, and splits it into its parts in place: the
// component is a slice of that buffer, which the plugin may extend into
// the bytes of the parts after it (read by then) and the Slack after the
// body. A malformed form, a part without a name, a part given twice, a
// missing component, metadata that is not Golem's JSON and a parameter that
// is not a configuration key, or is a file, are 400s naming the part; a
// component past MaxBytes is a 413.
func (s *Service) readForm(r *http.Request, p *Plugin, charge *inflight.Charge) (form, *failure) {
	bad := func(format string, args ...any) (form, *failure) {
		return form{}, &failure{code: http.StatusBadRequest, p: p, msg: fmt.Sprintf(format, args...)}
	}
	_, mtParams, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err != nil:
		return bad("the Content-Type %q: %v", r.Header.Get("Content-Type"), err)
	case mtParams["boundary"] == "":
		return bad("not a multipart form: no boundary in its Content-Type")
	}
	limit := s.cfg.MaxBytes + FormOverhead
	buf, fl := s.readAll(r.Body, r.ContentLength, r.ContentLength > 0, limit, charge, p)
	if fl != nil {
		return form{}, fl
	}
	parts, err := splitForm(buf, mtParams["boundary"])
	if err != nil {
		return bad("%v", err)
	}
	f := form{params: url.Values{}}
	seen := map[string]bool{}
	for _, part := range parts {
		name := part.name
		switch {
		case name == "":
			return bad("a form part without a name")
		case seen[name]:
			return bad("form part %q is given twice", name)
		}
		seen[name] = true
		switch name {
		case partComponent:
			if int64(len(part.body)) > s.cfg.MaxBytes {
				return form{}, s.tooBig(p)
			}
			// A slice of buf with buf's capacity: an append runs over
			// the parts after it, which are read by the time a plugin
			// runs, and into the Slack.
			f.component = part.body
		case partMetadata:
			if int64(len(part.body)) > s.cfg.MaxBytes {
				return bad("form part %q: %v: %d bytes (--max-body)", name, errLarge, s.cfg.MaxBytes)
			}
			if f.metadata, f.hasEnv, err = parseMetadata(part.body); err != nil {
				return bad("form part %q: %v", name, err)
			}
		default:
			switch {
			case len(f.params) >= MaxParameters:
				return bad("more than %d parameters", MaxParameters)
			case part.filename != "":
				return bad("parameter %q is a file (%q); parameters are text parts", name, part.filename)
			case len(part.body) > MaxParameterBytes:
				return bad("parameter %q: %v: %d bytes", name, errLarge, MaxParameterBytes)
			}
			if err := checkText("parameter", name, string(part.body)); err != nil {
				return bad("%v", err)
			}
			f.params.Set(name, string(part.body))
		}
	}
	if !seen[partComponent] {
		return bad("the form has no %q part: Golem sends the component's bytes in it", partComponent)
	}
	if f.metadata.Env == nil {
		f.metadata.Env = map[string]string{}
	}
	return f, nil
}

// errLarge is a part past its limit.
var errLarge = errors.New("larger than its limit")
