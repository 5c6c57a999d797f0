package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// bundle is what a Redis-backed test needs.
type bundle struct {
	client *tasks.Client
	rdb    *redis.Client
	queue  string
}

func setup(t *testing.T) bundle {
	t.Helper()
	rdb := testenv.RedisClient(t)
	c := tasks.NewClient(rdb)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return bundle{client: c, rdb: rdb, queue: testenv.UniqueName("q")}
}

func uploadTask(t *testing.T, size int64, opts ...asynq.Option) *asynq.Task {
	t.Helper()
	task, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: "/data/big.bin"}, Dest: s3Dst, Size: size}, opts...)
	if err != nil {
		t.Fatalf("NewUploadTask: %v", err)
	}
	return task
}

func TestEnqueueDefaultsAndOverrides(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		desc string
		task *asynq.Task
		opts []asynq.Option
		want [3]any // MaxRetry, Retention, Timeout
	}{
		{desc: "upload defaults", task: uploadTask(t, 10<<30), want: [3]any{25, 24 * time.Hour, 2560*time.Second + 5*time.Minute}},
		{desc: "option on the task wins", task: uploadTask(t, 0, asynq.MaxRetry(3)), want: [3]any{3, 24 * time.Hour, time.Hour}},
		{desc: "option on enqueue wins", task: uploadTask(t, 0), opts: []asynq.Option{asynq.Timeout(time.Minute), asynq.Retention(time.Hour)}, want: [3]any{25, time.Hour, time.Minute}},
		{desc: "janitor", task: tasks.NewJanitorTask(), want: [3]any{10, 24 * time.Hour, time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			info, err := b.client.Enqueue(t.Context(), tc.task, append([]asynq.Option{asynq.Queue(b.queue)}, tc.opts...)...)
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			got := [3]any{info.MaxRetry, info.Retention, info.Timeout}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("options mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnqueueTaskIDConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	src := tasks.Location{Path: "/data/" + testenv.UniqueName("f")}
	p := tasks.UploadPayload{Source: src, Dest: s3Dst}
	id := tasks.TaskID(tasks.TypeUpload, src, s3Dst)
	task, err := tasks.NewUploadTask(p, asynq.TaskID(id), asynq.Queue(b.queue))
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.client.Enqueue(ctx, task)
	if err != nil {
		t.Fatalf("first Enqueue: %v", err)
	}
	if info.ID != id {
		t.Errorf("enqueued id %q, want %q", info.ID, id)
	}
	_, err = b.client.Enqueue(ctx, task)
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Fatalf("second Enqueue error = %v, want asynq.ErrTaskIDConflict", err)
	}
}

func TestProgressRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	started := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	tests := []struct {
		desc string
		p    tasks.Progress
	}{
		{desc: "active multipart", p: tasks.Progress{
			TaskID: testenv.UniqueName("t"), Type: tasks.TypeUpload, State: tasks.StateActive,
			BytesDone: 40 << 20, BytesTotal: 100 << 20, PartsDone: 5, PartsTotal: 13, ResumedFrom: 16 << 20,
			Rate: 1.5e8, StartedAt: started, UpdatedAt: started.Add(time.Second),
			Source: "/data/big.bin", Dest: "s3://dst-bucket/out/big.bin",
		}},
		{desc: "failed with error", p: tasks.Progress{
			TaskID: testenv.UniqueName("t"), Type: tasks.TypeCopy, State: tasks.StateFailed,
			Error: "AccessDenied: no", UpdatedAt: started,
		}},
		{desc: "migrate counters", p: tasks.Progress{
			TaskID: testenv.UniqueName("t"), Type: tasks.TypeMigrate, State: tasks.StateActive,
			Counters: map[string]int64{"copied": 10, "skipped": 3}, UpdatedAt: started,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if err := tasks.PublishProgress(ctx, b.rdb, tc.p, time.Minute); err != nil {
				t.Fatalf("PublishProgress: %v", err)
			}
			got, err := b.client.Progress(ctx, tc.p.TaskID)
			if err != nil {
				t.Fatalf("Progress: %v", err)
			}
			if diff := cmp.Diff(tc.p, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
			ttl := b.rdb.TTL(ctx, tasks.ProgressKey(tc.p.TaskID)).Val()
			wantLong := !tc.p.State.Terminal()
			if (ttl > time.Hour) != wantLong || ttl <= 0 {
				t.Errorf("TTL %v, want long safety expiry = %v", ttl, wantLong)
			}
		})
	}
}

func TestParseProgressErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		h    map[string]string
	}{
		{desc: "no state", h: map[string]string{"bytes_done": "1"}},
		{desc: "bad int", h: map[string]string{"state": "active", "bytes_done": "x"}},
		{desc: "bad time", h: map[string]string{"state": "active", "updated_at": "yesterday"}},
		{desc: "bad counters", h: map[string]string{"state": "active", "counters": "{"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if _, err := tasks.ParseProgress("id", tc.h); err == nil {
				t.Errorf("ParseProgress(%v) = nil error", tc.h)
			}
		})
	}
}

func TestProgressFallsBackToAsynq(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	info, err := b.client.Enqueue(ctx, uploadTask(t, 1000), asynq.Queue(b.queue))
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.client.Progress(ctx, info.ID)
	if err != nil {
		t.Fatalf("Progress: %v", err)
	}
	want := tasks.Progress{TaskID: info.ID, Type: tasks.TypeUpload, State: tasks.StatePending,
		BytesTotal: 1000, Source: "/data/big.bin", Dest: s3Dst.String()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Progress mismatch (-want +got):\n%s", diff)
	}

	_, err = b.client.Progress(ctx, testenv.UniqueName("nobody"))
	if !errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("Progress of an unknown id: error = %v, want ErrNotFound", err)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	base := time.Now().UTC().Truncate(time.Millisecond)
	id := testenv.UniqueName("t")
	step := func(i int, s tasks.State, done int64) tasks.Progress {
		return tasks.Progress{TaskID: id, Type: tasks.TypeUpload, State: s, BytesDone: done, BytesTotal: 300,
			StartedAt: base, UpdatedAt: base.Add(time.Duration(i) * time.Second)}
	}
	updates := []tasks.Progress{
		step(0, tasks.StateActive, 100), // before Watch: must come first
		step(1, tasks.StateActive, 200),
		step(2, tasks.StateCompleted, 300),
	}
	if err := tasks.PublishProgress(ctx, b.rdb, updates[0], time.Minute); err != nil {
		t.Fatal(err)
	}
	ch, err := b.client.Watch(ctx, id)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var got []tasks.Progress
	for i, p := range updates[1:] {
		// An update for another id is filtered out.
		if err := tasks.PublishProgress(ctx, b.rdb, tasks.Progress{TaskID: testenv.UniqueName("other"), State: tasks.StateActive}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			got = append(got, <-ch) // the last value, read before this update
		}
		if err := tasks.PublishProgress(ctx, b.rdb, p, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for p := range ch {
		got = append(got, p)
	}
	if ctx.Err() != nil {
		t.Fatalf("Watch did not close at the terminal state: %v", ctx.Err())
	}
	if diff := cmp.Diff(updates, got); diff != "" {
		t.Errorf("Watch mismatch (-want +got):\n%s", diff)
	}
}

func TestWatchClosesOnContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := b.client.Watch(ctx, testenv.UniqueName("never"))
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("Watch sent a value for an unknown id")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch channel not closed after cancel")
	}
}

func TestCancelPending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	info, err := b.client.Enqueue(ctx, uploadTask(t, 0), asynq.Queue(b.queue))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tasks.Cancelled(ctx, b.rdb, info.ID); err != nil || ok {
		t.Fatalf("Cancelled before Cancel = %v, %v; want false, nil", ok, err)
	}
	if err := b.client.Cancel(ctx, info.ID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	now, err := b.client.Inspector().GetTaskInfo(b.queue, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if now.State != asynq.TaskStateArchived {
		t.Errorf("state after Cancel = %v, want archived", now.State)
	}
	if ok, err := tasks.Cancelled(ctx, b.rdb, info.ID); err != nil || !ok {
		t.Errorf("Cancelled after Cancel = %v, %v; want true, nil", ok, err)
	}
	p, err := b.client.Progress(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]any{tasks.StateCancelled, "cancelled by user"}, []any{p.State, p.Error}); diff != "" {
		t.Errorf("progress after Cancel mismatch (-want +got):\n%s", diff)
	}
	if err := b.client.Cancel(ctx, info.ID); !errors.Is(err, tasks.ErrFinished) {
		t.Errorf("second Cancel error = %v, want ErrFinished", err)
	}
	if err := b.client.Cancel(ctx, testenv.UniqueName("nobody")); !errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("Cancel of an unknown id: error = %v, want ErrNotFound", err)
	}
}

func TestEnqueueClearsOldCancelFlag(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	id := testenv.UniqueName("ferry")
	if err := b.rdb.Set(ctx, tasks.CancelKey(id), "1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Enqueue(ctx, uploadTask(t, 0), asynq.Queue(b.queue), asynq.TaskID(id)); err != nil {
		t.Fatal(err)
	}
	if ok, err := tasks.Cancelled(ctx, b.rdb, id); err != nil || ok {
		t.Errorf("Cancelled after re-enqueue = %v, %v; want false, nil", ok, err)
	}
}

func TestWatchSeveral(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	done := tasks.Progress{TaskID: testenv.UniqueName("t"), State: tasks.StateCompleted, UpdatedAt: now}
	if err := tasks.PublishProgress(ctx, b.rdb, done, time.Minute); err != nil {
		t.Fatal(err)
	}
	later := testenv.UniqueName("t") // unknown when Watch starts
	ch, err := b.client.Watch(ctx, done.TaskID, later, done.TaskID)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	first := <-ch
	stale := tasks.Progress{TaskID: later, State: tasks.StateActive, UpdatedAt: now.Add(-time.Hour)}
	final := tasks.Progress{TaskID: later, State: tasks.StateFailed, Error: "NoSuchBucket", UpdatedAt: now}
	for _, p := range []tasks.Progress{final, stale} {
		if err := tasks.PublishProgress(ctx, b.rdb, p, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	got := []tasks.Progress{first}
	for p := range ch {
		got = append(got, p)
	}
	if ctx.Err() != nil {
		t.Fatalf("Watch did not close when every id was terminal: %v", ctx.Err())
	}
	if diff := cmp.Diff([]tasks.Progress{done, final}, got); diff != "" {
		t.Errorf("Watch mismatch (-want +got):\n%s", diff)
	}
}

// TestWatchRepairsMissedUpdates: an update written to the progress hash but
// never received on the channel (published while the subscription was
// reconnecting after a Redis failover) still reaches the watcher, from the
// periodic re-read of the hashes.
func TestWatchRepairsMissedUpdates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	id := testenv.UniqueName("t")
	now := time.Now().UTC().Truncate(time.Millisecond)
	active := tasks.Progress{TaskID: id, Type: tasks.TypeUpload, State: tasks.StateActive, StartedAt: now, UpdatedAt: now}
	if err := tasks.PublishProgress(ctx, b.rdb, active, time.Minute); err != nil {
		t.Fatal(err)
	}
	ch, err := b.client.Watch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if p := <-ch; p.State != tasks.StateActive {
		t.Fatalf("first value %+v, want the active state", p)
	}
	// The hash alone, no message: what a subscriber misses during a failover.
	done := active
	done.State, done.UpdatedAt = tasks.StateCompleted, now.Add(time.Second)
	if err := b.rdb.HSet(ctx, tasks.ProgressKey(id), done.Fields()).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case p, ok := <-ch:
		if !ok || p.State != tasks.StateCompleted {
			t.Fatalf("got %+v (open %v), want the completed state from the hash", p, ok)
		}
	case <-ctx.Done():
		t.Fatal("Watch never delivered the update it missed on the channel")
	}
}
