package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
)

// ferryBin is the binary under test, built once by TestMain.
var ferryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", ferryBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ferry:", err)
		os.Exit(1)
	}
	code := testenv.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// bundle is what a CLI test needs: servers, a bucket, a config file, a
// queue of its own and a directory the worker may read.
type bundle struct {
	redisURL string
	s3       *testenv.S3Server
	bucket   string
	dir      string // the test's temp dir; the worker's --allow-dir
	config   string // path of ferry.yaml
	queue    string
}

// configYAML is a ferry.yaml with a default profile on the test S3 server.
func configYAML(s3 *testenv.S3Server, redisURL, extra string) string {
	return fmt.Sprintf(`redis:
  url: %s
profiles:
  default:
    provider: generic
    endpoint_url: %s
    region: %s
    access_key_id: %s
    secret_access_key: %s
    presigned_expiry: 30m
%s`, redisURL, s3.Endpoint, s3.Region, s3.AccessKey, s3.SecretKey, extra)
}

func setup(t *testing.T) bundle {
	t.Helper()
	s3 := testenv.S3(t)
	b := bundle{
		redisURL: "redis://" + testenv.Redis(t).Addr + "/0",
		s3:       s3,
		bucket:   s3.Bucket(t),
		dir:      t.TempDir(),
		queue:    testenv.UniqueName("q"),
	}
	b.config = filepath.Join(b.dir, "ferry.yaml")
	writeFile(t, b.config, configYAML(s3, b.redisURL, ""))
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// result is the outcome of one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// baseEnv is a clean environment: nothing from the developer's shell (AWS
// credentials, FERRY_*) leaks into a test.
func baseEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "AWS_EC2_METADATA_DISABLED=true"}
}

// run runs ferry with args in dir (the cwd), with env added to a clean
// environment, and stdin when not empty.
func run(t *testing.T, dir string, env []string, stdin string, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, argv...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(dir), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run ferry %v: %v", argv, err)
	}
	return r
}

// ferry runs the binary with the bundle's config.
func (b bundle) ferry(t *testing.T, argv ...string) result {
	t.Helper()
	return run(t, b.dir, []string{envConfig + "=" + b.config}, "", argv...)
}

// must runs ferry and fails the test unless it exits 0.
func (b bundle) must(t *testing.T, argv ...string) result {
	t.Helper()
	r := b.ferry(t, argv...)
	if r.code != 0 {
		t.Fatalf("ferry %s: %s", strings.Join(argv, " "), r)
	}
	return r
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWorker runs `ferry worker` on the bundle's queue until the test ends.
// It returns the worker's log.
func (b bundle) startWorker(t *testing.T, extra ...string) *syncBuffer {
	t.Helper()
	argv := append([]string{"worker", "--queues", b.queue + "=1", "--allow-dir", b.dir, "--log-format", "json"}, extra...)
	return b.start(t, "worker started", argv...)
}

// start runs ferry with argv in the background until the test ends (then
// SIGTERM, and SIGKILL after 30s), once its log contains ready.
func (b bundle) start(t *testing.T, ready string, argv ...string) *syncBuffer {
	t.Helper()
	return b.startEnv(t, nil, ready, argv...)
}

// startEnv is start with env added to the environment.
func (b bundle) startEnv(t *testing.T, env []string, ready string, argv ...string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(ferryBin, argv...)
	cmd.Dir = b.dir
	cmd.Env = append(append(baseEnv(b.dir), envConfig+"="+b.config), env...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ferry %s: %v", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ferry %s exited with %v after SIGTERM, want 0", argv[0], err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("ferry %s did not stop within 30s of SIGTERM", argv[0])
		}
		if t.Failed() {
			t.Logf("ferry %s log:\n%s", argv[0], logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), ready) {
		select {
		case err := <-done:
			t.Fatalf("ferry %s exited at start (%v):\n%s", argv[0], err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry %s not ready within 20s:\n%s", argv[0], logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return logs
}

// jsonLines decodes every line of s as a JSON object.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}
