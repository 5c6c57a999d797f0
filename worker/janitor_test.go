package worker_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestJanitorAbortsOnlyFerrysOrphans runs the janitor with a TTL of zero
// over a bucket holding: another application's upload (made with the SDK
// directly), ferry's uploads whose task is gone (registered, only an
// intent — the worker stopped between creating it and recording its id —
// and a stale checkpoint), and ferry's uploads whose task is pending,
// active or waiting to retry. Only the orphans of gone tasks are aborted;
// the foreign upload is counted and survives.
//
// Not parallel, like every test that runs the janitor: the upload registry
// is one for all the tests, and a janitor run with a TTL of zero in another
// test aborts the orphans this one counts on (it failed 1 run in 4).
func TestJanitorAbortsOnlyFerrysOrphans(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	w := b.start(t)

	foreign, err := s.StartMultipartUpload(ctx, "j/foreign", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gone := "janitor-gone-" + b.queue
	orphan, err := worker.RegisterUpload(ctx, w, s, gone, "default", "j/orphan")
	if err != nil {
		t.Fatal(err)
	}
	crashed := "janitor-crashed-" + b.queue
	if err := worker.RegisterIntent(ctx, w, s, crashed, "default", "j/unrecorded"); err != nil {
		t.Fatal(err)
	}
	unrecorded, err := s.StartMultipartUpload(ctx, "j/unrecorded", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Two gone tasks' intents on one key and one upload there: either could
	// own it (or neither: another application), so the janitor must not
	// guess — it survives.
	for _, id := range []string{"janitor-twin-a-" + b.queue, "janitor-twin-b-" + b.queue} {
		if err := worker.RegisterIntent(ctx, w, s, id, "default", "j/shared"); err != nil {
			t.Fatal(err)
		}
	}
	ambiguous, err := s.StartMultipartUpload(ctx, "j/shared", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A stale checkpoint: its task is gone, so its upload is an orphan too.
	store := checkpoint.New(b.rdb, checkpoint.Options{})
	stale, err := s.StartMultipartUpload(ctx, "j/stale", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	staleID := "janitor-stale-" + b.queue
	if err := store.Create(ctx, staleID, checkpoint.Plan{UploadID: stale.UploadID, Profile: "default", Bucket: b.bucket,
		Key: "j/stale", PartSize: storage.MinPartSize, TotalSize: -1, Fingerprint: "x", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}

	// Live owners: a pending task (in a queue no worker serves), an active
	// one and one waiting to retry (run by an asynq server of the test).
	pendingID := "janitor-pending-" + b.queue
	if _, err := b.client.Enqueue(ctx, asynq.NewTask(tasks.TypeUpload, nil), asynq.TaskID(pendingID), asynq.Queue(testenv.UniqueName("idle"))); err != nil {
		t.Fatal(err)
	}
	activeID, retryID := "janitor-active-"+b.queue, "janitor-retry-"+b.queue
	ownerQueue := testenv.UniqueName("owners")
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{Concurrency: 2, Queues: map[string]int{ownerQueue: 1},
		TaskCheckInterval: 50 * time.Millisecond, RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour }})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if id, _ := asynq.GetTaskID(ctx); id == retryID {
			return errors.New("fails once, then waits an hour to retry")
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(release); srv.Shutdown() })
	for _, id := range []string{activeID, retryID} {
		if _, err := b.client.Enqueue(ctx, asynq.NewTask("janitor:owner", nil), asynq.TaskID(id), asynq.Queue(ownerQueue), asynq.MaxRetry(5)); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, b, ownerQueue, activeID, asynq.TaskStateActive)
	waitState(t, b, ownerQueue, retryID, asynq.TaskStateRetry)
	live := map[string]string{}
	for _, id := range []string{pendingID, activeID, retryID} {
		up, err := worker.RegisterUpload(ctx, w, s, id, "default", "j/live-"+id)
		if err != nil {
			t.Fatal(err)
		}
		live[id] = up
	}

	rep, err := w.Janitor(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Foreign < 1 || rep.StaleCheckpoints < 1 || rep.Aborted < 3 {
		t.Errorf("janitor report %+v: want the foreign upload counted, and the orphan, the unrecorded upload and the stale checkpoint's aborted", rep)
	}
	ups, err := s.ListMultipartUploads(ctx, "j/")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, u := range ups {
		left = append(left, u.UploadID)
	}
	for what, id := range map[string]string{"foreign": foreign.UploadID, "ambiguous": ambiguous.UploadID, "pending task's": live[pendingID],
		"active task's": live[activeID], "retrying task's": live[retryID]} {
		if !slices.Contains(left, id) {
			t.Errorf("the %s upload %s was aborted", what, id)
		}
	}
	for what, id := range map[string]string{"orphan": orphan, "unrecorded": unrecorded.UploadID, "stale checkpoint's": stale.UploadID} {
		if slices.Contains(left, id) {
			t.Errorf("the %s upload %s survived the janitor", what, id)
		}
	}
	if _, err := store.Load(ctx, staleID); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("stale checkpoint still there: %v", err)
	}
	for _, id := range []string{gone, crashed} {
		if ids, err := worker.RegisteredUploads(ctx, w, id); err != nil || len(ids) != 0 {
			t.Errorf("registry still holds %v for %s (%v)", ids, id, err)
		}
	}
	if ids, err := worker.RegisteredUploads(ctx, w, activeID); err != nil || !slices.Equal(ids, []string{live[activeID]}) {
		t.Errorf("registry of the active task: %v (%v), want [%s]", ids, err, live[activeID])
	}
}

// TestJanitorKeepsLiveStreamedUpload: a streamed upload (an https source
// without ranges: no checkpoint) that runs while the janitor passes with a
// TTL of zero is not aborted, completes, and leaves the registry empty.
// Not parallel: see TestJanitorAbortsOnlyFerrysOrphans.
func TestJanitorKeepsLiveStreamedUpload(t *testing.T) {
	gate := make(chan struct{})
	data, ts := slowStreamServer(t, 3*storage.MinPartSize, gate)
	b := setup(t, func(c *worker.Config) {
		c.HTTPClient = ts.Client()
		c.AllowURLHosts = []string{hostOf(ts.URL)}
	})
	w := b.start(t)
	ctx := context.Background()
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{URL: ts.URL + "/stream"}, Dest: s3loc("", b.bucket, "j/stream.bin")}))
	// Wait for its multipart upload to exist.
	s := b.storage(t)
	var before []storage.Upload
	deadline := time.Now().Add(time.Minute)
	for len(before) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the streamed upload did not start")
		}
		time.Sleep(50 * time.Millisecond)
		before, _ = s.ListMultipartUploads(ctx, "j/")
	}
	rep, err := w.Janitor(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.ListMultipartUploads(ctx, "j/")
	if len(after) != 1 || after[0].UploadID != before[0].UploadID {
		t.Errorf("the live streamed upload %s was aborted by the janitor (%+v); uploads now %+v", before[0].UploadID, rep, after)
	}
	close(gate)
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("streamed upload after a janitor pass (%+v): %+v", rep, p)
	}
	if n := b.info(t, id).Retried; n != 0 {
		t.Errorf("the streamed upload was retried %d times: its first run was broken", n)
	}
	if got := mustGet(t, s, "j/stream.bin"); string(got) != string(data) {
		t.Error("streamed upload stored other bytes")
	}
	if ids, err := worker.RegisteredUploads(ctx, w, id); err != nil || len(ids) != 0 {
		t.Errorf("registry still holds %v after the upload completed (%v)", ids, err)
	}
}

// waitState waits until asynq shows task id of queue in state.
func waitState(t *testing.T, b *bundle, queue, id string, state asynq.TaskState) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ti, err := b.client.Inspector().GetTaskInfo(queue, id)
		if err == nil && ti.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s: %+v %v", id, state, ti, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// slowStreamServer serves size random bytes at /stream without ranges:
// the first MinPartSize at once, the rest once gate is closed.
func slowStreamServer(t *testing.T, size int, gate <-chan struct{}) ([]byte, *httptest.Server) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(data[:storage.MinPartSize])
		w.(http.Flusher).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(data[storage.MinPartSize:])
	}))
	t.Cleanup(ts.Close)
	return data, ts
}

func hostOf(raw string) string {
	u, _ := url.Parse(raw)
	return u.Hostname()
}

// TestJanitorRereadsTheRegistry: an upload started while the janitor runs
// — after it read the upload registry, before it listed the bucket — is a
// live task's, registered as ferry registers every upload. It must not be
// taken for the upload of a gone task's unrecorded intent on the same key
// (aborting it would break the live transfer).
//
// Not parallel: the upload registry is one for all the tests, and a
// janitor run with a TTL of zero aborts the orphans other janitor tests
// count on; so this test checks its own uploads, not the report's totals.
func TestJanitorRereadsTheRegistry(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	w := b.start(t)
	// A gone task stopped between recording its intent and its upload id.
	gone := "janitor-gone-" + b.queue
	if err := worker.RegisterIntent(ctx, w, s, gone, "default", "j/key"); err != nil {
		t.Fatal(err)
	}
	// A live task (pending in a queue no worker serves) starts its upload
	// on the same key while the janitor runs.
	liveID := "janitor-live-" + b.queue
	if _, err := b.client.Enqueue(ctx, asynq.NewTask(tasks.TypeUpload, nil), asynq.TaskID(liveID), asynq.Queue(testenv.UniqueName("idle"))); err != nil {
		t.Fatal(err)
	}
	var live string
	worker.BeforeJanitorList(w, func() {
		var err error
		if live, err = worker.RegisterUpload(ctx, w, s, liveID, "default", "j/key"); err != nil {
			t.Error(err)
		}
	})
	rep, err := w.Janitor(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ups, err := s.ListMultipartUploads(ctx, "j/")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ups, func(u storage.Upload) bool { return u.UploadID == live }) {
		t.Errorf("the live task's upload %s started during the run was aborted (report %+v)", live, rep)
	}
	if rep.Live < 1 {
		t.Errorf("report %+v; want the live upload counted live", rep)
	}
	if ids, err := worker.RegisteredUploads(ctx, w, liveID); err != nil || !slices.Equal(ids, []string{live}) {
		t.Errorf("registry of the live task: %v (%v), want [%s]", ids, err, live)
	}
}
