package worker

import (
	"context"
	"os"
	"testing"

	"github.com/ferryhq/ferry/storage"
)

// FileFingerprint is the checkpoint fingerprint the worker computes for the
// local file at path, for tests that build a checkpoint by hand.
func FileFingerprint(t testing.TB, path string) string {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return versionOf(st).fingerprint()
}

// RegisterUpload starts a multipart upload at key of s the way the worker
// does for task (registered under profile), and returns its id.
func RegisterUpload(ctx context.Context, w *Worker, s *storage.S3, task, profile, key string) (string, error) {
	u, err := s.StartMultipartUpload(ctx, key, &storage.MultipartOptions{Tracker: w.registrar(task, profile, s.Bucket())})
	if err != nil {
		return "", err
	}
	return u.UploadID, nil
}

// RegisterIntent records only the intent of task to upload to key of s, as
// a worker that stopped right after CreateMultipartUpload leaves it.
func RegisterIntent(ctx context.Context, w *Worker, s *storage.S3, task, profile, key string) error {
	return w.registrar(task, profile, s.Bucket()).Starting(ctx, key)
}

// RegisteredUploads returns the upload ids the registry holds for task.
func RegisteredUploads(ctx context.Context, w *Worker, task string) ([]string, error) {
	ups, err := w.taskUploads(ctx, task)
	var ids []string
	for _, u := range ups {
		ids = append(ids, u.UploadID)
	}
	return ids, err
}

// BeforeJanitorList makes w's janitor runs call f between reading the
// upload registry and listing the buckets.
func BeforeJanitorList(w *Worker, f func()) { w.beforeJanitorList = f }

// BeforeExtrasDelete makes w's --delete-extra call f between the listings
// that found the extras and their deletion.
func BeforeExtrasDelete(w *Worker, f func()) { w.beforeExtrasDelete = f }

// BatchRetiredTTL is how long a finished batch's record is kept.
const BatchRetiredTTL = batchRetiredTTL

// BeforeClaim sets a hook run between a run's indexing of its task for the
// takeover loop and its claim of the task; set before Run.
func BeforeClaim(w *Worker, f func(id string)) { w.beforeClaim = f }

// BeforeMoveDelete sets a hook run by a move between its last check of the
// copy and its deletion of the source; set before tasks run.
func BeforeMoveDelete(w *Worker, f func(id string)) { w.beforeMoveDelete = f }

// CollectIntentOrphans runs the janitor, with a TTL of zero, for each task
// whose registry entry names the upload: its recorded id (the worker died
// between the record and the checkpoint) or an intent at bucket and key
// (it died between CreateMultipartUpload and the record). That is what a
// janitor run does with such an upload once its task has ended and
// janitor_upload_ttl has passed. It returns the tasks it ran the janitor
// for. An upload a checkpoint still names is one ferry would resume, left
// behind by a task that ended: for it it runs no janitor and returns
// checkpointed.
func CollectIntentOrphans(ctx context.Context, w *Worker, bucket, key, uploadID string) (ran []string, checkpointed bool, err error) {
	cks, err := w.ckpt.List(ctx)
	if err != nil {
		return nil, false, err
	}
	for _, c := range cks {
		if c.Plan.UploadID == uploadID {
			return nil, true, nil
		}
	}
	reg, _, err := w.registeredUploads(ctx)
	if err != nil {
		return nil, false, err
	}
	for _, e := range reg {
		if e.UploadID == uploadID || e.UploadID == "" && e.Bucket == bucket && e.Key == key {
			if _, err := w.janitor(ctx, 0, e.Task); err != nil {
				return ran, false, err
			}
			ran = append(ran, e.Task)
		}
	}
	return ran, false, nil
}
