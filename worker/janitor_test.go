package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/storage"
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
	t.Cleanup(func() { _ = store.Delete(ctx, id) })
	w := b.start(t)
	// Both uploads are older than the TTL; only ownership protects one.
	// (A TTL, not 0: other tests' fresh uploads share this Redis's registry.)
	time.Sleep(2500 * time.Millisecond)
	rep, err := w.Janitor(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Aborted < 1 {
		t.Errorf("janitor report %+v: nothing aborted", rep)
	}
	ups, _ := s.ListMultipartUploads(ctx, "")
	if len(ups) != 1 || ups[0].UploadID != owned.UploadID {
		t.Errorf("after the janitor: %+v; want only the owned upload %s (orphan was %s)", ups, owned.UploadID, orphan.UploadID)
	}
}
