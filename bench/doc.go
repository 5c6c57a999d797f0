// Package bench holds ferry's benchmarks against the direct SDK path
// (`make bench`) and the test that a worker's memory is bounded by its
// configuration, not by file size. It has no code of its own: see the
// _test.go files and docs/performance.md.
//
// Two environment variables size the benchmarks: FERRY_BENCH_SIZE, the
// large upload's bytes (default 1 GiB), and FERRY_BENCH_OBJECTS, the
// objects BenchmarkMigrateMany migrates and re-runs (default 10,000; set
// 100000 for issue 12's Redis figure, which takes tens of minutes on 2
// cores). FERRY_BENCH_LOG=FILE writes the in-process worker's debug log
// there as JSON lines with nanosecond times (every task's start and end):
// where a run's time goes.
package bench
