package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/internal/ferrybin"
	"github.com/ferryhq/ferry/internal/testenv"
)

// getObject reads an object with the plain SDK; nil when it does not exist.
func (b bundle) getObject(t *testing.T, key string) []byte {
	t.Helper()
	return b.s3.GetObject(t, b.bucket, key)
}

func (b bundle) putObject(t *testing.T, key string, data []byte) {
	t.Helper()
	_, err := b.s3.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: &b.bucket, Key: &key,
		Body: bytes.NewReader(data), ContentType: aws.String("text/plain"), Metadata: map[string]string{"owner": "ops"}})
	if err != nil {
		t.Fatalf("PutObject %s: %v", key, err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// checkWaitJSON checks the two lines of `--wait --json`: the enqueue and
// the final status, completed.
func checkWaitJSON(t *testing.T, r result, typ, queue string) map[string]any {
	t.Helper()
	lines := jsonLines(t, r.Stdout)
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines, got %d: %s", len(lines), r)
	}
	enq, final := lines[0], lines[1]
	if enq["type"] != typ || enq["queue"] != queue || enq["task_id"] == "" {
		t.Errorf("enqueue line = %v, want type %s, queue %s and an id", enq, typ, queue)
	}
	if final["task_id"] != enq["task_id"] || final["state"] != "completed" {
		t.Errorf("final line = %v, want id %v completed", final, enq["task_id"])
	}
	return final
}

// TestTransfersWaitJSON enqueues each kind of task with --wait --json and
// checks the outcome in S3.
func TestTransfersWaitJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	logs := b.startWorker(t)
	small := []byte("hello, ferry\n")
	big := randomBytes(t, 12<<20+123)
	writeFile(t, filepath.Join(b.dir, "small.txt"), string(small))
	writeFile(t, filepath.Join(b.dir, "big.bin"), string(big))

	// put, from a relative path (made absolute), with metadata.
	r := b.must(t, "put", "small.txt", b.url("a/small.txt"), "--queue", b.queue, "--content-type", "text/plain",
		"--meta", "owner=ops", "--wait", "--json")
	final := checkWaitJSON(t, r, "ferry:put", b.queue)
	if final["dest"] != b.url("a/small.txt") || final["bytes_done"] != float64(len(small)) {
		t.Errorf("put final status = %v", final)
	}
	if got := b.getObject(t, "a/small.txt"); !bytes.Equal(got, small) {
		t.Errorf("put stored %q, want %q", got, small)
	}

	// upload in 5 MiB parts.
	r = b.must(t, "upload", filepath.Join(b.dir, "big.bin"), b.url("a/big.bin"), "--queue", b.queue,
		"--part-size", "5MiB", "--part-concurrency", "2", "--wait", "--json")
	final = checkWaitJSON(t, r, "ferry:upload", b.queue)
	if final["parts_total"] != float64(3) || final["bytes_total"] != float64(len(big)) {
		t.Errorf("upload final status = %v, want 3 parts of %d bytes", final, len(big))
	}
	if got := b.getObject(t, "a/big.bin"); !bytes.Equal(got, big) {
		t.Errorf("upload stored %d bytes, not the file's %d", len(got), len(big))
	}

	// copy, then move the copy.
	r = b.must(t, "copy", b.url("a/small.txt"), b.url("b/copy.txt"), "--queue", b.queue, "--wait", "--json")
	checkWaitJSON(t, r, "ferry:copy", b.queue)
	if got := b.getObject(t, "b/copy.txt"); !bytes.Equal(got, small) {
		t.Errorf("copy stored %q", got)
	}
	r = b.must(t, "move", b.url("b/copy.txt"), b.url("c/moved.txt"), "--queue", b.queue, "--wait", "--json")
	checkWaitJSON(t, r, "ferry:move", b.queue)
	if got := b.getObject(t, "c/moved.txt"); !bytes.Equal(got, small) {
		t.Errorf("move stored %q", got)
	}
	if got := b.getObject(t, "b/copy.txt"); got != nil {
		t.Errorf("move left its source behind")
	}

	// delete one object, then a prefix.
	r = b.must(t, "delete", b.url("c/moved.txt"), "--queue", b.queue, "--wait", "--json")
	checkWaitJSON(t, r, "ferry:delete", b.queue)
	if b.getObject(t, "c/moved.txt") != nil {
		t.Error("delete left the object")
	}
	r = b.must(t, "delete", b.url("a/"), "--recursive", "--queue", b.queue, "--wait", "--json")
	checkWaitJSON(t, r, "ferry:delete", b.queue)
	if b.getObject(t, "a/small.txt") != nil || b.getObject(t, "a/big.bin") != nil {
		t.Error("recursive delete left objects under a/")
	}

	// The worker never logs a secret.
	if strings.Contains(logs.String(), b.s3.SecretKey) {
		t.Error("the worker's log contains the secret access key")
	}
}

// TestWaitPlainAndStdin: --wait without --json on a non-terminal prints
// plain lines; "-" puts stdin.
func TestWaitPlainAndStdin(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	r := run(t, b.dir, []string{envConfig + "=" + b.config}, "from stdin\n",
		"put", "-", b.url("stdin.txt"), "--queue", b.queue, "--wait")
	if r.Code != 0 {
		t.Fatalf("put - --wait: %s", r)
	}
	m := regexp.MustCompile(`(?m)^enqueued ferry:put (\S+) on queue `).FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Fatalf("no enqueue line: %s", r)
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m[1]) + ` completed`).MatchString(r.Stdout) {
		t.Errorf("no completed line for %s: %s", m[1], r)
	}
	if strings.Contains(r.Stdout, "\x1b[") {
		t.Errorf("escape sequences on a non-terminal: %q", r.Stdout)
	}
	if got := b.getObject(t, "stdin.txt"); string(got) != "from stdin\n" {
		t.Errorf("stored %q", got)
	}
}

// TestFailedTaskExit: a task the worker refuses ends failed: --wait and
// watch exit 3 and print its error.
func TestFailedTaskExit(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	outside := filepath.Join(t.TempDir(), "outside.txt") // not under --allow-dir
	writeFile(t, outside, "x")
	r := b.ferry(t, "put", outside, b.url("x"), "--queue", b.queue, "--max-retry", "1", "--wait", "--json")
	if r.Code != exitTaskFailed {
		t.Fatalf("want exit %d: %s", exitTaskFailed, r)
	}
	lines := jsonLines(t, r.Stdout)
	if len(lines) != 2 || lines[1]["state"] != "failed" || lines[1]["error"] == "" {
		t.Fatalf("want a failed final status with an error: %s", r)
	}
	if !strings.Contains(r.Stderr, "failed") {
		t.Errorf("stderr does not say the task failed: %s", r)
	}
	id := lines[0]["task_id"].(string)
	w := b.ferry(t, "watch", id)
	if w.Code != exitTaskFailed || !strings.Contains(w.Stdout, id+" failed") {
		t.Errorf("watch of a failed task: want exit 3 and a failed line: %s", w)
	}
}

// TestStatusJSON checks status --json of a pending task (no worker on its
// queue) and of a completed one.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, filepath.Join(b.dir, "f.bin"), strings.Repeat("z", 4096))
	r := b.must(t, "upload", "f.bin", b.url("f.bin"), "--queue", b.queue, "--json", "--task-id", testenv.UniqueName("my-id"))
	enq := jsonLines(t, r.Stdout)[0]
	id := enq["task_id"].(string)
	if !strings.HasPrefix(id, "my-id-") {
		t.Errorf("--task-id not used: %v", enq)
	}
	st := jsonLines(t, b.must(t, "status", id, "--json").Stdout)[0]
	want := map[string]any{"task_id": id, "type": "ferry:upload", "queue": b.queue, "state": "pending",
		"source": filepath.Join(b.dir, "f.bin"), "dest": b.url("f.bin"),
		"bytes_done": float64(0), "bytes_total": float64(4096), "parts_done": float64(0), "parts_total": float64(0),
		"rate": float64(0), "percent": float64(0), "retried": float64(0), "max_retry": float64(25)}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("status --json of a pending task (-want +got):\n%s", diff)
	}
	human := b.must(t, "status", id).Stdout
	for _, s := range []string{"State:", "pending", "Queue:", b.queue, "4.0 KiB"} {
		if !strings.Contains(human, s) {
			t.Errorf("status output lacks %q:\n%s", s, human)
		}
	}

	// Run it, then its status is complete with the result.
	b.startWorker(t)
	w := b.ferry(t, "watch", id)
	if w.Code != 0 || !strings.Contains(w.Stdout, id+" completed") {
		t.Fatalf("watch: %s", w)
	}
	st = jsonLines(t, b.must(t, "status", id, "--json").Stdout)[0]
	if st["state"] != "completed" || st["bytes_done"] != float64(4096) || st["percent"] != float64(100) || st["started_at"] == nil || st["updated_at"] == nil {
		t.Errorf("status --json of a completed task = %v", st)
	}
	if res, ok := st["result"].(map[string]any); !ok || res["size"] != float64(4096) {
		t.Errorf("status --json result = %v, want the stored object of 4096 bytes", st["result"])
	}
}

// TestWatchSeveral follows two tasks on a non-terminal: plain lines, one
// completed line each, exit 0.
func TestWatchSeveral(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for _, name := range []string{"one", "two"} {
		writeFile(t, filepath.Join(b.dir, name), name)
		r := b.must(t, "put", name, b.url(name), "--queue", b.queue, "--json")
		ids = append(ids, jsonLines(t, r.Stdout)[0]["task_id"].(string))
	}
	b.startWorker(t)
	r := b.ferry(t, append([]string{"watch"}, ids...)...)
	if r.Code != 0 {
		t.Fatalf("watch: %s", r)
	}
	for _, id := range ids {
		if !strings.Contains(r.Stdout, id+" completed") {
			t.Errorf("no completed line for %s: %s", id, r)
		}
	}
	// --json: one JSON line per update, the last ones completed.
	j := b.must(t, "watch", ids[0], "--json")
	lines := jsonLines(t, j.Stdout)
	if last := lines[len(lines)-1]; last["task_id"] != ids[0] || last["state"] != "completed" {
		t.Errorf("watch --json last line = %v", last)
	}
}

// TestCancel cancels a task no worker serves.
func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.must(t, "delete", b.url("k"), "--queue", b.queue, "--json", "--idempotent")
	id := jsonLines(t, r.Stdout)[0]["task_id"].(string)
	if !strings.HasPrefix(id, "ferry-") {
		t.Errorf("--idempotent id = %q, want a ferry- id", id)
	}
	if again := b.ferry(t, "delete", b.url("k"), "--queue", b.queue, "--idempotent"); again.Code != exitError ||
		!strings.Contains(again.Stderr, "exists already") {
		t.Errorf("second --idempotent enqueue: want exit 1 naming the conflict: %s", again)
	}
	if c := b.must(t, "cancel", id); !strings.Contains(c.Stdout, "cancelled "+id) {
		t.Errorf("cancel output: %s", c)
	}
	st := jsonLines(t, b.must(t, "status", id, "--json").Stdout)[0]
	if st["state"] != "cancelled" || st["error"] != "cancelled by user" {
		t.Errorf("status after cancel = %v", st)
	}
	if c := b.ferry(t, "cancel", id); c.Code != exitError || !strings.Contains(c.Stderr, "already finished") {
		t.Errorf("second cancel: %s", c)
	}
	if w := b.ferry(t, "watch", id); w.Code != exitTaskFailed || !strings.Contains(w.Stdout, id+" cancelled") {
		t.Errorf("watch of a cancelled task: %s", w)
	}
}

// TestRedisURLPrecedence: --redis beats FERRY_REDIS_URL beats redis.url.
func TestRedisURLPrecedence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	good := b.redisURL
	deadFile, deadEnv, deadFlag := deadRedisURL(t), deadRedisURL(t), deadRedisURL(t)
	writeFile(t, b.config, configYAML(b.s3, deadFile, ""))
	probe := []string{"delete", b.url("k"), "--queue", b.queue}
	env := func(kv ...string) []string { return append([]string{envConfig + "=" + b.config}, kv...) }
	tests := []struct {
		desc     string
		env      []string
		flag     string
		wantCode int
		wantErr  []string
	}{
		{desc: "file only", env: env(), wantCode: 1, wantErr: []string{deadFile, "config file", "--redis", envRedisURL}},
		{desc: "env beats file", env: env(envRedisURL + "=" + deadEnv), wantCode: 1, wantErr: []string{deadEnv, "from " + envRedisURL}},
		{desc: "env good", env: env(envRedisURL + "=" + good)},
		{desc: "flag beats env", env: env(envRedisURL + "=" + good), flag: deadFlag, wantCode: 1, wantErr: []string{deadFlag, "from --redis"}},
		{desc: "flag good", env: env(envRedisURL + "=" + deadEnv), flag: good},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			argv := probe
			if tc.flag != "" {
				argv = append([]string{"--redis", tc.flag}, probe...)
			}
			r := run(t, b.dir, tc.env, "", argv...)
			if r.Code != tc.wantCode {
				t.Fatalf("want exit %d: %s", tc.wantCode, r)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("stderr lacks %q: %s", s, r)
				}
			}
		})
	}
}

// deadRedisURL is a redis:// URL on a port nothing listens on.
func deadRedisURL(t *testing.T) string {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
}

// TestErrors: every error a user can act on has its message and exit code.
func TestErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	writeFile(t, b.config, configYAML(b.s3, b.redisURL, `  other:
    provider: minio
    endpoint_url: http://127.0.0.1:1
`))
	badField := filepath.Join(b.dir, "bad.yaml")
	writeFile(t, badField, configYAML(b.s3, b.redisURL, "    bogus_field: 1\n"))
	badSize := filepath.Join(b.dir, "badsize.yaml")
	writeFile(t, badSize, configYAML(b.s3, b.redisURL, "worker:\n  part_size: 16 megs\n"))
	writeFile(t, filepath.Join(b.dir, "here.txt"), "x")
	dst := b.url("k")
	tests := []struct {
		desc     string
		env      []string
		argv     []string
		wantCode int
		want     []string
	}{
		{desc: "unknown profile on enqueue", argv: []string{"put", "here.txt", dst, "--dst-profile", "nope"},
			wantCode: exitError, want: []string{`unknown profile "nope"`, "known profiles: default, other"}},
		{desc: "unknown profile on ls", argv: []string{"ls", "s3://" + b.bucket, "--profile", "nope"},
			wantCode: exitError, want: []string{`unknown profile "nope"`, "default, other"}},
		{desc: "redis unreachable", argv: []string{"--redis", "redis://127.0.0.1:1/0", "put", "here.txt", dst},
			wantCode: exitError, want: []string{"cannot reach Redis at redis://127.0.0.1:1/0", "--redis", envRedisURL}},
		{desc: "redis password not printed", argv: []string{"--redis", "redis://:hunter2@127.0.0.1:1/0", "status", "x"},
			wantCode: exitError, want: []string{"cannot reach Redis at redis://:xxxxx@127.0.0.1:1/0"}},
		{desc: "local file missing", argv: []string{"upload", "missing.bin", dst},
			wantCode: exitError, want: []string{"local file " + filepath.Join(b.dir, "missing.bin") + " does not exist"}},
		{desc: "bad part size", argv: []string{"upload", "here.txt", dst, "--part-size", "12XB"},
			wantCode: exitUsage, want: []string{`invalid size "12XB"`, "MiB"}},
		{desc: "bad size in config", env: []string{envConfig + "=" + badSize}, argv: []string{"worker"},
			wantCode: exitUsage, want: []string{`invalid size "16 megs"`}},
		{desc: "bad timeout", argv: []string{"put", "here.txt", dst, "--timeout", "1hour"},
			wantCode: exitUsage, want: []string{`invalid duration "1hour"`, "1h30m"}},
		{desc: "bad expires", argv: []string{"url", dst, "--expires", "soon"},
			wantCode: exitUsage, want: []string{`invalid duration "soon"`}},
		{desc: "unknown config field", env: []string{envConfig + "=" + badField}, argv: []string{"ls", "s3://" + b.bucket},
			wantCode: exitError, want: []string{"bad.yaml", "bogus_field"}},
		{desc: "missing config file", env: []string{envConfig + "=" + filepath.Join(b.dir, "nope.yaml")}, argv: []string{"ls", "s3://" + b.bucket},
			wantCode: exitError, want: []string{"nope.yaml does not exist"}},
		{desc: "task not found", argv: []string{"status", "no-such-task"},
			wantCode: exitError, want: []string{"task no-such-task not found"}},
		{desc: "bad queues", argv: []string{"worker", "--queues", "a=x"},
			wantCode: exitUsage, want: []string{`invalid --queues item "a=x"`}},
		{desc: "wrong arg count", argv: []string{"put", "here.txt"},
			wantCode: exitUsage, want: []string{"requires at least 2 arg(s)", "usage: ferry put SRC DST"}},
		{desc: "bad meta", argv: []string{"put", "here.txt", dst, "--meta", "novalue"},
			wantCode: exitUsage, want: []string{`invalid --meta "novalue"`}},
		{desc: "copy from a file", argv: []string{"copy", "here.txt", dst},
			wantCode: exitUsage, want: []string{"must be an s3://bucket/key location"}},
		{desc: "delete whole bucket", argv: []string{"delete", b.url(""), "--recursive"},
			wantCode: exitUsage, want: []string{"--allow-all"}},
		{desc: "bad url method", argv: []string{"url", dst, "--method", "POST"},
			wantCode: exitUsage, want: []string{`invalid --method "POST"`}},
		{desc: "info missing object", argv: []string{"info", b.url("nothing-here")},
			wantCode: exitError, want: []string{"nothing-here", "not found"}},
		{desc: "plain http source", argv: []string{"put", "http://example.com/x", dst},
			wantCode: exitUsage, want: []string{"https only"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			env := tc.env
			if env == nil {
				env = []string{envConfig + "=" + b.config}
			}
			r := run(t, b.dir, env, "", tc.argv...)
			if r.Code != tc.wantCode {
				t.Errorf("want exit %d: %s", tc.wantCode, r)
			}
			for _, s := range tc.want {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("stderr lacks %q: %s", s, r)
				}
			}
			if strings.Contains(r.Stderr+r.Stdout, b.s3.SecretKey) || strings.Contains(r.Stderr, "hunter2") {
				t.Errorf("output contains a secret: %s", r)
			}
		})
	}
}

// TestObjects: ls, info and url call S3 directly.
func TestObjects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, k := range []string{"docs/a.txt", "docs/b.txt", "docs/c.txt", "other/d.txt"} {
		b.putObject(t, k, []byte("content of "+k))
	}
	ls := b.must(t, "ls", b.url("docs/")).Stdout
	if n := strings.Count(ls, "\n"); n != 3 || !strings.Contains(ls, "docs/a.txt") || strings.Contains(ls, "other/") {
		t.Errorf("ls docs/ =\n%s", ls)
	}
	if !strings.Contains(ls, " "+strconv.Itoa(len("content of docs/a.txt"))+" ") {
		t.Errorf("ls lacks the size: \n%s", ls)
	}
	lines := jsonLines(t, b.must(t, "ls", "s3://"+b.bucket, "--limit", "2", "--json").Stdout)
	var keys []string
	for _, l := range lines {
		keys = append(keys, l["key"].(string))
	}
	if diff := cmp.Diff([]string{"docs/a.txt", "docs/b.txt"}, keys); diff != "" {
		t.Errorf("ls --limit 2 --json keys (-want +got):\n%s", diff)
	}

	info := jsonLines(t, b.must(t, "info", b.url("docs/a.txt"), "--json").Stdout)[0]
	if info["bucket"] != b.bucket || info["key"] != "docs/a.txt" || info["size"] != float64(len("content of docs/a.txt")) ||
		info["content_type"] != "text/plain" || info["etag"] == "" || info["last_modified"] == nil {
		t.Errorf("info --json = %v", info)
	}
	if md, _ := info["metadata"].(map[string]any); md["owner"] != "ops" {
		t.Errorf("info --json metadata = %v", info["metadata"])
	}
	if human := b.must(t, "info", b.url("docs/a.txt")).Stdout; !strings.Contains(human, "Metadata:") ||
		!strings.Contains(human, "owner=ops") {
		t.Errorf("info =\n%s", human)
	}

	// A GET URL downloads the object without credentials.
	u := strings.TrimSpace(b.must(t, "url", b.url("docs/b.txt"), "--expires", "5m").Stdout)
	if !strings.Contains(u, "X-Amz-Expires=300") {
		t.Errorf("url does not last 5m: %s", u)
	}
	if got := httpDo(t, http.MethodGet, u, nil); got != "content of docs/b.txt" {
		t.Errorf("GET presigned URL = %q", got)
	}
	// Without --expires, the profile's presigned_expiry (30m) applies.
	if u := b.must(t, "url", b.url("docs/b.txt")).Stdout; !strings.Contains(u, "X-Amz-Expires=1800") {
		t.Errorf("url without --expires does not use presigned_expiry 30m: %s", u)
	}
	// A PUT URL uploads.
	pu := strings.TrimSpace(b.must(t, "url", b.url("up/new.txt"), "--method", "put").Stdout)
	httpDo(t, http.MethodPut, pu, []byte("uploaded"))
	if got := b.getObject(t, "up/new.txt"); string(got) != "uploaded" {
		t.Errorf("PUT presigned URL stored %q", got)
	}
}

func httpDo(t *testing.T, method, u string, body []byte) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s presigned URL: %s: %s", method, resp.Status, data)
	}
	return string(data)
}

// TestProfileSecretsFromEnv: a profile without keys in the file takes them
// from FERRY_PROFILE_<NAME>_*.
func TestProfileSecretsFromEnv(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.putObject(t, "x.txt", []byte("x"))
	cfg := filepath.Join(b.dir, "nokeys.yaml")
	writeFile(t, cfg, "profiles:\n  my-store:\n    provider: generic\n    endpoint_url: "+b.s3.Endpoint+"\n    region: "+b.s3.Region+"\n")
	env := []string{envConfig + "=" + cfg,
		"FERRY_PROFILE_MY_STORE_ACCESS_KEY_ID=" + b.s3.AccessKey, "FERRY_PROFILE_MY_STORE_SECRET_ACCESS_KEY=" + b.s3.SecretKey}
	r := run(t, b.dir, env, "", "ls", "s3://"+b.bucket, "--profile", "my-store")
	if r.Code != 0 || !strings.Contains(r.Stdout, "x.txt") {
		t.Errorf("ls with secrets from the environment: %s", r)
	}
	// Without them the AWS default chain finds nothing: an S3 error, exit 1.
	r = run(t, b.dir, []string{envConfig + "=" + cfg}, "", "ls", "s3://"+b.bucket, "--profile", "my-store")
	if r.Code != exitError {
		t.Errorf("ls without credentials: want exit 1: %s", r)
	}
}

// TestServers: the worker's --metrics-addr and the dashboard answer HTTP,
// and both stop cleanly (exit 0) on SIGTERM.
func TestServers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	port := func() string {
		p, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return "127.0.0.1:" + strconv.Itoa(p)
	}
	metricsAddr, dashAddr := port(), port()
	b.startWorker(t, "--metrics-addr", metricsAddr)
	// "ferry server" is "ferry dashboard" (the other tests use that name).
	b.start(t, "dashboard listening", "server", "--addr", dashAddr, "--log-format", "json")
	if m := httpDo(t, http.MethodGet, "http://"+metricsAddr+"/metrics", nil); !strings.Contains(m, "ferry_") || !strings.Contains(m, "go_goroutines") {
		t.Errorf("worker /metrics lacks ferry_ or go_ metrics:\n%.500s", m)
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		if got := httpDo(t, http.MethodGet, "http://"+metricsAddr+probe, nil); strings.TrimSpace(got) != "ok" {
			t.Errorf("worker %s = %q, want ok", probe, got)
		}
	}
	httpDo(t, http.MethodGet, "http://"+dashAddr+"/healthz", nil)
	httpDo(t, http.MethodGet, "http://"+dashAddr+"/readyz", nil)
	if m := httpDo(t, http.MethodGet, "http://"+dashAddr+"/metrics", nil); !strings.Contains(m, "go_goroutines") {
		t.Errorf("dashboard /metrics lacks the Go collector:\n%.500s", m)
	}
	if j := httpDo(t, http.MethodGet, "http://"+dashAddr+"/api/transfers", nil); !strings.HasPrefix(strings.TrimSpace(j), "{") {
		t.Errorf("/api/transfers is not JSON: %.200s", j)
	}
}

// TestHelp: every command has help with examples.
func TestHelp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []string{"worker", "dashboard", "server", "put", "upload", "copy", "move", "delete", "status", "watch", "cancel", "ls", "info", "url"} {
		r := run(t, dir, nil, "", c, "--help")
		if r.Code != 0 || !strings.Contains(r.Stdout, "Examples:") || !strings.Contains(r.Stdout, "ferry "+c) {
			t.Errorf("ferry %s --help: %s", c, r)
		}
	}
	if r := run(t, dir, nil, "", "completion", "bash"); r.Code != 0 || !strings.Contains(r.Stdout, "ferry") {
		t.Errorf("completion bash: %s", r)
	}
}

// dashToken is a dashboard token the dashboard accepts.
const dashToken = "5e0c9b1f7a3d4e2c8b6a0f1e2d3c4b5a"

// dashGet GETs path on addr with Host host ("" for addr) and the token
// ("" for none), and returns the status and body.
func dashGet(t *testing.T, addr, host, token, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDashboardAuthToken: with --auth-token the API needs the token.
func TestDashboardAuthToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	addr := freeAddr(t, "127.0.0.1")
	b.start(t, "dashboard listening", "dashboard", "--addr", addr, "--auth-token", dashToken, "--log-format", "json")
	if code, body := dashGet(t, addr, "", "", "/api/transfers"); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d %s, want 401", code, body)
	}
	if code, body := dashGet(t, addr, "", dashToken, "/api/transfers"); code != http.StatusOK {
		t.Errorf("with the token: %d %s, want 200", code, body)
	}
}

// TestDashboardExposed: on every interface with a real token and a public
// name from the environment, the dashboard starts; it refuses a DNS
// rebinding Host, answers to its public name, its loopback names and IPs.
func TestDashboardExposed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	addr := freeAddr(t, "0.0.0.0")
	port := strings.Split(addr, ":")[1]
	local := "127.0.0.1:" + port
	b.startEnv(t, []string{envDashToken + "=" + dashToken, envDashPublicNames + "=dash.example.test, ops.example.test"},
		"dashboard listening", "dashboard", "--addr", addr, "--log-format", "json")
	for host, want := range map[string]int{
		"evil.example:" + port:       http.StatusMisdirectedRequest,
		"dash.example.test":          http.StatusOK,
		"ops.example.test:" + port:   http.StatusOK,
		"localhost:" + port:          http.StatusOK,
		local:                        http.StatusOK,
		"192.0.2.7:" + port:          http.StatusOK,
		"dash.example.test.evil.net": http.StatusMisdirectedRequest,
	} {
		code, body := dashGet(t, local, host, dashToken, "/api/transfers")
		if code != want {
			t.Errorf("Host %s: %d %.300s; want %d", host, code, body, want)
		}
		if code == http.StatusMisdirectedRequest && !strings.Contains(body, "--public-name") {
			t.Errorf("Host %s: the refusal does not say how to allow the name: %s", host, body)
		}
	}
	// --public-name replaces the environment's list.
	addr2 := freeAddr(t, "127.0.0.1")
	b.startEnv(t, []string{envDashPublicNames + "=dash.example.test"}, "dashboard listening",
		"dashboard", "--addr", addr2, "--public-name", "other.example.test", "--log-format", "json")
	if code, _ := dashGet(t, addr2, "other.example.test", "", "/api/transfers"); code != http.StatusOK {
		t.Errorf("--public-name other.example.test: %d; want 200", code)
	}
	if code, _ := dashGet(t, addr2, "dash.example.test", "", "/api/transfers"); code != http.StatusMisdirectedRequest {
		t.Errorf("a name only in the environment, with --public-name given: %d; want 421", code)
	}
}

// freeAddr is host:port with a free port.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	p, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, strconv.Itoa(p))
}

// runBriefly runs ferry and reports whether it exited within d; a server
// that started is stopped with SIGKILL (a refusal to start exits at once).
func runBriefly(t *testing.T, dir string, env []string, d time.Duration, argv ...string) (result, bool) {
	t.Helper()
	r := ferrybin.Cmd{Bin: ferryBin, Dir: dir, Env: env, Timeout: d}.Run(t, "", argv...)
	return r, r.Code != -1 // -1: killed, by the timeout
}

// TestDashboardRefusesExposureWithoutToken: a dashboard listening beyond
// loopback without a real token does not start, and says how to set one.
func TestDashboardRefusesExposureWithoutToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, c := range []struct {
		name, addr, token string
		want              []string
	}{
		{"no token, all interfaces", freeAddr(t, "0.0.0.0"), "", []string{"not a loopback address", "openssl rand -hex 32", envDashToken}},
		{"no token, port only", ":" + strings.Split(freeAddr(t, "0.0.0.0"), ":")[1], "", []string{"openssl rand -hex 32", envDashToken}},
		{"placeholder", freeAddr(t, "0.0.0.0"), "REPLACE-ME", []string{"placeholder", "openssl rand -hex 32", envDashToken}},
		{"long placeholder", freeAddr(t, "0.0.0.0"), "changeme-changeme-changeme", []string{"placeholder", envDashToken}},
		{"short", freeAddr(t, "0.0.0.0"), "t0ken", []string{"at least 16", envDashToken}},
		{"placeholder on loopback", freeAddr(t, "127.0.0.1"), "REPLACE-ME", []string{"placeholder", envDashToken}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := []string{envConfig + "=" + b.config}
			if c.token != "" {
				env = append(env, envDashToken+"="+c.token)
			}
			r, exited := runBriefly(t, b.dir, env, 10*time.Second, "dashboard", "--addr", c.addr)
			if !exited || r.Code != exitError {
				t.Fatalf("dashboard --addr %s with token %q started (exited %v); want a refusal:\n%s", c.addr, c.token, exited, r)
			}
			for _, w := range c.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("the refusal does not say %q:\n%s", w, r.Stderr)
				}
			}
			if c.token != "" && strings.Contains(r.Stderr, c.token) {
				t.Errorf("the refusal prints the token:\n%s", r.Stderr)
			}
		})
	}
}

// TestPrefixesAreDirectoriesCLI: ls and delete take "logs/2024" as the
// directory logs/2024/ and "logs/2024*" as the raw prefix; delete
// --recursive --dry-run --wait prints the keys and deletes nothing; a glob
// or --dry-run without --recursive is a usage error.
func TestPrefixesAreDirectoriesCLI(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	for _, k := range []string{"logs/2024/01.log", "logs/2024/02.log", "logs/2024-old/01.log", "logs/2024.txt"} {
		b.putObject(t, k, []byte(k))
	}
	lsKeys := func(arg string) []string {
		var keys []string
		for _, l := range jsonLines(t, b.must(t, "ls", arg, "--json").Stdout) {
			keys = append(keys, l["key"].(string))
		}
		return keys
	}
	if diff := cmp.Diff([]string{"logs/2024/01.log", "logs/2024/02.log"}, lsKeys(b.url("logs/2024"))); diff != "" {
		t.Errorf("ls logs/2024 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"logs/2024-old/01.log", "logs/2024.txt", "logs/2024/01.log", "logs/2024/02.log"}, lsKeys(b.url("logs/2024*"))); diff != "" {
		t.Errorf("ls logs/2024* (-want +got):\n%s", diff)
	}

	r := b.must(t, "delete", b.url("logs/2024"), "--recursive", "--dry-run", "--queue", b.queue, "--wait")
	if !strings.Contains(r.Stdout, "dry run: would delete 2 objects\n  logs/2024/01.log\n  logs/2024/02.log\n") {
		t.Errorf("delete --dry-run --wait printed:\n%s", r.Stdout)
	}
	if b.getObject(t, "logs/2024/01.log") == nil {
		t.Error("the dry run deleted logs/2024/01.log")
	}
	for _, argv := range [][]string{
		{"delete", b.url("logs/2024*")},
		{"delete", b.url("logs/2024"), "--dry-run"},
		{"delete", b.url("*"), "--recursive"},
	} {
		if r := b.ferry(t, append(argv, "--queue", b.queue)...); r.Code != 2 {
			t.Errorf("ferry %s: exit %d, want 2 (usage): %s", strings.Join(argv, " "), r.Code, r)
		}
	}
}

// TestInfoHeaders: info shows every header S3 stores with the object and
// every metadata entry, ferry's own included, in text and in --json; the
// JSON has exactly the documented fields, and neither form holds a secret.
func TestInfoHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if !b.s3.Real {
		t.Skip("gofakes3 does not store these headers; needs versitygw (make tools)")
	}
	h := maps.Clone(testenv.StoredHeaders)
	h["x-amz-meta-ferry-task-id"] = "t-123"
	h["x-amz-meta-ferry-source-etag"] = "0123abcd"
	b.s3.PutObject(t, b.bucket, "docs/h.txt", []byte("headers"), h)
	arg := b.url("docs/h.txt")

	human := b.must(t, "info", arg).Stdout
	for _, want := range []string{
		"Content-Type:", "text/x-ferry-test", "Content-Encoding:", "gzip",
		"Content-Disposition:", `attachment; filename="ferry test.txt"`, "Cache-Control:", "max-age=60, private",
		"Content-Language:", "fr-CA", "Expires:", "Wed, 02 Jan 2030 03:04:05 GMT",
		"owner=qa team", "ferry-task-id=t-123", "ferry-source-etag=0123abcd",
	} {
		if !strings.Contains(human, want) {
			t.Errorf("info lacks %q:\n%s", want, human)
		}
	}

	out := b.must(t, "info", arg, "--json").Stdout
	info := jsonLines(t, out)[0]
	want := map[string]any{"bucket": b.bucket, "key": "docs/h.txt", "size": float64(len("headers")),
		"content_type": "text/x-ferry-test", "content_encoding": "gzip",
		"content_disposition": `attachment; filename="ferry test.txt"`, "cache_control": "max-age=60, private",
		"content_language": "fr-CA", "expires": "Wed, 02 Jan 2030 03:04:05 GMT",
		"metadata": map[string]any{"owner": "qa team", "ferry-task-id": "t-123", "ferry-source-etag": "0123abcd"}}
	got := maps.Clone(info)
	// The server picks these; present and not empty is all one can check.
	for _, k := range []string{"etag", "last_modified"} {
		if v, _ := got[k].(string); v == "" {
			t.Errorf("info --json %s = %v, want a value", k, got[k])
		}
		delete(got, k)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("info --json (-want +got):\n%s", diff)
	}
	if strings.Contains(human+out, b.s3.SecretKey) {
		t.Errorf("info prints the secret access key:\n%s\n%s", human, out)
	}
}
