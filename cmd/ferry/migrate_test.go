package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateCLI: ferry migrate --wait --json copies a prefix, a re-run
// skips everything, --dry-run writes nothing, and bad flags are usage errors.
func TestMigrateCLI(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	objs := map[string][]byte{}
	for i := range 12 {
		key := fmt.Sprintf("src/d%d/o%02d", i%3, i)
		objs[key] = randomBytes(t, 100+i)
		b.putObject(t, key, objs[key])
	}
	src, dst := b.url("src/"), b.url("dst/")

	r := b.must(t, "migrate", src, dst, "--queue", b.queue, "--wait", "--json")
	final := checkWaitJSON(t, r, "ferry:migrate", b.queue)
	res, _ := final["result"].(map[string]any)
	if res["copied"] != float64(12) || res["failed"] != float64(0) {
		t.Fatalf("migrate result = %v; want 12 copied", final["result"])
	}
	for key, data := range objs {
		if got := b.getObject(t, "dst/"+key[len("src/"):]); !bytes.Equal(got, data) {
			t.Errorf("dst/%s differs from %s", key[len("src/"):], key)
		}
	}

	r = b.must(t, "migrate", src, dst, "--queue", b.queue, "--wait", "--json")
	res, _ = checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
	if res["skipped"] != float64(12) || res["copied"] != float64(0) {
		t.Errorf("re-run result = %v; want all 12 skipped", res)
	}

	b.putObject(t, "src/d0/new", []byte("new"))
	r = b.must(t, "migrate", src, dst, "--queue", b.queue, "--dry-run", "--wait", "--json")
	res, _ = checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
	if res["would_copy"] != float64(1) || b.getObject(t, "dst/d0/new") != nil {
		t.Errorf("dry run result = %v (or it wrote)", res)
	}

	if r := b.ferry(t, "migrate", b.url("sr*"), dst, "--queue", b.queue); r.Code != 2 || !strings.Contains(r.Stderr, "--include 'sr*'") {
		t.Errorf("a raw-prefix glob as SRC_PREFIX: exit %d, want 2 (usage) pointing to --include: %s", r.Code, r)
	}
	if r := b.ferry(t, "migrate", src, b.url("src/sub/"), "--queue", b.queue); r.Code != 2 {
		t.Errorf("overlapping prefixes: exit %d, want 2: %s", r.Code, r)
	}
}

// TestMigrateCLIPartial: a migration in which one key cannot be written at
// the destination (1,006 bytes at the source, 1,027 under the destination
// prefix) copies the others, names the key and its reason in the report,
// and exits 4 (partial), not 3; a re-run copies nothing again and fails
// only that key.
func TestMigrateCLIPartial(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	long, src, dst := b.putLongKey(t, "long/")
	b.putObject(t, "long/ok", []byte("fine"))
	for run, want := range []struct{ copied, skipped float64 }{{1, 0}, {0, 1}} {
		r := b.ferry(t, "migrate", src, dst, "--queue", b.queue, "--wait", "--json")
		if r.Code != exitPartial {
			t.Fatalf("run %d: exit %d, want %d (partial): %s", run+1, r.Code, exitPartial, r)
		}
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		var final struct {
			Result struct {
				Copied, Skipped, Failed float64
				Failures                map[string]string
			}
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &final); err != nil {
			t.Fatalf("run %d: final status: %v: %s", run+1, err, r)
		}
		res := final.Result
		if res.Copied != want.copied || res.Skipped != want.skipped || res.Failed != 1 || !strings.Contains(res.Failures[long], "1024") {
			t.Errorf("run %d: report %+v; want %v copied, %v skipped and the long key failed with its reason", run+1, res, want.copied, want.skipped)
		}
	}
	if got := b.getObject(t, "a/much/longer/destination/ok"); string(got) != "fine" {
		t.Errorf("the other object: %q", got)
	}
}

// TestFolderMarkersCLI: zero-byte "dir/" markers through the commands a
// user types (issue 17's third case): ls shows them, migrate --dry-run
// lists and migrate copies them, delete --recursive deletes them.
func TestFolderMarkersCLI(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	b.putObject(t, "fm/sub/", nil)
	b.putObject(t, "fm/sub/a.txt", []byte("a"))
	if out := b.must(t, "ls", b.url("fm")).Stdout; !strings.Contains(out, "fm/sub/\n") {
		t.Errorf("ls does not show the marker fm/sub/:\n%s", out)
	}
	src, dst := b.url("fm/"), b.url("copy/")
	if out := b.must(t, "migrate", src, dst, "--queue", b.queue, "--dry-run", "--wait").Stdout; !strings.Contains(out, "fm/sub/\n") {
		t.Errorf("migrate --dry-run does not list the marker:\n%s", out)
	}
	b.must(t, "migrate", src, dst, "--queue", b.queue, "--wait")
	if out := b.must(t, "ls", dst).Stdout; !strings.Contains(out, "copy/sub/\n") || !strings.Contains(out, "copy/sub/a.txt") {
		t.Errorf("after migrate, ls %s:\n%s", dst, out)
	}
	b.must(t, "delete", dst, "--recursive", "--queue", b.queue, "--wait")
	if out := b.must(t, "ls", dst).Stdout; strings.TrimSpace(out) != "" {
		t.Errorf("after delete --recursive, ls %s still shows:\n%s", dst, out)
	}
}

// TestMigrateLocalDirCLI: ferry migrate DIR s3://… uploads a local tree
// (a relative DIR is made absolute), a re-run skips everything, and the
// CLI refuses what cannot work before enqueueing: a missing directory, a
// file, a directory outside the config's allow_dirs (naming the setting and
// the file), --src-profile with a directory.
func TestMigrateLocalDirCLI(t *testing.T) {
	t.Parallel()
	b := setupWorker(t)
	files := map[string]string{"tree/a-b": "1", "tree/a/b": "2", "tree/a.b": "3", "tree/sub dir/x+y.txt": "4"}
	for rel, c := range files {
		p := filepath.Join(b.dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, c)
	}
	if err := os.Symlink(filepath.Join(b.dir, "tree", "a-b"), filepath.Join(b.dir, "tree", "link")); err != nil {
		t.Fatal(err)
	}
	dst := b.url("up/")
	r := b.must(t, "migrate", "tree", dst, "--queue", b.queue, "--wait", "--json") // relative to the cwd, b.dir
	res, _ := checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any)
	if res["copied"] != float64(4) || res["failed"] != float64(0) || res["source"] != filepath.Join(b.dir, "tree") {
		t.Fatalf("migrate tree: result %v; want 4 copied from %s", res, filepath.Join(b.dir, "tree"))
	}
	if ign, _ := res["ignored"].(map[string]any); ign["symlink (not followed)"] != float64(1) {
		t.Errorf("ignored %v: want the symlink counted", res["ignored"])
	}
	for rel, c := range files {
		if got := b.getObject(t, "up/"+strings.TrimPrefix(rel, "tree/")); string(got) != c {
			t.Errorf("%s: %q, want %q", rel, got, c)
		}
	}
	r = b.must(t, "migrate", filepath.Join(b.dir, "tree"), dst, "--queue", b.queue, "--wait", "--json")
	if res, _ := checkWaitJSON(t, r, "ferry:migrate", b.queue)["result"].(map[string]any); res["skipped"] != float64(4) || res["copied"] != float64(0) {
		t.Errorf("re-run: %v; want 4 skipped", res)
	}

	outside := t.TempDir()
	limited := filepath.Join(b.dir, "limited.yaml")
	writeFile(t, limited, configYAML(b.s3, b.redisURL, "worker:\n  allow_dirs: ["+b.dir+"]\n"))
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"migrate", filepath.Join(b.dir, "missing"), dst}, "does not exist"},
		{[]string{"migrate", filepath.Join(b.dir, "tree", "a-b"), dst}, "is not a directory"},
		{[]string{"migrate", "--config", limited, outside, dst}, "add it (or a parent) to worker.allow_dirs there"},
		{[]string{"migrate", "--config", limited, outside, dst}, limited},
		{[]string{"migrate", "tree", dst, "--src-profile", "default"}, "--src-profile names the profile of an s3:// source"},
		{[]string{"migrate", "https://example.com/x/", dst}, "must be an s3://bucket/prefix or a local directory"},
	} {
		r := b.ferry(t, append(tc.argv, "--queue", b.queue)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("ferry %v: %s\nwant exit 2 with %q", tc.argv, r, tc.want)
		}
	}
	// The worker's own refusal reaches --wait: outside its --allow-dir.
	r = b.ferry(t, "migrate", outside, dst, "--queue", b.queue, "--wait")
	if r.Code != 3 || !strings.Contains(r.Stdout+r.Stderr, "outside the worker's allowed directories") {
		t.Errorf("migrate outside the worker's --allow-dir: %s", r)
	}
}
