package worker_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
	"github.com/ferryhq/ferry/worker"
)

// hookSecret is the test workers' webhook signing secret.
var hookSecret = []byte("test-webhook-secret-0123456789abcdef")

// withWebhooks lets the worker deliver to 127.0.0.1 (listed explicitly, as
// a loopback address must be), signed with hookSecret, retrying quickly.
func withWebhooks(c *worker.Config) {
	c.WebhookAllow = []string{"127.0.0.1"}
	c.WebhookSecrets = [][]byte{hookSecret}
	c.WebhookRetryDelay = 200 * time.Millisecond
}

// delivery is one request a receiver got.
type delivery struct {
	body   []byte
	header http.Header
	query  string
}

// receiver is a webhook endpoint recording what it gets; answer decides
// the status of the n-th request (1-based).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []delivery
	answer func(n int, r *http.Request) int
}

func newReceiver(t *testing.T, answer func(n int, r *http.Request) int) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{body: body, header: r.Header.Clone(), query: r.URL.RawQuery})
		n := len(rc.got)
		rc.mu.Unlock()
		status := http.StatusNoContent
		if rc.answer != nil {
			status = rc.answer(n, r)
		}
		w.WriteHeader(status)
		if status >= 300 {
			_, _ = io.WriteString(w, "receiver says no\x00\n")
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook?tenant=7" }

// exactly fails t unless the receiver got exactly n requests a second
// from now: a wrong extra delivery would arrive meanwhile.
func (rc *receiver) exactly(t *testing.T, n int) {
	t.Helper()
	time.Sleep(time.Second)
	if got := len(rc.deliveries()); got != n {
		t.Errorf("the receiver got %d requests, want exactly %d", got, n)
	}
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// waitFor waits until the receiver got n requests and returns them.
func (rc *receiver) waitFor(t *testing.T, n int, timeout time.Duration) []delivery {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got := rc.deliveries(); len(got) >= n {
			return got
		}
	}
	t.Fatalf("the receiver got %d requests in %s, want %d", len(rc.deliveries()), timeout, n)
	return nil
}

// verified checks d's signature with the test secret and returns its event.
func verified(t *testing.T, d delivery) webhook.Event {
	t.Helper()
	if err := webhook.Verify(d.body, d.header.Get(webhook.SignatureHeader), time.Now(), 0, hookSecret); err != nil {
		t.Fatalf("delivery %s: signature: %v", d.body, err)
	}
	if ct := d.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	ev, err := webhook.ParseEvent(d.body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.TaskID == "" || ev.TaskID != ev.ID {
		t.Errorf("event task_id %q, id %q: want the task id in both", ev.TaskID, ev.ID)
	}
	if got := d.header.Get(webhook.EventIDHeader); got != ev.EventID || ev.EventID != webhook.EventID(ev.ID, ev.State) {
		t.Errorf("event id header %q, body %q", got, ev.EventID)
	}
	return ev
}

// waitTaskState waits until asynq shows the task in want.
func (b *bundle) waitTaskState(t *testing.T, id string, want asynq.TaskState, timeout time.Duration) *asynq.TaskInfo {
	t.Helper()
	var ti *asynq.TaskInfo
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ti, err = b.client.Inspector().GetTaskInfo(b.queue, id)
		if err == nil && ti.State == want {
			return ti
		}
	}
	t.Fatalf("task %s is not %s after %s: %+v, %v", id, want, timeout, ti, err)
	return nil
}

// TestWebhookOnCompletion: an upload with notify to an allowlisted receiver
// gets exactly one signed event with the transfer's fields; the delivery is
// an asynq task in the transfer's queue, shown on the dashboard's index, and
// the secret is nowhere in Redis.
func TestWebhookOnCompletion(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, withWebhooks)
	b.start(t)
	path, data := testenv.RandomFile(t, b.dir, "hooked.bin", 2*storage.MinPartSize+77)
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "hooked/x.bin"),
		Notify: &tasks.Notify{URL: rc.url()}}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("upload: %+v", p)
	}
	d := rc.waitFor(t, 1, 30*time.Second)[0]
	ev := verified(t, d)
	info, err := b.storage(t).Info(context.Background(), "hooked/x.bin")
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case ev.ID != id, ev.Type != tasks.TypeUpload, ev.State != webhook.StateCompleted, ev.Queue != b.queue:
		t.Errorf("event identity: %+v", ev)
	case ev.Source != path, ev.Dest != "s3://"+b.bucket+"/hooked/x.bin":
		t.Errorf("event locations: %q -> %q", ev.Source, ev.Dest)
	case ev.Size != int64(len(data)), ev.BytesDone != int64(len(data)), ev.ETag == "", ev.ETag != info.ETag:
		t.Errorf("event object: size %d, bytes_done %d, etag %q; stored %d bytes, etag %q", ev.Size, ev.BytesDone, ev.ETag, len(data), info.ETag)
	case ev.Error != "", ev.Retries != 0:
		t.Errorf("event error %q, retries %d", ev.Error, ev.Retries)
	case ev.StartedAt.IsZero(), ev.FinishedAt.Before(ev.StartedAt), ev.DurationSeconds <= 0:
		t.Errorf("event timings: %s .. %s (%.3fs)", ev.StartedAt, ev.FinishedAt, ev.DurationSeconds)
	}
	if d.query != "tenant=7" {
		t.Errorf("the receiver got query %q, want the URL's own", d.query)
	}
	notifyID := tasks.NotifyTaskID(id, webhook.StateCompleted)
	ti := b.waitTaskState(t, notifyID, asynq.TaskStateCompleted, 10*time.Second)
	if ti.Type != tasks.TypeNotify || ti.Queue != b.queue {
		t.Errorf("delivery task: %+v", ti)
	}
	if p, err := b.client.Progress(context.Background(), notifyID); err != nil || p.State != tasks.StateCompleted || p.Dest != rc.srv.URL+"/hook" {
		t.Errorf("the delivery's progress (the dashboard's view): %+v, %v; want completed to the URL without its query", p, err)
	}
	rc.exactly(t, 1) // nothing more arrives
	assertSecretNotInRedis(t, b, id, notifyID)
}

// assertSecretNotInRedis dumps every key of the test's queue and tasks and
// looks for the signing secret.
func assertSecretNotInRedis(t *testing.T, b *bundle, ids ...string) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	for _, pat := range append([]string{"asynq:{" + b.queue + "}:*"}, func() []string {
		var p []string
		for _, id := range ids {
			p = append(p, "*"+id+"*")
		}
		return p
	}()...) {
		ks, err := b.rdb.Keys(ctx, pat).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ks...)
	}
	if len(keys) < 3 {
		t.Fatalf("found only %d keys to check: %v", len(keys), keys)
	}
	// Read every value as itself (DUMP's serialisation compresses strings
	// with LZF, where a secret could hide), and look for the secret as it
	// is, in hex and in base64.
	forms := [][]byte{hookSecret, []byte(hex.EncodeToString(hookSecret)), []byte(base64.StdEncoding.EncodeToString(hookSecret))}
	// The reading finds a secret where one is: a planted one, in a stream.
	planted := testenv.UniqueName("planted")
	if err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: planted, Values: []string{"v", "x" + string(hookSecret)}}).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.rdb.Del(context.Background(), planted) })
	if vals, err := plainValues(ctx, b.rdb, planted); err != nil || !slices.ContainsFunc(vals, func(v string) bool { return strings.Contains(v, string(hookSecret)) }) {
		t.Fatalf("plainValues did not find a planted secret: %q, %v", vals, err)
	}
	read := 0
	for _, k := range keys {
		vals, err := plainValues(ctx, b.rdb, k)
		if err != nil {
			t.Fatalf("read %s: %v", k, err)
		}
		read += len(vals)
		for _, v := range vals {
			for _, f := range forms {
				if bytes.Contains([]byte(v), f) {
					t.Errorf("Redis key %s holds the webhook secret (%.8s…)", k, f)
				}
			}
		}
	}
	if read < len(keys) {
		t.Errorf("read %d values from %d keys", read, len(keys))
	}
}

// plainValues returns every value of key, read by its type: a string, a
// hash's fields and values, a list's, set's or sorted set's members, a
// stream's entries. A key gone meanwhile has none.
func plainValues(ctx context.Context, rdb *redis.Client, key string) ([]string, error) {
	typ, err := rdb.Type(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	var vals []string
	switch typ {
	case "none":
	case "string":
		v, err := rdb.Get(ctx, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		vals = append(vals, v)
	case "hash":
		h, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		for f, v := range h {
			vals = append(vals, f, v)
		}
	case "list":
		vals, err = rdb.LRange(ctx, key, 0, -1).Result()
	case "set":
		vals, err = rdb.SMembers(ctx, key).Result()
	case "zset":
		vals, err = rdb.ZRange(ctx, key, 0, -1).Result()
	case "stream":
		var xs []redis.XMessage
		xs, err = rdb.XRange(ctx, key, "-", "+").Result()
		for _, x := range xs {
			for f, v := range x.Values {
				vals = append(vals, f, fmt.Sprint(v))
			}
		}
	default:
		return nil, fmt.Errorf("key %s has type %s, which this test cannot read", key, typ)
	}
	return vals, err
}

// TestWebhookRetriesUntilDelivered: a receiver that fails twice gets the
// event on the 3rd attempt, each attempt signed anew; then nothing more.
func TestWebhookRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	b := setup(t, withWebhooks)
	b.start(t)
	id := b.enq(t)(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("hello")}, Dest: s3loc("", b.bucket, "retry/x"),
		Notify: &tasks.Notify{URL: rc.url()}}))
	got := rc.waitFor(t, 3, time.Minute)
	for i, d := range got {
		if ev := verified(t, d); ev.ID != id || ev.State != webhook.StateCompleted || ev.Size != 5 {
			t.Errorf("attempt %d: %+v", i+1, ev)
		}
	}
	ti := b.waitTaskState(t, tasks.NotifyTaskID(id, webhook.StateCompleted), asynq.TaskStateCompleted, 10*time.Second)
	if ti.Retried != 2 || !strings.Contains(ti.LastErr, "503 Service Unavailable: receiver says no") {
		t.Errorf("delivery task: retried %d, last error %q; want 2 retries after the receiver's 503", ti.Retried, ti.LastErr)
	}
	rc.exactly(t, 3)
}

// TestWebhookFailedAndCancelled: a transfer that fails for good, one
// cancelled while running and one cancelled before it ran notify with their
// state and reason.
func TestWebhookFailedAndCancelled(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, func(c *worker.Config) { withWebhooks(c); c.PartConcurrency = 1 })
	b.start(t)
	ctx := context.Background()
	notify := &tasks.Notify{URL: rc.url()}
	failed := b.enq(t)(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Path: b.dir + "/missing.bin"}, Dest: s3loc("", b.bucket, "f/x"), Notify: notify}))
	path, _ := testenv.RandomFile(t, b.dir, "cancel.bin", 30*storage.MinPartSize)
	cancelled := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "c/x"), Notify: notify}))
	waitParts(t, b, cancelled, 1)
	if err := b.client.Cancel(ctx, cancelled); err != nil {
		t.Fatal(err)
	}
	// One cancelled before it ever ran: no handler runs, Cancel enqueues
	// its webhook.
	task, err := tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("later")}, Dest: s3loc("", b.bucket, "s/x"), Notify: notify})
	scheduled := b.enqueue(t, task, err, asynq.ProcessIn(time.Hour))
	if err := b.client.Cancel(ctx, scheduled); err != nil {
		t.Fatal(err)
	}
	byID := map[string]webhook.Event{}
	for _, d := range rc.waitFor(t, 3, time.Minute) {
		ev := verified(t, d)
		byID[ev.ID] = ev
	}
	if ev := byID[failed]; ev.State != webhook.StateFailed || !strings.Contains(ev.Error, "does not exist") || ev.Source != b.dir+"/missing.bin" {
		t.Errorf("failed transfer's event: %+v", ev)
	}
	if ev := byID[cancelled]; ev.State != webhook.StateCancelled || !strings.Contains(ev.Error, tasks.CancelledError) || ev.BytesDone == 0 || ev.Size != 30*storage.MinPartSize {
		t.Errorf("cancelled transfer's event: %+v", ev)
	}
	if ev := byID[scheduled]; ev.State != webhook.StateCancelled || ev.Error != tasks.CancelledError || ev.Dest != "s3://"+b.bucket+"/s/x" || !ev.StartedAt.IsZero() {
		t.Errorf("event of the transfer cancelled before it ran: %+v", ev)
	}
}

// TestWebhookRefusedAtDelivery: URLs the producer could not judge (it does
// not know the workers' allowlist) are refused by the worker, which archives
// the delivery with the reason and sends nothing. A listed name that
// resolves to a loopback address is refused at dial time.
func TestWebhookRefusedAtDelivery(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, func(c *worker.Config) {
		withWebhooks(c)
		c.WebhookAllow = []string{"localhost", "hooks.example.com"}
	})
	b.start(t)
	port := rc.srv.URL[strings.LastIndex(rc.srv.URL, ":")+1:]
	for i, tc := range []struct{ url, want string }{
		{"http://localhost:" + port + "/hook", "the host resolved to 127.0.0.1 is a loopback address"},
		{"http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata service"},
		{"https://evil.example.net/hook", `host "evil.example.net" is not on webhook_allow [localhost, hooks.example.com]`},
	} {
		id := b.enq(t)(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("x")}, Dest: s3loc("", b.bucket, "refused/"+string(rune('a'+i))),
			Notify: &tasks.Notify{URL: tc.url}}))
		ti := b.waitTaskState(t, tasks.NotifyTaskID(id, webhook.StateCompleted), asynq.TaskStateArchived, 30*time.Second)
		if ti.Retried != 0 || !strings.Contains(ti.LastErr, tc.want) {
			t.Errorf("%s: delivery archived after %d retries with %q; want no retry and %q", tc.url, ti.Retried, ti.LastErr, tc.want)
		}
	}
	if n := len(rc.deliveries()); n != 0 {
		t.Errorf("the receiver got %d requests through refused URLs", n)
	}
}

// TestWebhookSurvivesWorkerKill: the worker is killed (SIGKILL) after the
// transfer completed, while it delivers the event; the delivery is a queued
// task, so another worker delivers it.
func TestWebhookSurvivesWorkerKill(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery (about a minute)")
	}
	hang := make(chan struct{})
	var once sync.Once
	rc := newReceiver(t, func(n int, r *http.Request) int {
		if n == 1 {
			once.Do(func() { close(hang) })
			<-r.Context().Done() // the worker dies holding this request
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	b := setup(t, withWebhooks)
	c := workerproc.StartChild(t, "", t.TempDir(), "a", workerproc.ChildConfig{
		Redis: testenv.Redis(t).Addr, Profiles: profilesFor(b.s3), Queue: b.queue, Dir: b.dir, Concurrency: 2,
		PartSize: storage.MinPartSize, Shutdown: 5 * time.Second,
		WebhookAllow: b.cfg.WebhookAllow, WebhookSecret: string(hookSecret), WebhookRetryDelay: b.cfg.WebhookRetryDelay})
	path, _ := testenv.RandomFile(t, b.dir, "kill.bin", 1000)
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "kill/x"), Notify: &tasks.Notify{URL: rc.url()}}))
	select {
	case <-hang:
	case <-time.After(time.Minute):
		b, _ := os.ReadFile(c.Log)
		t.Fatalf("no delivery attempt within a minute; worker log:\n%s", b)
	}
	c.Kill()
	if ti := b.info(t, id); ti.State != asynq.TaskStateCompleted {
		t.Fatalf("the transfer is %s, want completed before the kill", ti.State)
	}
	b.start(t) // another worker
	got := rc.waitFor(t, 2, 3*time.Minute)
	if ev := verified(t, got[1]); ev.ID != id || ev.State != webhook.StateCompleted || ev.Size != 1000 {
		t.Errorf("event after the kill: %+v", ev)
	}
	b.waitTaskState(t, tasks.NotifyTaskID(id, webhook.StateCompleted), asynq.TaskStateCompleted, 10*time.Second)
	if n := len(rc.deliveries()); n != 2 {
		t.Errorf("the receiver got %d requests, want the killed attempt and one delivery", n)
	}
}

// TestWebhookQueueDefaultOncePerMigration: a queue's default webhook
// notifies the migration once, not each copy it enqueues (a migration of a
// million objects must not send a million webhooks), and not the put that
// carries its own URL twice.
func TestWebhookQueueDefaultOncePerMigration(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, func(c *worker.Config) {
		withWebhooks(c)
		c.WebhookQueueDefaults = map[string]string{}
		for q := range c.Queues { // the bundle's one queue
			c.WebhookQueueDefaults[q] = rc.url()
		}
	})
	b.start(t)
	s := b.storage(t)
	fillSource(t, s, "mig-src/", 4, 1) // one large object: a copy task of its own
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "mig-src"), Dest: s3loc("", b.bucket, "mig-dst")}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("migrate: %+v", p)
	}
	ev := verified(t, rc.waitFor(t, 1, 30*time.Second)[0])
	if ev.ID != id || ev.Type != tasks.TypeMigrate || ev.State != webhook.StateCompleted {
		t.Errorf("event: %+v, want the migration's", ev)
	}
	time.Sleep(2 * time.Second)
	for _, d := range rc.deliveries()[1:] {
		t.Errorf("a further event: %s", d.body)
	}
}

// TestWebhookBatch: a batch (many small objects, one task) notifies once,
// with the batch's counts as its size.
func TestWebhookBatch(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, withWebhooks)
	b.start(t)
	var items []tasks.BatchItem
	for i := range 3 {
		path, _ := testenv.RandomFile(t, b.dir, "item"+string(rune('a'+i)), 100)
		// Size is the producer's estimate, wrong here: the event says
		// what was written.
		items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "batch/"+string(rune('a'+i))), Size: 7})
	}
	id := b.enq(t)(tasks.NewBatchTask(tasks.BatchPayload{Items: items, Notify: &tasks.Notify{URL: rc.url()}}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("batch: %+v", p)
	}
	ev := verified(t, rc.waitFor(t, 1, 30*time.Second)[0])
	if ev.ID != id || ev.Type != tasks.TypeBatch || ev.State != webhook.StateCompleted || ev.Dest == "" {
		t.Errorf("event: %+v", ev)
	}
	if ev.Size != 300 || ev.BytesDone != 300 {
		t.Errorf("event size %d, bytes_done %d; want 300 and 300 (3 items of 100 bytes, whatever the producer estimated)", ev.Size, ev.BytesDone)
	}
	rc.exactly(t, 1)
}

// TestShutdownOnLastAttemptIsNotFailed: a worker shutdown interrupts an
// upload on its last attempt (MaxRetry 0). asynq puts the task back in the
// queue without counting a retry, so it is not failed: its progress must not
// say "failed" and no "failed" webhook may be enqueued. Another worker then
// finishes it, and the one webhook says "completed".
func TestShutdownOnLastAttemptIsNotFailed(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	b := setup(t, func(c *worker.Config) { withWebhooks(c); c.PartConcurrency = 1; c.ShutdownTimeout = time.Second })
	path, _ := testenv.RandomFile(t, b.dir, "last.bin", 12*storage.MinPartSize)
	task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "last/x"), Notify: &tasks.Notify{URL: rc.url()}})
	id := b.enqueue(t, task, err, asynq.MaxRetry(0))
	first, err := worker.New(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	waitParts(t, b, id, 1)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p, err := b.client.Progress(context.Background(), id); err != nil || p.State == tasks.StateFailed {
		t.Errorf("after the shutdown the progress says %+v (%v); the task runs again", p, err)
	}
	if ti := b.info(t, id); ti.State != asynq.TaskStatePending {
		t.Errorf("after the shutdown the task is %s, want pending (requeued)", ti.State)
	}
	pending, err := b.client.Inspector().ListPendingTasks(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range pending {
		if ti.Type == tasks.TypeNotify {
			t.Errorf("a webhook was enqueued for a transfer that runs again: %s", ti.Payload)
		}
	}
	b.start(t)
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("the second worker's run ended %+v", p)
	}
	time.Sleep(time.Second) // a wrong extra delivery would arrive meanwhile
	got := rc.waitFor(t, 1, time.Minute)
	if len(got) != 1 {
		t.Fatalf("the receiver got %d deliveries, want 1", len(got))
	}
	if ev := verified(t, got[0]); ev.State != webhook.StateCompleted || ev.ID != id {
		t.Errorf("the event: %+v; want completed for %s", ev, id)
	}
}
