package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// migrateRun enqueues a migration of srcPrefix in the bundle's bucket to
// the same prefix in dstBucket, waits for it and returns its report and
// final state.
func migrateRun(t *testing.T, b *bundle, dstBucket string, p tasks.MigratePayload) (tasks.Progress, worker.MigrateReport) {
	t.Helper()
	p.Source.Bucket, p.Dest.Bucket = b.bucket, dstBucket
	id := b.enq(t)(tasks.NewMigrateTask(p))
	prog := b.wait(t, id, 3*time.Minute)
	return prog, migrateReport(t, b, id)
}

// sameObjects checks that every key under prefix in src is at dst with the
// same bytes, and that dst holds nothing else under prefix.
func sameObjects(t *testing.T, src, dst *storage.S3, prefix string) {
	t.Helper()
	ctx := context.Background()
	want := map[string][]byte{}
	for f, err := range src.List(ctx, prefix, 0) {
		if err != nil {
			t.Fatal(err)
		}
		b, err := src.GetBytes(ctx, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		want[f.Key] = b
	}
	n := 0
	for f, err := range dst.List(ctx, prefix, 0) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		b, err := dst.GetBytes(ctx, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		if w, ok := want[f.Key]; !ok || !bytes.Equal(b, w) {
			t.Errorf("destination %s: %q, source has %q (present %v)", f.Key, b, w, ok)
		}
	}
	if n != len(want) {
		t.Errorf("destination holds %d objects under %s, source %d", n, prefix, len(want))
	}
}

// TestMigrateRerunTellsTheTruth is issue 17's first case: within the
// retention of an earlier run's copy tasks, a re-run used to find its
// copies' ids taken by the earlier, finished copies and count them as
// copied without copying anything. Whatever happened between the runs
// (destination wiped, source reverted to an earlier version, destination
// objects changed or deleted), a re-run makes the destination equal the
// source and its counts say what it did.
func TestMigrateRerunTellsTheTruth(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	const n = 30
	for i := range n {
		if _, err := src.PutBytes(ctx, fmt.Sprintf("many/obj-%03d", i), randomBytes(100+i), nil); err != nil {
			t.Fatal(err)
		}
	}
	many := tasks.MigratePayload{Source: tasks.Location{Key: "many/"}, Dest: tasks.Location{Key: "many/"}}
	if prog, rep := migrateRun(t, b, dstBucket, many); prog.State != tasks.StateCompleted || rep.Copied != n {
		t.Fatalf("first run: %s %+v", prog.State, rep)
	}

	t.Run("destination wiped", func(t *testing.T) {
		id := b.enq(t)(tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc("", dstBucket, "many/"), Recursive: true}))
		if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("recursive delete: %+v", p)
		}
		prog, rep := migrateRun(t, b, dstBucket, many)
		if prog.State != tasks.StateCompleted || rep.Copied != n || rep.Skipped != 0 || rep.Failed != 0 {
			t.Errorf("re-run after the destination was wiped: %s %+v; want %d copied", prog.State, rep, n)
		}
		sameObjects(t, src, dst, "many/")
	})

	t.Run("destination tampered", func(t *testing.T) {
		if _, err := dst.PutBytes(ctx, "many/obj-003", []byte("changed at the destination"), nil); err != nil {
			t.Fatal(err)
		}
		if err := dst.Delete(ctx, "many/obj-007"); err != nil {
			t.Fatal(err)
		}
		prog, rep := migrateRun(t, b, dstBucket, many)
		if prog.State != tasks.StateCompleted || rep.Copied != 2 || rep.Skipped != n-2 || rep.Failed != 0 {
			t.Errorf("re-run after a changed and a deleted destination object: %s %+v; want 2 copied, %d skipped", prog.State, rep, n-2)
		}
		sameObjects(t, src, dst, "many/")
	})

	t.Run("source reverted", func(t *testing.T) {
		cfg := tasks.MigratePayload{Source: tasks.Location{Key: "cfg/"}, Dest: tasks.Location{Key: "cfg/"}}
		for i, v := range []string{"version=1", "version=2", "version=1"} {
			if _, err := src.PutBytes(ctx, "cfg/app.conf", []byte(v), nil); err != nil {
				t.Fatal(err)
			}
			prog, rep := migrateRun(t, b, dstBucket, cfg)
			if prog.State != tasks.StateCompleted || rep.Copied != 1 || rep.Skipped != 0 {
				t.Errorf("run %d (%s at the source): %s %+v; want 1 copied", i+1, v, prog.State, rep)
			}
			if got, err := dst.GetBytes(ctx, "cfg/app.conf"); err != nil || string(got) != v {
				t.Errorf("run %d: the destination holds %q (%v), want %q", i+1, got, err, v)
			}
		}
	})
}

// TestMigrateDiffByListing (issue 12.1): a migration decides from the
// listings of both sides; a new key, or one whose size changed, never costs
// a HEAD, nor does an unchanged one (same size and ETag, source not newer).
// Only an object of the same size at both ends with another ETag is HEADed
// (the destination: ferry's record of its source). With CheckHeaders every
// object of the same size is: the destination, then — when the bytes are
// the same — the source, for the headers a listing lacks.
func TestMigrateDiffByListing(t *testing.T) {
	t.Parallel()
	var proxy *testenv.CountingProxy
	b := setup(t, func(c *worker.Config) { proxy = requestCountingProfile(t, c, "counted") })
	headsSent := func() []string { _, heads := proxy.Take(); return heads }
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	const n = 200
	for i := range n {
		if _, err := src.PutBytes(ctx, fmt.Sprintf("d/obj-%03d", i), []byte(fmt.Sprintf("object %03d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	p := tasks.MigratePayload{Source: tasks.Location{Profile: "counted", Key: "d/"}, Dest: tasks.Location{Profile: "counted", Key: "d/"}}
	dry := p
	dry.DryRun = true

	headsSent()
	if prog, rep := migrateRun(t, b, dstBucket, dry); prog.State != tasks.StateCompleted || rep.WouldCopy != n {
		t.Fatalf("dry run of %d new keys: %s %+v", n, prog.State, rep)
	}
	if got := headsSent(); len(got) != 0 {
		t.Errorf("comparing %d new keys sent %d HEADs (%v...), want none", n, len(got), got[:min(len(got), 3)])
	}
	if prog, rep := migrateRun(t, b, dstBucket, p); prog.State != tasks.StateCompleted || rep.Copied != n {
		t.Fatalf("first run: %s %+v", prog.State, rep)
	}

	// A new key, a resized object and one rewritten with other bytes of
	// the same size.
	for k, v := range map[string]string{"d/obj-new": "new", "d/obj-010": "resized object 010", "d/obj-020": "object XXX"} {
		if _, err := src.PutBytes(ctx, k, []byte(v), nil); err != nil {
			t.Fatal(err)
		}
	}
	byPath := func(sent []string) map[string]int {
		got := map[string]int{}
		for _, h := range sent {
			got[h]++
		}
		return got
	}
	headsSent()
	prog, rep := migrateRun(t, b, dstBucket, dry)
	if prog.State != tasks.StateCompleted || rep.WouldCopy != 3 || rep.Skipped != n-2 {
		t.Errorf("dry run after changes: %s %+v; want 3 to copy, %d identical", prog.State, rep, n-2)
	}
	sent := headsSent()
	if diff := cmp.Diff(map[string]int{"/" + dstBucket + "/d/obj-020": 1}, byPath(sent)); diff != "" {
		t.Errorf("HEADs by path (-want +got):\n%s", diff)
	}
	t.Logf("comparing %d objects (%d unchanged, 3 changed or new) sent %d HEADs", n+1, n-2, len(sent))

	checked := dry
	checked.CheckHeaders = true
	prog, rep = migrateRun(t, b, dstBucket, checked)
	if prog.State != tasks.StateCompleted || rep.WouldCopy != 3 || rep.Skipped != n-2 {
		t.Errorf("dry run with CheckHeaders: %s %+v; want 3 to copy, %d identical", prog.State, rep, n-2)
	}
	want := map[string]int{"/" + dstBucket + "/d/obj-020": 1}
	for i := range n {
		if i != 10 && i != 20 {
			want[fmt.Sprintf("/%s/d/obj-%03d", b.bucket, i)]++
			want[fmt.Sprintf("/%s/d/obj-%03d", dstBucket, i)]++
		}
	}
	if diff := cmp.Diff(want, byPath(headsSent())); diff != "" {
		t.Errorf("HEADs by path with CheckHeaders (-want +got):\n%s", diff)
	}
}
