package worker_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
)

// child is a worker process started from this test binary (see TestMain),
// so crash tests can SIGKILL a real worker.
type child struct{ *workerproc.Child }

func (b *bundle) startChild(t *testing.T, name string, partConc int) *child {
	t.Helper()
	return b.startChildWith(t, name, partConc, profilesFor(b.s3))
}

// startChildWith starts a child worker with profiles instead of the
// bundle's (a test that changes a profile between two runs of a task).
func (b *bundle) startChildWith(t *testing.T, name string, partConc int, profiles map[string]storage.Config) *child {
	t.Helper()
	return &child{workerproc.StartChild(t, "", t.TempDir(), name, workerproc.ChildConfig{
		Redis: testenv.Redis(t).Addr, Profiles: profiles, Queue: b.queue, Dir: b.dir,
		Concurrency: 2, PartSize: storage.MinPartSize, PartConcurrency: partConc,
		Shutdown: 10 * time.Second, Debug: true})}
}

func (c *child) kill(*testing.T) { c.Kill() }

// terminate sends SIGTERM and waits for a graceful exit.
func (c *child) terminate(t *testing.T) {
	t.Helper()
	if !c.Terminate(60 * time.Second) {
		t.Errorf("worker did not exit cleanly within 60s of SIGTERM (log %s)", c.Log)
	}
}

// logged returns the JSON log lines with msg, decoded into a fresh T each.
func logged[T any](t *testing.T, c *child, msg string) []T {
	t.Helper()
	b, err := os.ReadFile(c.Log)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, fmt.Sprintf("%q", msg)) {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(line), &v); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// partsUploaded reads the part numbers the child logged as uploaded.
func (c *child) partsUploaded(t *testing.T) map[int]bool {
	t.Helper()
	parts := map[int]bool{}
	for _, l := range logged[struct {
		Part int `json:"part"`
	}](t, c, "part uploaded") {
		parts[l.Part] = true
	}
	return parts
}

// copiesDone lists the copy tasks the child logged as done.
func (c *child) copiesDone(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, l := range logged[struct {
		TaskID string `json:"task_id"`
		Type   string `json:"task_type"`
	}](t, c, "task done") {
		if l.Type == "ferry:copy" {
			ids = append(ids, l.TaskID)
		}
	}
	return ids
}
