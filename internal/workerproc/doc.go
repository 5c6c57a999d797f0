// Package workerproc runs ferry workers for tests: in the test's own
// process until the test ends (Start), or as child processes of the test
// binary (StartChild), so tests can SIGKILL a real worker, restart it, and
// read its peak memory.
//
// Test support only: it imports worker (it runs one), but only _test.go files
// import it — the worker's and the dashboard's tests, the fault suite, the
// cluster tests and the benchmarks (checked by internal/archtest).
package workerproc
