// Package serve runs a contract implementation as an out-of-process plugin:
// an executable that the runner starts and calls over gRPC with
// github.com/hashicorp/go-plugin. The same implementation builds as a .so as
// well; only the main function differs:
//
//	// main_so.go
//	//go:build !soplug_exec
//	package main
//	func main() {}
//
//	// main_exec.go
//	//go:build soplug_exec
//	package main
//	import "github.com/soplug/soplug/contract/serve"
//	func main() { serve.Transformer(Transformer()) }
//
//	go build -trimpath -buildmode=plugin -o plugins/stamp_v1.0.0.so ./plugin_sources/stamp/1.0.0
//	go build -trimpath -tags soplug_exec -o plugins/stamp_v1.0.0  ./plugin_sources/stamp/1.0.0
//
// An out-of-process plugin shares no package with the runner, so it may be
// built by another Go release or against other versions of any module; a
// crash ends its process, not the runner's. A call costs a round trip over
// a local socket and a copy of the component each way (BENCHMARKS.md).
//
// The package holds both halves of the protocol: Transformer and
// OplogProcessor serve an implementation in the plugin's process, and
// Client is what the runner's loader calls it through.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

// Handshake is what runner and plugin must agree on before anything else:
// go-plugin's protocol version and a cookie naming the contract ABI, so
// that a plugin of another contract is refused at its start.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SOPLUG_PLUGIN",
	MagicCookieValue: fmt.Sprintf("contract-abi-%d", contract.ABIVersion),
}

// PluginName is the name the plugin is served and dispensed under.
const PluginName = "soplug"

// MetricsAddrEnv names the environment variable through which the runner
// gives a plugin process the address to serve its own /metrics on.
const MetricsAddrEnv = "SOPLUG_METRICS_ADDR"

// panicPrefix marks a gRPC error that reports a panic in the plugin.
const panicPrefix = "soplug: the plugin panicked: "

// configKey is the call metadata that carries the configuration.
const configKey = "soplug-config-bin"

// golemKey carries a Golem request's metadata to a Transform call, and
// golemOutKey, in its trailer, what the plugin added to the answer.
const (
	golemKey    = "soplug-golem-bin"
	golemOutKey = "soplug-golem-out-bin"
)

// golemOut is what a plugin added to a Golem request's answer.
type golemOut struct {
	Files []golem.File      `json:"files,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
}

// Transformer serves t until the runner ends the process. Call it from
// main; it does not return.
func Transformer(t contract.Transformer) {
	serve(&server{kind: contract.KindTransformer, p: t, t: t})
}

// OplogProcessor serves p until the runner ends the process. Call it from
// main; it does not return.
func OplogProcessor(p contract.OplogProcessor) {
	serve(&server{kind: contract.KindOplogProcessor, p: p, o: p})
}

func serve(s *server) {
	if addr := os.Getenv(MetricsAddrEnv); addr != "" {
		if ln, err := net.Listen("tcp", addr); err == nil {
			go func() { _ = http.Serve(ln, promhttp.Handler()) }()
		} else {
			fmt.Fprintf(os.Stderr, "soplug: metrics on %s: %v\n", addr, err)
		}
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{PluginName: &grpcPlugin{impl: s}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}

// server is the plugin side of the service.
type server struct {
	kind contract.Kind
	p    contract.Plugin
	t    contract.Transformer
	o    contract.OplogProcessor
}

// guard runs fn, turning a panic into a gRPC error the client re-raises.
func guard[T any](fn func() (T, error)) (out T, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = status.Error(codes.Internal, panicPrefix+fmt.Sprint(v)+"\n"+string(debug.Stack()))
		}
	}()
	out, err = fn()
	if err != nil && status.Code(err) == codes.Unknown {
		code := codes.InvalidArgument // the plugin refuses the input
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			code = codes.DeadlineExceeded
		case errors.Is(err, context.Canceled):
			code = codes.Canceled
		}
		err = status.Error(code, err.Error())
	}
	return out, err
}

// golemFrom returns the Golem request a call carries, or nil.
func golemFrom(ctx context.Context) *golem.Request {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(golemKey)
	if len(v) == 0 {
		return nil
	}
	m, err := golem.ParseMetadata([]byte(v[0]))
	if err != nil {
		return nil
	}
	return golem.NewRequest(m)
}

func configFrom(ctx context.Context) contract.Config {
	cfg := contract.Config{}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(configKey); len(v) > 0 {
		_ = json.Unmarshal([]byte(v[0]), &cfg)
	}
	return cfg
}

// grpcPlugin is the go-plugin Plugin of both sides.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	impl *server
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, p.impl)
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{conn: c}, nil
}

// Plugins is the plugin set the runner's go-plugin client dispenses from.
var Plugins = goplugin.PluginSet{PluginName: &grpcPlugin{}}

// unary builds a method handler that decodes an In, calls fn and returns
// its Out.
func unary[In any, PIn interface {
	*In
	proto.Message
}](name string, fn func(s *server, ctx context.Context, in PIn) (any, error)) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := PIn(new(In))
		if err := dec(in); err != nil {
			return nil, err
		}
		return guard(func() (any, error) { return fn(srv.(*server), ctx, in) })
	}}
}

// serviceDesc is the service, written by hand over the well-known wrapper
// types so that no code generation is needed.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: "soplug.Plugin",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		unary[emptypb.Empty]("Kind", func(s *server, _ context.Context, _ *emptypb.Empty) (any, error) {
			return wrapperspb.String(string(s.kind)), nil
		}),
		unary[emptypb.Empty]("Version", func(s *server, _ context.Context, _ *emptypb.Empty) (any, error) {
			return wrapperspb.String(s.p.Version()), nil
		}),
		unary[emptypb.Empty]("IsAcceptable", func(s *server, _ context.Context, _ *emptypb.Empty) (any, error) {
			return wrapperspb.Bool(s.p.IsAcceptable()), nil
		}),
		unary[wrapperspb.BytesValue]("Transform", func(s *server, ctx context.Context, in *wrapperspb.BytesValue) (any, error) {
			if s.t == nil {
				return nil, status.Error(codes.Unimplemented, "this plugin is not a transformer")
			}
			req := golemFrom(ctx)
			if req != nil {
				ctx = golem.NewContext(ctx, req)
			}
			out, err := s.t.Transform(ctx, in.Value, configFrom(ctx))
			if err != nil {
				return nil, err
			}
			if req != nil {
				data, _ := json.Marshal(golemOut{Files: req.Files(), Env: req.Env()})
				_ = grpc.SetTrailer(ctx, metadata.Pairs(golemOutKey, string(data)))
			}
			return wrapperspb.Bytes(out), nil
		}),
		unary[emptypb.Empty]("Init", func(s *server, ctx context.Context, _ *emptypb.Empty) (any, error) {
			if s.o == nil {
				return nil, status.Error(codes.Unimplemented, "this plugin is not an oplog processor")
			}
			return &emptypb.Empty{}, s.o.Init(ctx, configFrom(ctx))
		}),
		unary[wrapperspb.BytesValue]("Process", func(s *server, ctx context.Context, in *wrapperspb.BytesValue) (any, error) {
			if s.o == nil {
				return nil, status.Error(codes.Unimplemented, "this plugin is not an oplog processor")
			}
			var b contract.Batch
			if err := json.Unmarshal(in.Value, &b); err != nil {
				return nil, status.Error(codes.InvalidArgument, "undecodable batch: "+err.Error())
			}
			return &emptypb.Empty{}, s.o.Process(ctx, b)
		}),
		unary[emptypb.Empty]("Close", func(s *server, ctx context.Context, _ *emptypb.Empty) (any, error) {
			if s.o == nil {
				return &emptypb.Empty{}, nil
			}
			return &emptypb.Empty{}, s.o.Close(ctx)
		}),
	},
}
