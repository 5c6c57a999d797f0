package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/internal/devserver"
	"github.com/ferryhq/ferry/tasks"
)

// The demo of "ferry dev --demo": a showcase of every task type, with a
// 200 MiB upload interrupted by a worker restart and resumed from its
// checkpoint. dev.go runs the servers it uses.

// The demo's objects are under demoPrefix in the dev bucket; its big upload
// is throttled so that a person (and a test) can watch it being interrupted.
const (
	demoPrefix   = "demo/"
	demoBigKey   = demoPrefix + "big-200MiB.bin"
	demoBigSize  = 200 << 20
	demoPartSize = 8 << 20
	// demoRate caps each part request of the demo; with 2 parts in flight
	// the 200 MiB upload takes about 5 s.
	demoRate = 20 << 20
)

// runDemo enqueues the showcase and follows it to the end.
func runDemo(ctx context.Context, tc *tasks.Client, sup *devWorker, e *devEnv, out io.Writer, log *zap.Logger) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, "demo: "+format+"\n", args...) }
	s3loc := func(key string) tasks.Location {
		return tasks.Location{Profile: devProfile, Bucket: devBucket, Key: key}
	}
	enqueue := func(t *asynq.Task, err error) (string, error) {
		if err != nil {
			return "", err
		}
		info, err := tc.Enqueue(ctx, t)
		if err != nil {
			return "", err
		}
		return info.ID, nil
	}

	// 1. Puts of inline bytes.
	var ids []string
	for _, p := range []struct{ key, body, ct string }{
		{demoPrefix + "hello.txt", "hello from ferry dev\n", "text/plain"},
		{demoPrefix + "report.json", `{"ferry":"dev","demo":true}` + "\n", "application/json"},
		{demoPrefix + "tmp/scratch.txt", "this one will be deleted\n", "text/plain"},
	} {
		id, err := enqueue(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte(p.body)}, Dest: s3loc(p.key), ContentType: p.ct}))
		if err != nil {
			return fmt.Errorf("put %s: %w", p.key, err)
		}
		ids = append(ids, id)
	}
	if err := demoWait(ctx, tc, ids, nil); err != nil {
		return err
	}
	say("3 puts completed: s3://dev/%shello.txt, report.json, tmp/scratch.txt", demoPrefix)

	// 2. A copy, a move and a delete.
	ids = ids[:0]
	for _, mk := range []func() (*asynq.Task, error){
		func() (*asynq.Task, error) {
			return tasks.NewCopyTask(tasks.CopyPayload{Source: s3loc(demoPrefix + "hello.txt"), Dest: s3loc(demoPrefix + "copies/hello.txt")})
		},
		func() (*asynq.Task, error) {
			return tasks.NewMoveTask(tasks.MovePayload{Source: s3loc(demoPrefix + "report.json"), Dest: s3loc(demoPrefix + "archive/report.json")})
		},
		func() (*asynq.Task, error) {
			return tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc(demoPrefix + "tmp/scratch.txt")})
		},
	} {
		id, err := enqueue(mk())
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	if err := demoWait(ctx, tc, ids, nil); err != nil {
		return err
	}
	say("copy, move and delete completed: %scopies/hello.txt, %sarchive/report.json; %stmp/scratch.txt is gone", demoPrefix, demoPrefix, demoPrefix)

	// 3. A 200 MiB upload, interrupted by a graceful worker restart and
	// resumed from its checkpoint by the new worker.
	path := filepath.Join(e.uploadsDir, "demo-200MiB.bin")
	if err := writeDemoFile(path, demoBigSize); err != nil {
		return err
	}
	id, err := enqueue(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc(demoBigKey),
		PartSize: demoPartSize, PartConcurrency: 2, Size: demoBigSize}))
	if err != nil {
		return err
	}
	say("uploading %s to s3://dev/%s (task %s): the worker will be restarted a third of the way", e.relative(path), demoBigKey, id)
	var (
		once        sync.Once
		restartErr  = make(chan error, 1)
		interrupted int64
	)
	err = demoWait(ctx, tc, []string{id}, func(p tasks.Progress) {
		if p.PartsTotal == 0 || p.PartsDone*3 < p.PartsTotal || p.ResumedFrom > 0 {
			return
		}
		once.Do(func() {
			interrupted = p.BytesDone
			say("restarting the worker at %d of %d parts: the upload stops at a part boundary and keeps its checkpoint", p.PartsDone, p.PartsTotal)
			go func() { restartErr <- sup.restart(ctx) }()
		})
	})
	if err != nil {
		return err
	}
	select {
	case err := <-restartErr:
		if err != nil {
			return fmt.Errorf("restart the worker: %w", err)
		}
	default:
		return errors.New("the upload finished before the worker could be restarted")
	}
	p, err := tc.Progress(ctx, id)
	if err != nil {
		return err
	}
	if p.ResumedFrom == 0 {
		return fmt.Errorf("the upload of s3://dev/%s completed without resuming from its checkpoint", demoBigKey)
	}
	parts := (demoBigSize + demoPartSize - 1) / demoPartSize
	say("resumed from its checkpoint at %d MiB (interrupted at %d MiB); %d part requests for %d parts; s3://dev/%s completed",
		p.ResumedFrom>>20, interrupted>>20, e.demoParts.count(demoBigKey), parts, demoBigKey)
	say("done: see the transfers in the dashboard and the queue in asynqmon")
	log.Info("demo completed", zap.String("upload_task", id), zap.Int64("resumed_from", p.ResumedFrom))
	return nil
}

// demoWait follows tasks until each is terminal; any that did not complete
// is an error. each, when set, sees every update.
func demoWait(ctx context.Context, tc *tasks.Client, ids []string, each func(tasks.Progress)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := tc.Watch(ctx, ids...)
	if err != nil {
		return err
	}
	last := map[string]tasks.Progress{}
	for p := range ch {
		last[p.TaskID] = p
		if each != nil {
			each(p)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, id := range ids {
		if p := last[id]; p.State != tasks.StateCompleted {
			return fmt.Errorf("task %s (%s) ended %s: %s", id, p.Type, p.State, p.Error)
		}
	}
	return nil
}

// writeDemoFile writes size pseudo-random bytes to path, unless a file of
// that size is already there.
func writeDemoFile(path string, size int64) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'f', 'e', 'r', 'r', 'y'})
	if _, err := io.CopyN(f, rng, size); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// partCounter counts the UploadPart requests of demo objects and throttles
// them to demoRate each.
type partCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (pc *partCounter) count(key string) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.counts[key]
}

func (pc *partCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, key, ok := devserver.ObjectKey(r)
		if ok && r.Method == http.MethodPut && r.URL.Query().Has("partNumber") && strings.HasPrefix(key, demoPrefix) {
			pc.mu.Lock()
			if pc.counts == nil {
				pc.counts = map[string]int{}
			}
			pc.counts[key]++
			pc.mu.Unlock()
			r.Body = &throttledBody{ReadCloser: r.Body, rate: demoRate, start: time.Now()}
		}
		h.ServeHTTP(w, r)
	})
}

// throttledBody reads at most rate bytes per second.
type throttledBody struct {
	io.ReadCloser
	rate  float64
	start time.Time
	n     int64
}

func (t *throttledBody) Read(p []byte) (int, error) {
	if len(p) > 256<<10 {
		p = p[:256<<10]
	}
	n, err := t.ReadCloser.Read(p)
	t.n += int64(n)
	if ahead := time.Duration(float64(t.n)/t.rate*float64(time.Second)) - time.Since(t.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}
