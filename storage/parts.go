package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"
)

// PartSource supplies the bytes of each part of an upload.
type PartSource interface {
	// ReadPart fills buf with part n (1-based; buf is one part size long)
	// and returns the part's length. It returns 0, io.EOF when there is no
	// part n. A short part is the last one.
	ReadPart(ctx context.Context, n int, buf []byte) (int, error)
	// Sequential reports whether parts must be read in order, one at a
	// time (a stream). Random-access sources are read concurrently.
	Sequential() bool
}

// ReaderAtSource reads parts of a source of known size at their offsets:
// a file, or a ranged reader over a remote object.
func ReaderAtSource(r io.ReaderAt, size int64) PartSource { return &readerAtSource{r: r, size: size} }

type readerAtSource struct {
	r    io.ReaderAt
	size int64
}

func (s *readerAtSource) Sequential() bool { return false }

func (s *readerAtSource) ReadPart(_ context.Context, n int, buf []byte) (int, error) {
	off := int64(n-1) * int64(len(buf))
	if off >= s.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(buf)), s.size-off))
	got, err := s.r.ReadAt(buf[:want], off)
	if got == want {
		return got, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return got, fmt.Errorf("read part %d (offset %d): the source is shorter than %d bytes: %w", n, off, s.size, err)
}

// StreamSource reads parts from a stream of unknown length, in order.
func StreamSource(r io.Reader) PartSource { return &streamSource{r: r} }

type streamSource struct {
	r    io.Reader
	next int
	eof  bool
}

func (s *streamSource) Sequential() bool { return true }

func (s *streamSource) ReadPart(_ context.Context, n int, buf []byte) (int, error) {
	if s.eof {
		return 0, io.EOF
	}
	if s.next == 0 {
		s.next = 1
	}
	if n != s.next {
		return 0, fmt.Errorf("stream source: part %d requested, next is %d", n, s.next)
	}
	s.next++
	got, err := io.ReadFull(s.r, buf)
	switch {
	case err == nil:
		return got, nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		s.eof = true
		if got == 0 {
			return 0, io.EOF
		}
		return got, nil
	}
	return got, fmt.Errorf("read part %d: %w", n, err)
}

// PartsOptions tune UploadParts.
type PartsOptions struct {
	// Concurrency is the number of parts in flight; zero means DefaultPartConcurrency.
	Concurrency int
	// Buffers bounds memory across uploads; nil means a private pool of
	// Concurrency part buffers.
	Buffers *BufferPool
	// Skip reports parts already done (a resumed upload); they are not
	// uploaded (a sequential source still reads past them).
	Skip func(n int) bool
	// OnPartFunc runs after each part is uploaded, before the buffer is
	// reused — the place to checkpoint. An error stops the upload.
	OnPartFunc func(Part) error
	// StartPartFunc, when set, runs when part n has been read and its
	// upload starts (a part Skip reports done never starts): with
	// OnPartFunc, what tells which parts are in flight. It must be quick.
	StartPartFunc func(n int)
	// StartPart is the first part number to consider (zero means 1): parts
	// before it were handled by the caller and are not read at all.
	StartPart int
	// BeforePartFunc runs before each part is read; an error (a cancel or
	// shutdown request) stops the upload at a part boundary.
	BeforePartFunc func() error
	// GrowPartSize lets the parts of a sequential source (a stream of
	// unknown length) grow from u.PartSize as the stream goes, so a long
	// stream fits in 10,000 parts: see streamGrowEvery for the schedule.
	// Ignored for random-access sources (their part size was fitted to
	// their size) and on providers that need equal part sizes (R2). False
	// keeps every part at u.PartSize.
	GrowPartSize bool
	// InOrder, when set, is given every part's bytes in part order (1, 2,
	// 3...), each once, before its buffer is reused: for a digest that
	// does not combine (the MD5 a single-part source's ETag is). Parts that
	// Skip reports done are read for it too, but not uploaded. A part
	// waits, holding its buffer, for the parts before it; buffers are taken
	// before part numbers, so the lowest part always has one and the wait
	// always ends. Only for random-access sources.
	InOrder func(n int, b []byte)
}

// turns lets parts pass in order: wait(n) returns once every part before n
// passed (or ctx ended), pass(n) lets n+1 go.
type turns struct {
	mu   sync.Mutex
	cond *sync.Cond
	next int
}

func newTurns(ctx context.Context, first int) (*turns, func() bool) {
	t := &turns{next: first}
	t.cond = sync.NewCond(&t.mu)
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	return t, stop
}

func (t *turns) wait(ctx context.Context, n int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.next != n && ctx.Err() == nil {
		t.cond.Wait()
	}
	return context.Cause(ctx)
}

func (t *turns) pass(n int) {
	t.mu.Lock()
	t.next = n + 1
	t.cond.Broadcast()
	t.mu.Unlock()
}

// privatePool is the buffer pool of an upload given none: conc buffers of
// the largest part it may read.
func privatePool(conc int, partSize int64, grow bool) *BufferPool {
	if grow {
		partSize = min(streamGrowMax*partSize, MaxPartSize)
	}
	return NewBufferPool(int64(conc) * partSize)
}

// UploadParts uploads every part of src into u with bounded concurrency and
// memory: at most Concurrency part buffers exist at once (from Buffers). It
// returns after every part is uploaded, or with the first error once the
// parts in flight have finished; u holds every part that succeeded.
//
// A source of exactly 10,000 parts completes: part 10,001 is refused only
// once a read shows that it exists.
func (s *S3) UploadParts(ctx context.Context, u *MultipartUpload, src PartSource, o PartsOptions) error {
	conc := o.Concurrency
	if conc <= 0 {
		conc = DefaultPartConcurrency
	}
	seq := src.Sequential()
	grow := o.GrowPartSize && seq && !s.c.quirks.equalParts
	pool := o.Buffers
	if pool == nil {
		pool = privatePool(conc, u.PartSize, grow)
	}
	limit := streamPartLimit(u.PartSize, pool.Max())
	partSize := func(n int) int64 {
		if grow {
			return streamPartSize(u.PartSize, limit, n)
		}
		// A random-access source locates part n at (n-1) × the buffer
		// length: every buffer is one part size long.
		return u.PartSize
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ordered := o.InOrder != nil && !seq
	var order *turns
	if ordered {
		var stop func() bool
		order, stop = newTurns(ctx, max(o.StartPart, 1))
		defer stop()
	}

	var (
		mu    sync.Mutex // guards next, done and first
		next  = max(o.StartPart, 1)
		done  bool
		first error
		// readMu makes claiming and reading one step for a sequential
		// source, so its parts are read in order. It is held while waiting
		// for a buffer, but never together with mu's waits.
		readMu sync.Mutex
		wg     sync.WaitGroup
	)
	stop := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		done = true
		mu.Unlock()
	}
	fail := func(err error) {
		stop(err)
		cancel(err)
	}
	// claim returns the next part number to read, passing over the parts
	// of a random-access source that Skip reports done; 0 means nothing is
	// left.
	claim := func() int {
		mu.Lock()
		defer mu.Unlock()
		for !done {
			n := next
			next++
			if !seq && !ordered && n <= MaxParts && o.Skip != nil && o.Skip(n) {
				continue
			}
			return n
		}
		return 0
	}
	// read claims a part and reads it into a buffer from the pool. n == 0
	// means nothing is left; buf is nil then and on error.
	read := func() (n int, buf []byte, err error) {
		if seq {
			readMu.Lock()
			defer readMu.Unlock()
		}
		if ordered {
			// The buffer first: a claimed part never waits for one
			// while later parts hold theirs waiting for it.
			if buf, err = pool.Get(ctx, int(u.PartSize)); err != nil {
				return 0, nil, err
			}
			if n = claim(); n == 0 {
				pool.Put(buf)
				return 0, nil, nil
			}
		} else {
			if n = claim(); n == 0 {
				return 0, nil, nil
			}
			if buf, err = pool.Get(ctx, int(partSize(n))); err != nil {
				return 0, nil, err
			}
		}
		length, err := src.ReadPart(ctx, n, buf)
		switch {
		case errors.Is(err, io.EOF):
			// The end: part n-1 was the last (with 10,000 parts, this
			// is where part 10,001 turns out not to exist).
			pool.Put(buf)
			stop(nil)
			return 0, nil, nil
		case err != nil:
			pool.Put(buf)
			return 0, nil, err
		case n > MaxParts:
			pool.Put(buf)
			return 0, nil, fmt.Errorf("the source needs more than %d parts (parts of %d bytes, up to %d for a stream): raise the part size", MaxParts, u.PartSize, partSize(n))
		}
		return n, buf[:length], nil
	}
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil {
				if o.BeforePartFunc != nil {
					if err := o.BeforePartFunc(); err != nil {
						// Stop claiming parts but let those in flight
						// finish: a shutdown or cancel stops at a part
						// boundary and loses no finished work.
						stop(err)
						return
					}
				}
				n, buf, err := read()
				if err != nil {
					fail(err)
					return
				}
				if n == 0 {
					return
				}
				if (seq || ordered) && o.Skip != nil && o.Skip(n) {
					if ordered {
						if err := order.wait(ctx, n); err != nil {
							pool.Put(buf)
							fail(err)
							return
						}
						o.InOrder(n, buf)
						order.pass(n)
					}
					pool.Put(buf)
					continue
				}
				var reread func() ([]byte, error)
				if !seq {
					// A part the server rejects as corrupt is read again
					// from the source: the corruption may be in this copy.
					// (A pool buffer is one part long: cap is its length.)
					reread = func() ([]byte, error) {
						full := buf[:cap(buf)]
						l, err := src.ReadPart(ctx, n, full)
						return full[:l], err
					}
				}
				if o.StartPartFunc != nil {
					o.StartPartFunc(n)
				}
				p, err := s.uploadPart(ctx, u, n, buf, reread)
				if err == nil && ordered {
					// The bytes the server accepted (a re-read replaced
					// rejected ones in buf).
					if err = order.wait(ctx, n); err == nil {
						o.InOrder(n, buf)
						order.pass(n)
					}
				}
				pool.Put(buf)
				if err == nil && o.OnPartFunc != nil {
					err = o.OnPartFunc(p)
				}
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// LargeOptions are optional settings of PutLarge.
type LargeOptions struct {
	Headers
	Metadata map[string]string
	// PartSize: zero means DefaultPartSize. It is raised to fit a known
	// Size in 10,000 parts; the parts of a stream of unknown size grow from
	// it (see streamGrowEvery), or on a provider that needs equal parts
	// (R2) all have the largest size a stream may use.
	PartSize int64
	// Concurrency: parts in flight; zero means DefaultPartConcurrency.
	Concurrency int
	// Size of the body when known (enables concurrent reads for an
	// io.ReaderAt body and a total for progress); zero or less means unknown.
	Size int64
	// ProgressFunc is called after each part with bytes done and the total
	// (-1 when unknown). It must be quick.
	ProgressFunc func(done, total int64)
	// Buffers bounds memory across uploads; nil means private buffers.
	Buffers *BufferPool
	// Tracker, when not nil, is told of the multipart upload (see
	// UploadTracker), including when it ends.
	Tracker UploadTracker
}

// PutLarge uploads body with a multipart upload: parts run concurrently,
// memory stays at Concurrency part buffers whatever the size, and a stream
// of unknown length is fine (its parts grow, so 1 TiB fits with the
// defaults). A body shorter than one part is sent with a single PutObject.
// On failure the upload is aborted; the returned error is a
// *MultipartUploadError when the upload had started.
func (s *S3) PutLarge(ctx context.Context, key string, body io.Reader, opts *LargeOptions) (StoredFile, error) {
	if opts == nil {
		opts = &LargeOptions{}
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = DefaultPartConcurrency
	}
	ps := PartSizeFor(opts.Size, opts.PartSize)
	// A stream of unknown length grows its parts: see streamGrowEvery.
	stream := opts.Size <= 0
	pool := opts.Buffers
	if pool == nil {
		pool = privatePool(conc, ps, stream)
	}
	if stream && s.c.quirks.equalParts {
		// Parts cannot grow here: take the largest a stream may use.
		ps = streamPartLimit(ps, pool.Max())
	}
	var src PartSource
	meta := opts.Metadata
	if ra, ok := body.(io.ReaderAt); ok && opts.Size > 0 {
		src = ReaderAtSource(ra, opts.Size)
		if s.c.cfg.integrity() && opts.Size >= ps && meta[MetaChecksum] == "" {
			// Metadata is fixed when the upload starts: hash the body
			// first, so the object records its CRC32C as a Put's does
			// (the parts must then combine to it).
			sum, err := ChecksumReaderAt(ctx, ra, opts.Size)
			if err != nil {
				return StoredFile{}, fmt.Errorf("checksum body of %s: %w", s.display(key), err)
			}
			meta = maps.Clone(meta)
			if meta == nil {
				meta = map[string]string{}
			}
			meta[MetaChecksum] = sum.String()
		}
	} else {
		src = StreamSource(body)
	}
	if opts.Size > 0 && opts.Size < ps {
		// Known to fit one part: one PutObject, no part-sized buffer.
		buf := make([]byte, opts.Size)
		if _, err := io.ReadFull(body, buf); err != nil {
			return StoredFile{}, fmt.Errorf("read body of %s: %w", s.display(key), err)
		}
		f, err := s.Put(ctx, key, bytes.NewReader(buf), &PutOptions{Headers: opts.Headers, Metadata: opts.Metadata})
		if err == nil && opts.ProgressFunc != nil {
			opts.ProgressFunc(opts.Size, opts.Size)
		}
		return f, err
	}
	// Read part 1 first: a small body needs no multipart upload at all.
	first, err := pool.Get(ctx, int(ps))
	if err != nil {
		return StoredFile{}, err
	}
	n, err := src.ReadPart(ctx, 1, first)
	if err != nil && !errors.Is(err, io.EOF) {
		pool.Put(first)
		return StoredFile{}, err
	}
	total := opts.Size
	if total <= 0 {
		total = -1
	}
	if int64(n) < ps {
		defer pool.Put(first)
		f, err := s.Put(ctx, key, bytes.NewReader(first[:n]), &PutOptions{Headers: opts.Headers, Metadata: opts.Metadata})
		if err == nil && opts.ProgressFunc != nil {
			opts.ProgressFunc(int64(n), int64(n))
		}
		return f, err
	}
	u, err := s.StartMultipartUpload(ctx, key, &MultipartOptions{Headers: opts.Headers, Metadata: meta, PartSize: ps, Tracker: opts.Tracker})
	if err != nil {
		pool.Put(first)
		return StoredFile{}, err
	}
	var progMu sync.Mutex
	var done int64
	onPart := func(p Part) error {
		if opts.ProgressFunc != nil {
			progMu.Lock()
			done += p.Size
			d := done
			progMu.Unlock()
			opts.ProgressFunc(d, total)
		}
		return nil
	}
	_, err = s.UploadPart(ctx, u, 1, first[:n])
	pool.Put(first)
	if err == nil {
		_ = onPart(Part{Number: 1, Size: int64(n)})
		err = s.UploadParts(ctx, u, src, PartsOptions{Concurrency: conc, Buffers: pool,
			StartPart: 2, OnPartFunc: onPart, GrowPartSize: stream})
	}
	var f StoredFile
	if err == nil {
		f, err = s.CompleteMultipartUpload(ctx, u)
		if err == nil {
			trackEnded(ctx, opts.Tracker, key, u.UploadID)
			return f, nil
		}
	}
	// Abort with a fresh context: ctx may be the reason we are here.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if aerr := s.AbortMultipartUpload(actx, key, u.UploadID); aerr != nil {
		err = errors.Join(err, aerr)
	} else {
		trackEnded(actx, opts.Tracker, key, u.UploadID)
	}
	var mue *MultipartUploadError
	if errors.As(err, &mue) {
		return StoredFile{}, err
	}
	return StoredFile{}, &MultipartUploadError{Key: key, UploadID: u.UploadID, Err: err}
}

// trackEnded tells t (when not nil) that storage completed or aborted an
// upload, with a context that outlives a cancelled ctx.
func trackEnded(ctx context.Context, t UploadTracker, key, uploadID string) {
	if t != nil {
		t.Ended(context.WithoutCancel(ctx), key, uploadID)
	}
}
