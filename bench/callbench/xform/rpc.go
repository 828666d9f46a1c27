package xform

import (
	"context"
	"net/rpc"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/soplug/soplug/contract"
)

// Handshake is the go-plugin handshake of the benchmark server.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SOPLUG_CALLBENCH",
	MagicCookieValue: "transformer",
}

// Plugin serves and dispenses a Transformer over both of go-plugin's
// protocols.
type Plugin struct {
	// Impl is the served Transformer (server side only).
	Impl contract.Transformer
}

// Server serves Impl over net/rpc.
func (p *Plugin) Server(*goplugin.MuxBroker) (any, error) { return &RPCServer{Impl: p.Impl}, nil }

// Client returns the net/rpc client.
func (p *Plugin) Client(_ *goplugin.MuxBroker, c *rpc.Client) (any, error) {
	return &RPCClient{c: c}, nil
}

// GRPCServer registers Impl with the gRPC server.
func (p *Plugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, p.Impl)
	return nil
}

// GRPCClient returns the gRPC client.
func (p *Plugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &GRPCClient{c: c}, nil
}

// RPCServer is the net/rpc side of the Transformer.
type RPCServer struct{ Impl contract.Transformer }

// Transform serves Transform.
func (s *RPCServer) Transform(in []byte, out *[]byte) error {
	b, err := s.Impl.Transform(context.Background(), in, nil)
	*out = b
	return err
}

// meta answers Version and IsAcceptable locally: the benchmarks measure
// Transform only.
type meta struct{}

// Version returns the served Checker's version.
func (meta) Version() string { return Checker{}.Version() }

// IsAcceptable returns true.
func (meta) IsAcceptable() bool { return true }

// RPCClient calls Transform over net/rpc.
type RPCClient struct {
	meta
	c *rpc.Client
}

// Transform calls the plugin.
func (c *RPCClient) Transform(_ context.Context, in []byte, _ contract.Config) ([]byte, error) {
	var out []byte
	err := c.c.Call("Plugin.Transform", in, &out)
	return out, err
}

// serviceDesc is a gRPC service written by hand over wrapperspb.BytesValue,
// so that no code generation is needed.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: "soplug.bench.Transformer",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Transform",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			out, err := srv.(contract.Transformer).Transform(ctx, in.Value, nil)
			if err != nil {
				return nil, err
			}
			return wrapperspb.Bytes(out), nil
		},
	}},
}

// GRPCClient calls Transform over gRPC.
type GRPCClient struct {
	meta
	c *grpc.ClientConn
}

// Transform calls the plugin.
func (c *GRPCClient) Transform(ctx context.Context, in []byte, _ contract.Config) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	err := c.c.Invoke(ctx, "/soplug.bench.Transformer/Transform", wrapperspb.Bytes(in), out)
	return out.Value, err
}
