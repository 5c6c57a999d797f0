package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// TestJanitorAbortsOnlyOrphans: an old upload nobody owns is aborted; one a
// live checkpoint owns is kept, since it can still resume.
func TestJanitorAbortsOnlyOrphans(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	orphan, err := s.StartMultipartUpload(ctx, "j/orphan", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owned, err := s.StartMultipartUpload(ctx, "j/owned", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := checkpoint.New(b.rdb, checkpoint.Options{})
	id := "janitor-owner-" + b.queue
	if err := store.Create(ctx, id, checkpoint.Plan{UploadID: owned.UploadID, Profile: "default", Bucket: b.bucket,
		Key: "j/owned", PartSize: storage.MinPartSize, TotalSize: -1, Fingerprint: "x", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Delete(ctx, id, owned.UploadID) })
	// The owner is a live task: pending in a queue no worker serves.
	if _, err := b.client.Enqueue(ctx, asynq.NewTask(tasks.TypeUpload, nil), asynq.TaskID(id), asynq.Queue(testenv.UniqueName("idle"))); err != nil {
		t.Fatal(err)
	}
	// A stale checkpoint: its task is gone, so its upload is an orphan too.
	stale, err := s.StartMultipartUpload(ctx, "j/stale", &storage.MultipartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	staleID := "janitor-stale-" + b.queue
	if err := store.Create(ctx, staleID, checkpoint.Plan{UploadID: stale.UploadID, Profile: "default", Bucket: b.bucket,
		Key: "j/stale", PartSize: storage.MinPartSize, TotalSize: -1, Fingerprint: "x", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	w := b.start(t)
	// Both uploads are older than the TTL; only ownership protects one.
	// (A TTL, not 0: other tests' fresh uploads share this Redis's registry.)
	time.Sleep(2500 * time.Millisecond)
	rep, err := w.Janitor(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Aborted < 2 || rep.StaleCheckpoints < 1 {
		t.Errorf("janitor report %+v: want the orphan and the stale checkpoint's upload aborted", rep)
	}
	if _, err := store.Load(ctx, staleID); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("stale checkpoint still there: %v", err)
	}
	ups, _ := s.ListMultipartUploads(ctx, "")
	if len(ups) != 1 || ups[0].UploadID != owned.UploadID {
		t.Errorf("after the janitor: %+v; want only the owned upload %s (orphan was %s)", ups, owned.UploadID, orphan.UploadID)
	}
}
