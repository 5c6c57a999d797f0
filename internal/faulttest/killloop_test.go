package faulttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/tasks"
)

// killLoop is TestKillLoop's state.
type killLoop struct {
	s     *suite
	lt    *logTracker
	soak  time.Duration
	start time.Time

	mu      sync.Mutex
	workers map[string]*workerproc.Child // live workers by name
	kills   []*kill
	l       ledger
	migs    []*migJob
	dels    []*delJob
	bats    []*batJob
	// writes records every PUT of a batch item's destination key the
	// proxy saw, with its time: how often each item was written.
	writesMu sync.Mutex
	writes   map[string][]time.Time
	// settled: verified (and cleaned up) tasks, by id.
	settled map[string]bool
	mon     *moveMonitor
	mon2    *moveMonitor

	// Verification counts.
	objects, corrupt, deleteWrong, countsWrong, rewrites, badRewrites int
	// rewritesUnrecorded counts the batch items written again that the
	// killed worker had logged done but not yet as recorded; the other
	// allowed ones were in flight (sent, never logged done).
	rewritesUnrecorded int
	bytes              int64

	// arm says which request the proxy holds next (phaseComplete or
	// phaseDelete, "" for none); held receives the held request's key.
	armMu          sync.Mutex
	arm            string
	armAfter       bool
	held           chan string
	nmig, ndl, nbt atomic.Int64
}

// kill is one SIGKILL and what became of the task it aimed at.
type kill struct {
	n         int
	phase     string
	task      string
	what      string
	victim    string
	at        time.Time // just before the SIGKILL
	heldAfter bool      // complete/delete: the request was held after S3 acted
	// takeover: ferry takes the task over (every phase now); else
	// asynq's lease recovery runs it again.
	takeover bool
	// What the task had done at the kill.
	baseParts    int
	baseBytes    int64
	baseCounters map[string]int64
	// batchRecs is, for each batch the killed worker was running (the one
	// aimed at, or another it ran), its record of finished items at the
	// kill.
	batchRecs map[string][]byte
	// batchLogs is, for the same batches, what the killed worker's log
	// said of their items at the kill: logged done, and written to the
	// record (in groups: an item logged done and not yet recorded may be
	// written again, one logged as recorded never).
	batchLogs map[string]*batchLog
	resumed   time.Time
	how       string
	// cut: a later kill hit the worker that had taken the task up again
	// before it resumed; that resume measures two crashes, not one, and
	// is left out of the figures (counted as resumes_cut_by_a_later_kill).
	cut bool
}

// runJob is what the loop knows of a long task it keeps running (see
// keepOneRunning): its id, and whether a kill was aimed at its worker.
type runJob struct {
	id     string
	killed atomic.Bool
}

func (r *runJob) run() *runJob { return r }

// migJob is a migration of the workload and what it must produce.
type migJob struct {
	runJob
	src, dst string // prefixes
	sums     map[string][32]byte
	sizes    map[string]int64
}

// batJob is a ferry:batch of small streamed copies and what it must produce.
type batJob struct {
	runJob
	prefix string // bat-NNN: sources under src/, destinations under dst/
	sums   map[string][32]byte
	sizes  map[string]int64
}

// delJob is a recursive delete: its directory, and neighbours that must stay.
type delJob struct {
	id    string
	dir   string
	keep  map[string][32]byte
	nobjs int
}

func (kl *killLoop) startWorker() {
	c := kl.s.child(func(c *workerproc.ChildConfig) {
		c.PartConcurrency = 1 // one part at a time: transfers last long enough to be killed inside
		c.Concurrency = 3     // room for the workload next to the asynq runs that wait for a takeover
		c.Debug = true        // every part and task start is logged: who runs what
	})
	kl.lt.add(c.Name, c.Log)
	kl.mu.Lock()
	kl.workers[c.Name] = c
	kl.mu.Unlock()
}

func (kl *killLoop) live() []*workerproc.Child {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	out := make([]*workerproc.Child, 0, len(kl.workers))
	for _, c := range kl.workers {
		out = append(out, c)
	}
	return out
}

func (kl *killLoop) alive(name string) bool {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	return kl.workers[name] != nil
}

// phase is the phase of kill number n after misses failed attempts (a
// miss moves on to the next phase). Every phase's task is taken over by
// another worker, so every kind is killed until the end.
func (kl *killLoop) phase(n, misses int) string {
	switch (n + misses) % 10 {
	case 1, 5:
		return phaseComplete
	case 3:
		return phaseMigration
	case 7:
		return phaseDelete
	case 9:
		return phaseBatch
	}
	return phaseUpload
}

// follow keeps the log tracker current and records resumptions.
func (kl *killLoop) follow(ctx context.Context) {
	for ctx.Err() == nil {
		kl.lt.poll()
		kl.checkResumed()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkResumed sets resumed on the kills whose task has resumed since.
func (kl *killLoop) checkResumed() {
	kl.mu.Lock()
	var open []*kill
	for _, k := range kl.kills {
		if k.resumed.IsZero() {
			open = append(open, k)
		}
	}
	kl.mu.Unlock()
	for _, k := range open {
		p, err := kl.s.client.Progress(context.Background(), k.task)
		if err != nil || !p.UpdatedAt.After(k.at) {
			continue
		}
		how := ""
		switch {
		case p.State == tasks.StateCompleted:
			how = "completed"
		case p.PartsDone > k.baseParts:
			how = fmt.Sprintf("part %d of %d recorded", p.PartsDone, p.PartsTotal)
		case k.phase != phaseUpload && k.phase != phaseComplete && (p.BytesDone > k.baseBytes || advanced(p.Counters, k.baseCounters)):
			how = fmt.Sprintf("progress advanced %v", p.Counters)
		case k.phase == phaseMigration && p.State == tasks.StateActive:
			// A migration's run publishes its counters at least every
			// 250 ms while it reconciles its window and lists; with the
			// listing done and its last copies still running, nothing
			// else can show that another worker runs it again.
			how = fmt.Sprintf("a new run published %v", p.Counters)
		default:
			continue
		}
		kl.mu.Lock()
		k.resumed, k.how = p.UpdatedAt, how
		kl.mu.Unlock()
	}
}

func advanced(now, base map[string]int64) bool {
	for k, v := range now {
		if k != "pending" && v > base[k] {
			return true
		}
	}
	return false
}

// hold is the proxy's Hold: it holds the next CompleteMultipartUpload of a
// workload transfer, or the next DeleteObjects, once armed.
func (kl *killLoop) hold(r *http.Request) (time.Duration, bool) {
	if r.Method == http.MethodPut && !r.URL.Query().Has("partNumber") {
		key := strings.TrimPrefix(r.URL.Path, "/"+kl.s.bucket+"/")
		if strings.HasPrefix(key, "bat-") && strings.Contains(key, "/dst/") {
			kl.writesMu.Lock()
			kl.writes[key] = append(kl.writes[key], time.Now())
			kl.writesMu.Unlock()
		}
	}
	if r.Method != http.MethodPost {
		return 0, false
	}
	q := r.URL.Query()
	kind, key := "", ""
	switch {
	case q.Has("uploadId") && !q.Has("partNumber"):
		key = strings.TrimPrefix(r.URL.Path, "/"+kl.s.bucket+"/")
		if !strings.HasPrefix(key, "dst/") {
			return 0, false // a migration's copy: its task id is not known here
		}
		kind = phaseComplete
	case q.Has("delete"):
		b, err := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if err != nil {
			return 0, false
		}
		kind, key = phaseDelete, string(b)
	default:
		return 0, false
	}
	kl.armMu.Lock()
	defer kl.armMu.Unlock()
	if kl.arm != kind {
		return 0, false
	}
	kl.arm = ""
	kl.held <- key
	return 8 * time.Second, kl.armAfter
}

// killIn finds a task in phase ph, SIGKILLs the worker running it and
// replaces that worker; nil and why when no task was found in time.
func (kl *killLoop) killIn(ph string) (*kill, string) {
	k := &kill{phase: ph, takeover: true}
	deadline := time.Now().Add(15 * time.Second)
	switch ph {
	case phaseUpload:
		for ; ; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				return nil, "no multipart transfer with parts left was being written"
			}
			kl.lt.poll()
			cands := kl.lt.writing(time.Now().Add(-2 * time.Second))
			ids := make([]string, 0, len(cands))
			for id := range cands {
				ids = append(ids, id)
			}
			rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			for _, id := range ids {
				e := cands[id]
				p, err := kl.s.client.Progress(context.Background(), id)
				if err != nil || p.State != tasks.StateActive || p.PartsTotal == 0 || p.PartsDone >= p.PartsTotal || !kl.alive(e.worker) {
					continue
				}
				k.task, k.victim = id, e.worker
				k.what = fmt.Sprintf("%s %s part %d/%d", strings.TrimPrefix(p.Type, "ferry:"), short(id), p.PartsDone, p.PartsTotal)
				break
			}
			if k.task != "" {
				break
			}
		}
	case phaseComplete, phaseDelete:
		after := rand.IntN(2) == 0
		var dj *delJob
		if ph == phaseDelete {
			var err error
			if dj, err = kl.newDelete(); err != nil {
				return nil, err.Error()
			}
		}
		kl.armMu.Lock()
		kl.held = make(chan string, 1)
		kl.arm, kl.armAfter = ph, after
		held := kl.held
		kl.armMu.Unlock()
		if dj != nil {
			if err := kl.enqueueDelete(dj); err != nil {
				kl.disarm()
				return nil, err.Error()
			}
		}
		var key string
		select {
		case key = <-held:
		case <-time.After(time.Until(deadline)):
			kl.disarm()
			return nil, "no request held"
		}
		kl.lt.poll()
		if dj != nil {
			k.task, k.what = dj.id, fmt.Sprintf("delete %s/ (DeleteObjects)", dj.dir)
			e, ok := kl.lt.runnerOf(dj.id)
			if !ok || !kl.alive(e.worker) {
				return nil, "delete's worker not found"
			}
			k.victim = e.worker
		} else {
			o := kl.opByKey(key)
			if o == nil {
				return nil, "held Complete of unknown key " + key
			}
			e, ok := kl.lt.writerOf(o.id)
			if !ok || !kl.alive(e.worker) {
				return nil, "Complete's worker not found"
			}
			k.task, k.victim, k.what = o.id, e.worker, fmt.Sprintf("%s %s (Complete)", o.kind, short(o.id))
		}
		k.heldAfter = after
	case phaseMigration:
		for ; ; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				return nil, "no migration running"
			}
			kl.lt.poll()
			for _, m := range kl.migrations() {
				p, err := kl.s.client.Progress(context.Background(), m.id)
				if m.killed.Load() || err != nil || p.State != tasks.StateActive {
					continue
				}
				e, ok := kl.lt.runnerOf(m.id)
				if !ok || !kl.alive(e.worker) {
					continue
				}
				m.killed.Store(true)
				k.task, k.victim = m.id, e.worker
				k.what = fmt.Sprintf("migrate %s/ (%d copied of %d)", m.src, p.Counters["copied"], len(m.sums))
				break
			}
			if k.task != "" {
				break
			}
		}
	case phaseBatch:
		for ; ; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				return nil, "no batch with items done and items left was running"
			}
			kl.lt.poll()
			for _, bj := range kl.batches() {
				p, err := kl.s.client.Progress(context.Background(), bj.id)
				done := p.Counters["objects_done"]
				if bj.killed.Load() || err != nil || p.State != tasks.StateActive || done == 0 || done >= int64(len(bj.sums))-batchConc {
					continue
				}
				e, ok := kl.lt.runnerOf(bj.id)
				if !ok || !kl.alive(e.worker) {
					continue
				}
				bj.killed.Store(true)
				k.task, k.victim = bj.id, e.worker
				k.what = fmt.Sprintf("batch %s/ (%d of %d done)", bj.prefix, done, len(bj.sums))
				break
			}
			if k.task != "" {
				break
			}
		}
	}
	kl.lt.poll()
	kl.mu.Lock()
	victim := kl.workers[k.victim]
	delete(kl.workers, k.victim)
	if victim != nil {
		for _, o := range kl.kills {
			if o.resumed.IsZero() && !o.cut && kl.lt.picked(o.task, k.victim, o.at, o.takeover) {
				o.cut = true
			}
		}
	}
	kl.mu.Unlock()
	if victim == nil {
		return nil, "worker gone"
	}
	k.at = time.Now()
	victim.Kill()
	kl.startWorker()
	kl.baseline(k)
	kl.mu.Lock()
	kl.kills = append(kl.kills, k)
	k.n = len(kl.kills)
	kl.mu.Unlock()
	return k, ""
}

func (kl *killLoop) disarm() {
	kl.armMu.Lock()
	kl.arm = ""
	kl.armMu.Unlock()
}

// baseline records what k's task had done at the kill: its progress and,
// for a multipart transfer, its checkpoint (a part may be recorded and
// not yet published when the worker dies).
func (kl *killLoop) baseline(k *kill) {
	ctx := context.Background()
	if p, err := kl.s.client.Progress(ctx, k.task); err == nil {
		k.baseParts, k.baseBytes, k.baseCounters = p.PartsDone, p.BytesDone, p.Counters
	}
	if c, err := checkpoint.New(kl.s.rdb, checkpoint.Options{}).Load(ctx, k.task); err == nil {
		k.baseParts = max(k.baseParts, len(c.Parts))
	}
	// The dead worker sets no more bits: these are the records at the
	// kill, and its log is complete (read to its end first).
	kl.lt.poll()
	k.batchRecs, k.batchLogs = map[string][]byte{}, map[string]*batchLog{}
	for _, bj := range kl.batches() {
		r, ok1 := kl.lt.runnerOf(bj.id)
		w, ok2 := kl.lt.writerOf(bj.id)
		if bj.id == k.task || (ok1 && r.worker == k.victim) || (ok2 && w.worker == k.victim) {
			k.batchRecs[bj.id], _ = kl.s.rdb.Get(ctx, "ferry:batch:{"+bj.id+"}").Bytes()
			k.batchLogs[bj.id] = kl.lt.batchItems(k.victim, bj.id)
		}
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func (kl *killLoop) opByKey(key string) *op {
	for _, o := range kl.l.all() {
		if o.dst == key {
			return o
		}
	}
	return nil
}

func (kl *killLoop) batches() []*batJob {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	return slices.Clone(kl.bats)
}

func (kl *killLoop) migrations() []*migJob {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	return slices.Clone(kl.migs)
}

// produce keeps loopInFlight uploads, copies and moves unfinished.
func (kl *killLoop) produce(ctx context.Context) {
	kinds := []string{"upload", "upload", "upload", "copy", "move", "copy", "move"}
	open := map[*op]bool{}
	for ctx.Err() == nil {
		for o := range open {
			p, err := kl.s.client.Progress(ctx, o.id)
			if err == nil && p.State.Terminal() {
				delete(open, o)
			}
		}
		for len(open) < loopInFlight && ctx.Err() == nil {
			o := kl.s.enqueueOp(&kl.l, kinds[rand.IntN(len(kinds))], 6*mib, 21*mib)
			if o.id != "" {
				open[o] = true
				kl.mon.watch(o)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// enqueue puts a producer's task in the loop's queue and returns its id,
// or "" when Redis did not take it within 5 s (the producer tries again on
// its next round).
func (kl *killLoop) enqueue(ctx context.Context, task *asynq.Task) string {
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := kl.s.client.Enqueue(ectx, task, asynq.Queue(kl.s.queue))
	if err != nil {
		return ""
	}
	return info.ID
}

// migSmall is how many small objects a migration of the loop holds.
const migSmall = 6

// keepOneRunning keeps one task of next's kind running whose worker is
// alive, looking once a second: when the current one was killed, has ended,
// or lost its worker, next writes the objects of a new one and returns it
// with its task, which is enqueued and, once Redis took it, added to jobs.
// An error of next is reported and ends the producer.
func keepOneRunning[J interface{ run() *runJob }](kl *killLoop, ctx context.Context, jobs *[]J, next func() (J, *asynq.Task, error)) {
	var cur *runJob
	for ctx.Err() == nil {
		if cur == nil || cur.killed.Load() || kl.terminal(cur.id) || kl.runnerDead(cur.id) {
			j, task, err := next()
			if err != nil {
				kl.s.t.Error(err)
				return
			}
			r := j.run()
			if r.id = kl.enqueue(ctx, task); r.id == "" {
				continue
			}
			kl.mu.Lock()
			*jobs = append(*jobs, j)
			kl.mu.Unlock()
			cur = r
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// newMigration is a migration for keepOneRunning: 8 objects of 6–16 MiB to
// the "other" profile (streamed, checkpointed copies), two at a time, and
// migSmall of 1–64 KiB (one ferry:batch).
func (kl *killLoop) newMigration() (*migJob, *asynq.Task, error) {
	n := kl.nmig.Add(1)
	m := &migJob{src: fmt.Sprintf("mig-%03d/src", n), dst: fmt.Sprintf("mig-%03d/dst", n), sums: map[string][32]byte{}, sizes: map[string]int64{}}
	put := func(rel string, data []byte) {
		kl.s.putSource(m.src+rel, data)
		m.sums[rel], m.sizes[rel] = sha256.Sum256(data), int64(len(data))
	}
	for i := range 8 {
		put(fmt.Sprintf("/obj-%02d", i), randomBytes(randSize(6*mib, 16*mib)))
	}
	// And small objects, which the migration copies in a ferry:batch of its
	// own: both shapes of its work are killed.
	for i := range migSmall {
		put(fmt.Sprintf("/small-%02d", i), randomBytes(randSize(1024, 64<<10)))
	}
	task, err := tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Bucket: kl.s.bucket, Key: m.src},
		Dest: tasks.Location{Profile: "other", Bucket: kl.s.bucket, Key: m.dst}, Window: 2})
	if err != nil {
		return nil, nil, fmt.Errorf("migrate task: %w", err)
	}
	return m, task, nil
}

// batchItems and batchConc shape the loop's batches: small objects copied
// to the "other" profile (a GET the proxy delays, then a PUT), a few at a
// time, so a batch runs long enough to be killed with items done and left.
const (
	batchItems = 90
	batchConc  = 3
)

// newBatch is a ferry:batch for keepOneRunning.
func (kl *killLoop) newBatch() (*batJob, *asynq.Task, error) {
	n := kl.nbt.Add(1)
	bj := &batJob{prefix: fmt.Sprintf("bat-%03d", n), sums: map[string][32]byte{}, sizes: map[string]int64{}}
	var items []tasks.BatchItem
	for i := range batchItems {
		data := randomBytes(randSize(1024, 96<<10))
		rel := fmt.Sprintf("/obj-%03d", i)
		kl.s.putSource(bj.prefix+"/src"+rel, data)
		bj.sums[rel], bj.sizes[rel] = sha256.Sum256(data), int64(len(data))
		items = append(items, tasks.BatchItem{Source: tasks.Location{Bucket: kl.s.bucket, Key: bj.prefix + "/src" + rel},
			Dest: tasks.Location{Profile: "other", Bucket: kl.s.bucket, Key: bj.prefix + "/dst" + rel}, Size: int64(len(data))})
	}
	task, err := tasks.NewBatchTask(tasks.BatchPayload{Items: items, Concurrency: batchConc})
	if err != nil {
		return nil, nil, fmt.Errorf("batch task: %w", err)
	}
	return bj, task, nil
}

// runnerDead reports whether the worker running the task was killed (a
// kill aimed at another task can hit it too): asynq runs it again only
// after its lease recovery.
func (kl *killLoop) runnerDead(id string) bool {
	e, ok := kl.lt.runnerOf(id)
	return ok && !kl.alive(e.worker)
}

func (kl *killLoop) terminal(id string) bool {
	p, err := kl.s.client.Progress(context.Background(), id)
	return err == nil && p.State.Terminal()
}

// newDelete writes a directory of small objects and two neighbours that
// share its prefix but not its directory.
func (kl *killLoop) newDelete() (*delJob, error) {
	n := kl.ndl.Add(1)
	d := &delJob{dir: fmt.Sprintf("del-%03d", n), keep: map[string][32]byte{}, nobjs: 30}
	for i := range d.nobjs {
		kl.s.putSource(fmt.Sprintf("%s/f-%02d", d.dir, i), randomBytes(1024))
	}
	for _, k := range []string{d.dir + "-keep/a", d.dir + ".txt"} {
		data := randomBytes(2048)
		kl.s.putSource(k, data)
		d.keep[k] = sha256.Sum256(data)
	}
	return d, nil
}

func (kl *killLoop) enqueueDelete(d *delJob) error {
	task, err := tasks.NewDeleteTask(tasks.DeletePayload{Dest: tasks.Location{Bucket: kl.s.bucket, Key: d.dir}, Recursive: true})
	if err != nil {
		return fmt.Errorf("delete task: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := kl.s.client.Enqueue(ctx, task, asynq.Queue(kl.s.queue))
	if err != nil {
		return fmt.Errorf("enqueue delete: %w", err)
	}
	d.id = info.ID
	kl.mu.Lock()
	kl.dels = append(kl.dels, d)
	kl.mu.Unlock()
	return nil
}

// settleLoop verifies finished tasks while the loop runs and removes their
// objects and files, so a soak's disk use stays flat.
func (kl *killLoop) settleLoop(ctx context.Context) {
	for ctx.Err() == nil {
		kl.settle(false)
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
}

func (kl *killLoop) acked() int {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	n := len(kl.migs) + len(kl.dels) + len(kl.bats)
	for _, o := range kl.l.all() {
		if o.id != "" {
			n++
		}
	}
	return n
}

func (kl *killLoop) unsettledOps() []*op {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	var out []*op
	for _, o := range kl.l.all() {
		if o.id != "" && !kl.settled[o.id] {
			out = append(out, o)
		}
	}
	return out
}

// waitAll waits until every acknowledged task is completed or archived.
func (kl *killLoop) waitAll(timeout time.Duration) map[string]string {
	kl.mu.Lock()
	ids := map[string]bool{}
	for _, o := range kl.l.all() {
		if o.id != "" {
			ids[o.id] = true
		}
	}
	for _, m := range kl.migs {
		ids[m.id] = true
	}
	for _, d := range kl.dels {
		ids[d.id] = true
	}
	for _, bj := range kl.bats {
		ids[bj.id] = true
	}
	kl.mu.Unlock()
	must := make([]*op, 0, len(ids))
	for id := range ids {
		must = append(must, &op{id: id})
	}
	left := map[string]string{}
	for o, st := range kl.s.waitAll(must, timeout) {
		left[o.id] = st
	}
	return left
}

// settle verifies the tasks asynq shows completed and not yet verified,
// then deletes their sources and destinations; final settles all of them.
func (kl *killLoop) settle(final bool) {
	s := kl.s
	info := func(id string) *asynq.TaskInfo {
		ti, err := s.client.Inspector().GetTaskInfo(s.queue, id)
		if err != nil || ti.State != asynq.TaskStateCompleted {
			return nil
		}
		return ti
	}
	completed := func(id string) bool { return info(id) != nil }
	kl.mu.Lock()
	if kl.settled == nil {
		kl.settled = map[string]bool{}
	}
	ops, migs, dels, bats := kl.l.all(), slices.Clone(kl.migs), slices.Clone(kl.dels), slices.Clone(kl.bats)
	kl.mu.Unlock()
	mark := func(id string) {
		kl.mu.Lock()
		kl.settled[id] = true
		kl.mu.Unlock()
	}
	isSettled := func(id string) bool {
		kl.mu.Lock()
		defer kl.mu.Unlock()
		return kl.settled[id]
	}
	ctx := context.Background()
	for _, o := range ops {
		if o.id == "" || isSettled(o.id) || !completed(o.id) {
			continue
		}
		// A move the live monitor still watches is left to it first.
		if o.kind == "move" && !final && (kl.mon.watching(o) || (kl.mon2 != nil && kl.mon2.watching(o))) {
			continue
		}
		mark(o.id)
		n, corrupt := s.checkOp(o)
		kl.count(1, corrupt, 0, n)
		s.remove(o.dst)
		if o.kind == "upload" || o.kind == "put" {
			_ = os.Remove(o.src)
		} else {
			s.remove(o.src)
		}
	}
	for _, m := range migs {
		if m.id == "" || isSettled(m.id) {
			continue
		}
		ti := info(m.id)
		if ti == nil {
			continue
		}
		mark(m.id)
		// The report's counts are exact: every object listed and copied
		// once, whatever the kills.
		var rep struct{ Listed, Copied, Skipped, Failed, Bytes int64 }
		var size int64
		for _, n := range m.sizes {
			size += n
		}
		n := int64(len(m.sums))
		if err := json.Unmarshal(ti.Result, &rep); err != nil || rep.Listed != n || rep.Copied != n || rep.Skipped != 0 || rep.Failed != 0 || rep.Bytes != size {
			s.t.Errorf("migration %s (killed %v): report %s (%v); want %d listed and copied, %d bytes, none skipped or failed", m.id, m.killed.Load(), ti.Result, err, n, size)
			kl.countWrong()
		}
		for rel, want := range m.sums {
			sum, n, err := s.objectSum(m.dst + rel)
			bad := err != nil || sum != want || n != m.sizes[rel]
			if bad {
				s.t.Errorf("migration %s: %s%s differs from its source (%d bytes, want %d; err %v)", m.id, m.dst, rel, n, m.sizes[rel], err)
				kl.count(1, true, 0, 0)
			} else {
				kl.count(1, false, 0, n)
			}
			if ok, err := s.exists(m.src + rel); !ok || err != nil {
				s.t.Errorf("migration %s lost its source %s%s (%v)", m.id, m.src, rel, err)
			}
			s.remove(m.dst + rel)
			s.remove(m.src + rel)
		}
	}
	for _, bj := range bats {
		if bj.id == "" || isSettled(bj.id) {
			continue
		}
		ti := info(bj.id)
		if ti == nil {
			continue
		}
		mark(bj.id)
		kl.settleBatch(bj, ti)
	}
	for _, d := range dels {
		if d.id == "" || isSettled(d.id) || !completed(d.id) {
			continue
		}
		mark(d.id)
		out, err := s.sc.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(d.dir + "/")})
		switch {
		case err != nil:
			s.t.Errorf("list %s/: %v", d.dir, err)
		case len(out.Contents) > 0:
			s.t.Errorf("delete %s completed but %d objects are left in %s/", d.id, len(out.Contents), d.dir)
			kl.count(0, false, 1, 0)
		}
		for k, want := range d.keep {
			sum, _, err := s.objectSum(k)
			if err != nil || sum != want {
				s.t.Errorf("delete %s of %s/ touched its neighbour %s (%v)", d.id, d.dir, k, err)
				kl.count(0, false, 1, 0)
			}
			s.remove(k)
		}
	}
}

// settleBatch verifies a completed batch: its result counts every item
// done, every destination's SHA-256 is its source's, and an item was
// written more than once only when a kill of a worker running the batch
// left it out of the record: not recorded as done at that kill, written (at
// least once) before it (or sent before it: sentBeforeKill), and either in
// flight (never logged done by the killed worker) or logged done after the
// worker's last write of the record (the record is written in groups,
// worker/batch.go), never one its log showed as recorded; an item recorded
// as done at such a kill is never written after it.
func (kl *killLoop) settleBatch(bj *batJob, ti *asynq.TaskInfo) {
	s := kl.s
	var res tasks.BatchResult
	if err := json.Unmarshal(ti.Result, &res); err != nil || res.Done != len(bj.sums) || res.Failed != 0 || res.Total != len(bj.sums) {
		s.t.Errorf("batch %s (killed %v): result %s (%v); want %d done, none failed", bj.id, bj.killed.Load(), ti.Result, err, len(bj.sums))
		kl.countWrong()
	}
	kl.mu.Lock()
	var kills []*kill
	for _, k := range kl.kills {
		if _, ok := k.batchRecs[bj.id]; ok {
			kills = append(kills, k)
		}
	}
	kl.mu.Unlock()
	for i := range batchItems {
		rel := fmt.Sprintf("/obj-%03d", i)
		key := bj.prefix + "/dst" + rel
		sum, n, err := s.objectSum(key)
		bad := err != nil || sum != bj.sums[rel] || n != bj.sizes[rel]
		if bad {
			s.t.Errorf("batch %s: %s differs from its source (%d bytes, want %d; err %v)", bj.id, key, n, bj.sizes[rel], err)
		}
		kl.count(1, bad, 0, n)
		kl.writesMu.Lock()
		ws := slices.Clone(kl.writes[key])
		delete(kl.writes, key)
		kl.writesMu.Unlock()
		for _, k := range kills {
			if bitSet(k.batchRecs[bj.id], i) && slices.ContainsFunc(ws, func(at time.Time) bool { return at.After(k.at.Add(sentBeforeKill)) }) {
				s.t.Errorf("batch %s: item %d (%s) was recorded as done at kill %d and written again after it", bj.id, i, key, k.n)
				kl.countRewrite(false)
			}
		}
		if len(ws) > 1 {
			inFlight, unrecorded := false, false
			for _, k := range kills {
				l := k.batchLogs[bj.id]
				if bitSet(k.batchRecs[bj.id], i) || !ws[0].Before(k.at.Add(sentBeforeKill)) || l.recorded[i] {
					continue
				}
				if l.done[i] {
					unrecorded = true
				} else {
					inFlight = true
				}
			}
			if !inFlight && !unrecorded {
				var at []string
				for _, w := range ws {
					at = append(at, w.Sub(kl.start).Round(time.Millisecond).String())
				}
				s.t.Errorf("batch %s: item %d (%s) was written %d times (at %s), but no kill of a worker running the batch left it out of the record (in flight, or logged done after the last write of the record); the batch's story:\n%s",
					bj.id, i, key, len(ws), strings.Join(at, ", "), kl.storyOfTask(bj.id))
			}
			kl.countRewrite(inFlight || unrecorded)
			if unrecorded && !inFlight {
				kl.mu.Lock()
				kl.rewritesUnrecorded++
				kl.mu.Unlock()
			}
		}
		s.remove(key)
		s.remove(bj.prefix + "/src" + rel)
	}
}

// sentBeforeKill is how long after a SIGKILL the proxy may still receive a
// request the killed worker sent before it: the kernel delivers what is in
// the dead process's socket buffers (a PUT seen 0.2 ms after the kill, sent
// by the killed worker, was once taken for a second writer).
const sentBeforeKill = time.Second

// bitSet reports whether bit i of a Redis bitmap is set (SETBIT numbers
// bits from the most significant of the first byte).
func bitSet(bitmap []byte, i int) bool {
	return i/8 < len(bitmap) && bitmap[i/8]&(0x80>>(i%8)) != 0
}

func (kl *killLoop) countWrong() {
	kl.mu.Lock()
	kl.countsWrong++
	kl.mu.Unlock()
}

func (kl *killLoop) countRewrite(inFlight bool) {
	kl.mu.Lock()
	kl.rewrites++
	if !inFlight {
		kl.badRewrites++
	}
	kl.mu.Unlock()
}

func (kl *killLoop) count(objects int, corrupt bool, deleteWrong int, bytes int64) {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	kl.objects += objects
	if corrupt {
		kl.corrupt++
	}
	kl.deleteWrong += deleteWrong
	kl.bytes += bytes
}

// remove deletes an object of the test bucket, ignoring errors.
func (s *suite) remove(key string) {
	_, _ = s.sc.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
}

// mpu is a multipart upload on the server.
type mpu struct {
	key, id   string
	initiated time.Time
}

func (u mpu) String() string {
	return fmt.Sprintf("key %s id %s initiated %v", u.key, u.id, u.initiated)
}

// listUploads lists the multipart uploads in the test bucket.
func (s *suite) listUploads() []mpu {
	s.t.Helper()
	out, err := s.sc.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &s.bucket})
	if err != nil {
		s.t.Fatal(err)
	}
	var ups []mpu
	for _, u := range out.Uploads {
		ups = append(ups, mpu{aws.ToString(u.Key), aws.ToString(u.UploadId), aws.ToTime(u.Initiated)})
	}
	return ups
}

// percentile is the nearest-rank p-th percentile of ds (0 when empty).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func fmtD(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// storyOf returns the worker log lines of the task writing key, with the
// kills, in time order: what happened to an upload left on the server.
func (kl *killLoop) storyOf(key string) string {
	ctx := context.Background()
	id := ""
	iter := kl.s.rdb.Scan(ctx, 0, "ferry:progress:{*", 1000).Iterator()
	for iter.Next(ctx) {
		if strings.HasSuffix(kl.s.rdb.HGet(ctx, iter.Val(), "dest").Val(), "/"+key) {
			id = strings.TrimSuffix(strings.TrimPrefix(iter.Val(), "ferry:progress:{"), "}")
		}
	}
	if id == "" {
		return "(no progress names " + key + ")"
	}
	return kl.storyOfTask(id)
}

// storyOfTask returns the worker log lines naming task id, with the kills,
// in time order.
func (kl *killLoop) storyOfTask(id string) string {
	type line struct {
		at   float64
		text string
	}
	var lines []line
	logs, _ := filepath.Glob(filepath.Join(kl.s.logDir, "*.log"))
	for _, p := range logs {
		b, _ := os.ReadFile(p)
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.Contains(l, id) {
				continue
			}
			var e struct {
				TS float64 `json:"ts"`
			}
			_ = json.Unmarshal([]byte(l), &e)
			lines = append(lines, line{e.TS, filepath.Base(p) + " " + l})
		}
	}
	for _, k := range kl.kills {
		lines = append(lines, line{float64(k.at.UnixNano()) / 1e9, fmt.Sprintf("KILL %d of %s (%s)", k.n, k.victim, k.what)})
	}
	slices.SortFunc(lines, func(a, b line) int {
		if a.at < b.at {
			return -1
		}
		if a.at > b.at {
			return 1
		}
		return 0
	})
	var out []string
	first, last := -1, -1
	for i, l := range lines {
		if !strings.HasPrefix(l.text, "KILL") {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	for i, l := range lines {
		if i >= first-1 && i <= last+1 {
			out = append(out, fmt.Sprintf("  %.3f %s", l.at, l.text))
		}
	}
	return "task " + id + "\n" + strings.Join(out, "\n")
}
