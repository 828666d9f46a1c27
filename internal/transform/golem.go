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

	"github.com/segmentio/asm/base64"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/golem"
	"github.com/soplug/soplug/internal/inflight"
	"github.com/soplug/soplug/internal/pluginconf"
)

// Limits of the parts of Golem's form besides the component.
const (
	// MaxMetadataBytes bounds the "metadata" part.
	MaxMetadataBytes = 1 << 20
	// MaxParameterBytes bounds one parameter's value.
	MaxParameterBytes = 64 << 10
	// MaxParameters bounds how many parameters a form carries.
	MaxParameters = 256
	// formOverhead is what a form may carry besides its component: the
	// metadata, the parameters, and the parts' headers and boundaries.
	formOverhead = MaxMetadataBytes + 4<<20
)

// Golem's reserved part names.
const (
	partComponent = "component"
	partMetadata  = "metadata"
)

// isGolem reports whether r is Golem's component-transformer call: a
// multipart form.
func isGolem(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "multipart/form-data"
}

// golemAnswer is the JSON Golem reads from a successful call.
type golemAnswer struct {
	AdditionalFiles []golem.File      `json:"additionalFiles,omitempty"`
	Env             map[string]string `json:"env,omitempty"`
}

// serveGolem serves Golem's component-transformer protocol: a multipart
// form with the component's bytes ("component"), its metadata as JSON
// ("metadata"), and one text part per installation parameter, which set
// configuration keys like query overrides do. The answer is JSON,
// {"data": base64 of the transformed component, "additionalFiles": [...],
// "env": {...}}, with the files and entries the plugins added through
// package golem. The parts are read as they arrive: the component into
// one buffer, charged to the budget, and nothing is held twice.
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
	if r.ContentLength > s.cfg.MaxBytes+formOverhead {
		fail(s.tooBig(first))
		return
	}
	if err := s.cfg.Budget.Admit(r.ContentLength + Slack); r.ContentLength > 0 && err != nil {
		fail(busy(first, err))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBytes+formOverhead)
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
	req := golem.NewRequest(form.metadata)
	ctx, cancel := context.WithTimeout(golem.NewContext(r.Context(), req), s.cfg.Timeout)
	defer cancel()
	body, f := s.run(ctx, route, form.component, cfgs)
	if f != nil {
		fail(f)
		return
	}
	extra, err := json.Marshal(golemAnswer{AdditionalFiles: req.Files(), Env: req.Env()})
	if err != nil {
		fail(&failure{code: http.StatusUnprocessableEntity, p: first, msg: "encoding the answer: " + err.Error()})
		return
	}
	// {"data":"<base64>" + the rest of extra, whose first byte is '{'.
	rest := extra[1:]
	if len(rest) > 1 {
		rest = append([]byte{','}, rest...)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(`{"data":""`)+base64.StdEncoding.EncodedLen(len(body))+len(rest)))
	setPluginHeaders(h, route)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `{"data":"`)
	writeBase64(w, body)
	_, _ = w.Write(append([]byte{'"'}, rest...))
}

// base64Chunk is how much of a component is encoded at a time: a multiple
// of 3, so that only the last chunk is padded.
const base64Chunk = 192 << 10

// writeBase64 writes b in standard base64, a chunk at a time, with the
// SIMD encoder of segmentio/asm: the standard library's encodes about 1
// GB/s here, which would cost a 1 MiB component a millisecond, as much as
// the rest of its request.
func writeBase64(w io.Writer, b []byte) {
	buf := make([]byte, base64.StdEncoding.EncodedLen(base64Chunk))
	for len(b) > 0 {
		n := min(len(b), base64Chunk)
		m := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(buf[:m], b[:n])
		if _, err := w.Write(buf[:m]); err != nil {
			return
		}
		b = b[n:]
	}
}

// form is Golem's multipart form, read.
type form struct {
	component []byte
	metadata  golem.Metadata
	params    url.Values
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
	if err != nil || mtParams["boundary"] == "" {
		return bad("not a multipart form: no boundary in its Content-Type")
	}
	limit := s.cfg.MaxBytes + formOverhead
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
			if len(part.body) > MaxMetadataBytes {
				return bad("form part %q: %v: %d bytes", name, errLarge, MaxMetadataBytes)
			}
			if f.metadata, err = golem.ParseMetadata(part.body); err != nil {
				return bad("form part %q: %v", name, err)
			}
		default:
			switch {
			case len(f.params) >= MaxParameters:
				return bad("more than %d parameters", MaxParameters)
			case part.filename != "":
				return bad("parameter %q is a file (%q); parameters are text parts", name, part.filename)
			case !pluginconf.ValidKey(name):
				return bad("parameter %q is not a configuration key (letters, digits, '_', '.' and '-'; %q and %q are Golem's own parts)", name, partComponent, partMetadata)
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
