package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/worker"
)

// childEnv makes the test binary run a worker process instead of tests, so
// crash tests can SIGKILL a real worker process.
const childEnv = "FERRY_TEST_CHILD_WORKER"

type childConfig struct {
	Redis    string                    `json:"redis"`
	Profiles map[string]storage.Config `json:"profiles"`
	Queue    string                    `json:"queue"`
	Dir      string                    `json:"dir"`
	PartConc int                       `json:"part_conc"`
	Shutdown time.Duration             `json:"shutdown"`
}

func childWorkerMain() int {
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cc); err != nil {
		fmt.Fprintln(os.Stderr, "child config:", err)
		return 2
	}
	log, _ := zap.NewDevelopment()
	rdb := redis.NewClient(&redis.Options{Addr: cc.Redis})
	w, err := worker.New(worker.Config{Redis: rdb, Profiles: cc.Profiles, Concurrency: 2, Queues: map[string]int{cc.Queue: 1},
		AllowDirs: []string{cc.Dir}, PartSize: storage.MinPartSize, PartConcurrency: cc.PartConc,
		JanitorInterval: -1, ShutdownTimeout: cc.Shutdown, Logger: log})
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

// child is a worker process started from the test binary.
type child struct {
	cmd *exec.Cmd
	log string
}

func (b *bundle) startChild(t *testing.T, name string, partConc int) *child {
	t.Helper()
	cc := childConfig{Redis: testenv.Redis(t).Addr, Profiles: profilesFor(b.s3), Queue: b.queue, Dir: b.dir,
		PartConc: partConc, Shutdown: 10 * time.Second}
	js, _ := json.Marshal(cc)
	logPath := fmt.Sprintf("%s/%s.log", t.TempDir(), name)
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, log: logPath}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		lf.Close()
	})
	return c
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

// terminate sends SIGTERM and waits for a graceful exit.
func (c *child) terminate(t *testing.T) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("worker did not exit cleanly on SIGTERM: %v (log %s)", err, c.log)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("worker did not exit within 60s of SIGTERM (log %s)", c.log)
	}
}

// partsUploaded reads the part numbers the child logged as uploaded.
func (c *child) partsUploaded(t *testing.T) map[int]bool {
	t.Helper()
	b, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	parts := map[int]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "part uploaded") {
			continue
		}
		i := strings.Index(line, "{")
		var f struct {
			Part int `json:"part"`
		}
		if i >= 0 && json.Unmarshal([]byte(line[i:]), &f) == nil && f.Part > 0 {
			parts[f.Part] = true
		}
	}
	return parts
}

// copiesDone lists the copy tasks the child logged as done.
func (c *child) copiesDone(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "task done") || !strings.Contains(line, "ferry:copy") {
			continue
		}
		i := strings.Index(line, "{")
		var f struct {
			TaskID string `json:"task_id"`
		}
		if i >= 0 && json.Unmarshal([]byte(line[i:]), &f) == nil {
			ids = append(ids, f.TaskID)
		}
	}
	return ids
}
