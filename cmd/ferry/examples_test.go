package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/ferrybin"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// examplesProducerToken is the producer token of TestExampleProducers.
const examplesProducerToken = "e1x2a3m4p5l6e7p8r9o0d1u2c3e4r5t6"

// TestExampleProducers runs the producers of examples/ (Python with urllib,
// Node with fetch), which know nothing of Go, against a real `ferry server`
// and `ferry worker` on redis-server and versitygw: each enqueues an upload
// with an Idempotency-Key, retries it (same transfer, HTTP 200), follows it
// over Server-Sent Events to completed, and the object has the file's
// bytes; each also serves a webhook receiver, asks for the transfer's
// signed completion event and verifies it with the workers' secret. A
// language whose interpreter is not on PATH is skipped, saying so.
func TestExampleProducers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dashAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	// The producers' webhook receivers listen on 127.0.0.1: listed by IP,
	// as a loopback address must be.
	b.startEnv(t, []string{envWebhookSecret + "=" + examplesWebhookSecret}, "worker started",
		"worker", "--queues", b.queue+"=1", "--allow-dir", b.dir, "--log-format", "json",
		"--part-size", "5MiB", "--webhook-allow", "127.0.0.1")
	b.startEnv(t, []string{"FERRY_API_PRODUCER_TOKENS=" + examplesProducerToken},
		"dashboard listening", "server", "--addr", dashAddr, "--log-format", "json")

	opt, err := redis.ParseURL(b.redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	ran := 0

	for _, ex := range []struct{ lang, interp, script string }{
		{"python", "python3", "../../examples/python/ferry_producer.py"},
		{"node", "node", "../../examples/node/ferry_producer.mjs"},
	} {
		t.Run(ex.lang, func(t *testing.T) {
			interp, err := exec.LookPath(ex.interp)
			if err != nil {
				t.Skipf("%s is not on PATH: the %s producer is not run (make tools installs it)", ex.interp, ex.lang)
			}
			script, err := filepath.Abs(ex.script)
			if err != nil {
				t.Fatal(err)
			}
			// Two parts and a bit: a multipart upload with progress events.
			data := make([]byte, 2*storage.MinPartSize+4321)
			_, _ = rand.Read(data)
			src := filepath.Join(b.dir, ex.lang+".bin")
			writeFile(t, src, string(data))
			key := "examples/" + ex.lang + ".bin"
			idem := testenv.UniqueName("idem-" + ex.lang)

			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, interp, script, "--source", src, "--bucket", b.bucket, "--key", key,
				"--queue", b.queue, "--idempotency-key", idem, "--webhook-listen", "127.0.0.1:0")
			cmd.Dir = b.dir
			cmd.Env = ferrybin.Env(b.dir, "FERRY_URL=http://"+dashAddr, "FERRY_API_TOKEN="+examplesProducerToken,
				envWebhookSecret+"="+examplesWebhookSecret)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", ex.interp, filepath.Base(script), err, &stdout, &stderr)
			}
			out := stdout.String()
			t.Logf("%s producer:\n%s", ex.lang, out)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) < 3 || !strings.Contains(lines[0], "(HTTP 201)") || !strings.Contains(lines[1], "(HTTP 200)") {
				t.Errorf("want an enqueue answered 201 and its retry answered 200:\n%s", out)
			}
			var res struct {
				TaskID               string `json:"task_id"`
				State, Dest, Webhook string
				Bytes                int64
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
				t.Fatalf("the last line is not the result as JSON: %v\n%s", err, out)
			}
			if res.State != "completed" || res.Bytes != int64(len(data)) || res.Dest != b.url(key) {
				t.Errorf("result %+v; want completed, %d bytes to s3://%s/%s", res, len(data), b.bucket, key)
			}
			if res.Webhook != "completed" || !strings.Contains(out, "webhook verified: "+res.TaskID+":completed completed") {
				t.Errorf("want the transfer's signed completion event verified by the producer:\n%s", out)
			}
			if got := getObject(t, b.s3.Client(), b.bucket, key); !bytes.Equal(got, data) {
				t.Errorf("s3://%s/%s: %d bytes, not the %d uploaded", b.bucket, key, len(got), len(data))
			}
			// The retry enqueued nothing: one upload per producer run (the
			// worker's own tasks, the janitor's, share the queue).
			ran++
			if n := uploads(t, inspector, b.queue); n != ran {
				t.Errorf("queue %s holds %d uploads after %d producer runs; want one each", b.queue, n, ran)
			}
		})
	}
}

// examplesWebhookSecret is the workers' webhook signing secret in
// TestExampleProducers.
const examplesWebhookSecret = "examples-webhook-secret-0123456789"

// TestExampleVerifiers: the examples' signature checks (Python's
// verify_ferry_signature, Node's verifyFerrySignature) accept the known
// vector of docs/api.md (also webhook.TestSignKnownVector), and refuse it
// replayed 10 minutes later, over a changed body, and under another secret.
func TestExampleVerifiers(t *testing.T) {
	t.Parallel()
	const (
		header = "t=1764532800,v1=e440b1edbe0cc502b8d9800976fe090e9c76965b479bb89a193256caab4c34ad"
		secret = "0123456789abcdef"
	)
	// Each case: body, secret, now; the program prints ok or the error.
	cases := []struct{ desc, body, secret, now, want string }{
		{"fresh", `{"id":"x"}`, secret, "1764532810", "ok"},
		{"replayed 10 minutes later", `{"id":"x"}`, secret, "1764533400", "replay window"},
		{"body changed", `{"id":"y"}`, secret, "1764532810", "does not match"},
		{"other secret", `{"id":"x"}`, "fedcba9876543210", "1764532810", "does not match"},
	}
	for _, ex := range []struct{ lang, interp string }{{"python", "python3"}, {"node", "node"}} {
		t.Run(ex.lang, func(t *testing.T) {
			t.Parallel()
			interp, err := exec.LookPath(ex.interp)
			if err != nil {
				t.Skipf("%s is not on PATH", ex.interp)
			}
			dir, _ := filepath.Abs(filepath.Join("..", "..", "examples", ex.lang))
			for _, c := range cases {
				var cmd *exec.Cmd
				if ex.lang == "python" {
					cmd = exec.Command(interp, "-c", `import sys, ferry_producer as m
try:
    m.verify_ferry_signature(sys.argv[1].encode(), sys.argv[2], [sys.argv[3].encode()], now=int(sys.argv[4])); print("ok")
except ValueError as e:
    print(e)`, c.body, header, c.secret, c.now)
				} else {
					cmd = exec.Command(interp, "--input-type=module", "-e", `import { verifyFerrySignature } from "./ferry_producer.mjs";
const [body, header, secret, now] = process.argv.slice(1);
try { verifyFerrySignature(Buffer.from(body), header, [secret], 300, Number(now)); console.log("ok"); } catch (e) { console.log(e.message); }`, c.body, header, c.secret, c.now)
				}
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), c.want) || (c.want != "ok" && strings.Contains(string(out), "ok\n")) {
					t.Errorf("%s: %s (%v), want %q", c.desc, out, err, c.want)
				}
			}
		})
	}
}

// uploads counts the upload tasks in queue, in every state.
func uploads(t *testing.T, in *asynq.Inspector, queue string) int {
	t.Helper()
	n := 0
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		in.ListPendingTasks, in.ListActiveTasks, in.ListScheduledTasks, in.ListRetryTasks, in.ListArchivedTasks, in.ListCompletedTasks,
	} {
		infos, err := list(queue)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range infos {
			if i.Type == tasks.TypeUpload {
				n++
			}
		}
	}
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
