package workerproc

import (
	"context"
	"testing"

	"github.com/ferryhq/ferry/worker"
)

// Start runs a worker with cfg in the test's own process until the test
// ends; its cleanup stops the worker and fails t when Run returned an
// error. A config worker.New refuses fails t at once. Tests that must
// SIGKILL the worker or read its memory use StartChild instead.
func Start(t testing.TB, cfg worker.Config) *worker.Worker {
	t.Helper()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatalf("worker.New: %v", err)
	}
	Run(t, w)
	return w
}

// Run runs w, made by worker.New (for a test that sets hooks on it before
// it runs), as Start does.
func Run(t testing.TB, w *worker.Worker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	})
}
