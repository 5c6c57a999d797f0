package faulttest

import (
	"context"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/workerproc"
)

// TestS3Faults runs a mixed workload through a TLS-terminating proxy
// injecting 503 SlowDown, 500 InternalError, connection resets in the
// middle of request bodies (parts) and of response bodies (ranged GETs of
// streamed copies), bit flips in request bodies (parts, PutObjects,
// CompleteMultipartUpload's XML) and in GET response bodies, and latency.
// Over https the SDK signs no part's payload, so only ferry's own checks
// catch a flipped bit. Half the copies and moves read sources written in
// two parts by a plain SDK client (no ferry metadata: checked against
// their multipart ETag). Every task must complete with the right bytes
// (SHA-256 of every destination), and "retry quota exceeded" must never
// appear: SDK retries stay modest and task retries (with checkpoints)
// carry the rest.
func TestS3Faults(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	s := newSuite(t)
	// A storm first (half of all requests throttled or failing, for 10 s:
	// the SDK's retry quota would run dry here), then a steady drizzle.
	// Bit flips are rarer than they could be: a part is sent at most 4
	// times (storage.IntegritySends) and a copy read at most 4 times
	// (maxIntegrityRestarts) before its task fails naming the check —
	// which TestIntegrityWrites/Reads prove — and here every task must
	// complete. A flip is drawn per request, and a send whose first
	// attempts got a 503 or a reset is drawn again, so at 10% of requests
	// about one part in 400 was flipped on all 4 sends during the storm.
	storm := Faults{SlowDown: 0.3, ServerError: 0.15, Reset: 0.1, FlipRequest: 0.04, FlipResponse: 0.04, Latency: 40 * time.Millisecond, LatencyProb: 0.3}
	drizzle := Faults{SlowDown: 0.06, ServerError: 0.05, Reset: 0.06, FlipRequest: 0.05, FlipResponse: 0.02, Latency: 40 * time.Millisecond, LatencyProb: 0.3}
	px := s.tlsProxy(storm)
	time.AfterFunc(10*time.Second, func() { px.SetFaults(drizzle) })
	workers := []*workerproc.Child{s.child(nil), s.child(nil)}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	mon := s.monitorMoves(ctx)
	var l ledger
	start := time.Now()
	for round := range 5 {
		s.multipartSource = round%2 == 1
		for _, k := range []string{"upload", "upload", "upload", "copy", "copy", "move", "move", "put", "put"} {
			lo, hi := int64(1*mib), int64(20*mib)
			if k == "put" {
				lo, hi = 1, 4*mib
			}
			mon.watch(s.enqueueOp(&l, k, lo, hi))
		}
	}
	ops := l.all()
	for _, o := range ops {
		if o.ackedAt.IsZero() {
			t.Fatalf("enqueue of %s %s failed", o.kind, o.dst)
		}
	}
	left := s.waitAll(ops, 6*time.Minute)
	stop()
	mon.wait()
	for o, st := range left {
		t.Errorf("%s %s (%s → %s) did not complete under S3 faults: %s", o.kind, o.id, o.src, o.dst, st)
	}
	var completed []*op
	for _, o := range ops {
		if _, bad := left[o]; !bad {
			completed = append(completed, o)
		}
	}
	retries, _ := s.taskStats(ops)
	var verified int64
	corrupt := 0
	for _, o := range completed {
		n, bad := s.checkOp(o)
		verified += n
		if bad {
			corrupt++
		}
	}
	checks, viol := mon.result()
	for _, v := range viol {
		t.Error(v)
	}
	if n := s.grepLogs("retry quota exceeded"); n > 0 {
		t.Errorf("\"retry quota exceeded\" appears %d times in the worker logs", n)
	}
	counts := px.Counts()
	px.SetFaults(Faults{}) // the janitor and the checker need a quiet line
	orphans := s.janitorAndCheckUploads()
	for _, w := range workers {
		if w.Exited() {
			t.Errorf("worker %s exited (log %s)", w.Name, w.Log)
		}
	}
	s.checkNoSecret()
	flips := counts[KindFlipRequest] + counts[KindFlipGet]
	if flips == 0 {
		t.Error("the proxy flipped no bit: the storm proved nothing about integrity")
	}
	t.Logf("FIGURES s3-faults: tasks=%d completed=%d lost=%d corrupt=%d task_retries=%d bytes_verified=%d faults_injected=%d bit_flips=%d (%s) retry_quota_exceeded=0 move_invariant_checks=%d orphan_uploads_aborted_by_janitor=%d duration=%s",
		len(ops), len(completed), len(left), corrupt, retries, verified,
		counts[KindSlowDown]+counts[KindServerError]+counts[KindResetBody]+counts[KindResetGet]+flips, flips, px, checks, orphans, time.Since(start).Round(time.Second))
}
