package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
)

// The key layout is a contract with operators and other tools: spelled out
// here on purpose rather than taken from keys.go.
const indexKey = "ferry:ckpt:index"

func hashKey(taskID string) string { return "ferry:ckpt:{" + taskID + "}" }

type bundle struct {
	ctx   context.Context
	rdb   *redis.Client
	store *checkpoint.Store
}

func setup(t *testing.T, opts checkpoint.Options) bundle {
	t.Helper()
	rdb := testenv.RedisClient(t)
	return bundle{ctx: t.Context(), rdb: rdb, store: checkpoint.New(rdb, opts)}
}

var created = time.Date(2026, 3, 1, 12, 30, 45, 123456789, time.UTC)

func knownPlan() checkpoint.Plan {
	return checkpoint.Plan{
		UploadID:    "upload-1",
		Profile:     "r2",
		Bucket:      "bkt",
		Key:         "dir/file.bin",
		PartSize:    8 << 20,
		PartCount:   5,
		TotalSize:   5*(8<<20) - 100,
		Fingerprint: "file:41943040:1700000000",
		CreatedAt:   created,
	}
}

func mustCreate(t *testing.T, b bundle, taskID string, p checkpoint.Plan) {
	t.Helper()
	if err := b.store.Create(b.ctx, taskID, p); err != nil {
		t.Fatalf("Create(%q): %v", taskID, err)
	}
}

func mustLoad(t *testing.T, b bundle, taskID string) checkpoint.Checkpoint {
	t.Helper()
	c, err := b.store.Load(b.ctx, taskID)
	if err != nil {
		t.Fatalf("Load(%q): %v", taskID, err)
	}
	return c
}

func TestCreateLoad(t *testing.T) {
	t.Parallel()
	unknown := knownPlan()
	unknown.PartCount, unknown.TotalSize = 0, -1
	unknown.Profile, unknown.Fingerprint = "", ""
	inZone := knownPlan()
	inZone.CreatedAt = created.In(time.FixedZone("CET", 3600))
	withSum := knownPlan()
	withSum.Checksum = "yZRlqg=="
	withMode := knownPlan()
	withMode.ChecksumMode = "crc32c"

	tests := []struct {
		desc string
		plan checkpoint.Plan
	}{
		{desc: "known size", plan: knownPlan()},
		{desc: "unknown size, empty profile and fingerprint", plan: unknown},
		{desc: "created at in another zone", plan: inZone},
		{desc: "with the object's checksum", plan: withSum},
		// Without one (every case above) the field is not written, as by
		// an older ferry, and loads empty: unknown.
		{desc: "with its checksum mode", plan: withMode},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t, checkpoint.Options{})
			id := testenv.UniqueName("task")
			mustCreate(t, b, id, tc.plan)
			got := mustLoad(t, b, id)
			want := checkpoint.Checkpoint{TaskID: id, Plan: tc.plan}
			// cmp uses time.Time.Equal: the zone does not matter.
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Load mismatch (-want +got):\n%s", diff)
			}
			if got.BytesDone() != 0 {
				t.Errorf("BytesDone = %d, want 0", got.BytesDone())
			}
		})
	}
}

func TestCreateSetsCreatedAt(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("task")
	p := knownPlan()
	p.CreatedAt = time.Time{}
	before := time.Now()
	mustCreate(t, b, id, p)
	got := mustLoad(t, b, id).Plan.CreatedAt
	if got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("CreatedAt = %v, want about %v", got, before)
	}
}

func TestCreateInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		taskID string
		edit   func(*checkpoint.Plan)
	}{
		{desc: "empty task id", edit: func(*checkpoint.Plan) {}},
		{desc: "empty upload id", taskID: "x", edit: func(p *checkpoint.Plan) { p.UploadID = "" }},
		{desc: "empty bucket", taskID: "x", edit: func(p *checkpoint.Plan) { p.Bucket = "" }},
		{desc: "empty key", taskID: "x", edit: func(p *checkpoint.Plan) { p.Key = "" }},
		{desc: "zero part size", taskID: "x", edit: func(p *checkpoint.Plan) { p.PartSize = 0 }},
		{desc: "negative part count", taskID: "x", edit: func(p *checkpoint.Plan) { p.PartCount = -1 }},
		{desc: "too many parts", taskID: "x", edit: func(p *checkpoint.Plan) { p.PartCount = checkpoint.MaxParts + 1 }},
		{desc: "total size below -1", taskID: "x", edit: func(p *checkpoint.Plan) { p.TotalSize = -2 }},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t, checkpoint.Options{})
			id := tc.taskID
			if id != "" {
				id = testenv.UniqueName("task")
			}
			p := knownPlan()
			tc.edit(&p)
			err := b.store.Create(b.ctx, id, p)
			if !errors.Is(err, checkpoint.ErrInvalid) {
				t.Fatalf("Create error = %v, want ErrInvalid", err)
			}
			if n := b.rdb.Exists(b.ctx, hashKey(id)).Val(); n != 0 {
				t.Errorf("EXISTS = %d after a rejected Create, want 0", n)
			}
		})
	}
}

func TestCreateTwice(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("task")
	first := knownPlan()
	mustCreate(t, b, id, first)
	if err := b.store.RecordPart(b.ctx, id, first.UploadID, checkpoint.Part{Number: 1, ETag: `"e1"`, Size: 10}); err != nil {
		t.Fatal(err)
	}

	second := knownPlan()
	second.UploadID, second.PartSize, second.Fingerprint = "upload-2", 16<<20, "other"
	if err := b.store.Create(b.ctx, id, second); !errors.Is(err, checkpoint.ErrExists) {
		t.Fatalf("second Create error = %v, want ErrExists", err)
	}
	want := checkpoint.Checkpoint{TaskID: id, Plan: first, Parts: []checkpoint.Part{{Number: 1, ETag: `"e1"`, Size: 10}}}
	if diff := cmp.Diff(want, mustLoad(t, b, id)); diff != "" {
		t.Errorf("first plan changed (-want +got):\n%s", diff)
	}
}

func TestLoadNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	_, err := b.store.Load(b.ctx, testenv.UniqueName("task"))
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load error = %v, want ErrNotFound", err)
	}
}

func TestRecordPart(t *testing.T) {
	t.Parallel()
	unknown := knownPlan()
	unknown.PartCount, unknown.TotalSize = 0, -1

	tests := []struct {
		desc   string
		plan   checkpoint.Plan
		record []checkpoint.Part
		want   []checkpoint.Part
	}{
		{
			desc:   "in order",
			plan:   knownPlan(),
			record: []checkpoint.Part{{Number: 1, ETag: `"a"`, Size: 8}, {Number: 2, ETag: `"b"`, Size: 8}, {Number: 3, ETag: `"c"`, Size: 3}},
			want:   []checkpoint.Part{{Number: 1, ETag: `"a"`, Size: 8}, {Number: 2, ETag: `"b"`, Size: 8}, {Number: 3, ETag: `"c"`, Size: 3}},
		},
		{
			desc:   "out of order",
			plan:   knownPlan(),
			record: []checkpoint.Part{{Number: 5, ETag: `"e"`, Size: 4}, {Number: 2, ETag: `"b"`, Size: 8}, {Number: 4, ETag: `"d"`, Size: 8}, {Number: 1, ETag: `"a"`, Size: 8}},
			want:   []checkpoint.Part{{Number: 1, ETag: `"a"`, Size: 8}, {Number: 2, ETag: `"b"`, Size: 8}, {Number: 4, ETag: `"d"`, Size: 8}, {Number: 5, ETag: `"e"`, Size: 4}},
		},
		{
			desc:   "same part twice: deduped, last etag wins",
			plan:   knownPlan(),
			record: []checkpoint.Part{{Number: 3, ETag: `"old"`, Size: 8}, {Number: 1, ETag: `"a"`, Size: 8}, {Number: 3, ETag: `"new"`, Size: 7}},
			want:   []checkpoint.Part{{Number: 1, ETag: `"a"`, Size: 8}, {Number: 3, ETag: `"new"`, Size: 7}},
		},
		{
			desc:   "etag containing the separator",
			plan:   knownPlan(),
			record: []checkpoint.Part{{Number: 1, ETag: `a|b|c`, Size: 8}},
			want:   []checkpoint.Part{{Number: 1, ETag: `a|b|c`, Size: 8}},
		},
		{
			desc: "with checksums, also next to an etag containing the separator",
			plan: knownPlan(),
			record: []checkpoint.Part{{Number: 1, ETag: `"a"`, Size: 8, Checksum: "yZRlqg=="},
				{Number: 2, ETag: `a|b|8`, Size: 8, Checksum: "AAAAAA=="}, {Number: 3, ETag: `"c"`, Size: 3}},
			want: []checkpoint.Part{{Number: 1, ETag: `"a"`, Size: 8, Checksum: "yZRlqg=="},
				{Number: 2, ETag: `a|b|8`, Size: 8, Checksum: "AAAAAA=="}, {Number: 3, ETag: `"c"`, Size: 3}},
		},
		{
			desc:   "unknown size: any number up to MaxParts",
			plan:   unknown,
			record: []checkpoint.Part{{Number: checkpoint.MaxParts, ETag: `"z"`, Size: 1}, {Number: 7, ETag: `"g"`, Size: 8}},
			want:   []checkpoint.Part{{Number: 7, ETag: `"g"`, Size: 8}, {Number: checkpoint.MaxParts, ETag: `"z"`, Size: 1}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t, checkpoint.Options{})
			id := testenv.UniqueName("task")
			mustCreate(t, b, id, tc.plan)
			for _, p := range tc.record {
				if err := b.store.RecordPart(b.ctx, id, tc.plan.UploadID, p); err != nil {
					t.Fatalf("RecordPart(%+v): %v", p, err)
				}
			}
			got := mustLoad(t, b, id)
			want := checkpoint.Checkpoint{TaskID: id, Plan: tc.plan, Parts: tc.want}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Load mismatch (-want +got):\n%s", diff)
			}
			var done int64
			for _, p := range tc.want {
				done += p.Size
			}
			if got.BytesDone() != done {
				t.Errorf("BytesDone = %d, want %d", got.BytesDone(), done)
			}
		})
	}
}

func TestRecordPartRejected(t *testing.T) {
	t.Parallel()
	unknown := knownPlan()
	unknown.PartCount, unknown.TotalSize = 0, -1

	tests := []struct {
		desc     string
		plan     *checkpoint.Plan // nil: no checkpoint is created
		deleted  bool             // Delete after Create
		uploadID string
		part     checkpoint.Part
		want     error
	}{
		{desc: "wrong upload id", plan: ptr(knownPlan()), uploadID: "upload-0", part: checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8}, want: checkpoint.ErrPlanMismatch},
		{desc: "part zero", plan: ptr(knownPlan()), uploadID: "upload-1", part: checkpoint.Part{Number: 0, ETag: `"a"`, Size: 8}, want: checkpoint.ErrPlanMismatch},
		{desc: "part above part count", plan: ptr(knownPlan()), uploadID: "upload-1", part: checkpoint.Part{Number: 6, ETag: `"a"`, Size: 8}, want: checkpoint.ErrPlanMismatch},
		{desc: "unknown size, part above MaxParts", plan: &unknown, uploadID: "upload-1", part: checkpoint.Part{Number: checkpoint.MaxParts + 1, ETag: `"a"`, Size: 8}, want: checkpoint.ErrPlanMismatch},
		{desc: "never created", uploadID: "upload-1", part: checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8}, want: checkpoint.ErrNotFound},
		{desc: "after delete", plan: ptr(knownPlan()), deleted: true, uploadID: "upload-1", part: checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8}, want: checkpoint.ErrNotFound},
		{desc: "empty etag", plan: ptr(knownPlan()), uploadID: "upload-1", part: checkpoint.Part{Number: 1, ETag: "", Size: 8}, want: checkpoint.ErrInvalid},
		{desc: "negative size", plan: ptr(knownPlan()), uploadID: "upload-1", part: checkpoint.Part{Number: 1, ETag: `"a"`, Size: -1}, want: checkpoint.ErrInvalid},
		{desc: "empty upload id", plan: ptr(knownPlan()), uploadID: "", part: checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8}, want: checkpoint.ErrInvalid},
		{desc: "checksum containing the separator", plan: ptr(knownPlan()), uploadID: "upload-1", part: checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8, Checksum: "a|b"}, want: checkpoint.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t, checkpoint.Options{})
			id := testenv.UniqueName("task")
			if tc.plan != nil {
				mustCreate(t, b, id, *tc.plan)
			}
			if tc.deleted {
				if err := b.store.Delete(b.ctx, id, tc.plan.UploadID); err != nil {
					t.Fatal(err)
				}
			}
			err := b.store.RecordPart(b.ctx, id, tc.uploadID, tc.part)
			if !errors.Is(err, tc.want) {
				t.Fatalf("RecordPart error = %v, want %v", err, tc.want)
			}
			if tc.plan == nil || tc.deleted {
				// No resurrected hash, no index entry.
				if n := b.rdb.Exists(b.ctx, hashKey(id)).Val(); n != 0 {
					t.Errorf("EXISTS = %d, want 0", n)
				}
				if err := b.rdb.ZScore(b.ctx, indexKey, id).Err(); !errors.Is(err, redis.Nil) {
					t.Errorf("ZSCORE index = %v, want redis.Nil", err)
				}
				return
			}
			want := checkpoint.Checkpoint{TaskID: id, Plan: *tc.plan}
			if diff := cmp.Diff(want, mustLoad(t, b, id)); diff != "" {
				t.Errorf("checkpoint changed by a rejected part (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDelete(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("task")
	mustCreate(t, b, id, knownPlan())
	for i := range 2 { // idempotent
		if err := b.store.Delete(b.ctx, id, knownPlan().UploadID); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if _, err := b.store.Load(b.ctx, id); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Load after Delete error = %v, want ErrNotFound", err)
	}
	if err := b.rdb.ZScore(b.ctx, indexKey, id).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("ZSCORE index after Delete = %v, want redis.Nil", err)
	}
	// A new plan may then be created for the same task.
	mustCreate(t, b, id, knownPlan())
}

// TestDeleteChecksUploadID: run A of a task created a checkpoint for upload
// U1; its lease expired and run B replaced it with upload U2. A's late
// Delete (after its Complete or Abort of U1) must leave U2's checkpoint,
// and its index entry, intact: deleting it would let the janitor abort B's
// live upload and make B's next RecordPart fail.
func TestDeleteChecksUploadID(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("task")
	u1, u2 := knownPlan(), knownPlan()
	u1.UploadID, u2.UploadID = "upload-U1", "upload-U2"

	mustCreate(t, b, id, u1) // run A starts
	// Run B takes over: abandons U1's checkpoint and writes its own.
	if err := b.store.Delete(b.ctx, id, u1.UploadID); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, id, u2)

	// Run A, stale, deletes "its" checkpoint.
	if err := b.store.Delete(b.ctx, id, u1.UploadID); !errors.Is(err, checkpoint.ErrPlanMismatch) {
		t.Errorf("stale Delete(U1) error = %v, want ErrPlanMismatch", err)
	}
	if diff := cmp.Diff(checkpoint.Checkpoint{TaskID: id, Plan: u2}, mustLoad(t, b, id)); diff != "" {
		t.Fatalf("U2's checkpoint after a stale Delete(U1) (-want +got):\n%s", diff)
	}
	if err := b.rdb.ZScore(b.ctx, indexKey, id).Err(); err != nil {
		t.Errorf("ZSCORE index after a stale Delete(U1) = %v, want U2's entry kept", err)
	}
	if err := b.store.RecordPart(b.ctx, id, u2.UploadID, checkpoint.Part{Number: 1, ETag: `"b"`, Size: 8}); err != nil {
		t.Errorf("run B's RecordPart after a stale Delete(U1): %v", err)
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		opts checkpoint.Options
		want time.Duration
	}{
		{desc: "zero means 7 days", opts: checkpoint.Options{}, want: 7 * 24 * time.Hour},
		{desc: "explicit", opts: checkpoint.Options{TTL: time.Hour}, want: time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.opts)
			id := testenv.UniqueName("task")
			p := knownPlan()
			mustCreate(t, b, id, p)
			pttl := b.rdb.PTTL(b.ctx, hashKey(id)).Val()
			if pttl <= tc.want-time.Minute || pttl > tc.want {
				t.Fatalf("PTTL after Create = %v, want about %v", pttl, tc.want)
			}
			// Shorten it by hand: RecordPart must bring it back.
			b.rdb.PExpire(b.ctx, hashKey(id), time.Second)
			if err := b.store.RecordPart(b.ctx, id, p.UploadID, checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8}); err != nil {
				t.Fatal(err)
			}
			pttl = b.rdb.PTTL(b.ctx, hashKey(id)).Val()
			if pttl <= tc.want-time.Minute || pttl > tc.want {
				t.Errorf("PTTL after RecordPart = %v, want about %v (refreshed)", pttl, tc.want)
			}
		})
	}
}

func TestExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{TTL: 200 * time.Millisecond})
	id := testenv.UniqueName("task")
	mustCreate(t, b, id, knownPlan())
	time.Sleep(400 * time.Millisecond)
	if _, err := b.store.Load(b.ctx, id); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("Load after TTL error = %v, want ErrNotFound", err)
	}
	err := b.store.RecordPart(b.ctx, id, "upload-1", checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8})
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("RecordPart after TTL error = %v, want ErrNotFound", err)
	}
}

// listMine calls List and keeps the checkpoints of ids. The index is shared
// with parallel tests, so corrupt checkpoints of other tests are ignored.
func listMine(t *testing.T, b bundle, ids ...string) map[string]checkpoint.Checkpoint {
	t.Helper()
	mine := map[string]bool{}
	for _, id := range ids {
		mine[id] = true
	}
	all, err := b.store.List(b.ctx)
	if err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var ce *checkpoint.CorruptError
			if !errors.As(e, &ce) || mine[ce.TaskID] {
				t.Fatalf("List: %v", e)
			}
		}
	}
	got := map[string]checkpoint.Checkpoint{}
	for _, c := range all {
		if mine[c.TaskID] {
			got[c.TaskID] = c
		}
	}
	return got
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	// Long enough for Create and RecordPart to land inside it under -race
	// with other tests alongside.
	short := setup(t, checkpoint.Options{TTL: 2 * time.Second})
	live := testenv.UniqueName("task")
	expired := testenv.UniqueName("task")
	expiredParts := testenv.UniqueName("task")
	vanished := testenv.UniqueName("task") // hash deleted behind the store's back
	deleted := testenv.UniqueName("task")

	p := knownPlan()
	mustCreate(t, b, live, p)
	if err := b.store.RecordPart(b.ctx, live, p.UploadID, checkpoint.Part{Number: 2, ETag: `"b"`, Size: 8}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, short, expired, p)
	mustCreate(t, short, expiredParts, p)
	if err := short.store.RecordPart(b.ctx, expiredParts, p.UploadID, checkpoint.Part{Number: 1, ETag: `"a"`, Size: 8}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, b, vanished, p)
	b.rdb.Del(b.ctx, hashKey(vanished))
	mustCreate(t, b, deleted, p)
	if err := b.store.Delete(b.ctx, deleted, p.UploadID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)

	all := []string{live, expired, expiredParts, vanished, deleted}
	want := map[string]checkpoint.Checkpoint{
		live: {TaskID: live, Plan: p, Parts: []checkpoint.Part{{Number: 2, ETag: `"b"`, Size: 8}}},
	}
	if diff := cmp.Diff(want, listMine(t, b, all...)); diff != "" {
		t.Errorf("List mismatch (-want +got):\n%s", diff)
	}
	for _, id := range all {
		err := b.rdb.ZScore(b.ctx, indexKey, id).Err()
		if id == live {
			if err != nil {
				t.Errorf("live %s: ZSCORE index = %v, want a score", id, err)
			}
		} else if !errors.Is(err, redis.Nil) {
			t.Errorf("dead %s: ZSCORE index = %v, want pruned (redis.Nil)", id, err)
		}
	}
}

func TestListReportsCorrupt(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	good := testenv.UniqueName("task")
	bad := testenv.UniqueName("task")
	mustCreate(t, b, good, knownPlan())
	mustCreate(t, b, bad, knownPlan())
	b.rdb.HSet(b.ctx, hashKey(bad), "part_size", "lots")
	t.Cleanup(func() { _ = b.store.Delete(context.Background(), bad, knownPlan().UploadID) })

	got, err := b.store.List(b.ctx)
	var ce *checkpoint.CorruptError
	found := false
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if errors.As(e, &ce) && ce.TaskID == bad {
			found = true
			if ce.Field != "part_size" {
				t.Errorf("CorruptError.Field = %q, want part_size", ce.Field)
			}
		}
	}
	if !found {
		t.Errorf("List error = %v, want a CorruptError for %s", err, bad)
	}
	var ids []string
	for _, c := range got {
		if c.TaskID == good || c.TaskID == bad {
			ids = append(ids, c.TaskID)
		}
	}
	if diff := cmp.Diff([]string{good}, ids); diff != "" {
		t.Errorf("List ids (-want +got):\n%s", diff)
	}
}

func TestLoadCorrupt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc  string
		field string
		value *string // nil: the field is deleted
	}{
		{desc: "missing upload id", field: "upload_id"},
		{desc: "missing created at", field: "created_at"},
		{desc: "empty bucket", field: "bucket", value: ptr("")},
		{desc: "part size not a number", field: "part_size", value: ptr("8MiB")},
		{desc: "part size zero", field: "part_size", value: ptr("0")},
		{desc: "part count too big", field: "part_count", value: ptr("10001")},
		{desc: "total size below -1", field: "total_size", value: ptr("-5")},
		{desc: "created at not a time", field: "created_at", value: ptr("yesterday")},
		{desc: "part number not a number", field: "p:x", value: ptr(`"a"|8`)},
		{desc: "part number not canonical", field: "p:01", value: ptr(`"a"|8`)},
		{desc: "part number zero", field: "p:0", value: ptr(`"a"|8`)},
		{desc: "part number above part count", field: "p:6", value: ptr(`"a"|8`)},
		{desc: "part without separator", field: "p:1", value: ptr(`"a"`)},
		{desc: "part without etag", field: "p:1", value: ptr(`|8`)},
		{desc: "part size not a number", field: "p:1", value: ptr(`"a"|big`)},
		{desc: "part size negative", field: "p:1", value: ptr(`"a"|-8`)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			b := setup(t, checkpoint.Options{})
			id := testenv.UniqueName("task")
			mustCreate(t, b, id, knownPlan())
			if tc.value == nil {
				b.rdb.HDel(b.ctx, hashKey(id), tc.field)
			} else {
				b.rdb.HSet(b.ctx, hashKey(id), tc.field, *tc.value)
			}
			_, err := b.store.Load(b.ctx, id)
			var ce *checkpoint.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Load error = %v, want *CorruptError", err)
			}
			if ce.TaskID != id || ce.Field != tc.field {
				t.Errorf("CorruptError names task %q field %q, want %q %q", ce.TaskID, ce.Field, id, tc.field)
			}
			// The stored upload id is what deletes a corrupt checkpoint.
			wantID := knownPlan().UploadID
			if tc.field == "upload_id" {
				wantID = ""
			}
			if ce.UploadID != wantID {
				t.Errorf("CorruptError.UploadID = %q, want %q", ce.UploadID, wantID)
			}
			if err := b.store.Delete(b.ctx, id, ce.UploadID); err != nil {
				t.Fatalf("Delete of the corrupt checkpoint: %v", err)
			}
			if n := b.rdb.Exists(b.ctx, hashKey(id)).Val(); n != 0 {
				t.Errorf("corrupt checkpoint still exists after Delete(%q)", ce.UploadID)
			}
		})
	}
}

func TestRecordPartConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("task")
	p := knownPlan()
	p.PartCount, p.TotalSize = 16, 16*p.PartSize
	mustCreate(t, b, id, p)

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for n := 1; n <= 16; n++ {
		wg.Go(func() {
			// Each part twice, as a retried upload would.
			for try := range 2 {
				part := checkpoint.Part{Number: n, ETag: fmt.Sprintf(`"%d-%d"`, n, try), Size: p.PartSize}
				if err := b.store.RecordPart(b.ctx, id, p.UploadID, part); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	var want []checkpoint.Part
	for n := 1; n <= 16; n++ {
		want = append(want, checkpoint.Part{Number: n, ETag: fmt.Sprintf(`"%d-1"`, n), Size: p.PartSize})
	}
	got := mustLoad(t, b, id)
	if diff := cmp.Diff(want, got.Parts); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
	if got.BytesDone() != p.TotalSize {
		t.Errorf("BytesDone = %d, want %d", got.BytesDone(), p.TotalSize)
	}
}

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("task")
	p := knownPlan()
	mustCreate(t, b, id, p)
	if err := b.store.RecordPart(b.ctx, id, p.UploadID, checkpoint.Part{Number: 3, ETag: `"c"`, Size: 42}); err != nil {
		t.Fatal(err)
	}

	// The hash is named ferry:ckpt:{<id>}: the braces are a Cluster hash tag.
	got := b.rdb.HGetAll(b.ctx, hashKey(id)).Val()
	want := map[string]string{
		"upload_id":   "upload-1",
		"profile":     "r2",
		"bucket":      "bkt",
		"key":         "dir/file.bin",
		"part_size":   "8388608",
		"part_count":  "5",
		"total_size":  "41942940",
		"fingerprint": "file:41943040:1700000000",
		"created_at":  "2026-03-01T12:30:45.123456789Z",
		"p:3":         `"c"|42`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hash %s (-want +got):\n%s", hashKey(id), diff)
	}
	score, err := b.rdb.ZScore(b.ctx, indexKey, id).Result()
	if err != nil {
		t.Fatalf("ZSCORE %s %s: %v", indexKey, id, err)
	}
	if age := time.Since(time.UnixMilli(int64(score))); age < 0 || age > time.Minute {
		t.Errorf("index score is %v old, want the unix ms of the last write", age)
	}
}
