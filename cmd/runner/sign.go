package main

import (
	"encoding/base64"
	"flag"
	"fmt"
	"io"

	"github.com/soplug/soplug/internal/exitcode"
	"github.com/soplug/soplug/internal/trust"
)

// keygenCmd is "runner keygen KEYFILE": a new ed25519 key pair.
func keygenCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: runner keygen KEYFILE   (writes KEYFILE, private, and KEYFILE.pub)")
		return exitcode.Usage
	}
	pub, err := trust.WriteKeys(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "runner keygen: %v\n", err)
		return exitcode.Failure
	}
	fmt.Fprintf(stdout, "wrote %s (private: keep it with whoever signs) and %s.pub (give it to the daemon: --trusted-key)\npublic key: %s\n",
		pos[0], pos[0], base64.StdEncoding.EncodeToString(pub))
	return exitcode.OK
}

// signCmd is "runner plugins sign --key KEYFILE FILE".
func signCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugins sign", flag.ContinueOnError)
	key := fs.String("key", "", "the private key file")
	name := fs.String("name", "", "the file name the plugin will have in the plugins folder (default: FILE's own)")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 || *key == "" {
		fmt.Fprintln(stderr, "usage: runner plugins sign --key KEYFILE [--name NAME_vVERSION.so] FILE")
		return exitcode.Usage
	}
	priv, err := trust.ReadPrivateKey(*key)
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins sign: %v\n", err)
		return exitcode.NoInput
	}
	if err := trust.Sign(priv, pos[0], *name); err != nil {
		fmt.Fprintf(stderr, "runner plugins sign: %v\n", err)
		return exitcode.Failure
	}
	fmt.Fprintf(stdout, "wrote %s%s\n", pos[0], trust.SigSuffix)
	return exitcode.OK
}

// verifyCmd is "runner plugins verify FILE": the trust checks alone.
func verifyCmd(args []string, stdout, stderr io.Writer) int {
	var lf loaderFlags
	fs := flag.NewFlagSet("plugins verify", flag.ContinueOnError)
	lf.register(fs)
	name := fs.String("name", "", "the file name the signature was made for (default: FILE's own)")
	pos, ok := parseArgs(fs, args, stderr)
	if !ok {
		return exitcode.Usage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: runner plugins verify [--trusted-key PUB]... [--manifest SUMS] [--allowed-owner UID]... FILE")
		return exitcode.Usage
	}
	policy, err := lf.policy()
	if err != nil {
		fmt.Fprintf(stderr, "runner plugins verify: %v\n", err)
		return exitcode.Usage
	}
	if err := policy.Check(pos[0], *name); err != nil {
		fmt.Fprintf(stderr, "runner plugins verify: %s: %v\n", pos[0], err)
		return exitcode.Failure
	}
	fmt.Fprintf(stdout, "%s: trusted (owner and mode; %d trusted keys; manifest %q)\n", pos[0], len(policy.Keys), lf.manifest)
	return exitcode.OK
}
