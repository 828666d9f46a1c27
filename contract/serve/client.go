package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/contract/golem"
)

// Client calls a plugin process. Its methods are those of the contract's
// interfaces, with the errors of a call that could not be made.
type Client struct {
	conn *grpc.ClientConn
}

// UnavailableError is a call that did not reach the plugin, or whose
// answer did not come back (its process is gone or restarting).
// Unavailable reports true, which the transform service answers with 503.
type UnavailableError struct {
	Err error
	// Sent is true when the call may have reached the plugin before the
	// connection was lost: its process may have done part of the work.
	Sent bool
}

func (e *UnavailableError) Error() string {
	return "the plugin process is unavailable: " + e.Err.Error()
}

// Unwrap returns the transport's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Unavailable reports true.
func (e *UnavailableError) Unavailable() bool { return true }

// MayHaveRun reports whether the plugin may have run part of the call:
// an oplog batch retried after it is flagged as a redelivery.
func (e *UnavailableError) MayHaveRun() bool { return e.Sent }

// call invokes method, turning the plugin's errors back into what the
// implementation returned: a panic is raised again here, a refusal is a
// plain error, a context's end its error, a lost connection an
// *UnavailableError.
func (c *Client) call(ctx context.Context, method string, in, out proto.Message, opts ...grpc.CallOption) error {
	err := c.conn.Invoke(ctx, "/soplug.Plugin/"+method, in, out, opts...)
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Internal:
		if msg, ok := strings.CutPrefix(st.Message(), panicPrefix); ok {
			first, _, _ := strings.Cut(msg, "\n")
			panic(fmt.Sprintf("%s (in the plugin process)", first))
		}
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, st.Message())
	case codes.Unavailable:
		return &UnavailableError{Err: err, Sent: true}
	case codes.InvalidArgument:
		return errors.New(st.Message())
	}
	return fmt.Errorf("soplug: %s: %s", method, st.Message())
}

// withConfig sends cfg along with the call, as JSON in binary metadata
// (keys keep their case, values any bytes).
func withConfig(ctx context.Context, cfg contract.Config) context.Context {
	data, _ := json.Marshal(cfg)
	return metadata.AppendToOutgoingContext(ctx, configKey, string(data))
}

// Kind asks the plugin what it is.
func (c *Client) Kind(ctx context.Context) (contract.Kind, error) {
	out := new(wrapperspb.StringValue)
	err := c.call(ctx, "Kind", &emptypb.Empty{}, out)
	return contract.Kind(out.Value), err
}

// PluginVersion asks the plugin its version.
func (c *Client) PluginVersion(ctx context.Context) (string, error) {
	out := new(wrapperspb.StringValue)
	err := c.call(ctx, "Version", &emptypb.Empty{}, out)
	return out.Value, err
}

// Acceptable asks the plugin whether it can run here.
func (c *Client) Acceptable(ctx context.Context) (bool, error) {
	out := new(wrapperspb.BoolValue)
	err := c.call(ctx, "IsAcceptable", &emptypb.Empty{}, out)
	return out.Value, err
}

// Transform calls the plugin's Transform. A Golem request in ctx (package
// contract/golem) travels with the call, and the files and environment
// entries the plugin adds come back into it.
func (c *Client) Transform(ctx context.Context, component []byte, cfg contract.Config) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	var trailer metadata.MD
	req, isGolem := golem.FromContext(ctx)
	ctx = withConfig(ctx, cfg)
	if isGolem {
		data, err := json.Marshal(req.Metadata)
		if err != nil {
			return nil, err
		}
		ctx = metadata.AppendToOutgoingContext(ctx, golemKey, string(data))
	}
	if err := c.call(ctx, "Transform", wrapperspb.Bytes(component), out, grpc.Trailer(&trailer)); err != nil {
		return nil, err
	}
	if v := trailer.Get(golemOutKey); isGolem && len(v) > 0 {
		var added golemOut
		if err := json.Unmarshal([]byte(v[0]), &added); err != nil {
			return nil, fmt.Errorf("soplug: Transform: the plugin's Golem answer: %w", err)
		}
		for _, f := range added.Files {
			if err := req.AddFile(f); err != nil {
				return nil, err
			}
		}
		for k, v := range added.Env {
			req.SetEnv(k, v)
		}
	}
	return out.Value, nil
}

// Init calls the plugin's Init.
func (c *Client) Init(ctx context.Context, cfg contract.Config) error {
	return c.call(withConfig(ctx, cfg), "Init", &emptypb.Empty{}, &emptypb.Empty{})
}

// Process calls the plugin's Process; the batch travels as JSON.
func (c *Client) Process(ctx context.Context, b contract.Batch) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return c.call(ctx, "Process", wrapperspb.Bytes(data), &emptypb.Empty{})
}

// Close calls the plugin's Close.
func (c *Client) Close(ctx context.Context) error {
	return c.call(ctx, "Close", &emptypb.Empty{}, &emptypb.Empty{})
}
