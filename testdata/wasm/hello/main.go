// Command hello is compiled to a WASI core module for the transform tests:
// GOOS=wasip1 GOARCH=wasm go build -trimpath -o hello.wasm ./hello
package main

func main() { println("hello from a WASI module") }
