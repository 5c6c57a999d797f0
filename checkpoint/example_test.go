package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/checkpoint"
)

// The life of a checkpoint in a worker: create the plan when the multipart
// upload starts (or load it when the task is retried), record each part as it
// finishes, delete it once the upload is completed or aborted.
//
// Not run (no Output): it needs a Redis server; the tests run the same calls
// against a real one.
func Example() {
	ctx := context.Background()
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
	defer rdb.Close()
	store := checkpoint.New(rdb, checkpoint.Options{TTL: 72 * time.Hour})

	taskID := "5f0c2a9e-task"
	ckpt, err := store.Load(ctx, taskID)
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		// First run: CreateMultipartUpload, then store the plan.
		plan := checkpoint.Plan{
			UploadID:    "upload-id-from-s3",
			Profile:     "r2",
			Bucket:      "backups",
			Key:         "db/2026-03-01.tar",
			PartSize:    8 << 20,
			PartCount:   3,
			TotalSize:   20 << 20,
			Fingerprint: "file:20971520:1772368245",
		}
		if err := store.Create(ctx, taskID, plan); err != nil {
			log.Fatal(err) // ErrExists: another attempt won the race; Load again
		}
		ckpt = checkpoint.Checkpoint{TaskID: taskID, Plan: plan}
	case err != nil:
		log.Fatal(err)
	}

	// After each UploadPart succeeds:
	part := checkpoint.Part{Number: 1, ETag: `"9b2cf535f27731c974343645a3985328"`, Size: 8 << 20}
	err = store.RecordPart(ctx, taskID, ckpt.Plan.UploadID, part)
	if errors.Is(err, checkpoint.ErrPlanMismatch) || errors.Is(err, checkpoint.ErrNotFound) {
		// This attempt is stale: the plan was replaced or deleted. Stop.
		log.Fatal(err)
	}

	if ckpt, err = store.Load(ctx, taskID); err == nil {
		fmt.Printf("%d of %d bytes done\n", ckpt.BytesDone(), ckpt.Plan.TotalSize)
	}

	// After CompleteMultipartUpload (or AbortMultipartUpload) of this upload.
	// ErrPlanMismatch: a newer run of the task owns the checkpoint now.
	if err := store.Delete(ctx, taskID, ckpt.Plan.UploadID); err != nil {
		log.Fatal(err)
	}
}

// The janitor: every upload that still has a live checkpoint.
func ExampleStore_List() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	store := checkpoint.New(rdb, checkpoint.Options{})

	live, err := store.List(ctx)
	if err != nil {
		// Possibly incomplete (a corrupt checkpoint, or Redis failed):
		// abort nothing this round.
		log.Print(err)
		return
	}
	owned := map[string]bool{}
	for _, c := range live {
		owned[c.Plan.UploadID] = true
	}
	// ... ListMultipartUploads, and abort old uploads not in owned.
}
