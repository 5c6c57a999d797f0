package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

func fileItem(i int, size int64) tasks.BatchItem {
	return tasks.BatchItem{Source: tasks.Location{Path: fmt.Sprintf("/data/f%d", i)},
		Dest: tasks.Location{Bucket: "bkt", Key: fmt.Sprintf("k/%d", i)}, Size: size}
}

func TestBatchItemValidate(t *testing.T) {
	t.Parallel()
	s3 := func(profile, key string) tasks.Location {
		return tasks.Location{Profile: profile, Bucket: "bkt", Key: key}
	}
	tests := []struct {
		desc string
		item tasks.BatchItem
		want string // in the error; "" for valid
	}{
		{desc: "file", item: fileItem(1, 100)},
		{desc: "copy", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x")}},
		{desc: "empty file", item: fileItem(1, 0)},
		{desc: "just below the limit", item: fileItem(1, tasks.MaxBatchObjectSize-1)},
		{desc: "file at the multipart threshold", item: fileItem(1, tasks.MaxBatchObjectSize), want: "enqueue an upload task"},
		{desc: "copy at the multipart threshold", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x"), Size: 1 << 30}, want: "enqueue a copy task"},
		{desc: "negative size", item: fileItem(1, -1), want: "negative"},
		{desc: "key too long", item: tasks.BatchItem{Source: tasks.Location{Path: "/a"}, Dest: s3("", strings.Repeat("k", 1025))}, want: "1024"},
		{desc: "relative path", item: tasks.BatchItem{Source: tasks.Location{Path: "a/b"}, Dest: s3("", "k")}, want: "relative"},
		{desc: "inline", item: tasks.BatchItem{Source: tasks.Location{Data: []byte("x")}, Dest: s3("", "k")}, want: "use a put task"},
		{desc: "https", item: tasks.BatchItem{Source: tasks.Location{URL: "https://h/x"}, Dest: s3("", "k")}, want: "use a put task"},
		{desc: "self copy", item: tasks.BatchItem{Source: s3("", "k"), Dest: s3("default", "k")}, want: "same object"},
		{desc: "copy with metadata", item: tasks.BatchItem{Source: s3("a", "k"), Dest: s3("", "k"), Metadata: map[string]string{"a": "b"}}, want: "apply to file items"},
		{desc: "copy with listed ETag", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x"), SourceETag: "9e107d9d372bb6826bd81d3542a419d6"}},
		{desc: "copy with quoted multipart ETag", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x"), SourceETag: `"9e107d9d372bb6826bd81d3542a419d6-3"`}},
		{desc: "file with ETag", item: tasks.BatchItem{Source: tasks.Location{Path: "/a"}, Dest: s3("", "k"), SourceETag: "9e107d9d372bb6826bd81d3542a419d6"}, want: "applies to s3 sources"},
		{desc: "ETag with a quote inside", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x"), SourceETag: `ab"cd`}, want: "cannot have"},
		{desc: "ETag with a newline", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x"), SourceETag: "ab\ncd"}, want: "cannot have"},
		{desc: "ETag too long", item: tasks.BatchItem{Source: s3("a", "x"), Dest: s3("b", "x"), SourceETag: strings.Repeat("a", 1025)}, want: "at most 1024"},
		{desc: "reserved metadata", item: tasks.BatchItem{Source: tasks.Location{Path: "/a"}, Dest: s3("", "k"), Metadata: map[string]string{"ferry-task-id": "x"}}, want: "reserved"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			err := tc.item.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSplitBatch(t *testing.T) {
	t.Parallel()
	var many []tasks.BatchItem
	for i := range 2*tasks.MaxBatchItems + 1 {
		many = append(many, fileItem(i, 1))
	}
	var many20k []tasks.BatchItem
	for i := range 40 * tasks.MaxBatchItems {
		many20k = append(many20k, fileItem(i, 1))
	}
	// spread is a first batches of size m then b of size k.
	spread := func(m, a, k, b int) []int {
		var out []int
		for range a {
			out = append(out, m)
		}
		for range b {
			out = append(out, k)
		}
		return out
	}
	var big []tasks.BatchItem
	for i := range 40 {
		big = append(big, fileItem(i, 4<<20)) // 16 fit in 64 MiB
	}
	tests := []struct {
		desc  string
		items []tasks.BatchItem
		want  []int
	}{
		{desc: "spread, at least SplitMinItems each", items: many, want: spread(51, 1, 50, 19)},
		{desc: "spread into SplitBatches", items: many20k[:2000], want: spread(63, 16, 62, 16)},
		{desc: "by count", items: many20k, want: spread(tasks.MaxBatchItems, 40, 0, 0)},
		{desc: "fewer than SplitMinItems", items: many[:tasks.SplitMinItems-1], want: []int{tasks.SplitMinItems - 1}},
		{desc: "twice SplitMinItems", items: many[:2*tasks.SplitMinItems], want: []int{tasks.SplitMinItems, tasks.SplitMinItems}},
		{desc: "by bytes", items: big, want: []int{16, 16, 8}},
		{desc: "one", items: many[:1], want: []int{1}},
		{desc: "none", items: nil, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			var got []int
			n := 0
			for _, c := range tasks.SplitBatch(tc.items) {
				got = append(got, len(c))
				if c[0].Dest.Key != tc.items[n].Dest.Key {
					t.Errorf("chunk starting at %d does not start with item %d", n, n)
				}
				n += len(c)
				if err := (tasks.BatchPayload{Items: c}).Validate(); err != nil {
					t.Errorf("chunk of %d: %v", len(c), err)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("chunk sizes %v; want %v", got, tc.want)
			}
		})
	}
}

func TestBatchEnvelope(t *testing.T) {
	t.Parallel()
	var many []tasks.BatchItem
	for i := range tasks.MaxBatchItems + 1 {
		many = append(many, fileItem(i, 1))
	}
	for _, tc := range []struct {
		desc string
		p    tasks.BatchPayload
		want string
	}{
		{desc: "empty", p: tasks.BatchPayload{}, want: "no items"},
		{desc: "too many", p: tasks.BatchPayload{Items: many}, want: "split"},
		{desc: "too many bytes", p: tasks.BatchPayload{Items: []tasks.BatchItem{fileItem(1, 5<<20-1), fileItem(2, tasks.MaxBatchBytes)}}, want: "bytes"},
		{desc: "concurrency", p: tasks.BatchPayload{Items: many[:1], Concurrency: 65}, want: "concurrency"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v; want %q", tc.desc, err, tc.want)
		}
	}
	// The worker checks the envelope only: a bad item fails alone.
	p := tasks.BatchPayload{Items: []tasks.BatchItem{fileItem(1, 1), {Source: tasks.Location{Path: "rel"}, Dest: tasks.Location{Bucket: "bkt", Key: "k"}}}}
	raw, _ := json.Marshal(p)
	got, err := tasks.DecodeBatch(asynq.NewTask(tasks.TypeBatch, raw))
	if err != nil || len(got.Items) != 2 {
		t.Errorf("DecodeBatch with a bad item: %v, %d items; want the batch decoded", err, len(got.Items))
	}
	if _, err := tasks.NewBatchTask(p); err == nil || !strings.Contains(err.Error(), "item 1") {
		t.Errorf("NewBatchTask with a bad item: %v; want item 1 named", err)
	}
	raw, _ = json.Marshal(tasks.BatchPayload{})
	if _, err := tasks.DecodeBatch(asynq.NewTask(tasks.TypeBatch, raw)); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("DecodeBatch of an empty batch: %v; want SkipRetry", err)
	}
}

// TestEnqueueBatch enqueues items in batches with the batch defaults, and
// enqueues nothing when one item is too large for a batch, naming it.
func TestEnqueueBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var items []tasks.BatchItem
	for i := range tasks.MaxBatchItems + 10 {
		items = append(items, fileItem(i, 100))
	}
	infos, err := b.client.EnqueueBatch(ctx, items, 4, asynq.Queue(b.queue))
	if err != nil {
		t.Fatal(err)
	}
	// 510 items: 10 batches of 51 (SplitBatch).
	if len(infos) != 10 {
		t.Fatalf("%d batches; want 10", len(infos))
	}
	for i, info := range infos {
		p, err := tasks.DecodeBatch(asynq.NewTask(info.Type, info.Payload))
		if err != nil {
			t.Fatal(err)
		}
		if want := 51; len(p.Items) != want || p.Concurrency != 4 {
			t.Errorf("batch %d: %d items, concurrency %d; want %d, 4", i, len(p.Items), p.Concurrency, want)
		}
		if info.Retention != tasks.BatchRetention || info.MaxRetry != tasks.TransferMaxRetry || info.Timeout < 10*time.Minute {
			t.Errorf("batch %d options: retention %s, max retry %d, timeout %s", i, info.Retention, info.MaxRetry, info.Timeout)
		}
	}
	items[7].Size = 6 << 20
	queue := testenv.UniqueName("q")
	_, err = b.client.EnqueueBatch(ctx, items, 0, asynq.Queue(queue))
	if err == nil || !strings.Contains(err.Error(), "item 7") || !strings.Contains(err.Error(), "upload task") {
		t.Errorf("EnqueueBatch with a 6 MiB object: %v; want item 7 refused, pointing to an upload task", err)
	}
	if qi, err := b.client.Inspector().GetQueueInfo(queue); err == nil && qi.Size > 0 {
		t.Errorf("%d tasks enqueued though an item was refused", qi.Size)
	}
}
