package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// TypeBatch is a task carrying many small objects (see BatchPayload).
const TypeBatch = "ferry:batch"

// Bounds of a batch. MaxBatchItems and MaxBatchBytes bound one task; they
// keep a task's payload (about 200 bytes an object, held in Redis while the
// task lives) near 100 KiB and its run within minutes. SplitBatch cuts a
// job into SplitBatches batches when it can: docs/performance.md has the
// measurement (BenchmarkBatchPut): the queue's cost is amortised at about
// 50 objects per task already, and a job cut into fewer, larger batches
// than the fleet has worker slots leaves slots idle at its end (a batch's
// items run only in its own slot, so the slowest batch sets the end).
const (
	// MaxBatchItems is the most objects one batch carries.
	MaxBatchItems = 500
	// SplitBatches is how many batches SplitBatch cuts a job into when
	// its items allow SplitMinItems or more each: enough for a few
	// batches per worker slot of a small fleet (4 slots per worker), so
	// that the slots that finish first take the next batch instead of
	// idling while the last ones run.
	SplitBatches = 32
	// SplitMinItems is the fewest items SplitBatch puts in a batch to
	// make more batches: below it the queue's cost per object shows.
	SplitMinItems = 50
	// MaxBatchBytes is the most bytes (the sum of the items' Size) one
	// batch carries: 500 objects of 128 KiB.
	MaxBatchBytes = 64 << 20
	// MaxBatchObjectSize is the size from which an object is refused in a
	// batch: MinPartSize, the smallest multipart threshold a worker can
	// have. Such an object gets its own resumable upload or copy task,
	// whose parts are checkpointed; a batch item is all or nothing.
	MaxBatchObjectSize = MinPartSize
	// MaxBatchConcurrency bounds BatchPayload.Concurrency.
	MaxBatchConcurrency = 64
	// BatchRetention is how long a finished batch keeps its record (the
	// payload and the compact result) by default: long enough to read the
	// result, short enough that bulk jobs leave Redis as they found it.
	BatchRetention = 15 * time.Minute
	// MaxBatchFailures caps the failures a BatchResult lists.
	MaxBatchFailures = 20
)

// BatchItem is one object of a batch: a put from a local file on the worker
// (Source.Path) or a copy from another S3 object (Source s3, same or another
// endpoint), to Dest (s3). Both are validated as a put's or copy's would be.
type BatchItem struct {
	Source Location `json:"source"`
	Dest   Location `json:"dest"`
	// Size is the object's size in bytes as the producer knows it (a stat,
	// a listing); 0 means empty or unknown. It fills batches up to
	// MaxBatchBytes and refuses objects of MaxBatchObjectSize or more; the
	// worker checks the real size and fails an item that is too large.
	Size int64 `json:"size,omitempty"`
	// SourceETag is an s3 source's ETag as the producer listed it (a
	// migration fills it from its listing), with or without its quotes;
	// empty means unknown. When it is a plain MD5 (32 hex digits, no "-N"
	// of a multipart upload) and the copy is server-side (both profiles on
	// one endpoint), the worker copies with one request instead of three:
	// a CopyObject pinned to this ETag that keeps the source's headers and
	// metadata as the server has them (and adds no ferry-* record), checked
	// by the ETag of what the server stored, which must be this one. A
	// source changed since it was listed is copied in its new version, as
	// without it. Size must then be the listed version's size.
	SourceETag string `json:"source_etag,omitempty"`
	// ContentType and Metadata are a file item's, as for a put; a copy
	// keeps its source's.
	ContentType string            `json:"content_type,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// Validate reports what is wrong with it, or nil.
func (it BatchItem) Validate() error {
	switch it.Source.Kind() {
	case KindFile:
		if it.SourceETag != "" {
			return errors.New("source_etag applies to s3 sources: a file item's source has no ETag")
		}
	case KindS3:
		if err := validETag(it.SourceETag); err != nil {
			return err
		}
		if it.ContentType != "" || len(it.Metadata) > 0 {
			return errors.New("content_type and metadata apply to file items: a copy keeps its source's headers and metadata")
		}
	default:
		if err := it.Source.Validate("source"); err != nil {
			return err
		}
		return fmt.Errorf("source: a batch item reads a local file or an s3 object, not %s %q: use a put task for it", it.Source.Kind(), it.Source.String())
	}
	if it.Size < 0 {
		return fmt.Errorf("size %d is negative: give the object's size in bytes, or 0 when unknown", it.Size)
	}
	if it.Size >= MaxBatchObjectSize {
		what := "an upload task (ferry upload, tasks.NewUploadTask)"
		if it.Source.Kind() == KindS3 {
			what = "a copy task (ferry copy, tasks.NewCopyTask)"
		}
		return fmt.Errorf("%s is %d bytes: objects of %d bytes or more do not go into a batch (a batch item is not resumable part by part); enqueue %s for it",
			it.Source.String(), it.Size, MaxBatchObjectSize, what)
	}
	put := PutPayload{Source: it.Source, Dest: it.Dest, ContentType: it.ContentType, Metadata: it.Metadata}
	return put.Validate()
}

// validETag checks a listed ETag: at most 1024 bytes of printable ASCII,
// with no quote but a pair around it (S3 sends ETags quoted), since it is
// sent back in an If-Match header.
func validETag(etag string) error {
	if len(etag) > 1024 {
		return fmt.Errorf("source_etag is %d bytes: an ETag is at most 1024", len(etag))
	}
	inner := etag
	if len(inner) >= 2 && inner[0] == '"' && inner[len(inner)-1] == '"' {
		inner = inner[1 : len(inner)-1]
	}
	for i := 0; i < len(inner); i++ {
		if c := inner[i]; c <= ' ' || c >= 0x7f || c == '"' {
			return fmt.Errorf("source_etag %q has a character an ETag cannot have (quote, space, control or non-ASCII): give the ETag as listed", etag)
		}
	}
	return nil
}

// BatchPayload is the payload of TypeBatch: up to MaxBatchItems small
// objects, MaxBatchBytes in all, run by one task with bounded concurrency.
// The worker records each finished item in one small Redis key, so a batch
// that crashed resumes without writing its finished items again; an item
// that fails (a missing file, a refused key) fails alone, with its reason
// in the task's result (BatchResult).
type BatchPayload struct {
	Items []BatchItem `json:"items"`
	// Concurrency is the number of items in flight; 0 means the worker's
	// batch_concurrency, else 1..64.
	Concurrency int `json:"concurrency,omitempty"`
	// Notify, when set, asks for one signed webhook when the batch ends
	// (see Notify); nil means the worker's default for the batch's queue,
	// else the default of the profile named "default" (a batch has no one
	// destination: its items' profiles are not consulted). The batches a
	// migration enqueues never notify: the migration does, once.
	Notify *Notify `json:"notify,omitempty"`
	// Migration is the id of the ferry:migrate task that enqueued this
	// batch (empty for a producer's batch): the migration counts the
	// batch's result into its report and notifies once for all its
	// batches, and its batches share its SlowDown backoff.
	Migration string `json:"migration,omitempty"`
}

// Validate reports what is wrong with p, naming the first bad item, or nil.
// The worker checks only the envelope (ValidateEnvelope) and fails a bad
// item alone, so a batch from another producer loses no good item.
func (p BatchPayload) Validate() error {
	if err := p.ValidateEnvelope(); err != nil {
		return err
	}
	for i, it := range p.Items {
		if err := it.Validate(); err != nil {
			return fmt.Errorf("item %d (%s): %w", i, it.Dest.String(), err)
		}
	}
	return nil
}

// ValidateEnvelope checks what concerns the batch as a whole: the number of
// items, their total size and the concurrency.
func (p BatchPayload) ValidateEnvelope() error {
	if err := p.Notify.validate(); err != nil {
		return err
	}
	if len(p.Items) == 0 {
		return errors.New("a batch has no items: give 1 to 500 objects")
	}
	if len(p.Items) > MaxBatchItems {
		return fmt.Errorf("a batch has %d items, more than %d: split them (SplitBatch, Client.EnqueueBatch)", len(p.Items), MaxBatchItems)
	}
	if n := p.bytes(); n > MaxBatchBytes {
		return fmt.Errorf("a batch holds %d bytes, more than %d: split it (SplitBatch, Client.EnqueueBatch)", n, MaxBatchBytes)
	}
	if p.Concurrency < 0 || p.Concurrency > MaxBatchConcurrency {
		return fmt.Errorf("concurrency %d is out of range: use 0 for the worker's default, or 1..%d", p.Concurrency, MaxBatchConcurrency)
	}
	return nil
}

func (p BatchPayload) bytes() int64 {
	var n int64
	for _, it := range p.Items {
		n += max(it.Size, 0)
	}
	return n
}

// NewBatchTask validates p (every item) and returns a TypeBatch task:
// MaxRetry 25 (a crashed batch resumes from its record of finished items),
// Retention BatchRetention, a Timeout for its bytes plus a second per item;
// opts follow.
func NewBatchTask(p BatchPayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newBatchTask(p, p, opts)
}

// newBatchTask is NewBatchTask validated by v: p itself, or its envelope
// (batchEnvelope) when the items were validated already.
func newBatchTask(p BatchPayload, v validator, opts []asynq.Option) (*asynq.Task, error) {
	timeout := TimeoutFor(p.bytes()) + time.Duration(len(p.Items))*time.Second
	return newTaskRetained(TypeBatch, v, TransferMaxRetry, timeout, BatchRetention, opts)
}

// DecodeBatch decodes a TypeBatch payload and checks its envelope; items
// are validated one by one by the worker. Errors wrap asynq.SkipRetry.
func DecodeBatch(t *asynq.Task) (BatchPayload, error) {
	p, err := decode[batchEnvelope](t, TypeBatch)
	return BatchPayload(p), err
}

// batchEnvelope is BatchPayload validated as the worker does: the envelope
// only.
type batchEnvelope BatchPayload

func (p batchEnvelope) Validate() error { return BatchPayload(p).ValidateEnvelope() }

// SplitBatch splits items into batches in order, each with at most
// MaxBatchItems items and MaxBatchBytes bytes: into SplitBatches batches
// of even size when that leaves each SplitMinItems or more (2,000 items
// are 32 batches of 62 or 63), else into as many batches of SplitMinItems
// as there are (1,001 items are 20 batches of 50 or 51, 49 items one), and
// into batches of MaxBatchItems when even SplitBatches would hold more
// (20,000 items are 40 batches). It does not validate them.
func SplitBatch(items []BatchItem) [][]BatchItem {
	n := len(items)
	want := max(1, min(SplitBatches, n/SplitMinItems), (n+MaxBatchItems-1)/MaxBatchItems)
	var out [][]BatchItem
	start, bytes := 0, int64(0)
	// limit is the size of the next batch: the items left spread evenly
	// over the batches left (once bytes cut more batches than wanted,
	// MaxBatchItems).
	limit := func() int {
		if left := want - len(out); left > 0 {
			return min((n-start+left-1)/left, MaxBatchItems)
		}
		return MaxBatchItems
	}
	lim := limit()
	for i, it := range items {
		sz := max(it.Size, 0)
		if i > start && (i-start == lim || bytes+sz > MaxBatchBytes) {
			out = append(out, items[start:i])
			start, bytes = i, 0
			lim = limit()
		}
		bytes += sz
	}
	if start < len(items) {
		out = append(out, items[start:])
	}
	return out
}

// EnqueueBatch validates every item, splits them (SplitBatch) and enqueues
// one TypeBatch task per batch with concurrency items in flight each (0: the
// worker's default), followed by opts. Nothing is enqueued when an item is
// invalid (an object of MaxBatchObjectSize or more, for one). When an
// enqueue fails, the batches enqueued before it are returned with the error.
func (c *Client) EnqueueBatch(ctx context.Context, items []BatchItem, concurrency int, opts ...asynq.Option) ([]*asynq.TaskInfo, error) {
	if len(items) == 0 {
		return nil, errors.New("enqueue batch: no items")
	}
	// Every item first, named by its place in items: nothing is enqueued
	// when one is bad.
	for i, it := range items {
		if err := it.Validate(); err != nil {
			return nil, fmt.Errorf("enqueue batch: item %d (%s): %w", i, it.Dest.String(), err)
		}
	}
	var ts []*asynq.Task
	for _, chunk := range SplitBatch(items) {
		// The items were validated above: only each batch's envelope now.
		p := BatchPayload{Items: chunk, Concurrency: concurrency}
		t, err := newBatchTask(p, batchEnvelope(p), nil)
		if err != nil {
			return nil, fmt.Errorf("enqueue batch: %w", err)
		}
		ts = append(ts, t)
	}
	infos := make([]*asynq.TaskInfo, 0, len(ts))
	for _, t := range ts {
		info, err := c.Enqueue(ctx, t, opts...)
		if err != nil {
			return infos, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// BatchResult is the result of a TypeBatch task (its ResultWriter output):
// counts, and the first failures with their reasons.
type BatchResult struct {
	// Total is the number of items.
	Total int `json:"total"`
	// Done counts the items written, by this run or (Resumed of them) by
	// an earlier run that crashed or was stopped.
	Done    int `json:"done"`
	Resumed int `json:"resumed,omitempty"`
	// Failed counts the items that failed; Failures lists the first
	// MaxBatchFailures of them.
	Failed int `json:"failed"`
	// NotRun counts the items a cancel left unstarted.
	NotRun int `json:"not_run,omitempty"`
	// Bytes counts the bytes of the items done (those of earlier runs by
	// their Size in the payload).
	Bytes    int64          `json:"bytes"`
	Failures []BatchFailure `json:"failures,omitempty"`
}

// BatchFailure is a failed item of a batch.
type BatchFailure struct {
	// Item is the item's index in the payload.
	Item int `json:"item"`
	// Dest is the item's destination (s3://bucket/key).
	Dest   string `json:"dest"`
	Reason string `json:"reason"`
}
