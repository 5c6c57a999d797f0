package bench

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

func asynqQueue(q string) asynq.Option { return asynq.Queue(q) }

func nonRaceBinary(tb testing.TB) string {
	return workerproc.NonRaceTestBinary(tb, "github.com/ferryhq/ferry/bench", tb.TempDir())
}

func startChildT(tb testing.TB, bin, name string, cc workerproc.ChildConfig) *workerproc.Child {
	return workerproc.StartChild(tb, bin, tb.TempDir(), name, cc)
}

func vmHWM(tb testing.TB, pid int) int64 {
	tb.Helper()
	n, err := workerproc.VmHWM(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestWorkerMemoryBounded uploads files much larger than the worker's
// buffer budget through a worker process and checks its peak RSS (VmHWM)
// stays under concurrency × part_concurrency × part_size + 64 MiB: memory
// is bounded by configuration, not by file size. The child is built without
// the race detector, whose shadow memory would dominate RSS.
func TestWorkerMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker process and uploads 512 MiB")
	}
	t.Parallel()
	const (
		conc, pc = 2, 3
		partSize = storage.MinPartSize
		fileSize = 256 * mib
		bound    = conc*pc*partSize + 64*mib
	)
	e := newEnv(t)
	path := writeRandomFile(t, e.dir, "big.bin", fileSize)
	bin := ""
	if raceEnabled {
		bin = nonRaceBinary(t)
	}
	cc := e.childConfig(t)
	cc.Concurrency, cc.PartConcurrency, cc.PartSize = conc, pc, partSize
	child := startChildT(t, bin, "mem", cc)
	ids := []string{
		e.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: tasks.Location{Bucket: e.bucket, Key: "a"}})),
		e.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: tasks.Location{Bucket: e.bucket, Key: "b"}})),
	}
	for _, id := range ids {
		e.waitDone(t, id, 5*time.Minute)
	}
	hwm := vmHWM(t, child.Pid())
	t.Logf("worker peak RSS %.1f MiB for 2 × %d MiB uploads; bound %d MiB (%d × %d × %d MiB + 64 MiB)",
		float64(hwm)/mib, fileSize/mib, bound/mib, conc, pc, partSize/mib)
	if hwm > bound {
		t.Errorf("worker peak RSS %.1f MiB exceeds the bound %d MiB: memory is not bounded by configuration (log %s)", float64(hwm)/mib, bound/mib, child.Log)
	}
	for _, k := range []string{"a", "b"} {
		f, err := e.storage(t).Info(context.Background(), k)
		if err != nil || f.Size != fileSize {
			t.Errorf("object %s: %+v, %v", k, f, err)
		}
	}
}

// storage opens the bench bucket directly, to check results.
func (e *env) storage(tb testing.TB) *storage.S3 {
	tb.Helper()
	cfg := e.profiles()["default"]
	cfg.Bucket = e.bucket
	s, err := storage.New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
