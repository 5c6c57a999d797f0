package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// onFirstRead is a PartSource that calls f once, before its first read, and
// then fails that read with what f returns.
type onFirstRead struct {
	storage.PartSource
	once sync.Once
	f    func() error
}

func (s *onFirstRead) ReadPart(ctx context.Context, n int, buf []byte) (int, error) {
	var err error
	s.once.Do(func() { err = s.f() })
	if err != nil {
		return 0, fmt.Errorf("read part %d: %w", n, err)
	}
	return s.PartSource.ReadPart(ctx, n, buf)
}

// TestStaleOwnerLeavesTheUpload: a run whose ownership of its task expired
// while it was paused, and which a takeover claimed with a newer token to
// resume the same multipart upload, aborts nothing when it reaches the end
// of that upload — finding the checkpoint's source changed as it resumes,
// or stopped by a user's cancel while it reads a part. The upload (its
// parts) and its checkpoint stay for the newer run, which still owns the
// task, and the stale run ends with checkpoint.ErrNotOwner, the error of a
// run that lost its task (runOwned then waits for the newer run), not with
// the task cancelled. Real Redis and S3: the upload is the server's.
func TestStaleOwnerLeavesTheUpload(t *testing.T) {
	t.Parallel()
	srv := testenv.S3(t)
	rdb := testenv.RedisClient(t)
	for _, tc := range []struct {
		desc string
		// changed: the checkpoint is of another version of the source,
		// and the takeover happens before the stale run resumes; else
		// it happens while the stale run reads a part, and a cancel
		// arrives with it.
		changed bool
	}{
		{desc: "source changed since the checkpoint", changed: true},
		{desc: "cancelled while a part is read"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
			store := checkpoint.New(rdb, checkpoint.Options{})
			w := &Worker{log: log, rdb: rdb, ckpt: store, buffers: storage.NewBufferPool(4 * storage.MinPartSize)}
			cfg := srv.Profile()
			cfg.Bucket = srv.Bucket(t)
			dst, err := storage.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dst.Close() })
			dir := t.TempDir()
			path, data := testenv.RandomFile(t, dir, "stale.bin", 2*storage.MinPartSize+10)
			srcs, err := newSources([]string{dir}, nil, http.DefaultClient)
			if err != nil {
				t.Fatal(err)
			}
			src, err := srcs.openFile(path, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = src.Close() })

			// The upload as the newer run resumes it: one part sent and
			// checkpointed.
			id := testenv.UniqueName("stale")
			const key = "stale/object.bin"
			mu, err := dst.StartMultipartUpload(ctx, key, &storage.MultipartOptions{PartSize: storage.MinPartSize,
				Metadata: map[string]string{metaTaskID: id}})
			if err != nil {
				t.Fatal(err)
			}
			p1, err := dst.UploadPart(ctx, mu, 1, data[:storage.MinPartSize])
			if err != nil {
				t.Fatal(err)
			}
			fingerprint := src.fingerprint
			if tc.changed {
				fingerprint = "file:1:1"
			}
			plan := checkpoint.Plan{UploadID: mu.UploadID, Profile: tasks.ProfileName(""), Bucket: cfg.Bucket, Key: key,
				PartSize: storage.MinPartSize, PartCount: 3, TotalSize: src.size, Fingerprint: fingerprint,
				CreatedAt: time.Now(), ChecksumMode: dst.UploadChecksumMode()}
			if err := store.Create(ctx, id, plan); err != nil {
				t.Fatal(err)
			}
			if err := store.RecordPart(ctx, id, mu.UploadID, checkpoint.Part{Number: 1, ETag: p1.ETag, Size: p1.Size, Checksum: p1.Checksum}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = store.Delete(context.Background(), id, mu.UploadID) })

			stale, err := store.Claim(ctx, id, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			var newer int64
			// takeOver ends the stale run's ownership, as its expiry does,
			// and claims the task with a newer token, as a takeover does.
			takeOver := func() error {
				if err := store.Release(ctx, id, stale); err != nil {
					return err
				}
				token, err := store.Claim(ctx, id, time.Minute)
				if err != nil {
					return err
				}
				newer = token
				t.Cleanup(func() { _ = store.Release(context.Background(), id, token) })
				return nil
			}
			rctx, cancel := context.WithCancelCause(withClaim(ctx, &claim{id: id, token: stale}))
			defer cancel(nil)
			if tc.changed {
				if err := takeOver(); err != nil {
					t.Fatal(err)
				}
			} else {
				src.parts = &onFirstRead{PartSource: src.parts, f: func() error {
					if err := takeOver(); err != nil {
						return err
					}
					cancel(errCancelled) // as a cancel published to the worker does
					return rctx.Err()
				}}
			}
			prog := w.newProgress(ctx, id, tasks.TypeUpload, path, "s3://"+cfg.Bucket+"/"+key)
			t.Cleanup(prog.close)
			u := &upload{taskID: id, profile: tasks.ProfileName(""), dst: dst, key: key, src: src,
				partSize: storage.MinPartSize, concurrency: 1, prog: prog, log: log}

			_, err = w.uploadOwned(rctx, u, stale)
			if newer == 0 {
				t.Fatalf("uploadOwned = %v before the takeover happened", err)
			}
			if !errors.Is(err, checkpoint.ErrNotOwner) || errors.Is(err, errCancelled) {
				t.Errorf("uploadOwned = %v; want only the ownership lost (checkpoint.ErrNotOwner)", err)
			}
			parts, err := dst.ListParts(ctx, key, mu.UploadID)
			if err != nil {
				t.Fatalf("the stale run aborted the upload the newer run resumes: ListParts answered %v", err)
			}
			if len(parts) != 1 || parts[0].ETag != p1.ETag {
				t.Errorf("the upload's parts are %+v; want part 1 (%s) alone", parts, p1.ETag)
			}
			ck, err := store.Load(ctx, id)
			if err != nil {
				t.Fatalf("the stale run deleted the newer run's checkpoint: %v", err)
			}
			if ck.Plan.UploadID != mu.UploadID || ck.Plan.Fingerprint != fingerprint || len(ck.Parts) != 1 {
				t.Errorf("checkpoint after the stale run: %+v; want the newer run's (upload %s, fingerprint %s, 1 part)",
					ck, mu.UploadID, fingerprint)
			}
			ups, err := dst.ListMultipartUploads(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(ups) != 1 {
				t.Errorf("multipart uploads in the bucket: %+v; want the newer run's alone", ups)
			}
			if err := store.CheckOwner(ctx, id, newer); err != nil {
				t.Errorf("the newer run lost the task: %v", err)
			}
		})
	}
}
