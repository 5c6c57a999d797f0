package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/internal/workerproc"
)

// EnvSoak makes TestKillLoop a soak: FERRY_FAULTS_SOAK=30m keeps killing
// for 30 minutes (make soak). Unset, the loop stops after defaultKills.
const EnvSoak = "FERRY_FAULTS_SOAK"

const (
	// defaultKills is the default run's number of SIGKILLs.
	defaultKills = 56
	// loopPool is the number of worker processes kept running.
	loopPool = 4
	// loopInFlight is how many uploads, copies and moves the producer
	// keeps unfinished at once (besides one migration).
	loopInFlight = 6
	// takeoverP95 is issue 14's bound on kill→resumed, over every kill.
	takeoverP95 = 15 * time.Second
)

// Kill phases: where in a task the SIGKILL lands.
const (
	// phaseUpload: a checkpointed multipart transfer (upload, streamed
	// copy or move, a migration's copy) with parts written and parts left.
	phaseUpload = "upload"
	// phaseComplete: all parts written, CompleteMultipartUpload held by the
	// proxy — before it reaches S3 or after S3 completed it but before the
	// worker has the answer.
	phaseComplete = "complete"
	// phaseMigration: the worker running a migration (its listing and its
	// window of copies).
	phaseMigration = "migration"
	// phaseDelete: a recursive delete, inside its DeleteObjects (held by
	// the proxy, before or after S3 acts).
	phaseDelete = "delete"
	// phaseBatch: the worker running a ferry:batch with items done and
	// items left (some in flight).
	phaseBatch = "batch"
)

// phases lists the kill phases in the order the FIGURES line reports them.
var phases = []string{phaseUpload, phaseComplete, phaseMigration, phaseDelete, phaseBatch}

// TestKillLoop SIGKILLs worker processes in chosen phases of chosen tasks —
// mid-upload, mid-Complete, mid-migration, mid-delete, mid-batch — 56 times
// (or for FERRY_FAULTS_SOAK), while a steady workload of uploads, copies and
// moves (server-side and streamed), a migration at a time, a batch at a
// time and recursive deletes runs on a pool of worker processes; each
// killed worker is replaced at once. For each kill it measures
// kill→resumed on the task it aimed at:
//
//   - resumed is the UpdatedAt of the first progress record of that task,
//     written after the kill (so by another worker), that shows more parts
//     than its checkpoint and progress held at the kill (the next part was
//     written and recorded), or the task completed; for a migration, a
//     delete or a batch, also counters or bytes beyond those at the kill;
//     for a migration, also any record of its run (it publishes at least
//     every 250 ms while it reconciles its window and lists, and only a
//     running owner publishes: a run waiting for the takeover does not).
//
// Every kind is taken over by another worker (issue 14: p95 ≤ 15 s over
// every kill, asserted; reported per kind as well). A kill whose task's new
// worker is killed too before the task resumes measures two crashes: it is
// counted, not put in the percentiles.
//
// A checker verifies every acknowledged task completed, every
// destination's SHA-256 equals its source's (migrations and batches
// included), a migration's report counts every object listed and copied
// once, a batch's result every item done, a batch item was written more
// than once only when a kill of its batch left it out of the record (not
// recorded done, written before the kill, and in flight or logged done
// after the killed worker's last write of the record, which is written in
// groups), copies kept and moves removed their
// sources (moves checked live as well), deletes removed their directory and
// nothing beside it, and, once every task completed, no multipart upload is
// left that holds parts or that a checkpoint named (an upload whose worker
// was killed between CreateMultipartUpload and the checkpoint's write is
// empty: counted, and the janitor's), and none at all after a janitor run.
func TestKillLoop(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	soak := soakDuration(t)
	s := newSuite(t)
	kl := &killLoop{s: s, lt: newLogTracker(), workers: map[string]*workerproc.Child{}, soak: soak, writes: map[string][]time.Time{}}
	// Parts and ranged GETs take up to 400 ms, so transfers last seconds;
	// the hold keeps a worker inside the Complete or DeleteObjects a kill
	// aims at.
	px := s.proxy(Faults{Latency: 400 * time.Millisecond, Hold: kl.hold, Match: func(r *http.Request) bool {
		return r.Method == http.MethodGet || r.URL.Query().Has("partNumber")
	}})
	for range loopPool {
		kl.startWorker()
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	kl.mon = s.monitorMoves(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { kl.follow(ctx) })
	bg.Go(func() { kl.produce(ctx) })
	bg.Go(func() { keepOneRunning(kl, ctx, &kl.migs, kl.newMigration) })
	bg.Go(func() { keepOneRunning(kl, ctx, &kl.bats, kl.newBatch) })
	bg.Go(func() { kl.settleLoop(ctx) })

	start := time.Now()
	kl.start = start
	misses := 0
	for {
		if soak > 0 && time.Since(start) >= soak && len(kl.kills) >= defaultKills {
			break
		}
		if soak == 0 && len(kl.kills) >= defaultKills {
			break
		}
		time.Sleep(time.Duration(1500+rand.IntN(2500)) * time.Millisecond)
		ph := kl.phase(len(kl.kills), misses)
		k, why := kl.killIn(ph)
		if k == nil {
			misses++
			t.Logf("no %s to kill in: %s", ph, why)
			if misses > 40+len(kl.kills) {
				t.Fatalf("the kill loop found no targets %d times (%d kills): the workload stalled?", misses, len(kl.kills))
			}
			continue
		}
		t.Logf("kill %d (%s): SIGKILL %s running %s at %s", k.n, k.phase, k.victim, k.what, k.at.Sub(start).Round(time.Millisecond))
	}
	killPhase := time.Since(start)
	stop()
	bg.Wait()
	kl.mon.wait()
	t.Logf("kill phase over after %s: %d kills, %d misses; waiting for every task", killPhase.Round(time.Second), len(kl.kills), misses)

	// Everything acknowledged must complete.
	rctx, rstop := context.WithCancel(context.Background())
	kl.mon2 = s.monitorMoves(rctx)
	for _, o := range kl.unsettledOps() {
		kl.mon2.watch(o)
	}
	var rbg sync.WaitGroup
	rbg.Go(func() { kl.follow(rctx) })
	left := kl.waitAll(6 * time.Minute)
	rstop()
	rbg.Wait()
	kl.mon2.wait() // settle(true) removes what it would be checking
	for id, st := range left {
		t.Errorf("LOST: acknowledged task %s did not complete: %s", id, st)
	}
	kl.settle(true)
	checks1, v1 := kl.mon.result()
	checks2, v2 := kl.mon2.result()
	for _, v := range append(v1, v2...) {
		t.Error(v)
	}
	// Orphans: every task is done, so no multipart upload may be left;
	// listed before the janitor (which would hide them) and after it.
	var before []string
	unstarted := 0
	for _, u := range s.listUploads() {
		// A kill between CreateMultipartUpload and the checkpoint's write
		// leaves an upload no checkpoint (so no worker log) ever named and
		// no part was ever sent to: the janitor's to abort, at no cost.
		parts, err := s.sc.ListParts(context.Background(), &s3.ListPartsInput{Bucket: &s.bucket, Key: &u.key, UploadId: &u.id})
		if err == nil && len(parts.Parts) == 0 && s.grepLogs(u.id) == 0 {
			unstarted++
			t.Logf("upload %s of %s initiated at %s: no checkpoint ever named it, no parts (the janitor aborts it); its task's story:\n%s",
				u.id, u.key, u.initiated.Sub(start).Round(time.Millisecond), kl.storyOf(u.key))
			continue
		}
		before = append(before, u.String())
		t.Errorf("ORPHAN: multipart upload left after every task completed: %s (%d worker log lines name it)", u, s.grepLogs(u.id))
	}
	aborted := s.janitorAndCheckUploads()
	for _, w := range kl.live() {
		if w.Exited() {
			t.Errorf("worker %s exited on its own (log %s)", w.Name, w.Log)
		}
	}
	s.checkNoSecret()

	// Kill→resumed.
	var all []time.Duration
	byKind := map[string][]time.Duration{}
	byPhase := map[string]int{}
	cut := 0
	holds := map[bool]int{}
	for _, k := range kl.kills {
		byPhase[k.phase]++
		if k.phase == phaseComplete || k.phase == phaseDelete {
			holds[k.heldAfter]++
		}
		if k.resumed.IsZero() {
			t.Errorf("kill %d (%s, %s): the task never resumed", k.n, k.phase, k.what)
			continue
		}
		d := k.resumed.Sub(k.at)
		if k.cut {
			cut++
			t.Logf("kill %d %-9s %-40s resumed after %5.1fs (%s), after a later kill of the worker that had taken it up: not counted", k.n, k.phase, k.what, d.Seconds(), k.how)
			continue
		}
		t.Logf("kill %d %-9s %-40s resumed after %5.1fs (%s)", k.n, k.phase, k.what, d.Seconds(), k.how)
		all = append(all, d)
		byKind[k.phase] = append(byKind[k.phase], d)
	}
	if len(kl.kills) < defaultKills {
		t.Errorf("%d kills, want at least %d", len(kl.kills), defaultKills)
	}
	if len(all) == 0 {
		t.Error("no kill was followed by a takeover: the p95 below would measure nothing")
	}
	for _, ph := range phases {
		if byPhase[ph] == 0 {
			t.Errorf("no kill in phase %s", ph)
		}
	}
	if p := percentile(all, 95); p > takeoverP95 {
		t.Errorf("takeover p95 %s over %d kills, want ≤ %s", p.Round(100*time.Millisecond), len(all), takeoverP95)
	}
	if kl.corrupt > 0 || kl.deleteWrong > 0 || len(left) > 0 || len(before) > 0 || kl.countsWrong > 0 || kl.badRewrites > 0 {
		t.Errorf("lost=%d corrupt=%d delete_wrong=%d orphans=%d counts_wrong=%d rewrites_not_left_out_of_the_record=%d: want all 0",
			len(left), kl.corrupt, kl.deleteWrong, len(before), kl.countsWrong, kl.badRewrites)
	}
	var kinds []string
	for _, ph := range phases {
		ds := byKind[ph]
		kinds = append(kinds, fmt.Sprintf("%s=%s/%s/%s(n=%d)", ph, fmtD(percentile(ds, 50)), fmtD(percentile(ds, 95)), fmtD(percentile(ds, 100)), len(ds)))
	}
	t.Logf("FIGURES kill-loop: kills=%d (upload=%d complete=%d [held_before=%d held_after=%d] migration=%d delete=%d batch=%d) "+
		"takeover_resume_p50=%s p95=%s max=%s (n=%d, every kind) by_kind_p50/p95/max: %s resumes_cut_by_a_later_kill=%d "+
		"tasks_acked=%d lost=%d objects_verified=%d corrupt=%d delete_wrong=%d counts_wrong=%d batch_items_written_again=%d (logged done after the last record write: %d, in flight: %d, neither: %d) bytes_verified=%d move_invariant_checks=%d "+
		"orphan_uploads=%d uploads_killed_before_their_checkpoint=%d orphan_uploads_aborted_by_janitor=%d s3_requests=%d kill_phase=%s duration=%s",
		len(kl.kills), byPhase[phaseUpload], byPhase[phaseComplete], holds[false], holds[true], byPhase[phaseMigration], byPhase[phaseDelete], byPhase[phaseBatch],
		fmtD(percentile(all, 50)), fmtD(percentile(all, 95)), fmtD(percentile(all, 100)), len(all), strings.Join(kinds, " "), cut,
		kl.acked(), len(left), kl.objects, kl.corrupt, kl.deleteWrong, kl.countsWrong, kl.rewrites, kl.rewritesUnrecorded, kl.rewrites-kl.rewritesUnrecorded-kl.badRewrites, kl.badRewrites, kl.bytes, checks1+checks2,
		len(before), unstarted, aborted, px.Counts()[KindRequests], killPhase.Round(time.Second), time.Since(start).Round(time.Second))
}

// soakDuration is FERRY_FAULTS_SOAK, 0 when unset.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(EnvSoak)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a duration such as 30m", EnvSoak, v)
	}
	return d
}
