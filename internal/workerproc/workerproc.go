package workerproc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/worker"
)

// ChildEnv makes a test binary run a worker instead of its tests: its value
// is a ChildConfig in JSON. TestMain calls ChildMain when it is set.
const ChildEnv = "FERRY_TEST_CHILD_WORKER"

// ChildConfig configures a worker process. Zero values mean worker.Config's
// defaults.
type ChildConfig struct {
	Redis string `json:"redis"`
	// RedisCluster, when set, are the seed addresses of a Redis Cluster
	// the worker uses instead of Redis.
	RedisCluster     []string                  `json:"redis_cluster,omitempty"`
	Profiles         map[string]storage.Config `json:"profiles"`
	Queue            string                    `json:"queue"`
	Dir              string                    `json:"dir"`
	Concurrency      int                       `json:"concurrency"`
	PartSize         int64                     `json:"part_size"`
	PartConcurrency  int                       `json:"part_concurrency"`
	MaxBufferMemory  int64                     `json:"max_buffer_memory"`
	BatchConcurrency int                       `json:"batch_concurrency"`
	Shutdown         time.Duration             `json:"shutdown"`
	// JanitorUploadTTL; the janitor loop itself is off in child workers
	// (tests enqueue a janitor task when they want one).
	JanitorUploadTTL time.Duration `json:"janitor_upload_ttl"`
	// Debug logs at debug level (every part).
	Debug bool `json:"debug"`
	// Wrap, when set, is a command the child runs under (its argv before
	// the binary's), e.g. setpriv to drop capabilities. Not sent to it.
	Wrap []string `json:"-"`
	// WebhookAllow, WebhookSecret and WebhookRetryDelay are the worker's
	// webhook settings (a test secret, never a real one).
	WebhookAllow      []string      `json:"webhook_allow"`
	WebhookSecret     string        `json:"webhook_secret"`
	WebhookRetryDelay time.Duration `json:"webhook_retry_delay"`
}

// IsChild reports whether this process is a child worker.
func IsChild() bool { return os.Getenv(ChildEnv) != "" }

// ChildMain runs the worker described by $FERRY_TEST_CHILD_WORKER until
// SIGTERM or SIGINT and returns the exit code. It logs JSON to stderr.
func ChildMain() int {
	var cc ChildConfig
	if err := json.Unmarshal([]byte(os.Getenv(ChildEnv)), &cc); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	lc := zap.NewProductionConfig()
	lc.Sampling = nil
	lc.OutputPaths, lc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	if cc.Debug {
		lc.Level = zap.NewAtomicLevelAt(zapcore.DebugLevel)
	}
	log, err := lc.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	var rdb redis.UniversalClient = redis.NewClient(&redis.Options{Addr: cc.Redis})
	if len(cc.RedisCluster) > 0 {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cc.RedisCluster})
	}
	defer rdb.Close()
	w, err := worker.New(worker.Config{Redis: rdb, Profiles: cc.Profiles, Concurrency: cc.Concurrency,
		Queues: map[string]int{cc.Queue: 1}, AllowDirs: []string{cc.Dir}, PartSize: cc.PartSize,
		PartConcurrency: cc.PartConcurrency, MaxBufferMemory: cc.MaxBufferMemory, BatchConcurrency: cc.BatchConcurrency, JanitorInterval: -1,
		JanitorUploadTTL: cc.JanitorUploadTTL, ShutdownTimeout: cc.Shutdown, Logger: log,
		WebhookAllow: cc.WebhookAllow, WebhookSecrets: secrets(cc.WebhookSecret), WebhookRetryDelay: cc.WebhookRetryDelay})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func secrets(s string) [][]byte {
	if s == "" {
		return nil
	}
	return [][]byte{[]byte(s)}
}

// Child is a worker process started from a test binary.
type Child struct {
	Name string
	Log  string // path of its log (stdout and stderr)
	cmd  *exec.Cmd
	done chan struct{}
	lf   *os.File
}

// StartChild starts bin (the running test binary when empty) as a worker
// process with cc; its log goes to dir/name.log. It is killed when the test
// ends, and if the test binary dies.
func StartChild(t testing.TB, bin, dir, name string, cc ChildConfig) *Child {
	t.Helper()
	if bin == "" {
		bin = os.Args[0]
	}
	js, err := json.Marshal(cc)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	if len(cc.Wrap) > 0 {
		cmd = exec.Command(cc.Wrap[0], append(cc.Wrap[1:], bin, "-test.run=^$")...)
	}
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(js))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the OS *thread* that started the child exits,
	// not the process (golang/go#27505): start and wait on one locked
	// thread that lives exactly as long as the child.
	c := &Child{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{}), lf: lf}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		lf.Close()
		close(c.done)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Log(failedLogDigest(t.Name(), name, logPath))
		}
	})
	return c
}

// digestLines is how many of a failed test's worker log lines go into the
// test output: few, so the test's own errors (printed before the cleanups
// run) stay in view where CI shows only the end of a failing test's output.
const digestLines = 6

// failedLogDigest keeps the log of a failed test's worker (it lives in a
// temp dir that goes with the test) as a file under os.TempDir and returns
// a short digest for the test output: the kept file's path, the last
// warn/error/panic lines and the last line.
func failedLogDigest(test, worker, logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return fmt.Sprintf("worker %s's log: %v", worker, err)
	}
	kept := filepath.Join(os.TempDir(), "ferry-failed-"+strings.NewReplacer("/", "_", " ", "_").Replace(test)+"-"+worker+".log")
	where := "kept at " + kept
	if err := os.WriteFile(kept, b, 0o600); err != nil {
		where = "not kept: " + err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var bad []string
	for _, l := range lines {
		if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) ||
			strings.HasPrefix(l, "panic") || strings.HasPrefix(l, "fatal") {
			bad = append(bad, l)
		}
	}
	bad = bad[max(0, len(bad)-digestLines):]
	return fmt.Sprintf("worker %s's log (%d lines, %s); its last %d warnings and errors:\n%s\nits last line:\n%s",
		worker, len(lines), where, len(bad), strings.Join(bad, "\n"), lines[len(lines)-1])
}

// Pid is the process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (c *Child) Kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// Terminate sends SIGTERM and waits up to timeout for a clean exit; it
// reports whether the process exited with status 0.
func (c *Child) Terminate(timeout time.Duration) bool {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.cmd.ProcessState.Success()
	case <-time.After(timeout):
		c.Kill()
		return false
	}
}

// VmHWM is the process's peak resident set size in bytes, from
// /proc/<pid>/status. The process must still be running.
func VmHWM(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// NonRaceTestBinary returns a test binary of pkg (an import path) built
// without the race detector, in dir, for measuring a child's memory: the
// race detector's shadow memory multiplies RSS. It uses the go command.
func NonRaceTestBinary(t testing.TB, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "child.test")
	cmd := exec.Command("go", "test", "-c", "-o", out, pkg)
	cmd.Env = os.Environ()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build a non-race test binary of %s: %v\n%s", pkg, err, b)
	}
	return out
}
