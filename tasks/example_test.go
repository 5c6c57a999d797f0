package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/tasks"
)

// Enqueue a resumable upload idempotently and follow it to the end. It needs
// a Redis server and a running ferry worker, so it has no Output.
func ExampleNewUploadTask() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	client := tasks.NewClient(rdb)
	defer client.Close()

	src, err := tasks.ParseLocation("/srv/exports/db.dump", "")
	if err != nil {
		log.Fatal(err)
	}
	dst, err := tasks.ParseLocation("s3://backups/db/2026-03-01.dump", "r2")
	if err != nil {
		log.Fatal(err)
	}
	const size = 12 << 30 // a hint: sizes the Timeout
	task, err := tasks.NewUploadTask(tasks.UploadPayload{
		Source:   src,
		Dest:     dst,
		PartSize: 64 << 20,
		Metadata: map[string]string{"origin": "nightly"},
		Size:     size,
	})
	if err != nil {
		log.Fatal(err) // says what is wrong with the payload
	}
	id := tasks.TaskID(tasks.TypeUpload, src, dst)
	info, err := client.Enqueue(ctx, task, asynq.TaskID(id), asynq.Queue("transfers"))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		fmt.Println("already enqueued:", id) // watch the existing one
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("enqueued", info.ID)
	}

	ctx, cancel := context.WithTimeout(ctx, tasks.TimeoutFor(size))
	defer cancel()
	updates, err := client.Watch(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	for p := range updates {
		fmt.Printf("%s %d/%d bytes, %.1f MiB/s %s\n", p.State, p.BytesDone, p.BytesTotal, p.Rate/(1<<20), p.Error)
	}
}
