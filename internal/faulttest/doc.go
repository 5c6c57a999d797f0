// Package faulttest is ferry's fault suite and the pieces it is built from:
// a fault-injecting reverse proxy for S3 (Proxy), and worker processes
// started from a test binary so tests can SIGKILL them (StartChild,
// ChildMain) and read their peak memory (VmHWM).
//
// The suite itself (the _test.go files) runs only with FERRY_FAULTS=1, which
// `make test-faults` sets: it takes minutes, kills processes and restarts
// Redis. `make test` skips it. See docs/reliability.md for what it proves.
//
// It is not for production code: only tests and benchmarks import it.
package faulttest
