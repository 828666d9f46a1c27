package cliout_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/soplug/soplug/internal/cliout"
	"github.com/soplug/soplug/internal/pluginconf"
)

// TestResultKeepsIntegers: a result's int64 fields come out exactly.
func TestResultKeepsIntegers(t *testing.T) {
	var out bytes.Buffer
	assert.NoError(t, cliout.Result(&out, struct {
		Big int64 `json:"big"`
	}{Big: 1<<62 + 1}, nil))
	assert.Contains(t, out.String(), `"big": 4611686018427387905`)
	assert.Contains(t, out.String(), `"ok": true`)
}

func TestResultCarriesTheError(t *testing.T) {
	var out bytes.Buffer
	assert.NoError(t, cliout.Result(&out, struct{}{}, errors.New("refused: x")))
	assert.Contains(t, out.String(), `"ok": false`)
	assert.Contains(t, out.String(), `"error": "refused: x"`)
}

func TestInstallation(t *testing.T) {
	for _, tc := range []struct {
		in   pluginconf.Installation
		want string
	}{
		{pluginconf.Installation{}, "(none)"},
		{pluginconf.Installation{Config: map[string]string{"team": "edge", "env": "prod"}, Overridable: []string{"env"}}, "env=prod team=edge (a request may set: env)"},
		{pluginconf.Installation{Config: map[string]string{"k": "v"}, Overridable: []string{pluginconf.AnyKey}}, "k=v (a request may set any key)"},
	} {
		assert.Equal(t, tc.want, cliout.Installation(tc.in))
	}
}
