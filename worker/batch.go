package worker

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// Batch tuning.
const (
	// batchCancelPoll is how often a running batch reads its cancel flag
	// (between items, never more often: one Redis round trip per item
	// would cost small objects what batching saves).
	batchCancelPoll = 250 * time.Millisecond
	// batchStateTTL is the safety expiry of a batch's record of finished
	// items, renewed with every write of it: a batch lost for good cannot
	// leak it.
	batchStateTTL = 7 * 24 * time.Hour
	// batchFlushEvery and batchFlushItems say when a batch writes its
	// finished items to its record: every batchFlushEvery, and as soon as
	// batchFlushItems wait, in one fenced transaction for all of them
	// (plus once when the run ends, however it ends). One transaction per
	// item cost three Redis round trips per object, the largest per-item
	// cost after the PutObject itself (docs/performance.md). The price is
	// the bound of a kill: the items finished since the last write are
	// written again when the batch resumes — those of the last
	// batchFlushEvery, at most batchFlushItems plus the items in flight
	// while Redis answers (more only while Redis does not answer).
	batchFlushEvery = 100 * time.Millisecond
	// batchRetiredTTL is how long the record of a finished batch is kept
	// (complete, with every item it wrote) instead of being deleted: a
	// worker killed after the run but before asynq recorded its end has
	// the task run again — taken over within seconds, or by asynq's lease
	// recovery within 60–120 s — and that run must find every item done
	// and write nothing. Shorter than tasks.BatchRetention, during which
	// asynq refuses a new task with the same id, so a batch enqueued again
	// under its id later starts afresh.
	batchRetiredTTL = 5 * time.Minute
	batchFlushItems = 64
	// minBatchBuffer is the smallest buffer a batch item reads into;
	// buffers are powers of two from here, so the pool reuses them.
	minBatchBuffer = 64 << 10
)

// Progress counters of a batch.
const (
	counterObjectsDone   = "objects_done"
	counterObjectsFailed = "objects_failed"
	counterObjectsTotal  = "objects_total"
)

// batch is one run of a ferry:batch task.
type batch struct {
	w    *Worker
	id   string
	p    tasks.BatchPayload
	prog *progress
	log  *zap.Logger

	mu        sync.Mutex
	res       tasks.BatchResult
	transient int // failures a retry may fix

	// unrecorded holds the items finished since the last write of the
	// record (see flush), with their bytes; full is signalled when
	// batchFlushItems wait.
	recMu      sync.Mutex
	unrecorded []int
	unrecBytes int64
	full       chan struct{}
	flushMu    sync.Mutex // one write of the record at a time
}

func (w *Worker) handleBatch(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.DecodeBatch(t)
	if err != nil {
		return err
	}
	return w.run(ctx, t, fmt.Sprintf("%d objects", len(p.Items)), batchDest(p.Items), func(ctx context.Context, id string, prog *progress) (any, error) {
		log := w.taskLog(ctx, t)
		// Owned (see takeover.go): a killed worker's batch is taken over
		// within seconds and skips the items its record shows done; every
		// record of a finished item is fenced.
		res, err := runOwned(ctx, w, id, log, prog, func(ctx context.Context) (*tasks.BatchResult, error) {
			if err := w.migrationBackoff(ctx, p.Migration); err != nil {
				return nil, err
			}
			b := &batch{w: w, id: id, p: p, prog: prog, log: log, res: tasks.BatchResult{Total: len(p.Items)}}
			return b.run(ctx)
		}, replay[*tasks.BatchResult])
		if err != nil && res != nil {
			// Failed items or a cancel: the task is archived with its
			// counts and failures as result.
			writeResult(t, res)
		}
		if res == nil {
			return nil, err
		}
		if err == nil {
			// The items' sizes were the producer's estimate: a finished
			// batch's size is what it wrote.
			prog.setTotal(res.Bytes, 0)
		}
		return res, err
	})
}

// batchDest is a batch's destination for display: the first item's, and
// how many more there are.
func batchDest(items []tasks.BatchItem) string {
	if len(items) == 1 {
		return items[0].Dest.String()
	}
	return fmt.Sprintf("%s and %d more", items[0].Dest.String(), len(items)-1)
}

// run writes every item not recorded as done, with bounded concurrency, and
// decides how the task ends. It returns a result (nil when the batch stops
// to resume later) and the task's error:
//
//   - every item done: the record is retired (kept a few minutes, see
//     batchRetiredTTL), no error;
//   - some failed for good (or on the last attempt): the record is
//     retired, the error wraps SkipRetry and names the first failure;
//   - some failed transiently: the record is kept and the retry runs only
//     the items not done;
//   - cancelled: no item starts after the cancel (it ends ctx), those in
//     flight finish (they are small, and the counts stay exact), the
//     record is retired, errCancelled;
//   - shutdown: likewise, but the record is kept for the resumed run.
//
// Finished items are written to the record in groups while the run goes
// (flusher, batchFlushEvery), and once more when the record is kept.
func (b *batch) run(ctx context.Context) (*tasks.BatchResult, error) {
	w := b.w
	key := batchKey(b.id)
	done, err := w.rdb.Get(ctx, key).Bytes()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the batch's record of finished items: %w", err)
	}
	doneBytes, err := w.rdb.Get(ctx, batchBytesKey(b.id)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the batch's record of finished items: %w", err)
	}
	var total, estimated int64
	for i, it := range b.p.Items {
		total += it.Size
		if bitSet(done, i) {
			b.res.Done++
			b.res.Resumed++
			estimated += it.Size
		}
	}
	b.res.Bytes = doneBytes
	if errors.Is(err, redis.Nil) {
		b.res.Bytes = estimated // a record without its byte count
	}
	b.prog.setTotal(total, 0)
	if b.res.Resumed > 0 {
		b.log.Info("resuming batch: items finished by an earlier run are skipped",
			zap.Int("done", b.res.Resumed), zap.Int("total", len(b.p.Items)))
		b.prog.resumed(ctx, b.res.Bytes, nil)
	}
	b.publish(ctx, true)

	conc := b.p.Concurrency
	if conc == 0 {
		conc = w.cfg.BatchConcurrency
	}
	next := make(chan int)
	var wg sync.WaitGroup
	ictx, stopItems := itemContext(ctx)
	defer stopItems()
	b.full = make(chan struct{}, 1)
	stopFlusher := b.flusher(ictx)
	for range min(conc, len(b.p.Items)) {
		wg.Go(func() {
			for i := range next {
				b.runItem(ictx, i)
			}
		})
	}
	stop := b.dispatch(ctx, done, next)
	close(next)
	wg.Wait()
	stopFlusher()
	if stop == nil && ctx.Err() != nil {
		// Ended while its last items ran: they were not written.
		stop = context.Cause(ctx)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	res := b.res
	b.publish(ctx, true)
	switch {
	case errors.Is(stop, errCancelled):
		res.NotRun = res.Total - res.Done - res.Failed
		b.retire(ctx)
		return &res, errCancelled
	case stop != nil:
		// Shutdown, or the task's context ended (timeout, lost lease):
		// the record stays for the run that resumes the batch.
		b.flushLast(ctx)
		return nil, stop
	case res.Failed == 0:
		b.retire(ctx)
		return &res, nil
	case b.transient > 0 && !lastAttempt(ctx):
		b.flushLast(ctx)
		return nil, fmt.Errorf("batch: %d of %d items failed, %d of them transiently (first: %s: %s); the retry writes only the items not done",
			res.Failed, res.Total, b.transient, res.Failures[0].Dest, res.Failures[0].Reason)
	}
	b.retire(ctx)
	return &res, permanent(fmt.Errorf("batch: %d of %d items failed (first: %s: %s); the result lists the first %d",
		res.Failed, res.Total, res.Failures[0].Dest, res.Failures[0].Reason, len(res.Failures)))
}

// itemContext is the context of a batch's items: ctx's values and
// deadline, ended with ctx except by a user's cancel, which lets the items
// in flight finish.
func itemContext(ctx context.Context) (context.Context, func()) {
	base := context.WithoutCancel(ctx)
	stopDeadline := func() {}
	if dl, ok := ctx.Deadline(); ok {
		base, stopDeadline = context.WithDeadline(base, dl)
	}
	ictx, cancel := context.WithCancelCause(base)
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(context.Cause(ctx), errCancelled) {
			cancel(context.Cause(ctx))
		}
	})
	return ictx, func() { stop(); cancel(nil); stopDeadline() }
}

// dispatch sends the items not done to the workers, in order, and returns
// why it stopped early (errCancelled, errShuttingDown, ctx's error) or nil.
// The cancel flag (and a migration's backoff) is read at most every
// batchCancelPoll.
func (b *batch) dispatch(ctx context.Context, done []byte, next chan<- int) error {
	var polled time.Time
	for i := range b.p.Items {
		if bitSet(done, i) {
			continue
		}
		if b.w.stopping.Load() {
			return errShuttingDown
		}
		if time.Since(polled) >= batchCancelPoll {
			polled = time.Now()
			if err := b.w.checkInterrupt(ctx, b.id); err != nil {
				return err
			}
			// A migration's batch waits out its shared SlowDown backoff
			// between items, like its copies before they start.
			if err := b.w.migrationBackoff(ctx, b.p.Migration); err != nil {
				return err
			}
		}
		select {
		case next <- i:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// runItem writes item i and records the outcome: a finished item in the
// batch's Redis record, a failed one in the result.
func (b *batch) runItem(ctx context.Context, i int) {
	it := b.p.Items[i]
	n, err := b.item(ctx, it)
	if ctx.Err() != nil && err != nil {
		return // not a failure of the item: the run stops
	}
	if err != nil && storage.IsThrottle(err) {
		b.w.throttled(ctx, b.p.Migration) // a migration's batches and copies back off together
	}
	if err == nil {
		// Logged before it is recorded: a kill between the two leaves an
		// item logged and written again, never recorded and not logged.
		b.log.Debug("batch item done", zap.Int("item", i), zap.String("dest", it.Dest.String()))
		b.finished(i, n)
	}
	b.mu.Lock()
	if err == nil {
		b.res.Done++
		b.res.Bytes += n
	} else {
		b.res.Failed++
		if !errors.Is(classify(err), asynq.SkipRetry) {
			b.transient++
		}
		if len(b.res.Failures) < tasks.MaxBatchFailures {
			b.res.Failures = append(b.res.Failures, tasks.BatchFailure{Item: i, Dest: it.Dest.String(), Reason: err.Error()})
		}
		b.log.Info("batch item failed", zap.Int("item", i), zap.String("dest", it.Dest.String()), zap.Error(err))
	}
	b.mu.Unlock()
	b.prog.add(ctx, n, 0)
	b.publish(ctx, false)
}

// finished queues item i, done with n bytes, for the next write of the
// record, and wakes the flusher when batchFlushItems wait.
func (b *batch) finished(i int, n int64) {
	b.recMu.Lock()
	b.unrecorded = append(b.unrecorded, i)
	b.unrecBytes += n
	full := len(b.unrecorded) >= batchFlushItems
	b.recMu.Unlock()
	if full {
		select {
		case b.full <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// flusher writes the finished items to the record every batchFlushEvery
// and whenever batchFlushItems wait, until the returned stop is called
// (which waits for a write in progress).
func (b *batch) flusher(ctx context.Context) (stop func()) {
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(batchFlushEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-b.full:
			}
			b.flush(ctx)
		}
	}()
	return func() { close(quit); <-exited }
}

// flush sets the bits of the items finished since the last write in the
// batch's record and adds their bytes, in one transaction, fenced: a run
// that lost the batch to another worker's takeover records nothing. The
// items are logged ("batch items recorded") once written, so a log says
// which items a kill may have left unrecorded: those logged done after
// the last such line. A write that fails is tried again with the next
// (a lost one costs only that its items are written again if the batch
// resumes); after a lost ownership they are dropped.
func (b *batch) flush(ctx context.Context) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.recMu.Lock()
	items, n := b.unrecorded, b.unrecBytes
	b.unrecorded, b.unrecBytes = nil, 0
	b.recMu.Unlock()
	if len(items) == 0 {
		return
	}
	key, bytesKey := batchKey(b.id), batchBytesKey(b.id)
	err := b.w.fenced(ctx, b.id, func(p redis.Pipeliner) error {
		for _, i := range items {
			p.SetBit(ctx, key, int64(i), 1)
		}
		p.IncrBy(ctx, bytesKey, n)
		p.Expire(ctx, key, batchStateTTL)
		p.Expire(ctx, bytesKey, batchStateTTL)
		return nil
	})
	if err == nil {
		b.log.Debug("batch items recorded", zap.Ints("items", items))
		return
	}
	if errors.Is(err, checkpoint.ErrNotOwner) {
		b.log.Warn("could not record finished batch items: another worker owns the batch now and writes them again",
			zap.Int("items", len(items)), zap.Error(err))
		return
	}
	// Kept for the next write (the last one, when the run ends, has a
	// context of its own).
	b.log.Warn("could not record finished batch items; trying again with the next write", zap.Int("items", len(items)), zap.Error(err))
	b.recMu.Lock()
	b.unrecorded = append(items, b.unrecorded...)
	b.unrecBytes += n
	b.recMu.Unlock()
}

// flushLast writes the items finished since the last write when the run
// ends, however it ends (a finished batch's record is kept a while, see
// retire), so that a run after it skips them. After a lost ownership the
// write is refused (fenced).
func (b *batch) flushLast(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b.flush(fctx)
}

// retire keeps the record of a finished batch for batchRetiredTTL, with
// the items finished since its last write written first, so that a run of
// the same task after this one (see batchRetiredTTL) skips every item
// written. It is not deleted: what deletes it is its expiry.
func (b *batch) retire(ctx context.Context) {
	b.flushLast(ctx)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := b.w.rdb.Pipelined(rctx, func(p redis.Pipeliner) error {
		p.Expire(rctx, batchKey(b.id), batchRetiredTTL)
		p.Expire(rctx, batchBytesKey(b.id), batchRetiredTTL)
		return nil
	})
	if err != nil {
		b.log.Warn("could not shorten the expiry of the finished batch's record (it expires later)", zap.Error(err))
	}
}

// publish sets the progress counters, publishing when due (or forced).
// Callers hold b.mu or run before the workers start.
func (b *batch) publish(ctx context.Context, force bool) {
	if !force {
		b.mu.Lock()
		defer b.mu.Unlock()
	}
	b.prog.counters(ctx, map[string]int64{counterObjectsDone: int64(b.res.Done),
		counterObjectsFailed: int64(b.res.Failed), counterObjectsTotal: int64(b.res.Total)}, force)
}

// item writes one item and returns its bytes. Every error is the item's
// own: the batch goes on with the others.
//
// A server-side copy whose item carries the listed ETag of its source as a
// plain MD5 (a migration's) is one request, CopyListed: the copy keeps the
// source's headers and metadata as the server has them, and is proven by
// the ETag of what the server stored. Any other copy HEADs its source and
// copies that version with ferry's record of it (CopyFrom, copyMeta).
func (b *batch) item(ctx context.Context, it tasks.BatchItem) (int64, error) {
	w := b.w
	if err := it.Validate(); err != nil {
		return 0, permanent(err)
	}
	dst, err := w.profiles.open(ctx, it.Dest.Profile, it.Dest.Bucket)
	if err != nil {
		return 0, err
	}
	if it.Source.Kind() == tasks.KindFile {
		src, err := w.sources.openFile(it.Source.Path, it.Source.NoFollow)
		if err != nil {
			return 0, err
		}
		defer src.Close()
		hdr := src.headers
		if it.ContentType != "" {
			hdr.ContentType = it.ContentType
		}
		if err := checkBatchSize(src.display, src.size); err != nil {
			return 0, err
		}
		f, err := w.putSmall(ctx, src, dst, batchBuffer(src.size), putSpec{Dest: it.Dest, Headers: hdr,
			Metadata: withTaskID(mergeMeta(it.Metadata, src.record), b.id)})
		return f.Size, err
	}
	if err := w.profiles.checkDistinct(it.Source, it.Dest); err != nil {
		return 0, err
	}
	same := w.profiles.sameEndpoint(it.Source.Profile, it.Dest.Profile)
	srcProfile := it.Source.Profile
	if same {
		srcProfile = it.Dest.Profile // one client for both buckets: server-side copy
	}
	s, err := w.profiles.open(ctx, srcProfile, it.Source.Bucket)
	if err != nil {
		return 0, err
	}
	if same && storage.IsMD5ETag(it.SourceETag) {
		f, err := dst.CopyListed(ctx, s, storage.StoredFile{Key: it.Source.Key, Size: it.Size, ETag: it.SourceETag}, it.Dest.Key)
		if !errors.Is(err, storage.ErrSourceChanged) {
			return f.Size, err
		}
		// Replaced since it was listed: copied as without a listed
		// ETag, in the version a HEAD finds now.
		b.log.Debug("batch item's source changed since it was listed; copying its current version",
			zap.String("source", it.Source.String()), zap.String("listed_etag", it.SourceETag))
	}
	if !same && it.SourceETag != "" {
		n, err := b.streamListed(ctx, s, dst, it)
		if !errors.Is(err, storage.ErrSourceChanged) {
			return n, err
		}
		b.log.Debug("batch item's source changed since it was listed; copying its current version",
			zap.String("source", it.Source.String()), zap.String("listed_etag", it.SourceETag))
	}
	info, err := s.Info(ctx, it.Source.Key)
	if err != nil {
		return 0, fmt.Errorf("copy source: %w", err)
	}
	if err := checkBatchSize(it.Source.String(), info.Size); err != nil {
		return 0, err
	}
	if !same {
		buf, err := w.buffers.Get(ctx, batchBuffer(info.Size))
		if err != nil {
			return 0, err
		}
		defer w.buffers.Put(buf)
		src, err := s3Source(ctx, s, it.Source.Key, info)
		if err != nil {
			return 0, err
		}
		return b.stream(ctx, buf, src, info, dst, it)
	}
	f, err := dst.CopyFrom(ctx, s, it.Source.Key, it.Dest.Key, &storage.CopyOptions{Metadata: copyMeta(b.id, info), Source: &info})
	if err != nil {
		return 0, err
	}
	return f.Size, verifyCopy(info, f)
}

// streamListed copies item it across endpoints from the version its
// migration listed (it.SourceETag) with one GET pinned to that ETag and one
// PUT: the GET's answer carries every header and metadata a HEAD would, so
// none is sent (as a direct GET + PUT program would not). ErrSourceChanged:
// the source was replaced since it was listed.
func (b *batch) streamListed(ctx context.Context, s s3Object, dst putTarget, it tasks.BatchItem) (int64, error) {
	if err := checkBatchSize(it.Source.String(), it.Size); err != nil {
		return 0, err
	}
	// The buffer first, then the GET: an item waiting for memory holds no
	// connection (the body would sit unread on one meanwhile). The pinned
	// version's size is the listed one.
	buf, err := b.w.buffers.Get(ctx, batchBuffer(it.Size))
	if err != nil {
		return 0, err
	}
	defer b.w.buffers.Put(buf)
	rc, info, err := s.GetRangeIfMatch(ctx, it.Source.Key, it.SourceETag, 0, -1)
	if err != nil {
		return 0, fmt.Errorf("copy source: %w", err)
	}
	defer rc.Close()
	if err := checkBatchSize(it.Source.String(), info.Size); err != nil {
		return 0, err
	}
	src, err := s3Source(ctx, s, it.Source.Key, info)
	if err != nil {
		return 0, err
	}
	// The one part is the body already open; a second read (none is
	// expected of a one-part source) would GET it again, pinned as well.
	src.parts = &openedBody{rc: rc, size: info.Size, again: src.parts}
	return b.stream(ctx, buf, src, info, dst, it)
}

// stream writes src, an S3 object described by info, to the item's
// destination with one PutObject through buf (a buffer of the worker's
// pool the caller holds) and checks the copy against info.
func (b *batch) stream(ctx context.Context, buf []byte, src *source, info storage.StoredFile, dst putTarget, it tasks.BatchItem) (int64, error) {
	if src.unverified != "" {
		b.w.log.Warn("unverified: the source's bytes cannot be checked as they are read", zap.String("task_id", b.id),
			zap.String("source", src.display), zap.String("why", src.unverified))
	}
	f, err := b.w.putSmallIn(ctx, buf, src, dst, putSpec{Dest: it.Dest, Headers: src.headers, Metadata: mergeMeta(info.Metadata, copyMeta(b.id, info))})
	if err != nil {
		return 0, err
	}
	return f.Size, verifyCopy(info, f)
}

// checkBatchSize refuses a source too large for a batch item: the producer
// checked the size it knew, but the object may have grown since.
func checkBatchSize(display string, size int64) error {
	if size >= tasks.MaxBatchObjectSize {
		return permanent(fmt.Errorf("%s is %d bytes: objects of %d bytes or more do not go into a batch; enqueue an upload or copy task for it",
			display, size, tasks.MaxBatchObjectSize))
	}
	return nil
}

// batchBuffer is the buffer size for an item of size bytes: a power of two
// from minBatchBuffer (so the pool reuses buffers across items), at most
// MaxBatchObjectSize.
func batchBuffer(size int64) int {
	if size <= minBatchBuffer {
		return minBatchBuffer
	}
	return int(min(int64(1)<<bits.Len64(uint64(size-1)), tasks.MaxBatchObjectSize))
}

// bitSet reports whether bit i of a Redis bitmap is set (SETBIT numbers
// bits from the most significant of the first byte).
func bitSet(bitmap []byte, i int) bool {
	return i/8 < len(bitmap) && bitmap[i/8]&(0x80>>(i%8)) != 0
}
