package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/quarantine"
)

// stopPostCmd is "runner stop-post", the unit's ExecStopPost=: it records
// how systemd saw the run end ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS)
// in the state directory, the evidence the next start weighs before it
// blames a plugin (an OOM kill or a stop that timed out blames none).
func stopPostCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stop-post", flag.ContinueOnError)
	dir := fs.String("state-dir", os.Getenv("STATE_DIRECTORY"), "the runner's state directory (default $STATE_DIRECTORY)")
	if !parse(fs, args, stderr) {
		return exitcode.Usage
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "runner stop-post: no state directory: give --state-dir or set STATE_DIRECTORY")
		return exitcode.Usage
	}
	stop := quarantine.Stop{Result: os.Getenv("SERVICE_RESULT"), ExitCode: os.Getenv("EXIT_CODE"), ExitStatus: os.Getenv("EXIT_STATUS")}
	if stop.Result == "" {
		fmt.Fprintln(stderr, "runner stop-post: no $SERVICE_RESULT: this command is the unit's ExecStopPost=, which systemd runs with it set")
		return exitcode.Usage
	}
	if err := (&quarantine.Store{Dir: *dir}).RecordStop(stop); err != nil {
		fmt.Fprintf(stderr, "runner stop-post: %v\n", err)
		return exitcode.Failure
	}
	fmt.Fprintf(stdout, "recorded %s in %s\n", stop, *dir)
	return exitcode.OK
}
