package worker_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// Reasons in the report, as the worker words them.
const (
	reasonSymlink = "symlink (not followed)"
	reasonSpecial = "not a regular file (FIFO, socket or device)"
)

// writeTree writes files (relative path → contents) under dir and returns
// relative key → SHA-256.
func writeTree(t testing.TB, dir string, files map[string][]byte) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	for rel, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[rel] = sha256.Sum256(b)
	}
	return sums
}

// checkTree verifies every file arrived under prefix with identical bytes
// (SHA-256), and that the destination holds nothing else there but the
// keys in others.
func checkTree(t testing.TB, dst *storage.S3, prefix string, sums map[string][32]byte, others ...string) {
	t.Helper()
	ctx := context.Background()
	for rel, sum := range sums {
		b, err := dst.GetBytes(ctx, prefix+rel)
		if err != nil {
			t.Errorf("%s: %v", prefix+rel, err)
			continue
		}
		if sha256.Sum256(b) != sum {
			t.Errorf("%s: bytes differ from the file", prefix+rel)
		}
	}
	want := slices.Collect(maps.Keys(sums))
	want = append(want, others...)
	slices.Sort(want)
	var got []string
	for f, err := range dst.List(ctx, prefix, 0) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.TrimPrefix(f.Key, prefix))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("destination keys under %s (-want +got):\n%s", prefix, diff)
	}
}

// awkwardTree is a tree with nested directories and names that sort
// differently as keys than as paths ("a/b" after "a-b" and "a.b"), with
// spaces, '+', '%' and Unicode in both normal forms, and one file above
// the part size (an upload in parts).
func awkwardTree() map[string][]byte {
	files := map[string][]byte{}
	for i, rel := range []string{
		"a/b", "a/b/c.txt", "a-b", "a.b", "a0", "a b/c d.txt", "a+b/x+y.txt", "a%20b", "café/é.txt", "cafe\u0301/e\u0301.txt",
		"deep/1/2/3/4/5/leaf", "photos/2024/01.jpg", "photos/2024-01.jpg", "photos.bak", "~tilde", "Z", "emoji-😀.txt",
	} {
		if rel == "a/b" {
			continue // "a/b" is a directory here (a/b/c.txt)
		}
		files[rel] = []byte(fmt.Sprintf("%d:%s:%s", i, rel, strings.Repeat("x", i*97)))
	}
	big := make([]byte, storage.MinPartSize+12345)
	for i := range big {
		big[i] = byte(i * 7)
	}
	files["big/blob.bin"] = big
	return files
}

// TestMigrateLocalTree migrates a local tree to S3: nested directories and
// awkward names arrive byte for byte at their keys; symlinks (to a file,
// and to a directory outside allow_dirs) and a FIFO are counted with their
// reasons and never followed; a re-run copies nothing; a dry run writes
// nothing; a changed file is copied again; --delete-extra deletes only
// real extras (not what stands at a symlink's key); the walk's key order is
// the destination listing's.
func TestMigrateLocalTree(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	dst := b.storage(t)
	dir := filepath.Join(b.dir, "tree")
	sums := writeTree(t, dir, awkwardTree())
	outside := t.TempDir() // not under allow_dirs
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("never read"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link-to-file": filepath.Join(dir, "a0"), "a b/link-to-outside": outside,
		"link-to-secret": filepath.Join(outside, "secret.txt")} {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "deep", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	migrate := func(p tasks.MigratePayload) (tasks.Progress, worker.MigrateReport) {
		t.Helper()
		p.Source = tasks.Location{Path: dir}
		p.Dest = s3loc("", b.bucket, "up/")
		id := b.enq(t)(tasks.NewMigrateTask(p))
		prog := b.wait(t, id, 3*time.Minute)
		return prog, migrateReport(t, b, id)
	}
	n := int64(len(sums))
	wantIgnored := map[string]int64{reasonSymlink: 3, reasonSpecial: 1}

	// A dry run writes nothing.
	_, rep := migrate(tasks.MigratePayload{DryRun: true})
	if rep.WouldCopy != n || rep.Copied != 0 || int64(len(rep.Sample)) != n {
		t.Errorf("dry run: %+v; want %d would_copy", rep, n)
	}
	if _, err := dst.Info(ctx, "up/a0"); err == nil {
		t.Error("the dry run wrote")
	}

	prog, rep := migrate(tasks.MigratePayload{Window: 4})
	if prog.State != tasks.StateCompleted || rep.Copied != n || rep.Failed != 0 || rep.Listed != n+4 {
		t.Fatalf("first run: %+v / %+v; want %d copied, %d listed", prog, rep, n, n+4)
	}
	if diff := cmp.Diff(wantIgnored, rep.Ignored); diff != "" {
		t.Errorf("ignored by reason (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"link-to-file": reasonSymlink, "a b/link-to-outside": reasonSymlink,
		"link-to-secret": reasonSymlink, "deep/fifo": reasonSpecial}, rep.IgnoredSample); diff != "" {
		t.Errorf("ignored sample (-want +got):\n%s", diff)
	}
	if prog.Counters["ignored"] != 4 {
		t.Errorf("progress counters %v: want ignored 4", prog.Counters)
	}
	checkTree(t, dst, "up/", sums) // nothing at the symlinks' or the FIFO's keys

	// The walk's order is the listing's: the cursor is a key.
	var listedKeys []string
	for f, err := range dst.List(ctx, "up/", 0) {
		if err != nil {
			t.Fatal(err)
		}
		listedKeys = append(listedKeys, strings.TrimPrefix(f.Key, "up/"))
	}
	walked := slices.Collect(maps.Keys(sums))
	slices.Sort(walked) // byte order, as worker's walk (TestTreeWalkKeyOrder)
	if !slices.Equal(walked, listedKeys) {
		t.Errorf("S3 lists %q, byte order is %q", listedKeys, walked)
	}

	// An identical re-run copies nothing.
	_, rep = migrate(tasks.MigratePayload{})
	if rep.Copied != 0 || rep.Skipped != n || rep.Failed != 0 {
		t.Errorf("re-run: %+v; want all %d skipped", rep, n)
	}

	// A changed file is copied again, and an extra deleted; an object at a
	// symlink's key, or under a directory symlink's, is not extra.
	changed := filepath.Join(dir, "a b", "c d.txt")
	if err := os.WriteFile(changed, []byte("new contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	sums["a b/c d.txt"] = sha256.Sum256([]byte("new contents"))
	for _, k := range []string{"up/extra/only-at-dest", "up/link-to-file", "up/a b/link-to-outside/kept"} {
		if _, err := dst.PutBytes(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(testenv.ExtrasSettle) // extras older than the migrations' start
	_, rep = migrate(tasks.MigratePayload{DryRun: true, DeleteExtra: true})
	if rep.WouldCopy != 1 || rep.WouldDelete != 1 || len(rep.DeleteSample) != 1 || rep.DeleteSample[0] != "up/extra/only-at-dest" {
		t.Errorf("dry run with --delete-extra: %+v; want 1 would_copy, only up/extra/only-at-dest would be deleted", rep)
	}
	_, rep = migrate(tasks.MigratePayload{DeleteExtra: true})
	if rep.Copied != 1 || rep.Skipped != n-1 || rep.Deleted != 1 || rep.Failed != 0 {
		t.Errorf("changed file + --delete-extra: %+v; want 1 copied, %d skipped, 1 deleted", rep, n-1)
	}
	checkTree(t, dst, "up/", sums, "link-to-file", "a b/link-to-outside/kept")

	// A file touched (new mtime, same bytes) is found identical by its MD5
	// (single part) without being written; the big one (multipart ETag) is
	// uploaded again.
	later := time.Now().Add(time.Hour)
	for _, rel := range []string{"a0", "big/blob.bin"} {
		if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(rel)), later, later); err != nil {
			t.Fatal(err)
		}
	}
	_, rep = migrate(tasks.MigratePayload{})
	if rep.Copied != 1 || rep.Skipped != n-1 {
		t.Errorf("after touching a0 and big/blob.bin: %+v; want 1 copied (the multipart one), %d skipped", rep, n-1)
	}

	// Include and exclude select as for an S3 source; an excluded
	// directory is not read.
	_, rep = migrate(tasks.MigratePayload{DryRun: true, Include: []string{"photos*"}, Exclude: []string{"photos/2024"}})
	if rep.WouldCopy != 0 || rep.Skipped != 2 {
		t.Errorf("include photos* exclude photos/2024: %+v; want photos/2024-01.jpg and photos.bak skipped", rep)
	}
}

// TestMigrateLocalTreeRefused: a directory outside allow_dirs, or a file,
// fails the migration at once with the reason and the setting to change.
func TestMigrateLocalTreeRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	outside := t.TempDir()
	file := filepath.Join(b.dir, "f.txt")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{outside, "outside the worker's allowed directories"},
		{file, "is not a directory"},
	} {
		id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Path: tc.dir}, Dest: s3loc("", b.bucket, "up/")}))
		p := b.wait(t, id, time.Minute)
		if p.State != tasks.StateFailed || !strings.Contains(p.Error, tc.want) {
			t.Errorf("migrate %s: %s %q, want failed with %q", tc.dir, p.State, p.Error, tc.want)
		}
	}
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Path: outside}, Dest: s3loc("", b.bucket, "up/")}))
	if p := b.wait(t, id, time.Minute); !strings.Contains(p.Error, "allow_dirs") {
		t.Errorf("outside allow_dirs: %q does not name the setting", p.Error)
	}
}

// TestMigrateLocalTreeUnreadable: a file the worker may not read, and a
// directory it may not list, each fail alone and at once (permission is
// not something a retry fixes), named with their reasons in the report;
// the readable files arrive; --delete-extra then deletes nothing. Run as
// root, the worker runs under setpriv without CAP_DAC_OVERRIDE and
// CAP_DAC_READ_SEARCH, so that mode 000 means unreadable to it.
func TestMigrateLocalTreeUnreadable(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	dir := filepath.Join(b.dir, "tree")
	sums := writeTree(t, dir, map[string][]byte{"a.txt": []byte("a"), "z/z.txt": []byte("z"), "secret.txt": []byte("s"), "locked/inside.txt": []byte("l")})
	delete(sums, "secret.txt")
	delete(sums, "locked/inside.txt")
	for _, p := range []string{"secret.txt", "locked"} {
		if err := os.Chmod(filepath.Join(dir, p), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(filepath.Join(dir, p), 0o755) }) // so TempDir can be removed
	}
	var wrap []string
	if os.Geteuid() == 0 {
		caps := "-dac_override,-dac_read_search"
		wrap = []string{"setpriv", "--bounding-set", caps, "--inh-caps", caps}
	}
	c := workerproc.StartChild(t, "", t.TempDir(), "unprivileged", workerproc.ChildConfig{
		Redis: testenv.Redis(t).Addr, Profiles: profilesFor(b.s3), Queue: b.queue, Dir: b.dir,
		Concurrency: 2, PartSize: storage.MinPartSize, PartConcurrency: 2, Shutdown: 10 * time.Second, Wrap: wrap})
	defer c.Kill()
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Path: dir}, Dest: s3loc("", b.bucket, "up/"), DeleteExtra: true}))
	p := b.wait(t, id, 2*time.Minute)
	rep := migrateReport(t, b, id)
	if p.State != tasks.StateFailed || rep.Copied != 2 || rep.Failed != 2 || rep.Deleted != 0 || rep.DeleteSkipped == "" {
		t.Fatalf("migration with an unreadable file and directory: %s / %+v; want failed, 2 copied, 2 failed, nothing deleted", p.State, rep)
	}
	if r := rep.Failures["secret.txt"]; !strings.Contains(r, "cannot be read") {
		t.Errorf("secret.txt: reason %q", r)
	}
	if r := rep.Failures["locked/"]; !strings.Contains(r, "cannot read the directory") || !strings.Contains(r, "permission denied") {
		t.Errorf("locked/: reason %q", r)
	}
	checkTree(t, b.storage(t), "up/", sums)
}

// TestMigrateLocalTreeSurvivesKills SIGKILLs the whole worker fleet twice
// during the migration of a 1,500-file tree (three files above the part
// size, uploaded in parts): the migration completes from its cursor, and
// every file is identical at the destination (SHA-256).
func TestMigrateLocalTreeSurvivesKills(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery twice (~2-4 min)")
	}
	const workers, n = 2, 1500
	b := setup(t, nil)
	dir := filepath.Join(b.dir, "tree")
	files := map[string][]byte{}
	for i := range n {
		size := 1 + i*37%(48<<10)
		if i%500 == 7 {
			size = storage.MinPartSize + 1 + i
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i + j*13)
		}
		files[fmt.Sprintf("d%02d/s%d/f-%05d.bin", i%23, i%3, i)] = data
	}
	sums := writeTree(t, dir, files)
	id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: tasks.Location{Path: dir}, Dest: s3loc("", b.bucket, "up/"), Window: 16}))

	b.killFleetTwice(t, id, workers, 200, 800)
	p := b.wait(t, id, 6*time.Minute)
	rep := migrateReport(t, b, id)
	if p.State != tasks.StateCompleted || rep.Failed != 0 || rep.Copied+rep.Skipped != n {
		t.Fatalf("after two fleet kills: %+v / %+v", p, rep)
	}
	t.Logf("local tree migration survived 2 fleet kills: %d copied, %d skipped", rep.Copied, rep.Skipped)
	dst := b.storage(t)
	checkTree(t, dst, "up/", sums)
	b.checkNoUploadsLeft(t, dst)
}
