package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestBatchRunAgainAfterItFinished: asynq runs a batch again when the
// worker that finished it died before asynq recorded that (a kill between
// the end of the run and asynq's acknowledgement). That second run must
// write nothing: the batch's record of finished items outlives the run long
// enough for it. The test makes the second run as asynq would: the same
// task id and payload, run again after the first run ended. Each
// destination is overwritten by hand in between, so a rewrite shows.
func TestBatchRunAgainAfterItFinished(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	s := b.storage(t)
	var items []tasks.BatchItem
	for i := range 8 {
		path, _ := testenv.RandomFile(t, b.dir, fmt.Sprintf("again%d", i), 1000+i)
		items = append(items, tasks.BatchItem{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, fmt.Sprintf("again/%d", i)), Size: int64(1000 + i)})
	}
	id := "batch-again-" + b.queue
	run := func() tasks.BatchResult {
		t.Helper()
		task, err := tasks.NewBatchTask(tasks.BatchPayload{Items: items})
		b.enqueue(t, task, err, asynq.TaskID(id))
		if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("batch ended %+v", p)
		}
		_, res := batchResult(t, b, id)
		return res
	}
	if res := run(); res.Done != len(items) || res.Resumed != 0 {
		t.Fatalf("first run: %+v; want %d done, none resumed", res, len(items))
	}
	marker := []byte("written by the test after the first run")
	for _, it := range items {
		if _, err := s.PutBytes(ctx, it.Dest.Key, marker, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.client.Inspector().DeleteTask(b.queue, id); err != nil {
		t.Fatal(err)
	}
	res := run()
	if res.Done != len(items) || res.Resumed != len(items) || res.Failed != 0 {
		t.Errorf("second run: %+v; want all %d done, all resumed from the record", res, len(items))
	}
	for _, it := range items {
		if got := mustGet(t, s, it.Dest.Key); !bytes.Equal(got, marker) {
			t.Errorf("%s was written again by the second run of a finished batch", it.Dest.Key)
		}
	}
}
