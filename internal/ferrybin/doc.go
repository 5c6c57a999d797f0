// Package ferrybin runs the real ferry binary for tests: Build compiles
// cmd/ferry, Cmd runs it to its end (Run) or in the background until the
// test ends (Start, StartWorker), Config and WriteConfig make the ferry.yaml
// it reads, and LockedBuffer holds the output of a running process. The CLI
// tests of cmd/ferry and the fault suite's safety tests share it.
//
// Test support only: it imports no ferry package, and only _test.go files
// import it (checked by internal/archtest).
package ferrybin
