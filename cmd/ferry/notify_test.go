package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/webhook"
)

// TestNotifyCLI: `ferry upload --notify` with a worker configured through
// webhook_allow and FERRY_WEBHOOK_SECRET_FILE delivers one signed event;
// URLs off the config's allowlist are refused at enqueue (exit 2, the
// reason, nothing enqueued); the secret is in no output.
func TestNotifyCLI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const secret = "cli-test-webhook-secret-0123456789"
	secretFile := filepath.Join(b.dir, "webhook-secret")
	writeFile(t, secretFile, "# the signing secret\n"+secret+"\n")
	writeFile(t, b.config, configYAML(b.s3, b.redisURL, "worker:\n  webhook_allow: [127.0.0.1, hooks.example.com]\n"))

	var mu sync.Mutex
	var bodies [][]byte
	var headers []http.Header
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, headers = append(bodies, body), append(headers, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)

	writeFile(t, filepath.Join(b.dir, "here.txt"), "hello webhooks")
	dst := b.url("notified.txt")
	for _, tc := range []struct{ url, want string }{
		{"http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata service"},
		{"http://127.0.0.2:9/hook", "127.0.0.2 is a loopback address"},
		{"https://evil.example.net/hook", `host "evil.example.net" is not on webhook_allow [127.0.0.1, hooks.example.com]`},
		{"https://user:pw@hooks.example.com/hook", "user:password@"},
	} {
		r := b.ferry(t, "upload", "here.txt", dst, "--queue", b.queue, "--notify", tc.url)
		if r.Code != exitUsage || !strings.Contains(r.Stderr, tc.want) || strings.Contains(r.Stderr, "pw@") {
			t.Errorf("--notify %s: want exit %d and %q: %s", tc.url, exitUsage, tc.want, r)
		}
	}
	rdb := testenv.RedisClient(t)
	if n, err := rdb.LLen(t.Context(), "asynq:{"+b.queue+"}:pending").Result(); err != nil || n != 0 {
		t.Errorf("refused enqueues left %d pending tasks (%v)", n, err)
	}

	// The worker starts after the refusals, so the queue held only what
	// they enqueued: nothing.
	logs := b.startEnv(t, []string{envWebhookSecret + envFileSuffix + "=" + secretFile}, "worker started",
		"worker", "--queues", b.queue+"=1", "--allow-dir", b.dir, "--log-format", "json")
	r := b.must(t, "upload", "here.txt", dst, "--queue", b.queue, "--notify", rcv.URL+"/hook", "--wait")
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(bodies)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("the receiver got %d requests, want 1 (upload: %s)", len(bodies), r)
	}
	if err := webhook.Verify(bodies[0], headers[0].Get(webhook.SignatureHeader), time.Now(), 0, []byte(secret)); err != nil {
		t.Errorf("signature: %v", err)
	}
	ev, err := webhook.ParseEvent(bodies[0])
	if err != nil || ev.State != "completed" || ev.Dest != dst || ev.Size != int64(len("hello webhooks")) || !strings.Contains(r.Stdout, ev.ID) {
		t.Errorf("event %+v (%v) for upload %s", ev, err, r.Stdout)
	}
	// The key counted above is the queue's: the upload is there now.
	if n, err := rdb.ZCard(t.Context(), "asynq:{"+b.queue+"}:completed").Result(); err != nil || n == 0 {
		t.Errorf("asynq:{%s}:completed has %d members (%v): the pending key checked above is not the queue's", b.queue, n, err)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the worker's log holds the webhook secret")
	}
}
