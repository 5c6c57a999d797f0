// Package workerproc runs ferry workers as child processes of a test binary,
// so tests can SIGKILL a real worker, restart it, and read its peak memory.
//
// Test support only: it imports worker (it runs one), but only _test.go files
// import it — the worker's tests, the fault suite and the benchmarks (checked
// by internal/archtest).
package workerproc
