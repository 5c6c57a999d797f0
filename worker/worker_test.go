package worker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

func replaceHost(u, from, to string) string { return strings.Replace(u, from, to, 1) }

func s3loc(profile, bucket, key string) tasks.Location {
	return tasks.Location{Profile: profile, Bucket: bucket, Key: key}
}

func mustGet(t *testing.T, s *storage.S3, key string) []byte {
	t.Helper()
	b, err := s.GetBytes(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

// TestEveryTaskType runs each task type end to end through a real asynq
// server against real S3.
func TestEveryTaskType(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	s := b.storage(t)
	ctx := context.Background()

	// put: inline bytes.
	id := b.enq(t)(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte("inline!")},
		Dest: s3loc("", b.bucket, "put/inline.txt"), ContentType: "text/plain", Metadata: map[string]string{"team": "qa"}}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("inline put: %+v", p)
	}
	f, err := s.Info(ctx, "put/inline.txt")
	if err != nil || f.ContentType != "text/plain" || f.Metadata["team"] != "qa" || f.Metadata["ferry-task-id"] != id {
		t.Errorf("inline put stored %+v, %v", f, err)
	}
	var res storage.StoredFile
	if err := json.Unmarshal(b.info(t, id).Result, &res); err != nil || res.Size != 7 {
		t.Errorf("task result = %s (%v), want the StoredFile", b.info(t, id).Result, err)
	}

	// put: a small file is one PutObject.
	small, smallData := testenv.RandomFile(t, b.dir, "small.bin", 1000)
	id = b.enq(t)(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Path: small}, Dest: s3loc("", b.bucket, "put/small.bin")}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted || p.BytesDone != 1000 {
		t.Fatalf("file put: %+v", p)
	}
	if !bytes.Equal(mustGet(t, s, "put/small.bin"), smallData) {
		t.Error("file put stored other bytes")
	}

	// upload: a multipart upload with checkpoints (3 parts).
	big, bigData := testenv.RandomFile(t, b.dir, "big.bin", 2*storage.MinPartSize+4321)
	id = b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: big}, Dest: s3loc("", b.bucket, "up/big.bin")}))
	p := b.wait(t, id, 2*time.Minute)
	if p.State != tasks.StateCompleted || p.PartsDone != 3 || p.PartsTotal != 3 || p.BytesDone != int64(len(bigData)) {
		t.Fatalf("upload: %+v", p)
	}
	if sha256.Sum256(mustGet(t, s, "up/big.bin")) != sha256.Sum256(bigData) {
		t.Error("upload corrupted the bytes")
	}

	// copy, server-side (same profile).
	id = b.enq(t)(tasks.NewCopyTask(tasks.CopyPayload{Source: s3loc("", b.bucket, "up/big.bin"), Dest: s3loc("", b.bucket, "copy/server.bin")}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("server-side copy: %+v", p)
	}
	// copy across endpoints: streamed ranged GETs into a multipart upload.
	id = b.enq(t)(tasks.NewCopyTask(tasks.CopyPayload{Source: s3loc("", b.bucket, "up/big.bin"), Dest: s3loc("other", b.bucket, "copy/streamed.bin")}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted || p.PartsDone != 3 {
		t.Fatalf("streamed copy: %+v", p)
	}
	for _, k := range []string{"copy/server.bin", "copy/streamed.bin"} {
		if sha256.Sum256(mustGet(t, s, k)) != sha256.Sum256(bigData) {
			t.Errorf("%s differs from its source", k)
		}
		f, _ := s.Info(ctx, k)
		if f.Metadata["ferry-source-size"] != "10490081" || f.Metadata["ferry-source-etag"] == "" {
			t.Errorf("%s lacks the source record in its metadata: %v", k, f.Metadata)
		}
	}

	// move: copy, verify, delete the source.
	id = b.enq(t)(tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, "copy/server.bin"), Dest: s3loc("", b.bucket, "moved/server.bin")}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("move: %+v", p)
	}
	if ok, _ := s.Exists(ctx, "copy/server.bin"); ok {
		t.Error("move kept its source")
	}
	if sha256.Sum256(mustGet(t, s, "moved/server.bin")) != sha256.Sum256(bigData) {
		t.Error("moved object differs")
	}
	// move across endpoints.
	id = b.enq(t)(tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, "put/small.bin"), Dest: s3loc("other", b.bucket, "moved/small.bin")}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("cross-endpoint move: %+v", p)
	}
	if ok, _ := s.Exists(ctx, "put/small.bin"); ok {
		t.Error("cross-endpoint move kept its source")
	}

	// delete one key, then a prefix recursively.
	id = b.enq(t)(tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc("", b.bucket, "moved/small.bin")}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("delete: %+v", p)
	}
	for i := range 25 {
		if _, err := s.PutBytes(ctx, "tree/"+string(rune('a'+i))+"/x", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	id = b.enq(t)(tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc("", b.bucket, "tree/"), Recursive: true}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted || p.Counters["deleted"] != 25 {
		t.Fatalf("recursive delete: %+v", p)
	}
	for f, err := range s.List(ctx, "tree/", 0) {
		t.Errorf("left after recursive delete: %s %v", f.Key, err)
	}
	ups, _ := s.ListMultipartUploads(ctx, "")
	if len(ups) != 0 {
		t.Errorf("multipart uploads left: %+v", ups)
	}
}

// TestBadInputIsArchivedWithReason: every bad task is archived at once with
// a message a human understands, and nothing is deleted.
func TestBadInputIsArchivedWithReason(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	s := b.storage(t)
	ctx := context.Background()
	if _, err := s.PutBytes(ctx, "keep/me", []byte("precious"), nil); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	secret, _ := testenv.RandomFile(t, outside, "secret.txt", 10)
	if err := os.Symlink(secret, filepath.Join(b.dir, "link")); err != nil {
		t.Fatal(err)
	}
	dest := `{"bucket":"` + b.bucket + `","key":"out/x"}`
	for _, tc := range []struct {
		desc, typ, payload, want string
	}{
		{"malformed JSON", tasks.TypeUpload, `{"source":`, "payload"},
		{"unknown field", tasks.TypePut, `{"source":{"data":"eA=="},"dest":` + dest + `,"colour":"red"}`, "colour"},
		{"bad key", tasks.TypePut, `{"source":{"data":"eA=="},"dest":{"bucket":"` + b.bucket + `","key":"a/../b"}}`, ".."},
		{"missing source", tasks.TypeUpload, `{"source":{"path":"` + filepath.Join(b.dir, "nope") + `"},"dest":` + dest + `}`, "does not exist"},
		{"path outside allowed dirs", tasks.TypeUpload, `{"source":{"path":"` + secret + `"},"dest":` + dest + `}`, "outside the worker's allowed directories"},
		{"symlink escape", tasks.TypeUpload, `{"source":{"path":"` + filepath.Join(b.dir, "link") + `"},"dest":` + dest + `}`, "symlink"},
		{"unknown profile", tasks.TypePut, `{"source":{"data":"eA=="},"dest":{"profile":"nosuch","bucket":"` + b.bucket + `","key":"k"}}`, `unknown profile "nosuch"`},
		{"missing s3 source for move", tasks.TypeMove, `{"source":{"bucket":"` + b.bucket + `","key":"absent"},"dest":{"bucket":"` + b.bucket + `","key":"keep/me"}}`, "not found"},
		{"unknown task type", "ferry:teleport", `{}`, "teleport"},
		{"move onto itself through two profile names", tasks.TypeMove, `{"source":{"profile":"alias","bucket":"` + b.bucket + `","key":"keep/me"},"dest":{"bucket":"` + b.bucket + `","key":"keep/me"}}`, "same object"},
	} {
		info, err := b.client.Enqueue(ctx, asynq.NewTask(tc.typ, []byte(tc.payload)), asynq.Queue(b.queue), asynq.MaxRetry(5))
		if err != nil {
			t.Fatalf("%s: enqueue: %v", tc.desc, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		var ti *asynq.TaskInfo
		for time.Now().Before(deadline) {
			ti = b.info(t, info.ID)
			if ti.State == asynq.TaskStateArchived {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ti.State != asynq.TaskStateArchived {
			t.Errorf("%s: task is %s, want archived at once (retried %d, last error %q)", tc.desc, ti.State, ti.Retried, ti.LastErr)
			continue
		}
		if ti.Retried != 0 {
			t.Errorf("%s: retried %d times; a permanent error must not be retried", tc.desc, ti.Retried)
		}
		if !strings.Contains(ti.LastErr, tc.want) {
			t.Errorf("%s: archived with %q, want it to mention %q", tc.desc, ti.LastErr, tc.want)
		}
	}
	if got := mustGet(t, s, "keep/me"); string(got) != "precious" {
		t.Errorf("an object was changed by bad input: %q", got)
	}
	if ok, _ := s.Exists(ctx, "out/x"); ok {
		t.Error("bad input wrote an object")
	}
}

// TestCancelAbortsAndLeavesNothing cancels a running upload: the multipart
// upload is aborted, the checkpoint deleted, and the task archived (not
// retried) with "cancelled by user".
func TestCancelAbortsAndLeavesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *worker.Config) { c.PartConcurrency = 1 })
	b.start(t)
	s := b.storage(t)
	ctx := context.Background()
	path, _ := testenv.RandomFile(t, b.dir, "cancel.bin", 30*storage.MinPartSize)
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, "cancel/x")}))
	waitParts(t, b, id, 2)
	if err := b.client.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	p := b.wait(t, id, time.Minute)
	if p.State != tasks.StateCancelled || !strings.Contains(p.Error, "cancelled by user") {
		t.Errorf("after cancel: %+v", p)
	}
	// The progress is written by asynq's error handler, a moment before
	// asynq archives the task.
	ti := b.info(t, id)
	for deadline := time.Now().Add(10 * time.Second); ti.State == asynq.TaskStateActive && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		ti = b.info(t, id)
	}
	if ti.State != asynq.TaskStateArchived || ti.Retried != 0 {
		t.Errorf("cancelled task is %s after %d retries; want archived, not retried", ti.State, ti.Retried)
	}
	ups, _ := s.ListMultipartUploads(ctx, "")
	if len(ups) != 0 {
		t.Errorf("cancel left multipart uploads: %+v", ups)
	}
	if n, _ := b.rdb.Exists(ctx, "ferry:ckpt:{"+id+"}").Result(); n != 0 {
		t.Error("cancel left the checkpoint")
	}
	if ok, _ := s.Exists(ctx, "cancel/x"); ok {
		t.Error("a cancelled upload created the object")
	}
}

// waitParts waits until the task's progress shows n finished parts.
func waitParts(t *testing.T, b *bundle, id string, n int) tasks.Progress {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		p, err := b.client.Progress(context.Background(), id)
		if err == nil && p.PartsDone >= n {
			return p
		}
		if err != nil && !errors.Is(err, tasks.ErrNotFound) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("task %s never reached %d parts", id, n)
	return tasks.Progress{}
}
