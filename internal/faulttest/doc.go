// Package faulttest is ferry's fault suite and the fault-injecting reverse
// proxy for S3 (Proxy) it is built on. Worker processes that the suite
// SIGKILLs come from internal/workerproc.
//
// The suite itself (the _test.go files) runs only with FERRY_FAULTS=1, which
// `make test-faults` sets: it takes minutes, kills processes and restarts
// Redis. `make test` skips it. See docs/reliability.md for what it proves.
//
// It is not for production code: only tests and benchmarks import it.
package faulttest
