package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/tasks"
)

// The upload registry: every multipart upload ferry creates — checkpointed
// uploads, streamed https uploads, server-side part copies, the copies of
// migrations — is recorded in uploadsKey with the task that owns it. The
// janitor aborts only uploads found there (or in a checkpoint), and only
// once their task is gone from asynq's live states: another application's
// upload in a shared bucket is never touched, and neither is a live
// upload, checkpointed or not. A cancel finds a task's uploads there to
// abort them at once.
//
// The intent is recorded before CreateMultipartUpload and the upload id
// after it, so a crash between the two leaves an intent naming the bucket,
// key and time, by which the janitor still recognises the upload.

// uploadEntry is one registered upload. UploadID is empty for an intent.
type uploadEntry struct {
	Task     string    `json:"task"`
	Profile  string    `json:"profile"`
	Bucket   string    `json:"bucket"`
	Key      string    `json:"key"`
	UploadID string    `json:"upload_id,omitempty"`
	Created  time.Time `json:"created"`
}

// registration records the multipart uploads of one task at one profile
// and bucket. It is a storage.UploadTracker; one registration serves one
// upload at a time (it remembers the intent between Starting and Started).
type registration struct {
	w                     *Worker
	task, profile, bucket string
	intent                string // field of the pending intent
	created               time.Time
}

// registrar returns a registration for task's uploads to profile/bucket.
func (w *Worker) registrar(task, profile, bucket string) *registration {
	return &registration{w: w, task: task, profile: tasks.ProfileName(profile), bucket: bucket}
}

// Starting records the intent (and the bucket, for the janitor's scan).
func (r *registration) Starting(ctx context.Context, key string) error {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	r.intent, r.created = intentField(r.task, hex.EncodeToString(tok[:])), time.Now()
	v, err := json.Marshal(uploadEntry{Task: r.task, Profile: r.profile, Bucket: r.bucket, Key: key, Created: r.created})
	if err != nil {
		return err
	}
	_, err = r.w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, janitorBucketsKey, r.profile+"\x00"+r.bucket)
		p.HSet(ctx, uploadsKey, r.intent, v)
		return nil
	})
	if err != nil {
		return fmt.Errorf("register the upload for the janitor: %w", err)
	}
	return nil
}

// Started replaces the intent by the upload's entry, in one transaction.
func (r *registration) Started(ctx context.Context, key, uploadID string) error {
	v, err := json.Marshal(uploadEntry{Task: r.task, Profile: r.profile, Bucket: r.bucket, Key: key, UploadID: uploadID, Created: r.created})
	if err != nil {
		return err
	}
	_, err = r.w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, uploadsKey, uploadField(r.task, uploadID), v)
		if r.intent != "" {
			p.HDel(ctx, uploadsKey, r.intent)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register upload %s: %w", uploadID, err)
	}
	r.intent = ""
	return nil
}

// Ended forgets a completed or aborted upload.
func (r *registration) Ended(ctx context.Context, _, uploadID string) {
	r.w.forgetUpload(ctx, r.task, uploadID)
}

// forgetUpload removes task's upload from the registry once it is
// completed or aborted. A failure only leaves an entry the janitor removes
// (aborting a finished upload is a no-op).
func (w *Worker) forgetUpload(ctx context.Context, task, uploadID string) {
	if err := w.rdb.HDel(context.WithoutCancel(ctx), uploadsKey, uploadField(task, uploadID)).Err(); err != nil {
		w.log.Warn("could not remove a finished upload from the registry (the janitor will)", zap.String("task_id", task),
			zap.String("upload_id", uploadID), zap.Error(err))
	}
}

// registeredUpload is a registry entry with its field.
type registeredUpload struct {
	field string
	uploadEntry
}

// registeredUploads reads the whole registry. Unreadable entries are
// skipped (and reported in bad): they can name nothing to abort.
func (w *Worker) registeredUploads(ctx context.Context) (ups []registeredUpload, bad int, err error) {
	h, err := w.rdb.HGetAll(ctx, uploadsKey).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("read the upload registry: %w", err)
	}
	for f, v := range h {
		var e uploadEntry
		if json.Unmarshal([]byte(v), &e) != nil || e.Task == "" || e.Bucket == "" || e.Key == "" {
			bad++
			continue
		}
		ups = append(ups, registeredUpload{field: f, uploadEntry: e})
	}
	return ups, bad, nil
}

// taskUploads returns the registry entries of one task.
func (w *Worker) taskUploads(ctx context.Context, task string) ([]registeredUpload, error) {
	var ups []registeredUpload
	iter := w.rdb.HScan(ctx, uploadsKey, 0, taskFieldPattern(task), 100).Iterator()
	for iter.Next(ctx) {
		f := iter.Val()
		if !iter.Next(ctx) {
			break
		}
		var e uploadEntry
		if json.Unmarshal([]byte(iter.Val()), &e) == nil && e.Task == task {
			ups = append(ups, registeredUpload{field: f, uploadEntry: e})
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("read the upload registry: %w", err)
	}
	return ups, nil
}

// taskFieldPattern is the HSCAN MATCH pattern of task's registry fields:
// the id with glob characters escaped, then the NUL separator.
func taskFieldPattern(task string) string {
	var b strings.Builder
	for _, c := range task {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String() + "\x00*"
}
