//go:build !soplug_exec

package main

// main is not run in a .so; package main needs one.
func main() {}
