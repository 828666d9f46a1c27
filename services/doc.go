// Package services are the runner's services: what the daemon serves on
// its listener for the selected plugins, each a daemon.Service (Start,
// Drain, Stop). Transform serves the Transformers over HTTP (package
// transform); Oplog takes workers' appends and delivers their oplogs to
// each OplogProcessor (package oplog), with its control socket. The
// daemon knows nothing of what they do; cmd/runner builds them from its
// flags.
package services
