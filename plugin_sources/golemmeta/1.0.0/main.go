// Command golemmeta 1.0.0 is a Transformer plugin for components that come
// from Golem: it records which component it transformed. It appends a
// custom section named "soplug.golem" holding
//
//	component=<component name>
//	id=<component ID>
//	<env_key>=<the component's value of that environment variable>
//
// and, through soplug's Golem extension (package contract/golem), adds to
// Golem's answer a read-only file /soplug/transformed-by and the
// environment entry SOPLUG_TRANSFORMED_BY, both "golemmeta 1.0.0". A
// request that does not come from Golem (a raw POST) has no metadata: the
// section then says "component=-".
//
// Config keys: "env_key", the environment variable to record (default
// "REGION").
package main

import (
	"context"
	"fmt"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/golem"
	"github.com/soplug/soplug/internal/wasm"
)

const version = "1.0.0"

type recorder struct{}

func (recorder) Version() string { return version }

func (recorder) IsAcceptable() bool { return true }

func (recorder) Transform(ctx context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	if _, err := wasm.Check(component); err != nil {
		return nil, err
	}
	key := cfg["env_key"]
	if key == "" {
		key = "REGION"
	}
	req, ok := golem.FromContext(ctx)
	if !ok {
		return wasm.AppendCustomSection(component, "soplug.golem", []byte("component=-\n")), nil
	}
	m := req.Metadata
	by := "golemmeta " + version
	if err := req.AddFile(golem.File{Path: "/soplug/transformed-by", Permissions: golem.ReadOnly, Content: []byte(by + "\n")}); err != nil {
		return nil, err
	}
	req.SetEnv("SOPLUG_TRANSFORMED_BY", by)
	record := fmt.Sprintf("component=%s\nid=%s\n%s=%s\n", m.ComponentName, m.ComponentID, key, m.Env[key])
	return wasm.AppendCustomSection(component, "soplug.golem", []byte(record)), nil
}

// Transformer is the accessor soplug looks up.
func Transformer() contract.Transformer { return recorder{} }
