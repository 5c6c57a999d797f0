package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// testToken is an auth token CheckToken accepts.
const testToken = "9f3c1a7e5b2d4c6f8a0b1c2d3e4f5a6b"

// bundle is what setup returns.
type bundle struct {
	rdb    *redis.Client
	srv    *dashboard.Server
	ts     *httptest.Server
	client *tasks.Client
	spec   *specCheck // apiSetup's OpenAPI check; nil otherwise
}

// setup starts a dashboard on the shared test Redis; opts adjust its Config.
func setup(t *testing.T, opts ...func(*dashboard.Config)) *bundle {
	t.Helper()
	return setupWrapped(t, nil, opts...)
}

// setupWrapped is setup with the test server's handler wrapped by wrap
// (nil: not wrapped).
func setupWrapped(t *testing.T, wrap func(http.Handler) http.Handler, opts ...func(*dashboard.Config)) *bundle {
	t.Helper()
	return setupOn(t, testenv.RedisClient(t), wrap, opts...)
}

// setupOn is setupWrapped on the Redis of rdb.
func setupOn(t *testing.T, rdb *redis.Client, wrap func(http.Handler) http.Handler, opts ...func(*dashboard.Config)) *bundle {
	t.Helper()
	cfg := dashboard.Config{Redis: rdb, Logger: zaptest.NewLogger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(srv)
	}
	ts := httptest.NewServer(h)
	// Cleanups run last-in first-out: the dashboard ends its event streams
	// before the test server waits for them.
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = srv.Close() })
	return &bundle{rdb: rdb, srv: srv, ts: ts, client: tasks.NewClient(rdb)}
}

// startWorker runs a real worker on b's Redis until the test ends
// (workerproc.Start), with cfg completed: queue (weight 1), the "default"
// profile on srv, no janitor, and a test logger of warnings unless cfg has
// a logger.
func (b *bundle) startWorker(t *testing.T, srv *testenv.S3Server, queue string, cfg worker.Config) {
	t.Helper()
	cfg.Redis, cfg.Queues, cfg.JanitorInterval = b.rdb, map[string]int{queue: 1}, -1
	cfg.Profiles = map[string]storage.Config{"default": srv.Profile()}
	if cfg.Logger == nil {
		cfg.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	workerproc.Start(t, cfg)
}

func (b *bundle) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	return b.do(t, http.MethodGet, path, hdr...)
}

func (b *bundle) do(t *testing.T, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1] // the client ignores a Host header
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func publish(t *testing.T, rdb redis.UniversalClient, p tasks.Progress) {
	t.Helper()
	if err := tasks.PublishProgress(context.Background(), rdb, p, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// eventually retries f until it returns true or 10 s pass.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type listBody struct {
	Transfers []dashboard.Transfer `json:"transfers"`
	ReadOnly  bool                 `json:"read_only"`
}

func (b *bundle) list(t *testing.T) listBody {
	t.Helper()
	resp, body := b.get(t, "/api/transfers")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/transfers: %d %s", resp.StatusCode, body)
	}
	var l listBody
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return l
}

func find(l listBody, id string) (dashboard.Transfer, bool) {
	for _, tr := range l.Transfers {
		if tr.TaskID == id {
			return tr, true
		}
	}
	return dashboard.Transfer{}, false
}

// enqueuePending enqueues a put task, not processed by anyone, in a queue of
// its own.
func enqueuePending(t *testing.T, c *tasks.Client) (id, queue string) {
	t.Helper()
	queue = testenv.UniqueName("q")
	task, err := tasks.NewPutTask(tasks.PutPayload{
		Source: tasks.Location{Data: []byte("hello")},
		Dest:   tasks.Location{Bucket: "bucket-dash", Key: testenv.UniqueName("k")},
	}, asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Enqueue(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	return info.ID, queue
}

func TestTransfersAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := testenv.UniqueName("task")
	publish(t, b.rdb, tasks.Progress{
		TaskID: id, Type: tasks.TypeUpload, State: tasks.StateActive,
		BytesDone: 25 << 20, BytesTotal: 100 << 20, PartsDone: 5, PartsTotal: 20,
		ResumedFrom: 10 << 20, Rate: 5 << 20, Source: "/data/big", Dest: "s3://b/big",
	})
	var got dashboard.Transfer
	eventually(t, "the transfer in /api/transfers", func() bool {
		var ok bool
		got, ok = find(b.list(t), id)
		return ok
	})
	if got.Percent != 25 || got.ETASeconds != 15 || got.PartsDone != 5 || got.ResumedFrom != 10<<20 || got.State != tasks.StateActive {
		t.Errorf("listed %+v; want 25%%, ETA 15 s, 5 parts, resumed from 10 MiB, active", got)
	}

	// Finished transfers sort after active ones.
	done := testenv.UniqueName("task")
	publish(t, b.rdb, tasks.Progress{TaskID: done, State: tasks.StateCompleted, BytesDone: 1, BytesTotal: 1,
		Counters: map[string]int64{"copied": 3, "skipped": 1}})
	var l listBody
	defer func() {
		if t.Failed() {
			for i, tr := range l.Transfers {
				t.Logf("%d: %s %s %v", i, tr.TaskID, tr.State, tr.UpdatedAt)
			}
		}
	}()
	eventually(t, "the completed transfer listed after the active one", func() bool {
		l = b.list(t)
		ia, id2 := -1, -1
		for i, tr := range l.Transfers {
			switch tr.TaskID {
			case id:
				ia = i
			case done:
				id2 = i
			}
		}
		return ia >= 0 && id2 > ia
	})

	resp, body := b.get(t, "/api/transfers/"+done)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/transfers/%s: %d %s", done, resp.StatusCode, body)
	}
	var one dashboard.Transfer
	if err := json.Unmarshal([]byte(body), &one); err != nil {
		t.Fatal(err)
	}
	if one.TaskID != done || one.Percent != 100 || one.Counters["copied"] != 3 {
		t.Errorf("GET one = %+v; want %s at 100%% with counters", one, done)
	}

	resp, body = b.get(t, "/api/transfers/"+testenv.UniqueName("nope"))
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no transfer") {
		t.Errorf("unknown id: %d %s; want 404", resp.StatusCode, body)
	}
	if resp, body := b.get(t, "/api/transfers?limit=x"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=x: %d %s; want 400", resp.StatusCode, body)
	}
	if l := b.list(t); len(l.Transfers) == 0 || l.ReadOnly {
		t.Errorf("list: %d transfers, read_only %v", len(l.Transfers), l.ReadOnly)
	}
}

// TestIndexScan: hashes written before the dashboard started are found by
// its scan, and hashes that disappear leave the index at the next scan.
func TestIndexScan(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	id := testenv.UniqueName("early")
	publish(t, rdb, tasks.Progress{TaskID: id, State: tasks.StateFailed, Error: "boom", UpdatedAt: time.Now().Add(-time.Minute)})
	b := setup(t, func(c *dashboard.Config) { c.ScanInterval = 100 * time.Millisecond })
	eventually(t, "the earlier transfer found by the scan", func() bool {
		tr, ok := find(b.list(t), id)
		return ok && tr.Error == "boom"
	})
	if err := rdb.Del(context.Background(), tasks.ProgressKey(id)).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted transfer to leave the index", func() bool {
		_, ok := find(b.list(t), id)
		return !ok
	})
}

// readEvent reads one SSE event (up to a blank line) and returns its lines.
func readEvent(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event stream: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return lines
		}
		lines = append(lines, line)
	}
}

func TestEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := testenv.UniqueName("live")
	other := testenv.UniqueName("other")

	open := func(query string) *bufio.Reader {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.ts.URL+"/api/events"+query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
			t.Fatalf("GET /api/events: %d %s", resp.StatusCode, ct)
		}
		r := bufio.NewReader(resp.Body)
		if first := readEvent(t, r); !strings.Contains(strings.Join(first, "\n"), ": subscribed") {
			t.Fatalf("first event %q; want the subscribed comment", first)
		}
		return r
	}
	all := open("")
	filtered := open("?task=" + id)

	publish(t, b.rdb, tasks.Progress{TaskID: other, State: tasks.StateActive, BytesDone: 1, BytesTotal: 2})
	publish(t, b.rdb, tasks.Progress{TaskID: id, State: tasks.StateActive, BytesDone: 3, BytesTotal: 4, PartsDone: 3, PartsTotal: 4})

	decode := func(lines []string) dashboard.Transfer {
		t.Helper()
		if len(lines) != 2 || lines[0] != "event: progress" || !strings.HasPrefix(lines[1], "data: ") {
			t.Fatalf("event %q; want event: progress and one data line", lines)
		}
		var tr dashboard.Transfer
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &tr); err != nil {
			t.Fatal(err)
		}
		return tr
	}
	// The unfiltered stream sees both updates (other tests may add theirs).
	seen := map[string]bool{}
	for !seen[id] || !seen[other] {
		seen[decode(readEvent(t, all)).TaskID] = true
	}
	// The filtered stream sees only its task.
	tr := decode(readEvent(t, filtered))
	if tr.TaskID != id || tr.Percent != 75 || tr.PartsTotal != 4 {
		t.Errorf("filtered stream got %+v; want %s at 75%%", tr, id)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, queue := enqueuePending(t, b.client)

	resp, body := b.do(t, http.MethodPost, "/api/transfers/"+id+"/cancel")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel: %d %s; want 202", resp.StatusCode, body)
	}
	info, err := b.client.Inspector().GetTaskInfo(queue, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStateArchived {
		t.Errorf("after cancel the task is %s; want archived", info.State)
	}
	p, err := b.client.Progress(context.Background(), id)
	if err != nil || p.State != tasks.StateCancelled {
		t.Errorf("progress after cancel: %+v, %v; want cancelled", p, err)
	}
	if resp, body := b.do(t, http.MethodPost, "/api/transfers/"+id+"/cancel"); resp.StatusCode != http.StatusConflict {
		t.Errorf("second cancel: %d %s; want 409", resp.StatusCode, body)
	}
	if resp, body := b.do(t, http.MethodPost, "/api/transfers/"+testenv.UniqueName("nope")+"/cancel"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("cancel unknown: %d %s; want 404", resp.StatusCode, body)
	}
	// A cross-site form post is refused before it reaches the handler.
	id2, _ := enqueuePending(t, b.client)
	if resp, body := b.do(t, http.MethodPost, "/api/transfers/"+id2+"/cancel", "Sec-Fetch-Site", "cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site cancel: %d %s; want 403", resp.StatusCode, body)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *dashboard.Config) { c.ReadOnly = true })
	id, queue := enqueuePending(t, b.client)
	resp, body := b.do(t, http.MethodPost, "/api/transfers/"+id+"/cancel")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cancel when read-only: %d %s; want 403", resp.StatusCode, body)
	}
	info, err := b.client.Inspector().GetTaskInfo(queue, id)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("task after a refused cancel: %v, %v; want pending", info, err)
	}
	if _, body := b.get(t, "/"); !strings.Contains(body, `data-read-only="true"`) || !strings.Contains(body, "read-only") {
		t.Error("the page does not say read-only")
	}
	if _, body := b.get(t, "/transfers/"+id); !strings.Contains(body, `disabled title="read-only dashboard"`) {
		t.Error("the detail page's cancel button is not disabled")
	}
	// asynqmon is read-only too, even with a token.
	tb := setup(t, func(c *dashboard.Config) { c.ReadOnly, c.AuthToken = true, testToken })
	if resp, body := tb.do(t, http.MethodDelete, "/monitoring/api/queues/"+queue+"/pending_tasks/"+id, "Authorization", "Bearer "+testToken); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Errorf("asynqmon delete when read-only: %d %s; want 403", resp.StatusCode, body)
	}
	if info, err := b.client.Inspector().GetTaskInfo(queue, id); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("task after a refused asynqmon delete: %v, %v; want pending", info, err)
	}
}

func TestAuthToken(t *testing.T) {
	t.Parallel()
	const token = testToken
	b := setup(t, func(c *dashboard.Config) { c.AuthToken = token })
	for _, path := range []string{"/", "/api/transfers", "/api/events", "/metrics", "/monitoring/", "/monitoring/api/queues", "/static/app.js"} {
		if resp, _ := b.get(t, path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without token: %d; want 401", path, resp.StatusCode)
		}
	}
	if resp, _ := b.get(t, "/api/transfers", "Authorization", "Bearer wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %d; want 401", resp.StatusCode)
	}
	if resp, body := b.get(t, "/api/transfers", "Authorization", "Bearer "+token); resp.StatusCode != http.StatusOK {
		t.Errorf("bearer token: %d %s; want 200", resp.StatusCode, body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, _ := b.get(t, path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without token: %d; want 200", path, resp.StatusCode)
		}
	}
	// ?token= sets a cookie and redirects to the URL without the token.
	resp, _ := b.get(t, "/monitoring/?token="+token+"&x=1")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/monitoring/?x=1" {
		t.Fatalf("?token=: %d Location %q; want 303 to /monitoring/?x=1", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "ferry_dashboard_token" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v; want an HttpOnly, SameSite=Strict token cookie", cookie)
	}
	if resp, body := b.get(t, "/monitoring/api/queues", "Cookie", cookie.String()); resp.StatusCode != http.StatusOK {
		t.Errorf("with the cookie: %d %s; want 200", resp.StatusCode, body)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	extra := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_test_extra_total", Help: "test"})
	extra.MustRegister(c)
	c.Add(7)
	b := setup(t, func(cfg *dashboard.Config) { cfg.Registry = extra })
	_, queue := enqueuePending(t, b.client)
	resp, body := b.get(t, "/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`asynq_queue_size{queue="` + queue + `"} 1`,
		`asynq_tasks_enqueued_total{queue="` + queue + `",state="pending"} 1`,
		`asynq_queue_latency_seconds{queue="` + queue + `"}`,
		`asynq_tasks_processed_total{queue="` + queue + `"} 0`,
		`asynq_tasks_failed_total{queue="` + queue + `"} 0`,
		`asynq_queue_paused_total{queue="` + queue + `"} 0`,
		"ferry_dashboard_queue_metrics_up 1",
		"ferry_dashboard_event_clients 0",
		"ferry_dashboard_progress_messages_total",
		"ferry_test_extra_total 7",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := b.get(t, path); resp.StatusCode != http.StatusOK || body != "ok\n" {
			t.Errorf("GET %s: %d %q; want 200 ok", path, resp.StatusCode, body)
		}
	}

	// A Redis that does not answer: up, not ready, and no address leaked.
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = dead.Close() })
	d := setup(t, func(c *dashboard.Config) { c.Redis = dead })
	if resp, _ := d.get(t, "/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz with Redis down: %d; want 200", resp.StatusCode)
	}
	if resp, body := d.get(t, "/readyz"); resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, "127.0.0.1") {
		t.Errorf("readyz with Redis down: %d %q; want 503 without details", resp.StatusCode, body)
	}
	if resp, body := d.get(t, "/metrics"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "ferry_dashboard_queue_metrics_up 0") {
		t.Errorf("metrics with Redis down: %d, up 0 missing", resp.StatusCode)
	}
}

func TestMonitoring(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, queue := enqueuePending(t, b.client)
	resp, body := b.get(t, "/monitoring/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, `window.FLAG_ROOT_PATH="\/monitoring"`) || !strings.Contains(body, "Asynq - Monitoring") {
		t.Errorf("GET /monitoring/: %d %s; want asynqmon's page rooted at /monitoring: %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp, _ := b.get(t, "/monitoring"); resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/monitoring/" {
		t.Errorf("GET /monitoring: %d; want a redirect to /monitoring/", resp.StatusCode)
	}
	resp, body = b.get(t, "/monitoring/api/queues")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /monitoring/api/queues: %d %s", resp.StatusCode, body)
	}
	var queues struct {
		Queues []struct {
			Queue   string `json:"queue"`
			Pending int    `json:"pending"`
		} `json:"queues"`
	}
	if err := json.Unmarshal([]byte(body), &queues); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	found := false
	for _, q := range queues.Queues {
		found = found || (q.Queue == queue && q.Pending == 1)
	}
	if !found {
		t.Errorf("/monitoring/api/queues lacks %s with 1 pending: %s", queue, body)
	}
	// The payload is shown through ferry's formatter: inline bytes hidden.
	_, body = b.get(t, "/monitoring/api/queues/"+queue+"/pending_tasks")
	if !strings.Contains(body, `\u003c5 bytes\u003e`) && !strings.Contains(body, "<5 bytes>") {
		t.Errorf("pending task payload not formatted by ferry: %s", body)
	}
	if strings.Contains(body, "aGVsbG8=") { // "hello" in base64
		t.Errorf("inline data leaked into asynqmon: %s", body)
	}
	// Redis info works on the shared client.
	if resp, body := b.get(t, "/monitoring/api/redis_info"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "redis_version") {
		t.Errorf("GET /monitoring/api/redis_info: %d %.200s", resp.StatusCode, body)
	}
}

func TestPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.get(t, "/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<table id="transfers"`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	id := "ferry-<x>"
	resp, body = b.get(t, "/transfers/ferry-%3Cx%3E")
	if resp.StatusCode != http.StatusOK || strings.Contains(body, id) || !strings.Contains(body, "ferry-&lt;x&gt;") {
		t.Errorf("GET /transfers/{id}: %d; the id must be shown escaped", resp.StatusCode)
	}
	for path, ct := range map[string]string{"/static/app.js": "javascript", "/static/style.css": "text/css"} {
		if resp, _ := b.get(t, path); resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), ct) {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := b.get(t, "/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %d; want 404", resp.StatusCode)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := dashboard.New(dashboard.Config{}); err == nil || !strings.Contains(err.Error(), "Redis") {
		t.Errorf("New without Redis: %v; want an error naming Redis", err)
	}
}
