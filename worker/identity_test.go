package worker_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestTransferOntoItselfRefused enqueues, through a producer that knows no
// profiles (so only the payloads' name checks ran), transfers whose two
// ends are one object under different spellings. Those the normaliser sees
// (a profile prefix, a trailing slash) are archived at once when the worker
// decodes them, before any request; those it cannot see (127.0.0.1 and
// localhost) are caught after the copy by the HEAD of the source, which
// carries this task's id: nothing is deleted. Every object keeps its bytes.
func TestTransferOntoItselfRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *worker.Config) {
		archive := c.Profiles["default"]
		archive.Prefix = "archive/"
		slash := c.Profiles["default"]
		slash.EndpointURL += "/"
		otherArchive := c.Profiles["other"]
		otherArchive.Prefix = "archive"
		c.Profiles["archive"], c.Profiles["slash"], c.Profiles["otherarchive"] = archive, slash, otherArchive
	})
	b.start(t)
	s := b.storage(t)
	ctx := context.Background()
	objects := map[string][]byte{}
	for _, k := range []string{"archive/x.txt", "k", "big", "photos/a.jpg", "archive/photos/b.jpg"} {
		data := []byte("only copy of " + k)
		if k == "big" {
			data = bytes.Repeat([]byte("0123456789abcdef"), (storage.MinPartSize+100)/16) // more than one part
		}
		objects[k] = data
		if _, err := s.PutBytes(ctx, k, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	loc := func(profile, key string) tasks.Location { return s3loc(profile, b.bucket, key) }
	for _, tc := range []struct {
		desc string
		task func() (*asynq.Task, error)
		want string
	}{
		{desc: "move through the archive prefix (issue 11)",
			task: func() (*asynq.Task, error) {
				return tasks.NewMoveTask(tasks.MovePayload{Source: loc("", "archive/x.txt"), Dest: loc("archive", "x.txt")})
			},
			want: `s3://` + b.bucket + `/archive/x.txt via profile "default" and s3://` + b.bucket + `/x.txt via profile "archive" are the same object`},
		{desc: "copy through a trailing slash",
			task: func() (*asynq.Task, error) {
				return tasks.NewCopyTask(tasks.CopyPayload{Source: loc("", "k"), Dest: loc("slash", "k")})
			},
			want: "are the same object"},
		{desc: "put from s3 through a trailing slash",
			task: func() (*asynq.Task, error) {
				return tasks.NewPutTask(tasks.PutPayload{Source: loc("", "k"), Dest: loc("slash", "k")})
			},
			want: "are the same object"},
		{desc: "upload from s3 through a trailing slash",
			task: func() (*asynq.Task, error) {
				return tasks.NewUploadTask(tasks.UploadPayload{Source: loc("", "k"), Dest: loc("slash", "k")})
			},
			want: "are the same object"},
		{desc: "migrate into its own prefix through the archive profile",
			task: func() (*asynq.Task, error) {
				return tasks.NewMigrateTask(tasks.MigratePayload{Source: loc("", ""), Dest: loc("archive", "photos/")})
			},
			want: "the migration would copy its own output"},
		{desc: "move, IP vs host name: the source carries this task's id",
			task: func() (*asynq.Task, error) {
				return tasks.NewMoveTask(tasks.MovePayload{Source: loc("", "k"), Dest: loc("other", "k")})
			},
			want: "one object"},
		{desc: "move of several parts, IP vs host name",
			task: func() (*asynq.Task, error) {
				return tasks.NewMoveTask(tasks.MovePayload{Source: loc("other", "big"), Dest: loc("", "big")})
			},
			want: "one object"},
		{desc: "move, IP vs host name and a prefix",
			task: func() (*asynq.Task, error) {
				return tasks.NewMoveTask(tasks.MovePayload{Source: loc("", "archive/photos/b.jpg"), Dest: loc("otherarchive", "photos/b.jpg")})
			},
			want: "one object"},
	} {
		task, err := tc.task()
		id := b.enqueue(t, task, err, asynq.MaxRetry(5))
		ti := b.info(t, id)
		for deadline := time.Now().Add(30 * time.Second); ti.State != asynq.TaskStateArchived && ti.State != asynq.TaskStateCompleted && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			ti = b.info(t, id)
		}
		if ti.State != asynq.TaskStateArchived || ti.Retried != 0 || !strings.Contains(ti.LastErr, tc.want) {
			t.Errorf("%s: task %s after %d retries with %q; want archived at once, mentioning %q", tc.desc, ti.State, ti.Retried, ti.LastErr, tc.want)
		}
	}
	for k, data := range objects {
		got, err := s.GetBytes(ctx, k)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("DATA LOST: %s holds %d bytes (%v), want its %d", k, len(got), err, len(data))
		}
	}
}

// TestMoveNeedsTaskIDAtDestination: a move deletes its source only when a
// HEAD of the destination shows this task's ferry-task-id (with the source's
// size and ETag), never on size alone. The destination profile reaches the
// server through a proxy that drops x-amz-meta-ferry-task-id from HEAD
// answers, as a server that loses user metadata would: the copy's bytes and
// size are right, yet the move keeps its source and fails.
func TestMoveNeedsTaskIDAtDestination(t *testing.T) {
	t.Parallel()
	var stripped atomic.Int64
	proxy := testenv.NewCountingProxy(t, testenv.S3(t).Endpoint, func(r *http.Response) error {
		if r.Request.Method == http.MethodHead && r.Header.Get("X-Amz-Meta-Ferry-Task-Id") != "" {
			r.Header.Del("X-Amz-Meta-Ferry-Task-Id")
			stripped.Add(1)
		}
		return nil
	})
	b := setup(t, func(c *worker.Config) {
		forgetful := c.Profiles["default"]
		forgetful.EndpointURL = proxy.URL
		c.Profiles["forgetful"] = forgetful
	})
	b.start(t)
	s := b.storage(t)
	ctx := context.Background()
	if _, err := s.PutBytes(ctx, "src/keep", []byte("only copy"), nil); err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, "src/keep"), Dest: s3loc("forgetful", b.bucket, "dst/x")})
	id := b.enqueue(t, task, err, asynq.MaxRetry(0)) // one attempt: the check fails every time
	ti := b.info(t, id)
	for deadline := time.Now().Add(30 * time.Second); ti.State != asynq.TaskStateArchived && ti.State != asynq.TaskStateCompleted && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		ti = b.info(t, id)
	}
	if got, err := s.GetBytes(ctx, "src/keep"); string(got) != "only copy" {
		t.Fatalf("the move deleted its source (%q, %v) though the destination did not show its task id (task %s, %q)", got, err, ti.State, ti.LastErr)
	}
	if ti.State != asynq.TaskStateArchived || !strings.Contains(ti.LastErr, "is not this task's copy") || stripped.Load() == 0 {
		t.Errorf("task %s with %q (%d HEADs stripped); want it failed saying the destination is not this task's copy", ti.State, ti.LastErr, stripped.Load())
	}
}

// TestMoveKeepsASourceWrittenAgain: a move deletes the version of its source
// it copied, never whatever the key holds by then. A writer replaces the
// source between the move's last check and its delete (a test hook): the
// move must keep that newer version, which its copy does not hold, and its
// retry moves the newer version. On the old code the delete went by key and
// the newer bytes were lost.
func TestMoveKeepsASourceWrittenAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	s := b.storage(t)
	ctx := context.Background()
	if _, err := s.PutBytes(ctx, "src/doc", []byte("first version"), nil); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var rewrites atomic.Int64
	worker.BeforeMoveDelete(w, func(string) {
		if rewrites.Add(1) == 1 {
			if _, err := s.PutBytes(ctx, "src/doc", []byte("second version, written during the move"), nil); err != nil {
				t.Error(err)
			}
		}
	})
	workerproc.Run(t, w)
	task, err := tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, "src/doc"), Dest: s3loc("", b.bucket, "dst/doc")})
	id := b.enqueue(t, task, err, asynq.MaxRetry(3))
	ti := b.info(t, id)
	for deadline := time.Now().Add(30 * time.Second); ti.State != asynq.TaskStateArchived && ti.State != asynq.TaskStateCompleted && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		ti = b.info(t, id)
	}
	got, err := s.GetBytes(ctx, "dst/doc")
	if string(got) != "second version, written during the move" {
		src, serr := s.GetBytes(ctx, "src/doc")
		t.Fatalf("DATA LOST: the destination holds %q (%v), the source %q (%v); the version written during the move is in neither", got, err, src, serr)
	}
	if ti.State != asynq.TaskStateCompleted || ti.Retried != 1 {
		t.Errorf("task %s after %d retries (%q); want completed on its one retry", ti.State, ti.Retried, ti.LastErr)
	}
	if ok, err := s.Exists(ctx, "src/doc"); ok || err != nil {
		t.Errorf("source still there (%v, %v) after the retried move completed", ok, err)
	}
}
