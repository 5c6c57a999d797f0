// Package faulttest is ferry's fault suite and the fault-injecting reverse
// proxy for S3 (Proxy) it is built on. Worker processes that the suite
// SIGKILLs come from internal/workerproc.
//
// The suite itself (the _test.go files) runs only with FERRY_FAULTS=1, which
// `make test-faults` sets: it takes minutes, kills processes and restarts
// Redis. `make test` skips it. FERRY_FAULTS_SOAK=30m (`make soak`) makes
// the kill loop (TestKillLoop) a soak of that length. See
// docs/reliability.md for what it proves.
//
// Test support only: only _test.go files may import it (today, besides its
// own, internal/clustertest's; checked by internal/archtest).
package faulttest
