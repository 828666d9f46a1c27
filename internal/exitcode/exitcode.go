// Package exitcode is the one definition of the runner's exit statuses,
// used by the daemon, the CLI and the tests. The README's table and the
// unit file (RestartForceExitStatus=75, SuccessExitStatus=75) say the same.
package exitcode

const (
	// OK is a clean end: a command that did its job, a daemon stopped by
	// SIGTERM or SIGINT.
	OK = 0
	// Failure is a real failure: systemd's Restart=on-failure restarts
	// it, and its StartLimit* counts it.
	Failure = 1
	// NoPlugin is what `plugins check` and `plugins remove` end with when
	// a plugin would be left with no acceptable version: a failure.
	NoPlugin = Failure
	// Usage is a bad command line: an unknown flag or a bad value
	// (EX_USAGE).
	Usage = 64
	// NoInput is an input file or folder that does not exist or cannot be
	// read (EX_NOINPUT).
	NoInput = 66
	// InUse is a state or oplog directory that another live runner owns
	// (EX_CANTCREAT).
	InUse = 73
	// Restart is the daemon's end after a change of its plugins or
	// configuration: systemd restarts it on the new set
	// (RestartForceExitStatus=75, SuccessExitStatus=75).
	Restart = 75
	// Config is an installation configuration file that does not
	// validate (EX_CONFIG).
	Config = 78
)
