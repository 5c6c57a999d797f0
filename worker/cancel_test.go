package worker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// gateProxy stands in front of the S3 server and holds the first request
// that match selects until the test opens the gate, or until the request's
// client goes away: a cancelled task must drop the request it has in
// flight instead of waiting for it.
type gateProxy struct {
	URL     string
	held    chan struct{} // closed when the matching request is held
	gaveUp  chan struct{} // closed when its client went away while held
	release chan struct{}
	hold    sync.Once
	open    sync.Once
}

func newGateProxy(t *testing.T, target string, match func(*http.Request) bool) *gateProxy {
	t.Helper()
	g := &gateProxy{held: make(chan struct{}), gaveUp: make(chan struct{}), release: make(chan struct{})}
	ts := interceptProxy(t, target, func(_ http.ResponseWriter, r *http.Request) bool {
		first := false
		if match(r) {
			g.hold.Do(func() { first = true })
		}
		if !first {
			return false
		}
		// Read the body first: net/http notices a client that went away
		// only once the body is consumed.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			close(g.gaveUp)
			close(g.held)
			return true
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		close(g.held)
		select {
		case <-g.release:
			return false
		case <-r.Context().Done():
			close(g.gaveUp)
			return true
		}
	})
	g.URL = ts.URL
	t.Cleanup(g.let) // before ts closes (cleanups run last first): a held request ends
	return g
}

// let opens the gate.
func (g *gateProxy) let() { g.open.Do(func() { close(g.release) }) }

// Request matchers for the gate (path-style requests: /bucket/key).
func putOf(key string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/"+key) &&
			r.URL.Query().Get("partNumber") == "" && r.Header.Get("X-Amz-Copy-Source") == ""
	}
}

func partOf(n int, copied bool) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == strconv.Itoa(n) &&
			(r.Header.Get("X-Amz-Copy-Source") != "") == copied
	}
}

func listOf(prefix string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodGet && r.URL.Query().Has("list-type") && r.URL.Query().Get("prefix") == prefix
	}
}

// gatedSetup is setup with the "default" profile behind a gate proxy
// holding the first request match selects; server-side copies above one
// part are multipart (UploadPartCopy) there. The bundle's own storage
// handles reach the server directly.
func gatedSetup(t *testing.T, match func(*http.Request) bool, mutate func(*worker.Config)) (*bundle, *gateProxy) {
	t.Helper()
	var g *gateProxy
	b := setup(t, func(c *worker.Config) {
		p := c.Profiles["default"]
		g = newGateProxy(t, p.EndpointURL, match)
		p.EndpointURL = g.URL
		p.MultipartCopyThreshold = storage.MinPartSize
		p.CopyPartSize = storage.MinPartSize
		c.Profiles["default"] = p
		if mutate != nil {
			mutate(c)
		}
	})
	return b, g
}

// stoppedAtOnce waits until the gate holds the task's request, cancels the
// task with cancel, and checks that the request was dropped at once (the
// gate opens after 10 s regardless, so a worker that ignores the cancel
// is seen to finish the request), that the task ends archived as
// cancelled by user without a retry, and that no multipart upload is left
// in the bucket.
func stoppedAtOnce(t *testing.T, b *bundle, g *gateProxy, id string, cancel func() error) {
	t.Helper()
	cancelled(t, b, g, id, cancel, true)
}

// cancelled is stoppedAtOnce; with drops false, the request in flight is
// one the task lets finish (a batch's item): the gate opens a moment after
// the cancel.
func cancelled(t *testing.T, b *bundle, g *gateProxy, id string, cancel func() error, drops bool) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(time.Minute):
		t.Fatalf("task %s never sent the request the gate holds: %+v", id, b.info(t, id))
	}
	if err := cancel(); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if drops {
		select {
		case <-g.gaveUp:
		case <-time.After(10 * time.Second):
			t.Error("the request in flight went on after the cancel: the task did not stop at once")
		}
	} else {
		time.Sleep(time.Second)
	}
	g.let()
	p := b.wait(t, id, 2*time.Minute)
	if p.State != tasks.StateCancelled || !strings.Contains(p.Error, tasks.CancelledError) {
		t.Errorf("after cancel the task is %s (%q), want cancelled: %q", p.State, p.Error, tasks.CancelledError)
	}
	ti := b.info(t, id)
	for deadline := time.Now().Add(10 * time.Second); ti.State != asynq.TaskStateArchived && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		ti = b.info(t, id)
	}
	if ti.State != asynq.TaskStateArchived || ti.Retried != 0 {
		t.Errorf("cancelled task is %s after %d retries (last error %q); want archived, not retried", ti.State, ti.Retried, ti.LastErr)
	}
	if ups, err := b.storage(t).ListMultipartUploads(context.Background(), ""); err != nil || len(ups) != 0 {
		t.Errorf("the cancel left multipart uploads: %+v (%v)", ups, err)
	}
}

// TestCancelStopsEveryType cancels each task type (through tasks.Client,
// the path of ferry cancel, the HTTP API and the dashboard) while its
// request to S3 is in flight: the request is dropped at once, the task is
// archived as cancelled by user without a retry, no multipart upload is
// left, and nothing is written or deleted afterwards — a move keeps its
// source, a recursive delete cancelled before its first batch deletes
// nothing, a migration cancels its copies.
func TestCancelStopsEveryType(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	big := make([]byte, 3*storage.MinPartSize+1)
	_, _ = rand.Read(big)
	// An https server without ranges: uploads from it are streamed.
	https := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(big)
		}
	}))
	t.Cleanup(https.Close)
	absent := func(keys ...string) func(*testing.T, *bundle) {
		return func(t *testing.T, b *bundle) {
			for _, k := range keys {
				if ok, err := b.storage(t).Exists(ctx, k); ok || err != nil {
					t.Errorf("%s was written after the cancel (%v)", k, err)
				}
			}
		}
	}
	present := func(keys ...string) func(*testing.T, *bundle) {
		return func(t *testing.T, b *bundle) {
			for _, k := range keys {
				if ok, err := b.storage(t).Exists(ctx, k); !ok || err != nil {
					t.Errorf("%s is gone after the cancel (%v)", k, err)
				}
			}
		}
	}
	both := func(fs ...func(*testing.T, *bundle)) func(*testing.T, *bundle) {
		return func(t *testing.T, b *bundle) {
			for _, f := range fs {
				f(t, b)
			}
		}
	}
	for _, tc := range []struct {
		desc  string
		match func(*http.Request) bool
		// task builds the task to cancel (objects it needs are written
		// directly to the bucket first).
		task  func(t *testing.T, b *bundle) (*asynq.Task, error)
		check func(*testing.T, *bundle)
	}{
		{"small put of a file", putOf("c/small"), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			path, _ := testenv.RandomFile(t, b.dir, "small", 1000)
			return tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "c/small")})
		}, absent("c/small")},
		{"inline put", putOf("c/inline"), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			return tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("inline")}, Dest: s3loc("", b.bucket, "c/inline")})
		}, absent("c/inline")},
		{"streamed https upload", partOf(1, false), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			return tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{URL: https.URL + "/big"}, Dest: s3loc("", b.bucket, "c/stream")})
		}, absent("c/stream")},
		{"checkpointed upload", partOf(2, false), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			path, _ := testenv.RandomFile(t, b.dir, "big", 3*storage.MinPartSize)
			return tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "c/upload"), PartConcurrency: 1})
		}, absent("c/upload")},
		{"server-side multipart copy", partOf(2, true), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			putDirect(t, b, "c/copy-src", big)
			return tasks.NewCopyTask(tasks.CopyPayload{Source: s3loc("", b.bucket, "c/copy-src"), Dest: s3loc("", b.bucket, "c/copy-dst"), PartConcurrency: 1})
		}, absent("c/copy-dst")},
		{"server-side multipart move", partOf(2, true), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			putDirect(t, b, "c/move-src", big)
			return tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, "c/move-src"), Dest: s3loc("", b.bucket, "c/move-dst"), PartConcurrency: 1})
		}, both(present("c/move-src"), absent("c/move-dst"))},
		{"streamed move", partOf(2, false), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			putDirect(t, b, "c/smove-src", big)
			return tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("other", b.bucket, "c/smove-src"), Dest: s3loc("", b.bucket, "c/smove-dst"), PartConcurrency: 1})
		}, both(present("c/smove-src"), absent("c/smove-dst"))},
		{"recursive delete before its first batch", listOf("c/del/"), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			for i := range 3 {
				putDirect(t, b, "c/del/"+strconv.Itoa(i), []byte("keep"))
			}
			return tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc("", b.bucket, "c/del/"), Recursive: true})
		}, present("c/del/0", "c/del/1", "c/del/2")},
		{"batch", putOf("c/batch-0"), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			var items []tasks.BatchItem
			for i := range 3 {
				path, _ := testenv.RandomFile(t, b.dir, "item"+strconv.Itoa(i), 100)
				items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "c/batch-"+strconv.Itoa(i)), Size: 100})
			}
			return tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: 1})
		}, both(present("c/batch-0"), absent("c/batch-1", "c/batch-2"))},
		{"migration and its copies", partOf(2, true), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			// Large objects: one copy task each (multipart, server-side).
			for i := range 2 {
				putDirect(t, b, "c/mig-src/"+strconv.Itoa(i), big)
			}
			return tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "c/mig-src/"), Dest: s3loc("", b.bucket, "c/mig-dst/"),
				Window: 1, PartConcurrency: 1})
		}, func(t *testing.T, b *bundle) {
			// Window 1: the held copy is the only one; it was cancelled
			// with its migration, so nothing was copied and no copy task
			// is left to run.
			if n := countObjects(t, b.storage(t), "c/mig-dst/"); n != 0 {
				t.Errorf("the cancelled migration copied %d objects", n)
			}
			waitQueueIdle(t, b)
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b, g := gatedSetup(t, tc.match, func(c *worker.Config) {
				c.HTTPClient = https.Client()
				c.AllowURLHosts = []string{hostOf(https.URL)}
			})
			b.start(t)
			task, err := tc.task(t, b)
			id := b.enqueue(t, task, err)
			// A batch lets its items in flight finish (they are small,
			// and its counts stay exact); nothing starts after the cancel.
			finishes := tc.desc == "batch"
			cancelled(t, b, g, id, func() error { return b.client.Cancel(ctx, id) }, !finishes)
			tc.check(t, b)
		})
	}
}

// putDirect writes an object straight to the test bucket.
func putDirect(t *testing.T, b *bundle, key string, data []byte) {
	t.Helper()
	if _, err := b.storage(t).PutLarge(context.Background(), key, bytes.NewReader(data),
		&storage.LargeOptions{PartSize: storage.MinPartSize, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
}

// waitQueueIdle waits until no task of the bundle's queue is pending,
// scheduled, active or waiting to retry.
func waitQueueIdle(t *testing.T, b *bundle) {
	t.Helper()
	var qi *asynq.QueueInfo
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		qi, err = b.client.Inspector().GetQueueInfo(b.queue)
		if err == nil && qi.Pending+qi.Scheduled+qi.Active+qi.Retry == 0 {
			return
		}
	}
	t.Errorf("tasks left to run after the cancel: %+v (%v)", qi, err)
}

// TestAsynqmonCancelStops cancels running tasks the way asynqmon's Cancel
// button does (Inspector.CancelProcessing, a cancellation of the handler's
// context that is not a shutdown): the task stops at once, is archived
// without a retry and never runs again, its progress says cancelled by
// user, and its multipart upload and checkpoint are gone.
func TestAsynqmonCancelStops(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		desc  string
		match func(*http.Request) bool
		task  func(t *testing.T, b *bundle) (*asynq.Task, error)
	}{
		{"checkpointed upload", partOf(2, false), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			path, _ := testenv.RandomFile(t, b.dir, "big", 3*storage.MinPartSize)
			return tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "a/upload"), PartConcurrency: 1})
		}},
		{"small put", putOf("a/small"), func(t *testing.T, b *bundle) (*asynq.Task, error) {
			return tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("small")}, Dest: s3loc("", b.bucket, "a/small")})
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b, g := gatedSetup(t, tc.match, nil)
			b.start(t)
			task, err := tc.task(t, b)
			id := b.enqueue(t, task, err, asynq.MaxRetry(5))
			stoppedAtOnce(t, b, g, id, func() error { return b.client.Inspector().CancelProcessing(id) })
			if n, _ := b.rdb.Exists(ctx, "ferry:ckpt:{"+id+"}").Result(); n != 0 {
				t.Error("the cancel left the checkpoint")
			}
			// Archived for good: it does not run again.
			time.Sleep(2 * time.Second)
			if ti := b.info(t, id); ti.State != asynq.TaskStateArchived || ti.Retried != 0 {
				t.Errorf("a cancelled task is %s after %d retries", ti.State, ti.Retried)
			}
			if n := countObjects(t, b.storage(t), "a/"); n != 0 {
				t.Errorf("the cancelled task wrote %d objects", n)
			}
		})
	}
}

// TestCancelRetryingAbortsNow cancels tasks that are not running but hold a
// multipart upload ferry recorded for them: one waiting to retry (after a
// failed run of an asynq server of the test's, on a queue no worker
// serves) and one scheduled. The cancel archives them and a worker aborts
// their uploads within seconds, not when the janitor's TTL runs out.
func TestCancelRetryingAbortsNow(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	w := b.start(t)
	ctx := context.Background()
	s := b.storage(t)

	retryQueue := testenv.UniqueName("retrying")
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{retryQueue: 1},
		TaskCheckInterval: 50 * time.Millisecond, RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour }})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return errors.New("fails once, then waits an hour to retry")
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: b.dir + "/absent"}, Dest: s3loc("", b.bucket, "r/retry")})
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(ctx, task, asynq.Queue(retryQueue), asynq.MaxRetry(5))
	if err != nil {
		t.Fatal(err)
	}
	retrying := info.ID
	waitState(t, b, retryQueue, retrying, asynq.TaskStateRetry)
	task, err = tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: b.dir + "/absent"}, Dest: s3loc("", b.bucket, "r/sched")})
	scheduled := b.enqueue(t, task, err, asynq.ProcessIn(time.Hour))

	uploads := map[string]string{}
	for key, id := range map[string]string{"r/retry": retrying, "r/sched": scheduled} {
		up, err := worker.RegisterUpload(ctx, w, s, id, "default", key)
		if err != nil {
			t.Fatal(err)
		}
		uploads[id] = up
	}
	for _, id := range []string{retrying, scheduled} {
		if err := b.client.Cancel(ctx, id); err != nil {
			t.Fatalf("cancel %s: %v", id, err)
		}
	}
	// Done when the uploads are gone and the registry forgot them.
	start := time.Now()
	var left []string
	registered := map[string][]string{}
	for time.Since(start) < 10*time.Second {
		ups, err := s.ListMultipartUploads(ctx, "r/")
		if err != nil {
			t.Fatal(err)
		}
		left = left[:0]
		for _, u := range ups {
			left = append(left, u.UploadID)
		}
		n := len(left)
		for id := range uploads {
			ids, err := worker.RegisteredUploads(ctx, w, id)
			if err != nil {
				t.Fatal(err)
			}
			registered[id] = ids
			n += len(ids)
		}
		if n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id, up := range uploads {
		if slices.Contains(left, up) {
			t.Errorf("the upload of cancelled task %s is still there %s after the cancel", id, time.Since(start).Round(time.Second))
		}
		if len(registered[id]) != 0 {
			t.Errorf("registry still holds %v for cancelled task %s", registered[id], id)
		}
	}
	t.Logf("uploads aborted and forgotten %s after the cancel", time.Since(start).Round(time.Millisecond))
}
