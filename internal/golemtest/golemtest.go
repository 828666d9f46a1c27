// Package golemtest builds requests as Golem's component service sends them
// to a component transformer plugin, and reads its answers, for tests.
package golemtest

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/textproto"

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
