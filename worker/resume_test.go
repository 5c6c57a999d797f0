package worker_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// bigUpload writes a file of size bytes in the allowed dir and enqueues its
// upload; it returns the task id and the file's SHA-256.
func bigUpload(t *testing.T, b *bundle, name string, size int) (string, [32]byte) {
	t.Helper()
	path, data := testenv.RandomFile(t, b.dir, name, size)
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "resume/"+name)}))
	return id, sha256.Sum256(data)
}

func checkObject(t *testing.T, b *bundle, key string, want [32]byte) {
	t.Helper()
	rc, err := b.storage(t).Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	if [32]byte(h.Sum(nil)) != want {
		t.Errorf("%s: SHA-256 differs from the source's", key)
	}
	ups, _ := b.storage(t).ListMultipartUploads(context.Background(), "")
	if len(ups) != 0 {
		t.Errorf("multipart uploads left behind: %+v", ups)
	}
}

// TestCrashResumesOnAnotherWorker kills a worker process with SIGKILL in the
// middle of a 210 MiB upload while a second worker runs: the second takes the
// upload over from its checkpoint within seconds (its ownership expired, see
// takeover.go), finishes it under the same task id, and asynq's own run of
// the task — after its lease recovery, a minute or two later — completes at
// once from the takeover's done mark without uploading anything again.
func TestCrashResumesOnAnotherWorker(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test waits for asynq's lease recovery (~1-2 min)")
	}
	const partConc = 4
	b := setup(t, nil)
	id, sum := bigUpload(t, b, "crash.bin", 42*storage.MinPartSize)
	first := b.startChild(t, "first", partConc)
	waitParts(t, b, id, 4)
	second := b.startChild(t, "second", partConc)
	before := waitParts(t, b, id, 12)
	first.kill(t)
	killed := time.Now()

	// Seconds from the kill until the second worker resumed.
	var resumed tasks.Progress
	for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		p, err := b.client.Progress(context.Background(), id)
		if err == nil && p.ResumedFrom > 0 {
			resumed = p
			break
		}
	}
	if resumed.ResumedFrom == 0 {
		t.Fatalf("the upload never resumed (second worker log: %s)", second.Log)
	}
	resumeAfter := time.Since(killed)
	p := b.wait(t, id, 4*time.Minute)
	if p.State != tasks.StateCompleted {
		t.Fatalf("after the crash the upload ended %+v", p)
	}
	checkObject(t, b, "resume/crash.bin", sum)
	a, c := first.partsUploaded(t), second.partsUploaded(t)
	twice := 0
	for n := range c {
		if a[n] {
			twice++
		}
	}
	t.Logf("crash test: killed at %d/%d parts; resumed from %d bytes %.1fs after the kill; first worker uploaded %d parts, second %d, %d uploaded twice",
		before.PartsDone, before.PartsTotal, resumed.ResumedFrom, resumeAfter.Seconds(), len(a), len(c), twice)
	if resumeAfter > 15*time.Second {
		t.Errorf("the upload resumed %.1fs after the kill; the takeover must continue it within 15s", resumeAfter.Seconds())
	}
	if twice > partConc {
		t.Errorf("%d parts were uploaded twice; at most the part concurrency (%d) may be", twice, partConc)
	}
	if len(a)+len(c)-twice != 42 {
		t.Errorf("parts uploaded: %d + %d - %d twice != 42", len(a), len(c), twice)
	}
	if n, _ := b.rdb.Exists(context.Background(), "ferry:ckpt:{"+id+"}").Result(); n != 0 {
		t.Error("the checkpoint outlived the upload")
	}
	if taken := logged[struct{}](t, second, "taking over a task whose worker stopped renewing its ownership"); len(taken) != 1 {
		t.Errorf("the second worker logged %d takeovers; want 1", len(taken))
	}

	// asynq still shows the dead worker's task active until its lease
	// recovery retries it; that run must finish from the done mark.
	insp := b.client.Inspector()
	for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(time.Second) {
		ti, err := insp.GetTaskInfo(b.queue, id)
		if err != nil || ti.State == asynq.TaskStateCompleted {
			break // deleted on success (no retention) or completed
		}
		if ti.State == asynq.TaskStateArchived {
			t.Fatalf("asynq archived the task: %s", ti.LastErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("asynq's run of the task never finished: %+v", ti)
		}
	}
	if c2 := second.partsUploaded(t); len(c2) != len(c) {
		t.Errorf("asynq's recovery run uploaded %d parts again; want 0 (the takeover completed the upload)", len(c2)-len(c))
	}
	if done := logged[struct{}](t, second, "a takeover finished this task"); len(done) != 1 {
		t.Errorf("asynq's recovery run did not find the takeover's done mark (logged %d times; log %s)", len(done), second.Log)
	}
	if n, _ := b.rdb.Exists(context.Background(), "ferry:own:{"+id+"}", "ferry:own:{"+id+"}:done").Result(); n != 0 {
		t.Errorf("%d ownership keys outlived the task", n)
	}
	if p, _ := b.client.Progress(context.Background(), id); p.State != tasks.StateCompleted {
		t.Errorf("progress after asynq's run: %+v", p)
	}
}

// TestPausedWorkerLosesItsUpload freezes a worker process (SIGSTOP) mid-upload
// for longer than its ownership's expiry: a live worker takes the upload
// over. When the frozen worker comes back (SIGCONT) its ownership is gone: it
// records no part, neither aborts nor completes the upload, and its own run of
// the task finishes from the takeover's done mark, so asynq sees the task
// complete without waiting for its lease recovery.
func TestPausedWorkerLosesItsUpload(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("freezes a worker process for several seconds")
	}
	const partConc = 2
	b := setup(t, nil)
	id, sum := bigUpload(t, b, "paused.bin", 30*storage.MinPartSize)
	first := b.startChild(t, "first", partConc)
	waitParts(t, b, id, 3)
	second := b.startChild(t, "second", partConc)
	waitParts(t, b, id, 6)
	if err := syscall.Kill(first.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			_ = syscall.Kill(first.Pid(), syscall.SIGCONT)
		}
	}()
	for deadline := time.Now().Add(time.Minute); len(logged[struct{}](t, second, "taking over a task whose worker stopped renewing its ownership")) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no takeover while the first worker was frozen (log %s)", second.Log)
		}
	}
	if err := syscall.Kill(first.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	resumed := time.Now()

	if p := b.wait(t, id, 3*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("upload ended %+v", p)
	}
	checkObject(t, b, "resume/paused.bin", sum)
	// The first worker's run is still asynq's: it must end by itself, from
	// the done mark, well before a lease recovery (>= 60 s) could.
	insp := b.client.Inspector()
	for deadline := resumed.Add(45 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		ti, err := insp.GetTaskInfo(b.queue, id)
		if err != nil || ti.State == asynq.TaskStateCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("asynq's task is still %v 45s after the frozen worker came back (log %s)", ti.State, first.Log)
		}
	}
	if n := len(logged[struct{}](t, first, "lost the ownership of this task to another worker (paused longer than its expiry?); stopped writing, waiting for that worker")); n != 1 {
		t.Errorf("the frozen worker logged losing its ownership %d times; want 1 (log %s)", n, first.Log)
	}
	if n := len(logged[struct{}](t, first, "a takeover finished this task")); n != 1 {
		t.Errorf("the frozen worker's run did not finish from the done mark (%d; log %s)", n, first.Log)
	}
	if n := len(logged[struct{}](t, first, "multipart upload aborted")); n != 0 {
		t.Errorf("the frozen worker aborted an upload %d times", n)
	}
	if ti, err := insp.GetTaskInfo(b.queue, id); err == nil && ti.Retried != 0 {
		t.Errorf("the task counted %d retries; a takeover the task's own run waits for counts none", ti.Retried)
	}
}

// TestGracefulShutdownResumes stops a worker process with SIGTERM mid-upload:
// it stops at a part boundary, keeps the checkpoint, asynq requeues the task
// without counting a retry, and another worker finishes it. Its progress
// names the parts in flight (never more than the part concurrency) and,
// after the resume, exactly the parts the first worker uploaded as resumed
// (the dashboard's parts map).
func TestGracefulShutdownResumes(t *testing.T) {
	t.Parallel()
	const partConc = 3
	b := setup(t, nil)
	id, sum := bigUpload(t, b, "graceful.bin", 30*storage.MinPartSize)
	updates, err := b.client.Watch(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	activeSeen := make(chan [][]int, 1)
	go func() {
		var seen [][]int
		for p := range updates {
			ps, err := tasks.ParseParts(p.PartsActive)
			if err != nil {
				t.Errorf("parts_active %q: %v", p.PartsActive, err)
			}
			if len(ps) > 0 {
				seen = append(seen, ps)
			}
		}
		activeSeen <- seen
	}()
	first := b.startChild(t, "first", partConc)
	waitParts(t, b, id, 8)
	first.terminate(t)
	if n, _ := b.rdb.Exists(context.Background(), "ferry:ckpt:{"+id+"}").Result(); n != 1 {
		t.Fatal("graceful shutdown lost the checkpoint")
	}
	second := b.startChild(t, "second", partConc)
	p := b.wait(t, id, 3*time.Minute)
	if p.State != tasks.StateCompleted || p.ResumedFrom == 0 {
		t.Fatalf("after shutdown the upload ended %+v (log %s)", p, second.Log)
	}
	checkObject(t, b, "resume/graceful.bin", sum)
	a, c := first.partsUploaded(t), second.partsUploaded(t)
	for n := range c {
		if a[n] {
			t.Errorf("part %d was uploaded by both workers; a graceful stop loses no part", n)
		}
	}
	if ti := b.info(t, id); ti.Retried != 0 {
		t.Errorf("a graceful shutdown counted %d retries; want 0 (requeued)", ti.Retried)
	}
	resumed, err := tasks.ParseParts(p.PartsResumed)
	if err != nil || len(resumed) != len(a) || len(resumed) == 0 {
		t.Errorf("parts_resumed %q (%v); want the %d parts the first worker uploaded", p.PartsResumed, err, len(a))
	}
	for _, n := range resumed {
		if !a[n] {
			t.Errorf("part %d is reported resumed; the first worker did not upload it", n)
		}
	}
	if p.PartsActive != "" {
		t.Errorf("a completed upload reports parts %q in flight", p.PartsActive)
	}
	seen := <-activeSeen
	if len(seen) == 0 {
		t.Error("no update named a part in flight")
	}
	for _, ps := range seen {
		if len(ps) > partConc {
			t.Errorf("parts %v in flight at once; the part concurrency is %d", ps, partConc)
		}
	}
}

// TestChangedSourceRestarts: a checkpoint whose source file changed is
// abandoned (its upload aborted) and the new bytes are uploaded.
func TestChangedSourceRestarts(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	path, _ := testenv.RandomFile(t, b.dir, "changing.bin", 3*storage.MinPartSize)
	// A stale checkpoint of this task: an upload started on the old file.
	old, err := s.StartMultipartUpload(ctx, "resume/changing.bin", &storage.MultipartOptions{PartSize: storage.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	id := "changed-" + fmt.Sprint(time.Now().UnixNano())
	store := checkpoint.New(b.rdb, checkpoint.Options{})
	if err := store.Create(ctx, id, checkpoint.Plan{UploadID: old.UploadID, Profile: "default", Bucket: b.bucket,
		Key: "resume/changing.bin", PartSize: storage.MinPartSize, PartCount: 3, TotalSize: 3 * storage.MinPartSize,
		Fingerprint: "file:1:1", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.enqueue(t, mustTask(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
		Dest: s3loc("", b.bucket, "resume/changing.bin")})), nil, asynq.TaskID(id))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted || p.ResumedFrom != 0 {
		t.Fatalf("upload with a changed source: %+v", p)
	}
	data, _ := os.ReadFile(path)
	checkObject(t, b, "resume/changing.bin", sha256.Sum256(data))
	if _, err := s.ListParts(ctx, "resume/changing.bin", old.UploadID); err == nil {
		t.Error("the stale upload was not aborted")
	}
}

// TestChecksumModeChangeRestarts: an upload checkpointed under one
// checksum mode of its profile (created with a CRC32C algorithm on
// versitygw with integrity on, without one on generic or with integrity
// off) and resumed by a worker whose profile of the same name now gives
// new uploads the other mode is started over: its old upload, which the
// new mode's parts or Complete would not fit, is aborted, and the object
// completes byte for byte. A profile changed without changing the mode
// (generic to versitygw, integrity off on both) resumes as before. The
// task may not retry (MaxRetry 0): a resume that fails once fails it.
func TestChecksumModeChangeRestarts(t *testing.T) {
	t.Parallel()
	off := false
	profile := func(srv *testenv.S3Server, provider storage.Provider, integrity bool) map[string]storage.Config {
		ps := profilesFor(srv)
		p := ps["default"]
		p.Provider = provider
		if !integrity {
			p.Integrity = &off
		}
		ps["default"] = p
		return ps
	}
	type mode struct {
		provider  storage.Provider
		integrity bool
	}
	for _, tc := range []struct {
		desc     string
		was, now mode
		restart  bool
	}{
		{desc: "generic to versitygw", was: mode{storage.ProviderGeneric, true}, now: mode{storage.ProviderVersity, true}, restart: true},
		{desc: "versitygw to generic", was: mode{storage.ProviderVersity, true}, now: mode{storage.ProviderGeneric, true}, restart: true},
		{desc: "versitygw integrity switched off", was: mode{storage.ProviderVersity, true}, now: mode{storage.ProviderVersity, false}, restart: true},
		{desc: "generic to versitygw, integrity off", was: mode{storage.ProviderGeneric, false}, now: mode{storage.ProviderVersity, false}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			const partConc, parts = 2, 20
			b := setup(t, nil)
			ctx := context.Background()
			key := "resume/mode.bin"
			path, data := testenv.RandomFile(t, b.dir, "mode.bin", parts*storage.MinPartSize-99)
			id := b.enqueue(t, mustTask(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
				Dest: s3loc("", b.bucket, key)})), nil, asynq.MaxRetry(0))
			first := b.startChildWith(t, "first", partConc, profile(b.s3, tc.was.provider, tc.was.integrity))
			waitParts(t, b, id, 4)
			first.terminate(t)
			old, err := b.rdb.HGet(ctx, "ferry:ckpt:{"+id+"}", "upload_id").Result()
			if err != nil {
				t.Fatalf("no checkpoint after the graceful stop: %v", err)
			}
			second := b.startChildWith(t, "second", partConc, profile(b.s3, tc.now.provider, tc.now.integrity))
			p := b.wait(t, id, 2*time.Minute)
			if p.State != tasks.StateCompleted {
				t.Fatalf("resumed under the changed profile, the upload ended %s: %s (log %s)", p.State, p.Error, second.Log)
			}
			if restarted := p.ResumedFrom == 0; restarted != tc.restart {
				t.Errorf("the upload restarted: %v (resumed from %d bytes); want %v", restarted, p.ResumedFrom, tc.restart)
			}
			checkObject(t, b, key, sha256.Sum256(data))
			_, err = b.storage(t).ListParts(ctx, key, old)
			if tc.restart && !errors.Is(err, storage.ErrUploadNotFound) {
				t.Errorf("the old upload %s was not aborted: ListParts answered %v", old, err)
			}
			changed := logged[struct {
				Was string `json:"was"`
				Now string `json:"now"`
			}](t, second, "checksum mode changed since the checkpoint; aborting the old upload and starting over")
			if tc.restart && (len(changed) != 1 || changed[0].Was == changed[0].Now) {
				t.Errorf("logged the change of checksum mode %+v; want once, with what it was and is", changed)
			}
			if !tc.restart && len(changed) != 0 {
				t.Errorf("logged a change of checksum mode %+v; the mode did not change", changed)
			}
		})
	}
}

// TestLostCompleteIsRecognised: Complete succeeded but its answer was lost,
// so the retry finds the upload gone; the object carrying this task's id is
// accepted instead of uploading it all again.
func TestLostCompleteIsRecognised(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	path, data := testenv.RandomFile(t, b.dir, "lost.bin", storage.MinPartSize+10)
	id := "lost-" + fmt.Sprint(time.Now().UnixNano())
	u, err := s.StartMultipartUpload(ctx, "resume/lost.bin", &storage.MultipartOptions{PartSize: storage.MinPartSize,
		Metadata: map[string]string{"ferry-task-id": id}})
	if err != nil {
		t.Fatal(err)
	}
	store := checkpoint.New(b.rdb, checkpoint.Options{})
	if err := store.Create(ctx, id, checkpoint.Plan{UploadID: u.UploadID, Profile: "default", Bucket: b.bucket,
		Key: "resume/lost.bin", PartSize: storage.MinPartSize, PartCount: 2, TotalSize: int64(len(data)),
		Fingerprint: worker.FileFingerprint(t, path), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for n, chunk := range [][]byte{data[:storage.MinPartSize], data[storage.MinPartSize:]} {
		p, err := s.UploadPart(ctx, u, n+1, chunk)
		if err != nil {
			t.Fatal(err)
		}
		_ = store.RecordPart(ctx, id, u.UploadID, checkpoint.Part{Number: p.Number, ETag: p.ETag, Size: p.Size})
	}
	if _, err := s.CompleteMultipartUpload(ctx, u); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.enqueue(t, mustTask(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
		Dest: s3loc("", b.bucket, "resume/lost.bin")})), nil, asynq.TaskID(id))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted || p.PartsDone != 0 {
		t.Fatalf("retry after a lost Complete: %+v; want completed without uploading parts", p)
	}
	checkObject(t, b, "resume/lost.bin", sha256.Sum256(data))
}

func mustTask(t *asynq.Task, err error) *asynq.Task {
	if err != nil {
		panic(err)
	}
	return t
}
