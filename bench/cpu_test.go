package bench

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks run client, Redis and S3 server on one machine, two cores
// here: a path's speed is then mostly what its CPU costs, and a run's
// figure swings with whatever else the machine does (the direct path alone
// moved between 500 and 1,100 objects/s from one run to the next). The CPU
// a path used per object, counted over the benchmark's own process and its
// child processes (the versitygw and redis-server testenv started), barely
// moves with that noise: it says which path costs more, and what. Servers
// the benchmarks are pointed at (FERRY_TEST_REDIS_ADDR, FERRY_TEST_S3_*)
// are not children and are not counted.

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU returns the CPU time (user and system) used so far by this
// process and by each of its children (by command name); nil where /proc
// cannot be read (not Linux).
func processCPU() map[string]time.Duration {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	out := map[string]time.Duration{}
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // ended meanwhile
		}
		// pid (comm) state ppid ... utime stime: comm may hold spaces.
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		pid, comm, f := strings.TrimSpace(s[:open]), s[open+1:end], strings.Fields(s[end+1:])
		if len(f) < 13 || (pid != self && f[1] != self) {
			continue
		}
		if pid == self {
			comm = "bench"
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[comm] += time.Duration(utime+stime) * clockTick
	}
	return out
}

// cpuMeter adds up the CPU time of one path over the rounds of a
// benchmark.
type cpuMeter struct {
	total time.Duration
	by    map[string]time.Duration // per process: "bench", "versitygw", "redis-server"
	ok    bool
}

// measure runs f and adds the CPU this process and its children used
// meanwhile.
func (m *cpuMeter) measure(f func()) {
	before := processCPU()
	f()
	after := processCPU()
	if before == nil || after == nil {
		return
	}
	m.ok = true
	if m.by == nil {
		m.by = map[string]time.Duration{}
	}
	for name, t := range after {
		m.total += t - before[name]
		m.by[name] += t - before[name]
	}
}

// reportCPU reports each path's CPU per object in milliseconds
// (ferry-cpu-ms/obj, direct-cpu-ms/obj) and direct's over ferry's as
// cpu-ratio: the ratio of speeds the two would have on a machine whose
// cores are the limit. It logs each path's split by process (shown with
// -v, or when the benchmark fails). Nothing is reported where /proc is
// not there.
func reportCPU(b *testing.B, objects int, ferry, direct cpuMeter) {
	if !ferry.ok || !direct.ok {
		return
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(objects) }
	b.ReportMetric(ms(ferry.total), "ferry-cpu-ms/obj")
	b.ReportMetric(ms(direct.total), "direct-cpu-ms/obj")
	b.ReportMetric(ms(direct.total)/ms(ferry.total), "cpu-ratio")
	split := func(m cpuMeter) string {
		names := slices.Sorted(maps.Keys(m.by))
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %.3f", n, ms(m.by[n]))
		}
		return strings.Join(parts, ", ")
	}
	b.Logf("CPU ms per object: ferry: %s; direct: %s", split(ferry), split(direct))
}
