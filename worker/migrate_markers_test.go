package worker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestFolderMarkers is issue 17's third case: zero-byte "dir/" objects, as
// the AWS console and --s3-directory-markers tools make them, are objects
// like any other. A migration copies them as markers (its dry run lists
// them), a re-run finds them identical, --delete-extra deletes an extra
// one, and a recursive delete removes them with the rest. Before, each of
// these failed whole with "invalid key".
func TestFolderMarkers(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	src := b.storage(t)
	dstBucket := b.s3.Bucket(t)
	dst := b.storageOn(t, dstBucket)
	dirHeaders := testenv.ObjectHeaders{"Content-Type": "application/x-directory", "x-amz-meta-made-by": "console"}
	b.s3.PutObject(t, b.bucket, "fm/a.txt", []byte("a"), nil)
	b.s3.PutObject(t, b.bucket, "fm/sub/", nil, dirHeaders)
	b.s3.PutObject(t, b.bucket, "fm/sub/b.txt", []byte("b"), nil)
	b.s3.PutObject(t, b.bucket, "fm/empty/", nil, nil)
	markers := []string{"fm/empty/", "fm/sub/"}
	// At the destination, a marker the source lacks: extra.
	b.s3.PutObject(t, dstBucket, "fm/old/", nil, nil)
	// Older than the migration by more than its clock allowance.
	time.Sleep(testenv.ExtrasSettle)

	fm := tasks.MigratePayload{Source: tasks.Location{Key: "fm/"}, Dest: tasks.Location{Key: "fm/"}}
	dry := fm
	dry.DryRun = true
	prog, rep := migrateRun(t, b, dstBucket, dry)
	if prog.State != tasks.StateCompleted || rep.WouldCopy != 4 || !slices.Contains(rep.Sample, "fm/sub/") || !slices.Contains(rep.Sample, "fm/empty/") {
		t.Fatalf("dry run: %s (%s) %+v; want 4 to copy, the markers among them", prog.State, prog.Error, rep)
	}
	prog, rep = migrateRun(t, b, dstBucket, fm)
	if prog.State != tasks.StateCompleted || rep.Copied != 4 || rep.Failed != 0 {
		t.Fatalf("migration: %s (%s) %+v; want 4 copied", prog.State, prog.Error, rep)
	}
	for _, k := range markers {
		f, err := dst.Info(ctx, k)
		if err != nil || f.Size != 0 {
			t.Errorf("marker %s at the destination: %+v, %v", k, f, err)
		}
	}
	b.s3.CheckHeaders(t, dstBucket, "fm/sub/", dirHeaders)
	sameObjects(t, src, dst, "fm/sub/")

	withExtra := fm
	withExtra.DeleteExtra = true
	prog, rep = migrateRun(t, b, dstBucket, withExtra)
	if prog.State != tasks.StateCompleted || rep.Skipped != 4 || rep.Copied != 0 || rep.Deleted != 1 {
		t.Errorf("re-run with --delete-extra: %s (%s) %+v; want 4 identical and the extra marker deleted", prog.State, prog.Error, rep)
	}
	if ok, err := dst.Exists(ctx, "fm/old/"); ok || err != nil {
		t.Errorf("the extra marker fm/old/ is still there (%v)", err)
	}

	id := b.enq(t)(tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc("", dstBucket, "fm/"), Recursive: true}))
	if p := b.wait(t, id, time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("recursive delete of fm/: %s (%s)", p.State, p.Error)
	}
	var left []string
	for f, err := range dst.List(ctx, "", 0) {
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, f.Key)
	}
	if len(left) != 0 {
		t.Errorf("after a recursive delete of fm/ the destination holds %s", strings.Join(left, ", "))
	}
}
