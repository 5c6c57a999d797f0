package faulttest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Integrity tests run a worker behind a TLS-terminating proxy that flips
// bits in bodies: over https the SDK signs no payload hash, so only ferry's
// own checksums stand between a flipped bit and a "completed" corrupt
// object. They are not gated on FERRY_FAULTS: they are quick, and they are
// the proof of docs/reliability.md's "## Integrity".

// integrityReason is what an archived task's error must contain.
const integrityReason = "integrity check failed"

func isPut(r *http.Request) bool { return r.Method == http.MethodPut }

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
// and every destination is identical to its source.
func TestIntegrityWrites(t *testing.T) {
	t.Parallel()
	s := newSuite(t)
	s.destProfile = "other" // streamed: server-side copies send no body
	px := s.tlsProxy(Faults{FlipRequest: 1, Match: isPut})
	s.child(nil)
	var l ledger
	var broken []*op
	for _, k := range []string{"put", "upload", "copy", "move"} {
		lo, hi := int64(6*mib), int64(12*mib)
		if k == "put" {
			lo, hi = 1, 4*mib
		}
		broken = append(broken, s.enqueueOp(&l, k, lo, hi))
	}
	left := s.waitAll(broken, 2*time.Minute)
	failed := 0
	for _, o := range broken {
		if s.checkIntegrity(o, left[o]) {
			t.Errorf("%s %s completed although every PUT body it sent was corrupted", o.kind, o.id)
			continue
		}
		failed++
		t.Logf("%s failed as it must: %s", o.kind, left[o])
	}
	flips := px.Counts()[KindFlipRequest]
	if flips == 0 {
		t.Fatal("the proxy flipped no bit: the test proves nothing")
	}

	px.SetFaults(Faults{FlipRequest: 0.15, Match: isPut})
	var flaky []*op
	for range 2 {
		for _, k := range []string{"put", "upload", "copy", "move"} {
			lo, hi := int64(6*mib), int64(16*mib)
			if k == "put" {
				lo, hi = 1, 4*mib
			}
			flaky = append(flaky, s.enqueueOp(&l, k, lo, hi))
		}
	}
	left = s.waitAll(flaky, 3*time.Minute)
	for o, st := range left {
		t.Errorf("%s %s did not complete with one PUT in seven corrupted: %s", o.kind, o.id, st)
	}
	for _, o := range flaky {
		if _, bad := left[o]; !bad {
			s.verify([]*op{o})
		}
	}
	t.Logf("FIGURES integrity-writes: broken_tasks=%d failed_with_integrity_reason=%d flaky_tasks=%d completed_identical=%d bit_flips=%d",
		len(broken), failed, len(flaky), len(flaky)-len(left), px.Counts()[KindFlipRequest])
}
