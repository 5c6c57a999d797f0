package faulttest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryhq/ferry/storage"
)

// Integrity tests run a worker behind a TLS-terminating proxy that flips
// bits in bodies: over https the SDK signs no payload hash, so only ferry's
// own checksums stand between a flipped bit and a "completed" corrupt
// object. They are not gated on FERRY_FAULTS: they are quick, and they are
// the proof of docs/reliability.md's "## Integrity".

// integrityReason is what an archived task's error must contain.
const integrityReason = "integrity check failed"

func isPut(r *http.Request) bool { return r.Method == http.MethodPut }

// atMostPerPart matches what match does, but no more than n requests for
// the same object part (path and partNumber). ferry sends a part the
// server rejected up to four times before it archives the task, so with
// every PUT flipped at random a part could be corrupted on all four tries:
// at 0.15 a flip, about one run of TestIntegrityWrites in fifty failed so
// (2026-12-01, "did not complete with one PUT in seven corrupted"). With
// n = 3 the fourth try of a part always passes.
func atMostPerPart(n int, match func(*http.Request) bool) func(*http.Request) bool {
	var mu sync.Mutex
	seen := map[string]int{}
	return func(r *http.Request) bool {
		if !match(r) {
			return false
		}
		k := r.URL.Path + "?" + r.URL.Query().Get("partNumber")
		mu.Lock()
		defer mu.Unlock()
		seen[k]++
		return seen[k] <= n
	}
}

// checkIntegrity requires o to have completed with a destination identical
// to its source (SHA-256), or to have failed with a reason naming the
// integrity check; a failed move keeps its source. It returns whether o
// completed.
func (s *suite) checkIntegrity(o *op, state string) bool {
	s.t.Helper()
	if state == "" {
		s.verify([]*op{o})
		return true
	}
	if !strings.Contains(state, integrityReason) {
		s.t.Errorf("%s %s (%s → %s) did not complete and its reason does not name the integrity check: %s", o.kind, o.id, o.src, o.dst, state)
	}
	if ok, err := s.exists(o.dst); err != nil {
		s.t.Errorf("%s %s: HEAD destination: %v", o.kind, o.id, err)
	} else if ok {
		if sum, n, err := s.objectSum(o.dst); err != nil || sum != o.sum || n != o.size {
			s.t.Errorf("%s %s failed but left a destination %s that differs from its source (%d bytes, want %d, err %v)", o.kind, o.id, o.dst, n, o.size, err)
		}
	}
	if o.kind == "move" {
		if ok, err := s.exists(o.src); !ok || err != nil {
			s.t.Errorf("move %s failed its integrity check but its source %s is gone (%v)", o.id, o.src, err)
		}
	}
	return false
}

// TestIntegrityWrites: a middlebox flips one bit in every PUT body (each
// UploadPart and PutObject). No put, upload, streamed copy or move may
// complete: each fails with a reason naming the integrity check, stores
// nothing corrupt, and a move keeps its source. Then, with about one PUT in seven
// flipped, every task completes (rejected parts are re-read and re-sent)
// and every destination is identical to its source. It runs with each of
// the two checks ferry sends: Content-MD5 (the generic provider) and
// x-amz-checksum-crc32c (the versitygw provider, as on AWS).
func TestIntegrityWrites(t *testing.T) {
	t.Parallel()
	for _, provider := range []storage.Provider{storage.ProviderGeneric, storage.ProviderVersity} {
		t.Run(string(provider), func(t *testing.T) {
			t.Parallel()
			integrityWrites(t, provider)
		})
	}
}

func integrityWrites(t *testing.T, provider storage.Provider) {
	s := newSuite(t)
	s.provider = provider
	s.destProfile = "other" // streamed: server-side copies send no body
	px := s.tlsProxy(Faults{FlipRequest: 1, Match: isPut})
	s.child(nil)
	var l ledger
	// writes enqueues one op of each kind: a put of up to 4 MiB, the
	// others of 6 MiB to top (several parts).
	writes := func(top int64) []*op {
		var ops []*op
		for _, k := range []string{"put", "upload", "copy", "move"} {
			lo, hi := int64(6*mib), top
			if k == "put" {
				lo, hi = 1, 4*mib
			}
			ops = append(ops, s.enqueueOp(&l, k, lo, hi))
		}
		return ops
	}
	broken := writes(12 * mib)
	failed := s.mustFailIntegrity(broken, 2*time.Minute, "every PUT body it sent")
	if px.Counts()[KindFlipRequest] == 0 {
		t.Fatal("the proxy flipped no bit: the test proves nothing")
	}

	px.SetFaults(Faults{FlipRequest: 0.15, Match: atMostPerPart(3, isPut)})
	before := px.Counts()[KindFlipRequest]
	flaky := append(writes(16*mib), writes(16*mib)...)
	completed := s.mustCompleteIdentical(flaky, 3*time.Minute, "one PUT in seven")
	if px.Counts()[KindFlipRequest] == before {
		t.Error("the proxy flipped no bit while the tasks had to complete: that phase proves nothing")
	}
	t.Logf("FIGURES integrity-writes (%s): broken_tasks=%d failed_with_integrity_reason=%d flaky_tasks=%d completed_identical=%d bit_flips=%d",
		provider, len(broken), failed, len(flaky), completed, px.Counts()[KindFlipRequest])
}

// mustFailIntegrity waits for ops, run with every body of theirs that the
// proxy matches corrupted (corrupted says which: "every PUT body it
// sent"), and requires each to fail as checkIntegrity says it must, not to
// complete. It returns how many failed.
func (s *suite) mustFailIntegrity(ops []*op, timeout time.Duration, corrupted string) int {
	s.t.Helper()
	left := s.waitAll(ops, timeout)
	failed := 0
	for _, o := range ops {
		if s.checkIntegrity(o, left[o]) {
			s.t.Errorf("%s %s (%d bytes) completed although %s was corrupted", o.kind, o.id, o.size, corrupted)
			continue
		}
		failed++
		s.t.Logf("%s of %d bytes failed as it must: %s", o.kind, o.size, left[o])
	}
	return failed
}

// mustCompleteIdentical waits for ops, run with some of their bodies
// corrupted (corrupted says how many: "one PUT in seven"), and requires
// every one to complete with a destination identical to its source. It
// returns how many completed.
func (s *suite) mustCompleteIdentical(ops []*op, timeout time.Duration, corrupted string) int {
	s.t.Helper()
	left := s.waitAll(ops, timeout)
	for o, st := range left {
		s.t.Errorf("%s %s did not complete with %s corrupted: %s", o.kind, o.id, corrupted, st)
	}
	for _, o := range ops {
		if _, bad := left[o]; !bad {
			s.verify([]*op{o})
		}
	}
	return len(ops) - len(left)
}

func isGet(r *http.Request) bool { return r.Method == http.MethodGet }

// TestIntegrityReads: a middlebox flips one bit in every GET response body.
// Streamed copies and moves (ranged GETs → UploadPart) of sources that
// record their CRC32C (ferry-crc32c) and of sources that have only a
// plain-MD5 ETag, one part or several, must not complete: each fails with a
// reason naming the integrity check (after reading again on its retries),
// stores nothing corrupt, and a move keeps its source. So must a copy and
// a move of a multipart source that records nothing, written by a plain SDK
// client in two parts (an "md5-of-md5s-N" ETag): its bytes are checked as
// read by recomputing that ETag from the source's part sizes.
// storage.GetBytes through the same middlebox fails with ErrIntegrity.
// Then, with about one GET in twenty flipped, every task completes and
// every destination is identical to its source. (A mismatch costs a whole
// attempt, at most 4: at one in twenty a task of three GETs fails them all
// with a chance of about 1 in 2,000; at one in seven it was 1 in 40.)
func TestIntegrityReads(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	s.destProfile = "other" // streamed: a server-side copy GETs nothing
	px := s.tlsProxy(Faults{FlipResponse: 1, Match: isGet})
	s.child(nil)
	var l ledger
	// reads enqueues a copy and a move of a one-part source (up to 4 MiB)
	// and of a several-part one (6 MiB to hi), from sources that record
	// their CRC32C and from sources that do not; then a copy and a move of
	// a multipart source that records nothing: checked against its
	// multipart ETag, recomputed from its part sizes.
	reads := func(hi int64) []*op {
		var ops []*op
		for _, recorded := range []bool{true, false} {
			s.recordChecksum = recorded
			for _, k := range []string{"copy", "move"} {
				ops = append(ops, s.enqueueOp(&l, k, 1, 4*mib), s.enqueueOp(&l, k, 6*mib, hi))
			}
		}
		s.recordChecksum, s.multipartSource = false, true
		ops = append(ops, s.enqueueOp(&l, "copy", 6*mib, 12*mib), s.enqueueOp(&l, "move", 6*mib, 12*mib))
		s.multipartSource = false
		return ops
	}
	broken := reads(12 * mib)
	failed := s.mustFailIntegrity(broken, 3*time.Minute, "every GET body it read")

	// storage.GetBytes through the middlebox, of a source that records its
	// CRC32C and of one with only a plain-MD5 ETag.
	st := s.storageThrough("default")
	for _, o := range broken {
		if o.kind != "copy" {
			continue
		}
		b, err := st.GetBytes(context.Background(), o.src)
		if !errors.Is(err, storage.ErrIntegrity) || b != nil {
			t.Errorf("GetBytes(%s) through the middlebox = %d bytes, %v; want ErrIntegrity", o.src, len(b), err)
		}
	}
	if px.Counts()[KindFlipGet] == 0 {
		t.Fatal("the proxy flipped no bit: the test proves nothing")
	}

	px.SetFaults(Faults{FlipResponse: 0.05, Match: isGet})
	flaky := reads(16 * mib)
	completed := s.mustCompleteIdentical(flaky, 3*time.Minute, "one GET in twenty")
	t.Logf("FIGURES integrity-reads: broken_tasks=%d failed_with_integrity_reason=%d flaky_tasks=%d completed_identical=%d bit_flips=%d",
		len(broken), failed, len(flaky), completed, px.Counts()[KindFlipGet])
}

// storageThrough opens the suite's bucket with profile (the workers' view,
// through the proxy).
func (s *suite) storageThrough(profile string) *storage.S3 {
	s.t.Helper()
	c, err := storage.NewClient(context.Background(), s.profiles()[profile])
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = c.Close() })
	st, err := c.Bucket(s.bucket)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// TestIntegrityResumeAfterFlip: a streamed copy of a source checked by its
// ETag (a plain MD5, or a multipart ETag) reads part 1 with a flipped bit
// and uploads it (its Content-MD5 is of the flipped bytes, so the server
// accepts it), then fails on part 2 (500s) before its ETag check; the
// retry resumes with part 1 checkpointed. The resume reads part 1 again
// for the ETag digest — clean bytes now — so the digest alone would pass
// and complete a copy holding the corrupt part. The copy must fail naming
// the integrity check or complete identical to its source.
func TestIntegrityResumeAfterFlip(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	s.destProfile = "other" // streamed
	isPart := func(r *http.Request, n string) bool {
		return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == n && r.URL.Query().Get("uploadId") != ""
	}
	// inner fails part 2's first four sends (the SDK's attempts: one task
	// attempt), each held a second so part 1 is uploaded and checkpointed
	// first; outer, the TLS middlebox, flips the first GET of part 1.
	inner := s.proxy(Faults{})
	outer, err := NewTLSProxy(inner.URL, Faults{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = outer.Close() })
	s.endpoint = outer.URL
	arm := func() {
		var fails atomic.Int32
		inner.SetFaults(Faults{ServerError: 1,
			Match: func(r *http.Request) bool { return isPart(r, "2") && fails.Add(1) <= 4 },
			Hold: func(r *http.Request) (time.Duration, bool) {
				if isPart(r, "2") && fails.Load() < 4 {
					return time.Second, false
				}
				return 0, false
			}})
		var flipped atomic.Bool
		outer.SetFaults(Faults{FlipResponse: 1, Match: func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") && flipped.CompareAndSwap(false, true)
		}})
	}
	s.child(nil)
	var l ledger
	for _, multipart := range []bool{true, false} {
		s.multipartSource = multipart
		arm()
		o := s.enqueueOp(&l, "copy", 11*mib, 11*mib+1)
		left := s.waitAll([]*op{o}, 2*time.Minute)
		if outer.Counts()[KindFlipGet] == 0 || inner.Counts()[KindServerError] == 0 {
			t.Fatalf("faults not injected (flips %d, 500s %d): the test proves nothing", outer.Counts()[KindFlipGet], inner.Counts()[KindServerError])
		}
		completed := s.checkIntegrity(o, left[o])
		t.Logf("multipart source %v: completed=%v %s", multipart, completed, left[o])
	}
}
