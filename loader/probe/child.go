package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"plugin"
	"time"

	"github.com/soplug/soplug/contract"
)

// Arg is the first command-line argument that tells a program to act as a
// probe child: a program that uses the loader's default probe command must
// call Main when it sees it, before doing anything else.
const Arg = "__probe"

// ReportFD is the file descriptor of the report pipe in the child.
const ReportFD = 3

// Message is one line of the child's report. A child writes a Message with
// Step set before each step, then one with Done set.
type Message struct {
	// Step is the step about to start.
	Step Step `json:"step,omitempty"`
	// Done marks the final message.
	Done bool `json:"done,omitempty"`
	// ABI is the child's contract.ABIVersion, in the final message.
	ABI int `json:"abi,omitempty"`
	// Report is set in the final message: all Inspect learned, which is
	// everything when the plugin is acceptable.
	Report *Report `json:"report,omitempty"`
	// Error is set in the final message when it is not.
	Error *Error `json:"error,omitempty"`
}

// Dispatch runs the probe child when args (a program's os.Args) ask for
// it, and returns its exit status and true; otherwise 0 and false. A
// program that uses the loader's default probe command calls it first
// thing in main, and a test binary that probes in TestMain:
//
//	if code, ok := probe.Dispatch(os.Args); ok {
//		os.Exit(code)
//	}
func Dispatch(args []string) (int, bool) {
	if len(args) < 2 || args[1] != Arg {
		return 0, false
	}
	return Main(args[2:], ReportWriter()), true
}

// ReportWriter returns the report pipe the parent passed as ReportFD, or
// stdout when the program was started by hand without one.
func ReportWriter() io.Writer {
	f := os.NewFile(ReportFD, "probe-report")
	if f == nil {
		return os.Stdout
	}
	if _, err := f.Stat(); err != nil {
		return os.Stdout
	}
	return f
}

// Main is the probe child: args are the arguments after Arg,
// [-timeout D] PATH. It inspects the plugin at PATH with plugin.Open and
// writes its Messages to report. PATH "-" reads the path as one line from
// standard input first, so that a child can be started, its runtime and
// packages initialised, before the path is known (the loader's spare
// child); the timeout runs from when the path is read. It returns the
// process exit status: 0 when it wrote a final message (whatever the
// verdict), 2 for bad arguments.
func Main(args []string, report io.Writer) int {
	return run(args, os.Stdin, report)
}

// StdinPath is the PATH argument that makes Main read the path from
// standard input.
const StdinPath = "-"

func run(args []string, stdin io.Reader, report io.Writer) int {
	fs := flag.NewFlagSet(Arg, flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "how long the plugin's calls may take in all")
	enc := json.NewEncoder(report)
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		_ = enc.Encode(Message{Done: true, ABI: contract.ABIVersion, Error: &Error{
			Code: CodeUsage, Msg: fmt.Sprintf("usage: %s [-timeout D] PATH (got %q)", Arg, args)}})
		return 2
	}
	path := fs.Arg(0)
	if path == StdinPath {
		line, err := bufio.NewReader(io.LimitReader(stdin, 64<<10)).ReadString('\n')
		if err != nil || len(line) < 2 {
			_ = enc.Encode(Message{Done: true, ABI: contract.ABIVersion, Error: &Error{
				Code: CodeUsage, Msg: fmt.Sprintf("no path on standard input (read %q: %v)", line, err)}})
			return 2
		}
		path = line[:len(line)-1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, err := Inspect(ctx, path, plugin.Open, func(s Step) { _ = enc.Encode(Message{Step: s}) })
	final := Message{Done: true, ABI: contract.ABIVersion, Report: &rep}
	if err != nil {
		final.Error = err.(*Error)
	}
	if err := enc.Encode(final); err != nil {
		fmt.Fprintf(os.Stderr, "probe: writing report: %v\n", err)
		return 1
	}
	return 0
}
