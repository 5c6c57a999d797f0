// Package bench holds ferry's benchmarks against the direct SDK path
// (`make bench`) and the test that a worker's memory is bounded by its
// configuration, not by file size. It has no code of its own: see the
// _test.go files and docs/performance.md.
package bench
