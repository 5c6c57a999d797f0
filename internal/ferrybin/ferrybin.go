package ferrybin

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build builds cmd/ferry into dir and returns the binary's path. It takes
// no testing.TB, so that a TestMain can build once for a whole package.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "ferry")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/ferryhq/ferry/cmd/ferry").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build cmd/ferry: %v\n%s", err, out)
	}
	return bin, nil
}

// Env is a clean environment with extra added: nothing from the developer's
// shell (AWS credentials, FERRY_*) leaks into a test, HOME is home, and the
// SDK asks no EC2 instance metadata service for credentials.
func Env(home string, extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "AWS_EC2_METADATA_DISABLED=true"}, extra...)
}

// Cmd is how a test runs the binary.
type Cmd struct {
	// Bin is the path of the binary (from Build).
	Bin string
	// Dir is the working directory, and HOME.
	Dir string
	// Env is added to the clean environment of Env, as "NAME=value".
	Env []string
	// Timeout bounds one Run; zero means 90s. The binary is killed after it.
	Timeout time.Duration
}

// Result is the outcome of one run of the binary.
type Result struct {
	Stdout, Stderr string
	// Code is the exit code; -1 when the binary was killed (Cmd.Timeout).
	Code int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

func (c Cmd) command(ctx context.Context, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Bin, argv...)
	cmd.Dir = c.Dir
	cmd.Env = Env(c.Dir, c.Env...)
	return cmd
}

// Run runs the binary with argv to its end, with stdin as its standard input,
// and returns what it printed and its exit code. A binary that cannot be
// started fails t.
func (c Cmd) Run(t testing.TB, stdin string, argv ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cmp.Or(c.Timeout, 90*time.Second))
	defer cancel()
	cmd := c.command(ctx, argv)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run ferry %v: %v", argv, err)
	}
	return r
}

// StartWorker runs `ferry worker` on queue (weight 1) with JSON logs and the
// extra flags, as Start does; it returns the worker's log.
func (c Cmd) StartWorker(t testing.TB, queue string, extra ...string) *LockedBuffer {
	t.Helper()
	argv := append([]string{"worker", "--queues", queue + "=1", "--log-format", "json"}, extra...)
	return c.Start(t, "worker started", argv...)
}

// Start runs the binary with argv in the background until the test ends,
// and returns its output (stdout and stderr together) once that contains
// ready. It fails t if the binary exits first or is not ready within 30s.
// When the test ends it sends SIGTERM and fails t unless the binary exits
// 0 within 30s (SIGKILL after); a failed test logs the output.
func (c Cmd) Start(t testing.TB, ready string, argv ...string) *LockedBuffer {
	t.Helper()
	cmd := c.command(context.Background(), argv)
	logs := &LockedBuffer{}
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
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), ready) {
		select {
		case err := <-done:
			t.Fatalf("ferry %s exited at start (%v):\n%s", argv[0], err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry %s not ready within 30s:\n%s", argv[0], logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return logs
}

// LockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
