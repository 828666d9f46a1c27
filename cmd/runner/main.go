// Command runner is the soplug daemon: it selects the newest acceptable
// version of every plugin in a folder and serves it.
//
// Usage:
//
//	runner run [flags]                              select, load and serve until SIGTERM
//	runner plugins check [flags]                    print the candidate table and verdicts
//	runner plugins install [flags] FILE             check FILE and place it atomically
//	runner plugins remove [flags] NAME VERSION      roll back: remove a version
//	runner plugins why [flags] FILE | NAME VERSION  every check of one candidate
//	runner plugins unquarantine [flags] NAME VERSION lift a version's quarantine
//	runner plugins build [flags] MODULE_DIR         build a plugin module so that a runner loads it
//	runner plugins new [flags] NAME [DIR]           write a ready plugin module
//	runner plugins contract DIR                     write the contract module this runner carries
//	runner plugins sign --key KEY FILE              write FILE.sig
//	runner plugins verify [flags] FILE              the trust checks alone
//	runner oplog activate|deactivate WORKER         resume or pause a worker's oplog delivery
//	runner oplog status                             every worker's delivery state
//	runner oplog repair WORKER                      cut a corrupt oplog back to its last good record
//	runner keygen KEYFILE                           a new ed25519 key pair
//	runner version                                  print the contract ABI and Go version
//
// Exit statuses:
//
//	0   success; for run, a clean stop on SIGTERM or SIGINT
//	1   check: a plugin has no acceptable version, or the folder holds no
//	    plugin; run: a failure (folder, state or socket unusable);
//	    install, remove: refused (the folder is unchanged); why: the
//	    candidate is not acceptable; build: the build failed or the
//	    runner refused its result
//	2   the Go runtime's status for a panic or fatal error (a crash)
//	64  bad usage (EX_USAGE)
//	66  the plugins folder or the given file cannot be read (EX_NOINPUT)
//	75  run: the plugins or the configuration changed; start me again (EX_TEMPFAIL)
//	78  run, check: the configuration file does not validate (EX_CONFIG)
//
// The runner is also its own probe child: the loader re-executes it with the
// hidden first argument __probe to open an untried plugin in a separate
// process.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/soplug/soplug/contract"
	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/loader/probe"
)

const usage = `usage:
  runner run [--plugins DIR] [--config FILE] [--listen ADDR] [--state-dir DIR] [--probe-timeout D] [--max-plugin-size BYTES]
             [--max-body BYTES] [--transform-timeout D] [--hang-after D]
             [--oplog-dir DIR | --oplog-nats URLS [--oplog-nats-replicas N] [--oplog-nats-creds FILE]
             [--oplog-nats-ca FILE] [--oplog-nats-cert FILE --oplog-nats-key FILE] [--oplog-nats-lease D]]
             [--oplog-batch N] [--oplog-commit-every N] [--oplog-parallel N]
             [--oplog-park-after N] [--oplog-hang-after D] [--control-socket PATH]
             [--debounce D] [--drain-timeout D] [--min-uptime D] [--restart-sec D] [--quarantine-after N]
             [--read-header-timeout D] [--read-timeout D] [--tokens FILE] [--tls-cert FILE --tls-key FILE] [--log-level L]
  runner plugins check [--plugins DIR] [--config FILE] [--state-dir DIR] [--probe-timeout D] [--max-plugin-size BYTES] [--json]
  runner plugins install [--plugins DIR] [--name N] [--version V] [--force] [--require-acceptable] [--json] FILE
  runner plugins remove [--plugins DIR] [--state-dir DIR] [--force] [--json] NAME VERSION
  runner plugins why [--plugins DIR] [--state-dir DIR] [--json] FILE | NAME VERSION
  runner plugins unquarantine [--state-dir DIR] NAME VERSION
  runner plugins build [--runner PATH | --for PATH] [--out DIR] [--name N] [--pkg PATH] [--exec] [--test] [--require-acceptable] [--json] MODULE_DIR
  runner plugins new [--kind transformer|oplog] [--module PATH] NAME [DIR]
  runner plugins contract DIR
  runner plugins sign --key KEYFILE [--name NAME_vVERSION.so] FILE
  runner plugins verify [--trusted-key PUB]... [--manifest SUMS] [--allowed-owner UID]... FILE
  runner oplog activate|deactivate [--control-socket PATH | --state-dir DIR | --oplog-dir DIR] WORKER
  runner oplog status [--control-socket PATH | --state-dir DIR | --oplog-dir DIR]
  runner oplog repair --oplog-dir DIR [--json] WORKER
  runner oplog migrate --from DIR [--state-dir DIR] --to URL[,URL...] [--oplog-nats-replicas N] [--oplog-nats-creds FILE] [--json]
  runner stop-post [--state-dir DIR]
  runner keygen KEYFILE
  runner version

trust flags (run, check, why, remove, verify): --allowed-owner UID (repeatable),
  --insecure-permissions, --manifest SUMS, --trusted-key PUB (repeatable)

exit status: 0 ok; 1 check: a plugin has no acceptable version, run: failure;
install, remove: refused; why: not acceptable; 64 bad usage; 66 unreadable folder or file;
75 run: plugins or configuration changed, start again; 78 the configuration does not validate
`

func main() {
	if code, ok := probe.Dispatch(os.Args); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs the command in args and returns its exit status. The
// context ends on SIGTERM or SIGINT.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) >= 1 && args[0] == "run":
		return runCmd(ctx, args[1:], stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "check":
		return checkCmd(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "unquarantine":
		return unquarantineCmd(args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "install":
		return installCmd(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "remove":
		return removeCmd(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "why":
		return whyCmd(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "build":
		return buildCmd(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "new":
		return newCmd(ctx, args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "contract":
		return contractCmd(args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "sign":
		return signCmd(args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "plugins" && args[1] == "verify":
		return verifyCmd(args[2:], stdout, stderr)
	case len(args) >= 1 && args[0] == "oplog":
		return oplogCmd(ctx, args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "stop-post":
		return stopPostCmd(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "keygen":
		return keygenCmd(args[1:], stdout, stderr)
	case len(args) == 1 && args[0] == "version":
		fmt.Fprintf(stdout, "soplug runner: contract ABI %d, %s %s/%s\n", contract.ABIVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitcode.OK
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help"):
		fmt.Fprint(stdout, usage)
		return exitcode.OK
	}
	fmt.Fprintf(stderr, "runner: unknown command %q\n%s", args, usage)
	return exitcode.Usage
}
