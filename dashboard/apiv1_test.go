package dashboard_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// Tokens of the API tests (CheckToken accepts them).
const (
	producerToken = "p7c1e5a9b3d2f4068a1b2c3d4e5f6a7b"
	viewerToken   = "v2d4f6a8c0e1b3d5f7a9c1e3b5d7f9a1"
)

// apiTokens configures the API tests' tokens.
func apiTokens(c *dashboard.Config) {
	c.APITokens = []dashboard.APIToken{{Token: producerToken, Scope: dashboard.ScopeProducer}, {Token: viewerToken, Scope: dashboard.ScopeViewer}}
}

// apiSetup is setup with API tokens, and every exchange with the API
// validated against the OpenAPI document (specCheck): a request the server
// accepts or an answer it gives that the document does not describe fails
// the test.
func apiSetup(t *testing.T, opts ...func(*dashboard.Config)) *bundle {
	t.Helper()
	return specSetup(t, testenv.RedisClient(t), true, opts...)
}

// specSetup is setupOn with API tokens and an OpenAPI check (specCheck)
// whose findings fail the test; with checked, every exchange goes through
// it.
func specSetup(t *testing.T, rdb *redis.Client, checked bool, opts ...func(*dashboard.Config)) *bundle {
	t.Helper()
	check := newSpecCheck(t)
	// Registered before setupOn's cleanups, so it runs after them: once the
	// server is closed, its streams have ended and been checked.
	t.Cleanup(func() {
		check.mu.Lock()
		defer check.mu.Unlock()
		for _, e := range check.errs {
			t.Error("OpenAPI: " + e)
		}
	})
	var wrap func(http.Handler) http.Handler
	if checked {
		wrap = check.wrap
	}
	b := setupOn(t, rdb, wrap, append([]func(*dashboard.Config){apiTokens}, opts...)...)
	b.spec = check
	return b
}

// call sends one API request; hdr are name, value pairs.
func (b *bundle) call(t *testing.T, method, path, token string, body []byte, hdr ...string) (*http.Response, string) {
	t.Helper()
	if body != nil {
		hdr = append([]string{"Content-Type", "application/json"}, hdr...)
	}
	resp := b.send(t, context.Background(), method, path, token, body, hdr...)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(out)
}

// send sends one request to the test server until ctx ends: token as a
// bearer token (none when empty), hdr as name, value pairs.
func (b *bundle) send(t *testing.T, ctx context.Context, method, path, token string, body []byte, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, b.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

type apiTransfer struct {
	dashboard.Transfer
	Queue string `json:"queue"`
}

func decodeTransfer(t *testing.T, body string) apiTransfer {
	t.Helper()
	var tr apiTransfer
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return tr
}

// checkRefused checks an answer of the API that refuses a request: status,
// and a JSON error whose message contains want and whose field is field,
// that shows none of secrets.
func checkRefused(t *testing.T, resp *http.Response, out string, status int, want, field string, secrets ...string) {
	t.Helper()
	var e struct{ Error, Code, Field string }
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("%d %.300s: not a JSON error: %v", resp.StatusCode, out, err)
	}
	if resp.StatusCode != status || !strings.Contains(e.Error, want) || e.Field != field {
		t.Errorf("%d %.300s; want %d with %q and field %q", resp.StatusCode, out, status, want, field)
	}
	for _, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("the error echoes a credential: %.300s", out)
		}
	}
}

// queueLen is the number of tasks in queue, in every state.
func queueLen(t *testing.T, c *tasks.Client, queue string) int {
	t.Helper()
	info, err := c.Inspector().GetQueueInfo(queue)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "not found") {
			return 0
		}
		t.Fatal(err)
	}
	return info.Size + info.Completed
}

func putBody(queue, bucket, key string, extra string) []byte {
	return fmt.Appendf(nil, `{"type":"put","queue":%q,"payload":{"source":{"data":"aGVsbG8="},"dest":{"bucket":%q,"key":%q}}%s}`, queue, bucket, key, extra)
}

// TestAPIEnqueueIdempotent: a producer enqueues with an Idempotency-Key
// (201), a retry of the same request enqueues nothing (200, same id), the
// same key with another body is refused (409); the transfer is readable,
// listed (filters, cursor) and cancellable.
func TestAPIEnqueueIdempotent(t *testing.T) {
	t.Parallel()
	b := apiSetup(t)
	queue := testenv.UniqueName("q")
	key := testenv.UniqueName("k")
	body := putBody(queue, "bucket-api", "a.txt", "")

	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, body, "Idempotency-Key", key)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue: %d %s; want 201", resp.StatusCode, out)
	}
	first := decodeTransfer(t, out)
	if first.TaskID == "" || first.Queue != queue || first.State != tasks.StatePending || first.Dest != "s3://bucket-api/a.txt" || first.Type != tasks.TypePut {
		t.Errorf("enqueue answered %+v", first)
	}
	if loc := resp.Header.Get("Location"); loc != "/api/v1/transfers/"+first.TaskID {
		t.Errorf("Location %q", loc)
	}
	resp, out = b.call(t, "POST", "/api/v1/transfers", producerToken, body, "Idempotency-Key", key)
	if resp.StatusCode != http.StatusOK || decodeTransfer(t, out).TaskID != first.TaskID {
		t.Fatalf("retry: %d %s; want 200 with %s", resp.StatusCode, out, first.TaskID)
	}
	if n := queueLen(t, b.client, queue); n != 1 {
		t.Errorf("queue holds %d tasks after a retried enqueue; want 1", n)
	}
	resp, out = b.call(t, "POST", "/api/v1/transfers", producerToken, putBody(queue, "bucket-api", "other.txt", ""), "Idempotency-Key", key)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(out, "different request") {
		t.Errorf("key reused for another body: %d %s; want 409", resp.StatusCode, out)
	}
	// Without a key every request is a new transfer.
	resp, out = b.call(t, "POST", "/api/v1/transfers", producerToken, putBody(queue, "bucket-api", "b.txt", `,"process_in":"1h","max_retry":3,"timeout":"90s"`))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue without key: %d %s", resp.StatusCode, out)
	}
	second := decodeTransfer(t, out)
	info, err := b.client.Lookup(context.Background(), second.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxRetry != 3 || info.Timeout != 90*time.Second || info.State.String() != "scheduled" {
		t.Errorf("options not applied: max_retry %d timeout %v state %s", info.MaxRetry, info.Timeout, info.State)
	}

	// Read it, with a viewer token.
	resp, out = b.call(t, "GET", "/api/v1/transfers/"+first.TaskID, viewerToken, nil)
	if resp.StatusCode != http.StatusOK || decodeTransfer(t, out).TaskID != first.TaskID {
		t.Errorf("get: %d %s", resp.StatusCode, out)
	}
	// Listed, filtered by queue and state, one per page.
	var ids []string
	cursor := ""
	eventually(t, "both transfers listed", func() bool {
		ids, cursor = nil, ""
		for range 5 {
			resp, out := b.call(t, "GET", "/api/v1/transfers?state=pending&type=put&limit=1&queue="+queue+"&cursor="+cursor, viewerToken, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("list: %d %s", resp.StatusCode, out)
			}
			var page struct {
				Transfers  []apiTransfer `json:"transfers"`
				NextCursor string        `json:"next_cursor"`
			}
			if err := json.Unmarshal([]byte(out), &page); err != nil {
				t.Fatal(err)
			}
			for _, tr := range page.Transfers {
				ids = append(ids, tr.TaskID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		return len(ids) == 2
	})
	if ids[0] == ids[1] {
		t.Errorf("pages repeat a transfer: %v", ids)
	}
	if resp, out := b.call(t, "GET", "/api/v1/transfers?state=completed&queue="+queue, viewerToken, nil); resp.StatusCode != 200 || strings.Contains(out, first.TaskID) {
		t.Errorf("state filter: %d %s", resp.StatusCode, out)
	}

	// Cancel: the viewer may not, the producer may.
	if resp, out := b.call(t, "POST", "/api/v1/transfers/"+first.TaskID+"/cancel", viewerToken, nil); resp.StatusCode != http.StatusForbidden || !strings.Contains(out, "needs a producer token") {
		t.Errorf("viewer cancel: %d %s; want 403", resp.StatusCode, out)
	}
	if resp, out := b.call(t, "POST", "/api/v1/transfers/"+first.TaskID+"/cancel", producerToken, nil); resp.StatusCode != http.StatusAccepted {
		t.Errorf("cancel: %d %s; want 202", resp.StatusCode, out)
	}
	if resp, out := b.call(t, "POST", "/api/v1/transfers/"+first.TaskID+"/cancel", producerToken, nil); resp.StatusCode != http.StatusConflict {
		t.Errorf("second cancel: %d %s; want 409", resp.StatusCode, out)
	}
	if resp, out := b.call(t, "GET", "/api/v1/transfers/nope-"+key, viewerToken, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown id: %d %s; want 404", resp.StatusCode, out)
	}
	// The old unversioned API still answers (with the dashboard's rules).
	if resp, out := b.get(t, "/api/transfers/"+first.TaskID); resp.StatusCode != http.StatusOK {
		t.Errorf("old API: %d %s", resp.StatusCode, out)
	}
}

// TestAPIBadInput: every bad request gets a precise status and message,
// and nothing is enqueued.
func TestAPIBadInput(t *testing.T) {
	t.Parallel()
	b := apiSetup(t, func(c *dashboard.Config) { c.APIRate, c.APIBurst = 1000, 1000 })
	queue := testenv.UniqueName("q")
	good := string(putBody(queue, "bucket-api", "k", ""))
	withPayload := func(payload string) string {
		return fmt.Sprintf(`{"type":"upload","queue":%q,"payload":%s}`, queue, payload)
	}
	big := append([]byte(`{"type":"put","queue":"`+queue+`","payload":{"source":{"data":"`), bytes.Repeat([]byte("A"), 10<<20)...)
	big = append(big, `"},"dest":{"bucket":"bucket-api","key":"k"}}}`...)
	for _, tc := range []struct {
		desc        string
		token       string
		contentType string
		body        string
		hdr         []string
		status      int
		want        string // in the body
		field       string
	}{
		{desc: "no token", status: 401, body: good, want: "Authorization: Bearer"},
		{desc: "unknown token", token: "x1y2z3w4v5u6t7s8r9q0p1o2", status: 401, body: good, want: "not one of this server's tokens"},
		{desc: "viewer token on a write", token: viewerToken, status: 403, body: good, want: "needs a producer token; yours is a viewer token"},
		{desc: "malformed JSON", token: producerToken, body: `{"type":"put",`, status: 400, want: "malformed JSON"},
		{desc: "trailing data", token: producerToken, body: good + `{}`, status: 400, want: "trailing data"},
		{desc: "wrong content type", token: producerToken, contentType: "text/plain", body: good, status: 415, want: "application/json"},
		{desc: "10 MiB body", token: producerToken, body: string(big), status: 413, want: "larger than 1048576 bytes"},
		{desc: "unknown top-level field", token: producerToken, body: good[:len(good)-1] + `,"priority":1}`, status: 400, want: `unknown field "priority"`, field: "priority"},
		{desc: "unknown payload field", token: producerToken, body: withPayload(`{"source":{"path":"/data/a"},"dest":{"bucket":"bucket-api","key":"k"},"acl":"public"}`), status: 400, want: `unknown field "payload.acl"`, field: "payload.acl"},
		{desc: "unknown type", token: producerToken, body: `{"type":"teleport","payload":{}}`, status: 422, want: `unknown type "teleport"`, field: "type"},
		{desc: "missing type", token: producerToken, body: `{"payload":{}}`, status: 400, want: "type is missing", field: "type"},
		{desc: "missing payload", token: producerToken, body: `{"type":"upload"}`, status: 400, want: "payload is missing", field: "payload"},
		{desc: "credentials in a URL", token: producerToken, body: withPayload(`{"source":{"url":"https://user:hunter2@example.com/x"},"dest":{"bucket":"bucket-api","key":"k"}}`), status: 400, want: "carries user info", field: "payload.source"},
		{desc: "relative path", token: producerToken, body: withPayload(`{"source":{"path":"data/a"},"dest":{"bucket":"bucket-api","key":"k"}}`), status: 400, want: "is relative", field: "payload.source"},
		{desc: "path with ..", token: producerToken, body: withPayload(`{"source":{"path":"/data/../etc/passwd"},"dest":{"bucket":"bucket-api","key":"k"}}`), status: 400, want: "is not clean", field: "payload.source"},
		{desc: "plain http source", token: producerToken, body: withPayload(`{"source":{"url":"http://example.com/x"},"dest":{"bucket":"bucket-api","key":"k"}}`), status: 400, want: "only https://", field: "payload.source"},
		{desc: "bad bucket", token: producerToken, body: withPayload(`{"source":{"path":"/data/a"},"dest":{"bucket":"Bad_Bucket","key":"k"}}`), status: 400, want: "not a valid S3 bucket name", field: "payload.dest"},
		{desc: "part size out of range", token: producerToken, body: withPayload(`{"source":{"path":"/data/a"},"dest":{"bucket":"bucket-api","key":"k"},"part_size":1}`), status: 400, want: "part_size 1 is out of range", field: "payload.part_size"},
		{desc: "wrong JSON type", token: producerToken, body: withPayload(`{"source":{"path":"/data/a"},"dest":{"bucket":"bucket-api","key":"k"},"part_size":"big"}`), status: 400, want: "expected int64", field: "payload.part_size"},
		{desc: "bad timeout", token: producerToken, body: good[:len(good)-1] + `,"timeout":"soon"}`, status: 400, want: `timeout "soon"`, field: "timeout"},
		{desc: "bad idempotency key", token: producerToken, body: good, hdr: []string{"Idempotency-Key", strings.Repeat("k", 300)}, status: 400, want: "Idempotency-Key", field: "Idempotency-Key"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			hdr := append([]string{"Content-Type", cmp.Or(tc.contentType, "application/json")}, tc.hdr...)
			resp, out := b.call(t, "POST", "/api/v1/transfers", tc.token, []byte(tc.body), hdr...)
			checkRefused(t, resp, out, tc.status, tc.want, tc.field, "hunter2")
		})
	}
	if n := queueLen(t, b.client, queue); n != 0 {
		t.Errorf("bad requests enqueued %d tasks", n)
	}
}

// TestAPIRateLimit: a token beyond its rate gets 429 with Retry-After;
// another token is not affected.
func TestAPIRateLimit(t *testing.T) {
	t.Parallel()
	b := apiSetup(t, func(c *dashboard.Config) { c.APIRate, c.APIBurst = 0.5, 2 })
	for i := range 2 {
		if resp, out := b.call(t, "GET", "/api/v1/transfers", viewerToken, nil); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, out)
		}
	}
	resp, out := b.call(t, "GET", "/api/v1/transfers", viewerToken, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(out, "too many requests") {
		t.Errorf("third request: %d %s (Retry-After %q); want 429", resp.StatusCode, out, resp.Header.Get("Retry-After"))
	}
	if resp, out := b.call(t, "GET", "/api/v1/transfers", producerToken, nil); resp.StatusCode != 200 {
		t.Errorf("another token: %d %s; want 200", resp.StatusCode, out)
	}
}

// TestAPITokensRefused: weak or duplicate API tokens stop New, and the
// error does not contain the token.
func TestAPITokensRefused(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	for _, toks := range [][]dashboard.APIToken{
		{{Token: "short", Scope: dashboard.ScopeProducer}},
		{{Token: producerToken}},
		{{Token: producerToken, Scope: dashboard.ScopeProducer}, {Token: producerToken, Scope: dashboard.ScopeViewer}},
	} {
		_, err := dashboard.New(dashboard.Config{Redis: rdb, APITokens: toks})
		if err == nil || strings.Contains(err.Error(), toks[0].Token) {
			t.Errorf("New with %d tokens: %v; want an error without the token", len(toks), err)
		}
	}
}

// TestAPIRedisDown: with Redis unreachable an enqueue answers 503 with
// Retry-After.
func TestAPIRedisDown(t *testing.T) {
	t.Parallel()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := apiSetup(t, func(c *dashboard.Config) {
		c.Redis = redisClientAt(fmt.Sprintf("127.0.0.1:%d", port))
	})
	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, putBody("default", "bucket-api", "k", ""))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(out, "retry after") {
		t.Errorf("Redis down: %d %s; want 503 with Retry-After", resp.StatusCode, out)
	}
}

// readSSE reads one event's id and data lines (comments skipped).
func readSSE(t *testing.T, r *bufio.Reader) (id string, tr dashboard.Transfer) {
	t.Helper()
	for {
		lines := readEvent(t, r)
		var data string
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l, "id: "):
				id = strings.TrimPrefix(l, "id: ")
			case strings.HasPrefix(l, "data: "):
				data = strings.TrimPrefix(l, "data: ")
			}
		}
		if data == "" {
			continue
		}
		if err := json.Unmarshal([]byte(data), &tr); err != nil {
			t.Fatal(err)
		}
		return id, tr
	}
}

func (b *bundle) stream(t *testing.T, path, token string, hdr ...string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	resp := b.send(t, ctx, http.MethodGet, path, token, nil, hdr...)
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// TestAPIEvents: a transfer's stream starts with its current state, follows
// it and ends when it finishes; a reconnect with Last-Event-ID after the
// end gets 204; the global stream replays what changed after Last-Event-ID.
func TestAPIEvents(t *testing.T) {
	t.Parallel()
	b := apiSetup(t)
	id := testenv.UniqueName("sse")
	t0 := time.Now().Add(-time.Second)
	publish(t, b.rdb, tasks.Progress{TaskID: id, State: tasks.StateActive, BytesDone: 1, BytesTotal: 4, UpdatedAt: t0})

	resp, r := b.stream(t, "/api/v1/transfers/"+id+"/events", viewerToken)
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	firstID, tr := readSSE(t, r)
	if tr.TaskID != id || tr.BytesDone != 1 || firstID != fmt.Sprint(t0.UnixNano()) {
		t.Fatalf("first event %s %+v; want the current state with id %d", firstID, tr, t0.UnixNano())
	}
	t1 := t0.Add(100 * time.Millisecond)
	publish(t, b.rdb, tasks.Progress{TaskID: id, State: tasks.StateCompleted, BytesDone: 4, BytesTotal: 4, UpdatedAt: t1})
	lastID, tr := readSSE(t, r)
	if tr.State != tasks.StateCompleted || lastID != fmt.Sprint(t1.UnixNano()) {
		t.Fatalf("second event %s %+v; want completed", lastID, tr)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("the stream did not end after the transfer finished: %v", err)
	}
	if resp, _ := b.stream(t, "/api/v1/transfers/"+id+"/events", viewerToken, "Last-Event-ID", lastID); resp.StatusCode != http.StatusNoContent {
		t.Errorf("reconnect after the end: %d; want 204", resp.StatusCode)
	}
	// The global stream, resumed from the first event: the completed state
	// is replayed.
	eventually(t, "the index to hold the completed state", func() bool {
		tr, ok := find(b.list(t), id)
		return ok && tr.State == tasks.StateCompleted
	})
	_, r = b.stream(t, "/api/v1/events", viewerToken, "Last-Event-ID", firstID)
	for {
		gotID, tr := readSSE(t, r)
		if tr.TaskID == id {
			if tr.State != tasks.StateCompleted || gotID != lastID {
				t.Errorf("replayed %s %+v; want the completed state", gotID, tr)
			}
			break
		}
	}
	if resp, _ := b.stream(t, "/api/v1/events", viewerToken, "Last-Event-ID", "yesterday"); resp.StatusCode != 400 {
		t.Errorf("bad Last-Event-ID: %d; want 400", resp.StatusCode)
	}
}

// TestAPIUploadEndToEnd: an upload enqueued over HTTP is run by a real
// worker against a real S3 server, and its event stream ends completed.
func TestAPIUploadEndToEnd(t *testing.T) {
	t.Parallel()
	b := apiSetup(t)
	srv := testenv.S3(t)
	bucket := srv.Bucket(t)
	dir := t.TempDir()
	queue := testenv.UniqueName("q")
	path, data := testenv.RandomFile(t, dir, "http.bin", 3*storage.MinPartSize)
	body := fmt.Appendf(nil, `{"type":"upload","queue":%q,"payload":{"source":{"path":%q},"dest":{"bucket":%q,"key":"http.bin"}}}`, queue, path, bucket)
	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, body, "Idempotency-Key", testenv.UniqueName("e2e"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, out)
	}
	id := decodeTransfer(t, out).TaskID
	_, r := b.stream(t, "/api/v1/transfers/"+id+"/events", viewerToken)
	b.startWorker(t, srv, queue, worker.Config{AllowDirs: []string{dir}, PartSize: storage.MinPartSize, PartConcurrency: 2})
	var last dashboard.Transfer
	for !last.State.Terminal() {
		_, last = readSSE(t, r)
	}
	if last.State != tasks.StateCompleted || last.BytesDone != int64(len(data)) {
		t.Fatalf("final event %+v; want completed with %d bytes", last, len(data))
	}
	head, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("http.bin")})
	if err != nil || aws.ToInt64(head.ContentLength) != int64(len(data)) {
		t.Fatalf("the object at the destination: %v, %v", head, err)
	}
}

// redisClientAt is a client of a Redis that is not there, failing fast.
func redisClientAt(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
}

// TestAPIBadPayloadCorpus sends the fault suite's bad payloads
// (internal/faulttest TestBadInputCorpus) that a producer can know are bad
// through HTTP: each is refused with 400, a message naming the problem and
// the field, and nothing is enqueued. The rest of that corpus (symlinks,
// FIFOs, missing files, unknown profiles, hosts off the allowlist) depends
// on the worker's machine and configuration: the API accepts those and the
// worker archives them with the reason, as the fault suite checks.
func TestAPIBadPayloadCorpus(t *testing.T) {
	t.Parallel()
	b := apiSetup(t, func(c *dashboard.Config) { c.APIRate, c.APIBurst = 1000, 1000 })
	queue := testenv.UniqueName("q")
	const bk = "bucket-api"
	dest := `{"bucket":"` + bk + `","key":"out/x"}`
	big := strings.Repeat("A", 400<<10) // base64 of 300 KiB, over the 256 KiB inline limit
	for _, tc := range []struct {
		desc, typ, payload, want, field string
	}{
		{"JSON null", "put", `null`, "payload is missing", "payload"},
		{"JSON array", "copy", `[1,2,3]`, "expected tasks.CopyPayload", "payload"},
		{"trailing data in the payload", "put", `{"source":{"data":"eA=="},"dest":` + dest + `} {}`, "malformed JSON", ""},
		{"oversized inline data", "put", `{"source":{"data":"` + big + `"},"dest":` + dest + `}`, "inline", "payload.source"},
		{"over-long key", "put", `{"source":{"data":"eA=="},"dest":{"bucket":"` + bk + `","key":"out/` + strings.Repeat("k", 1100) + `"}}`, "1024", "payload.dest"},
		{"control character in key", "put", `{"source":{"data":"eA=="},"dest":{"bucket":"` + bk + `","key":"out/a\u0000b"}}`, "key", "payload.dest"},
		{"dot-dot key on delete", "delete", `{"dest":{"bucket":"` + bk + `","key":"keep/../keep/me"}}`, "..", "payload.dest"},
		{"dot-dot path escape", "upload", `{"source":{"path":"/data/../etc/secret.txt"},"dest":` + dest + `}`, "not clean", "payload.source"},
		{"relative path", "upload", `{"source":{"path":"secret.txt"},"dest":` + dest + `}`, "absolute", "payload.source"},
		{"credentials in a profile name", "copy", `{"source":{"profile":"AKIA:secret","bucket":"` + bk + `","key":"keep/me"},"dest":{"bucket":"` + bk + `","key":"out/c"}}`, "profile", "payload.source"},
		{"credentials in a URL", "put", `{"source":{"url":"https://AKIA:hunter2@example.com/x"},"dest":` + dest + `}`, "user info", "payload.source"},
		{"invalid bucket name", "put", `{"source":{"data":"eA=="},"dest":{"bucket":"Not_A_Bucket","key":"k"}}`, "bucket", "payload.dest"},
		{"recursive delete of a whole bucket without allow_all", "delete", `{"dest":{"bucket":"` + bk + `","key":""},"recursive":true}`, "allow_all", "payload.dest"},
		{"reserved metadata key", "put", `{"source":{"data":"eA=="},"dest":` + dest + `,"metadata":{"ferry-task-id":"spoof"}}`, "reserved", "payload.metadata"},
		{"part size below 5 MiB", "upload", `{"source":{"path":"/data/a"},"dest":` + dest + `,"part_size":1024}`, "part_size", "payload.part_size"},
		{"part concurrency 1000", "upload", `{"source":{"path":"/data/a"},"dest":` + dest + `,"part_concurrency":1000}`, "part_concurrency", "payload.part_concurrency"},
		{"http (not https) source", "put", `{"source":{"url":"http://127.0.0.1:1/x"},"dest":` + dest + `}`, "https", "payload.source"},
		{"two sources at once", "put", `{"source":{"data":"eA==","path":"/etc/passwd"},"dest":` + dest + `}`, "source", "payload.source"},
		{"move onto itself", "move", `{"source":{"bucket":"` + bk + `","key":"keep/me"},"dest":{"bucket":"` + bk + `","key":"keep/me"}}`, "same object", "payload"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			body := fmt.Sprintf(`{"type":%q,"queue":%q,"payload":%s}`, tc.typ, queue, tc.payload)
			resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, []byte(body), "Idempotency-Key", testenv.UniqueName("bad"))
			checkRefused(t, resp, out, http.StatusBadRequest, tc.want, tc.field, "hunter2", "AKIA:secret")
		})
	}
	if n := queueLen(t, b.client, queue); n != 0 {
		t.Errorf("bad payloads enqueued %d tasks", n)
	}
}

// TestAPIBadInputEveryRoute: every route refuses a request without a
// token (401) and with an unknown one (401); the routes that write refuse
// a viewer token (403) and change nothing; each route's own bad input
// (parameters, Last-Event-ID, unknown id) gets a precise 4xx naming it.
func TestAPIBadInputEveryRoute(t *testing.T) {
	t.Parallel()
	b := apiSetup(t, func(c *dashboard.Config) { c.APIRate, c.APIBurst = 1000, 1000 })
	queue := testenv.UniqueName("q")
	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, putBody(queue, "bucket-api", "k", ""))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue: %d %s", resp.StatusCode, out)
	}
	id := decodeTransfer(t, out).TaskID
	concrete := func(pattern string) (string, string) {
		method, path, _ := strings.Cut(pattern, " ")
		return method, strings.ReplaceAll(path, "{id}", id)
	}
	writes := map[string]bool{"POST /api/v1/transfers": true, "POST /api/v1/transfers/{id}/cancel": true}
	for _, p := range b.srv.APIPatterns() {
		method, path := concrete(p)
		// A bad Last-Event-ID keeps an authorised event stream from
		// streaming; without authorisation it is never read.
		if resp, out := b.call(t, method, path, "", putBody(queue, "bucket-api", "k2", "")); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(out, "Authorization: Bearer") || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s without a token: %d %s; want 401 saying how to authenticate", p, resp.StatusCode, out)
		}
		if resp, out := b.call(t, method, path, "u1n2k3n4o5w6n7t8o9k0e1n2", putBody(queue, "bucket-api", "k2", "")); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(out, "not one of this server's tokens") {
			t.Errorf("%s with an unknown token: %d %s; want 401", p, resp.StatusCode, out)
		}
		if writes[p] {
			if resp, out := b.call(t, method, path, viewerToken, putBody(queue, "bucket-api", "k2", "")); resp.StatusCode != http.StatusForbidden || !strings.Contains(out, "needs a producer token; yours is a viewer token") {
				t.Errorf("%s with a viewer token: %d %s; want 403", p, resp.StatusCode, out)
			}
		}
	}
	for _, tc := range []struct {
		method, path string
		hdr          []string
		status       int
		want, field  string
	}{
		{"GET", "/api/v1/transfers?limit=0", nil, 400, `limit "0": give 1 to 1000`, "limit"},
		{"GET", "/api/v1/transfers?limit=many", nil, 400, `limit "many"`, "limit"},
		{"GET", "/api/v1/transfers?state=stuck", nil, 400, `state "stuck"`, "state"},
		{"GET", "/api/v1/transfers?type=teleport", nil, 400, `type "teleport"`, "type"},
		{"GET", "/api/v1/transfers?cursor=not-a-cursor", nil, 400, "pass next_cursor unchanged", "cursor"},
		{"GET", "/api/v1/transfers/nope-" + id, nil, 404, `no transfer "nope-` + id + `"`, ""},
		{"POST", "/api/v1/transfers/nope-" + id + "/cancel", nil, 404, `no transfer "nope-` + id + `"`, ""},
		{"GET", "/api/v1/transfers/nope-" + id + "/events", nil, 404, `no transfer "nope-` + id + `"`, ""},
		{"GET", "/api/v1/transfers/" + id + "/events", []string{"Last-Event-ID", "yesterday"}, 400, `Last-Event-ID "yesterday"`, "Last-Event-ID"},
		{"GET", "/api/v1/events", []string{"Last-Event-ID", "-5"}, 400, `Last-Event-ID "-5"`, "Last-Event-ID"},
		{"DELETE", "/api/v1/transfers/" + id, nil, 404, "no route DELETE", ""},
	} {
		resp, out := b.call(t, tc.method, tc.path, producerToken, nil, tc.hdr...)
		var e struct{ Error, Code, Field string }
		if err := json.Unmarshal([]byte(out), &e); err != nil || resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.want) || e.Field != tc.field {
			t.Errorf("%s %s: %d %s; want %d with %q and field %q", tc.method, tc.path, resp.StatusCode, out, tc.status, tc.want, tc.field)
		}
	}
	// The refused writes changed nothing: one task, still pending.
	if n := queueLen(t, b.client, queue); n != 1 {
		t.Errorf("queue holds %d tasks; want only the one enqueued", n)
	}
	info, err := b.client.Lookup(context.Background(), id)
	if err != nil || info.State.String() != "pending" {
		t.Errorf("the transfer after refused cancels: %v, %v; want pending", info, err)
	}
}

// TestAPIBatch: POST /api/v1/transfers takes a ferry:batch like any other
// transfer: the worker runs it to completion and the final event counts
// the bytes written. A bad item is refused with 400 naming it, and a
// producer cannot pose as a migration's batch.
func TestAPIBatch(t *testing.T) {
	t.Parallel()
	b := apiSetup(t)
	srv := testenv.S3(t)
	bucket := srv.Bucket(t)
	queue := testenv.UniqueName("q")
	srv.PutObject(t, bucket, "src/1", []byte("hello"), nil)
	srv.PutObject(t, bucket, "src/2", []byte("world!"), nil)
	body := fmt.Appendf(nil, `{"type":"batch","queue":%q,"payload":{"items":[`+
		`{"source":{"bucket":%q,"key":"src/1"},"dest":{"bucket":%q,"key":"b/1"}},`+
		`{"source":{"bucket":%q,"key":"src/2"},"dest":{"bucket":%q,"key":"b/2"}}]}}`, queue, bucket, bucket, bucket, bucket)
	resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, body, "Idempotency-Key", testenv.UniqueName("batch"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enqueue a batch: %d %s", resp.StatusCode, out)
	}
	tr := decodeTransfer(t, out)
	if tr.Type != tasks.TypeBatch {
		t.Errorf("enqueued %+v; want a %s", tr, tasks.TypeBatch)
	}
	// The OpenAPI document offers it, with its payload's schema.
	_, doc := b.call(t, "GET", "/api/v1/openapi.json", viewerToken, nil)
	if !strings.Contains(doc, `"ferry:batch"`) || !strings.Contains(doc, `"concurrency"`) {
		t.Errorf("the OpenAPI document does not offer ferry:batch with its payload")
	}
	_, r := b.stream(t, "/api/v1/transfers/"+tr.TaskID+"/events", viewerToken)
	b.startWorker(t, srv, queue, worker.Config{})
	var last dashboard.Transfer
	for !last.State.Terminal() {
		_, last = readSSE(t, r)
	}
	if last.State != tasks.StateCompleted || last.BytesDone != 11 {
		t.Fatalf("final event %+v; want completed with 11 bytes", last)
	}
	for _, k := range []string{"b/1", "b/2"} {
		if _, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err != nil {
			t.Errorf("%s at the destination: %v", k, err)
		}
	}

	for _, tc := range []struct{ desc, payload, want string }{
		{"a bad item", `{"items":[{"source":{"bucket":"` + bucket + `","key":"src/1"},"dest":{"bucket":"` + bucket + `","key":"ok"}},{"source":{"bucket":"` + bucket + `","key":"src/1"},"dest":{"bucket":"Not_A_Bucket","key":"k"}}]}`, "item 1"},
		{"no items", `{"items":[]}`, "item"},
		{"posing as a migration's batch", `{"items":[{"source":{"bucket":"` + bucket + `","key":"src/1"},"dest":{"bucket":"` + bucket + `","key":"ok"}}],"migration":"mig-1"}`, "migration"},
	} {
		body := fmt.Sprintf(`{"type":"ferry:batch","queue":%q,"payload":%s}`, queue, tc.payload)
		resp, out := b.call(t, "POST", "/api/v1/transfers", producerToken, []byte(body), "Idempotency-Key", testenv.UniqueName("bad"))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %d %.300s; want 400 naming %q", tc.desc, resp.StatusCode, out, tc.want)
		}
	}
}
