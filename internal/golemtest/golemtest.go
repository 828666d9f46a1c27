// Package golemtest builds requests as Golem's component service sends them
// to a component transformer plugin, and reads its answers, for tests.
package golemtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/soplug/soplug/contract/golem"
)

// The metadata of the two generations of Golem's component service: the
// current one, and an older one with versionedComponentId and the fields
// it dropped since (and one it never had, which must be ignored).
const (
	MetadataNow = `{"componentId":"3c5a2e1f-0000-4000-8000-000000000001","componentName":"shop:cart","files":[{"key":"k1","path":"/etc/app.toml","permissions":"read-only"}],"env":{"REGION":"eu-1"}}`
	MetadataOld = `{"versionedComponentId":{"componentId":"3c5a2e1f-0000-4000-8000-000000000002","version":7},"componentName":"shop:cart","componentSize":1234,"metadata":{"exports":[],"producers":[]},"createdAt":"2025-01-02T03:04:05Z","componentType":"Durable","files":[],"env":{"REGION":"us-2"},"somethingNew":true}`
)

// Part is one part of a form.
type Part struct {
	Name, FileName, ContentType string
	Value                       []byte
}

// Component is the component's part: bytes with no content type, as
// reqwest's Part::bytes sends them.
func Component(b []byte) Part { return Part{Name: "component", Value: b} }

// Metadata is the metadata part: JSON, application/json.
func Metadata(s string) Part {
	return Part{Name: "metadata", ContentType: "application/json", Value: []byte(s)}
}

// Param is an installation parameter: a text part named by its key.
func Param(k, v string) Part { return Part{Name: k, ContentType: "text/plain", Value: []byte(v)} }

// Form returns the multipart body of parts and its Content-Type.
func Form(parts ...Part) (*bytes.Buffer, string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name="%s"`, p.Name)
		if p.FileName != "" {
			cd += fmt.Sprintf(`; filename="%s"`, p.FileName)
		}
		h.Set("Content-Disposition", cd)
		if p.ContentType != "" {
			h.Set("Content-Type", p.ContentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			return nil, "", err
		}
		if _, err := w.Write(p.Value); err != nil {
			return nil, "", err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, "", err
	}
	return &buf, mw.FormDataContentType(), nil
}

// Answer is the JSON Golem decodes from a 2xx (its
// ComponentTransformerResponse; data is standard base64).
type Answer struct {
	Data            []byte            `json:"data"`
	AdditionalFiles []golem.File      `json:"additionalFiles"`
	Env             map[string]string `json:"env"`
}

// Retried reports whether Golem retries a call answered with code: a 5xx
// (and a failed connection); any other non-2xx fails the call at once.
func Retried(code int) bool { return code >= 500 }

// Release is one Golem release's component-transformer caller, as its
// source has it (golem-component-service-base's component.rs in 1.1,
// transformer_plugin_caller.rs in 1.2 and 1.3, golem-registry-service's
// component_transformer_plugin_caller.rs in 1.4): the metadata it sends,
// and how it reads a successful answer.
type Release struct {
	// Name is the release, "1.1" to "1.4".
	Name string
	// Metadata is the JSON of its SerializableComponent for the test
	// component, with WIT as binaryWit where the release sends it.
	Metadata func(wit []byte) string
	// Raw is true where the release takes the response body itself as the
	// transformed component (1.1, 1.2); the others decode Answer.
	Raw bool
}

// Releases are the four releases that call component transformers; 1.5
// removed them.
var Releases = []Release{
	{Name: "1.1", Raw: true, Metadata: func([]byte) string {
		return `{"versionedComponentId":{"componentId":"3c5a2e1f-0000-4000-8000-000000000011","version":3},"componentName":"shop:cart","componentSize":1234,` +
			`"metadata":{"exports":[],"producers":[],"memories":[{"initial":1114112,"maximum":null}],"dynamicLinking":{}},"createdAt":"2025-01-02T03:04:05Z","componentType":"Durable",` +
			`"files":[{"key":"k1","path":"/etc/app.toml","permissions":"read-only"}],"installedPlugins":[{"id":"7d1b0c2e-0000-4000-8000-000000000001","name":"soplug","version":"1.0.0","priority":0,"parameters":{"env":"staging"}}]}`
	}},
	{Name: "1.2", Raw: true, Metadata: func(wit []byte) string {
		return `{"versionedComponentId":{"componentId":"3c5a2e1f-0000-4000-8000-000000000012","version":3},"componentName":"shop:cart","componentSize":1234,` +
			`"metadata":{"exports":[],"producers":[],"memories":[],"binaryWit":"` + base64.StdEncoding.EncodeToString(wit) + `","rootPackageName":"shop:cart","rootPackageVersion":null,"dynamicLinking":{}},` +
			`"createdAt":"2025-01-02T03:04:05Z","componentType":"Durable","files":[{"key":"k1","path":"/etc/app.toml","permissions":"read-only"}]}`
	}},
	{Name: "1.3", Metadata: func(wit []byte) string {
		return `{"versionedComponentId":{"componentId":"3c5a2e1f-0000-4000-8000-000000000013","version":3},"componentName":"shop:cart","componentSize":1234,` +
			`"metadata":{"exports":[],"producers":[],"memories":[],"binaryWit":"` + base64.StdEncoding.EncodeToString(wit) + `","rootPackageName":"shop:cart","rootPackageVersion":null,"dynamicLinking":{}},` +
			`"createdAt":"2025-01-02T03:04:05Z","componentType":"Durable","files":[{"key":"k1","path":"/etc/app.toml","permissions":"read-only"}],"env":{"REGION":"eu-3"}}`
	}},
	{Name: "1.4", Metadata: func([]byte) string {
		return `{"componentId":"3c5a2e1f-0000-4000-8000-000000000014","componentName":"shop:cart","files":[{"key":"k1","path":"/etc/app.toml","permissions":"read-only"}],"env":{"REGION":"eu-4"}}`
	}},
}

// ComponentID is the component ID the release's Metadata carries.
func (r Release) ComponentID() string {
	return "3c5a2e1f-0000-4000-8000-0000000000" + strings.ReplaceAll(r.Name, ".", "")
}

// Request builds the request the release sends to url: reqwest's
// multipart form (a fresh random boundary; the component as
// Part::bytes, with neither file name nor content type; the metadata as
// Part::text with application/json; each parameter as Part::text, in the
// map's order, its name in RFC 2231's name*= form when reqwest's
// path-segment set escapes any of it), a Content-Length and none of
// Golem's own headers.
func (r Release) Request(ctx context.Context, url string, component, wit []byte, params map[string]string) (*http.Request, error) {
	var rnd [32]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	h := hex.EncodeToString(rnd[:])
	boundary := h[0:16] + "-" + h[16:32] + "-" + h[32:48] + "-" + h[48:64]
	var b bytes.Buffer
	part := func(name, ctype string, value []byte) {
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; %s", boundary, reqwestName(name))
		if ctype != "" {
			fmt.Fprintf(&b, "\r\nContent-Type: %s", ctype)
		}
		b.WriteString("\r\n\r\n")
		b.Write(value)
		b.WriteString("\r\n")
	}
	part("component", "", component)
	part("metadata", "application/json", []byte(r.Metadata(wit)))
	for k, v := range params {
		part(k, "", []byte(v))
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b.Bytes()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", "") // reqwest sends none
	return req, nil
}

// pathSegment is what reqwest's PATH_SEGMENT_ENCODE_SET escapes in a
// part's name besides controls and non-ASCII bytes.
const pathSegment = " \"#<>`?{}%/"

// reqwestName is the name parameter as reqwest writes it.
func reqwestName(name string) string {
	var enc strings.Builder
	escaped := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c >= 0x7f || strings.IndexByte(pathSegment, c) >= 0 {
			fmt.Fprintf(&enc, "%%%02X", c)
			escaped = true
			continue
		}
		enc.WriteByte(c)
	}
	if escaped {
		return "name*=utf-8''" + enc.String()
	}
	return `name="` + name + `"`
}

// Read reads resp as the release does: a 5xx is retried (an error here),
// any other non-2xx fails the call, and a 2xx is the component itself
// (Raw) or Answer's JSON, whose data may be absent in 1.4 (the component
// unchanged).
func (r Release) Read(resp *http.Response, sent []byte) (Answer, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, fmt.Errorf("golem %s: failed to read response from transformation plugin: %w", r.Name, err)
	}
	if resp.StatusCode/100 != 2 {
		return Answer{}, fmt.Errorf("golem %s: HTTP status: %s: %s", r.Name, resp.Status, body)
	}
	if r.Raw {
		return Answer{Data: body}, nil
	}
	var a struct {
		Data            *[]byte           `json:"data"`
		AdditionalFiles []golem.File      `json:"additionalFiles"`
		Env             map[string]string `json:"env"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return Answer{}, fmt.Errorf("golem %s: failed to read response from transformation plugin: %w", r.Name, err)
	}
	out := Answer{Data: sent, AdditionalFiles: a.AdditionalFiles, Env: a.Env}
	if a.Data != nil {
		out.Data = *a.Data
	}
	return out, nil
}
