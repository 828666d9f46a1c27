package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/soplug/soplug/internal/oplog"
	"github.com/soplug/soplug/internal/oplog/natsjournal"
)

// natsFlags are run's --oplog-nats-* flags: the oplog on NATS JetStream
// instead of a folder.
type natsFlags struct {
	urls, creds, ca, cert, key string
	replicas                   int
	lease                      time.Duration
}

func registerNATS(fs *flag.FlagSet, f *natsFlags) {
	fs.StringVar(&f.urls, "oplog-nats", "", "keep the oplog on NATS JetStream at these servers (URL[,URL...]) instead of --oplog-dir")
	fs.StringVar(&f.creds, "oplog-nats-creds", "", "a NATS credentials file (JWT and NKey seed) for --oplog-nats")
	fs.StringVar(&f.ca, "oplog-nats-ca", "", "the CA certificates (PEM) that sign the NATS servers' TLS certificates")
	fs.StringVar(&f.cert, "oplog-nats-cert", "", "a client TLS certificate (PEM) for NATS; with --oplog-nats-key")
	fs.StringVar(&f.key, "oplog-nats-key", "", "the client TLS certificate's key (PEM)")
	fs.DurationVar(&f.lease, "oplog-nats-lease", natsjournal.DefaultLeaseTTL, "how long a runner's lease on a worker lasts past its last cursor write: a runner that dies is replaced that long after")
	fs.IntVar(&f.replicas, "oplog-nats-replicas", 3, "replicas of the oplog stream and cursor bucket (1 for a single server); one that exists with another count is an error")
}

// check reports a combination of flags that cannot work, naming them.
func (f *natsFlags) check(oplogDir string) error {
	files := []struct{ name, path string }{
		{"--oplog-nats-creds", f.creds}, {"--oplog-nats-ca", f.ca}, {"--oplog-nats-cert", f.cert}, {"--oplog-nats-key", f.key},
	}
	switch {
	case f.urls == "":
		for _, file := range files {
			if file.path != "" {
				return fmt.Errorf("%s needs --oplog-nats", file.name)
			}
		}
	case oplogDir != "":
		return fmt.Errorf("--oplog-dir and --oplog-nats: the oplog is in one place; give one of them")
	case (f.cert == "") != (f.key == ""):
		return fmt.Errorf("--oplog-nats-cert and --oplog-nats-key go together")
	case f.replicas < 1:
		return fmt.Errorf("--oplog-nats-replicas %d: at least 1", f.replicas)
	case f.lease < 100*time.Millisecond:
		return fmt.Errorf("--oplog-nats-lease %v: at least 100ms", f.lease)
	}
	for _, file := range files {
		if file.path == "" {
			continue
		}
		if _, err := os.Stat(file.path); err != nil {
			return fmt.Errorf("%s: %w", file.name, err)
		}
	}
	return nil
}

// journal returns the opener of the JetStream journal the flags name.
func (f *natsFlags) journal(log *slog.Logger) func(ctx context.Context) (oplog.Journal, func() error, error) {
	return func(ctx context.Context) (oplog.Journal, func() error, error) {
		host, _ := os.Hostname()
		opts := []nats.Option{
			nats.Name(fmt.Sprintf("soplug runner %s[%d]", host, os.Getpid())),
			nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("oplog: NATS disconnected", "err", err) }),
			nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("oplog: NATS reconnected", "server", nc.ConnectedUrlRedacted()) }),
		}
		if f.creds != "" {
			opts = append(opts, nats.UserCredentials(f.creds))
		}
		if f.ca != "" {
			opts = append(opts, nats.RootCAs(f.ca))
		}
		if f.cert != "" {
			opts = append(opts, nats.ClientCert(f.cert, f.key))
		}
		nc, err := nats.Connect(f.urls, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("oplog: connecting to NATS at %s: %w", f.urls, err)
		}
		j, err := natsjournal.New(ctx, nc, natsjournal.Config{Replicas: f.replicas, LeaseTTL: f.lease, Logger: log})
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		log.Info("oplog on NATS JetStream", "servers", f.urls, "stream", j.Config().Stream, "replicas", f.replicas, "owner", j.Config().Owner, "lease", f.lease)
		return j, func() error { return nc.Drain() }, nil
	}
}
