package worker

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// treeFixture builds a tree whose names sort differently as keys than as
// paths, with a symlink to a file, one to a directory (outside the tree), a
// FIFO and an empty directory, and returns the allowed directory and the
// tree's keys of regular files.
func treeFixture(t *testing.T) (allowed, dir string, files []string) {
	t.Helper()
	allowed = t.TempDir()
	dir = filepath.Join(allowed, "tree")
	files = []string{
		"a/b", "a/b0", "a-b", "a.b", "a0", "a b", "a+b", "é", "e\u0301", "z/y/x", "z/y-x", "z/y.x", "z/y0",
		"photos/2024/01.jpg", "photos/2024-01.jpg", "photos.bak", "photos-2019/a.jpg", "~tilde", "A",
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644))
	must(t, os.Symlink(filepath.Join(dir, "a0"), filepath.Join(dir, "link-file")))
	must(t, os.Symlink(outside, filepath.Join(dir, "a", "link-dir")))
	must(t, syscall.Mkfifo(filepath.Join(dir, "z", "fifo"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o755))
	return allowed, dir, files
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func openTestTree(t *testing.T, allowed, dir string) *tree {
	t.Helper()
	s, err := newSources([]string{allowed}, nil, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := s.openTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func walkAll(t *testing.T, tr *tree, after string, excluded func(string) bool) []treeEntry {
	t.Helper()
	var out []treeEntry
	for e, err := range tr.walk(context.Background(), after, excluded) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestTreeWalkKeyOrder: the walk yields keys in byte order, the order S3
// lists them in, which is not filepath.WalkDir's ("a/b" after "a-b" and
// "a.b", before "a0"); symlinks and the FIFO are yielded with a reason and
// never followed; a walk after any cursor yields exactly the rest.
func TestTreeWalkKeyOrder(t *testing.T) {
	t.Parallel()
	allowed, dir, files := treeFixture(t)
	tr := openTestTree(t, allowed, dir)
	got := walkAll(t, tr, "", nil)

	var keys, regular []string
	ignored := map[string]string{}
	for _, e := range got {
		keys = append(keys, e.key)
		if e.ignore != "" {
			ignored[e.key] = e.ignore
		} else {
			regular = append(regular, e.key)
		}
	}
	if !slices.IsSorted(keys) {
		t.Errorf("walk keys not in byte order: %q", keys)
	}
	want := slices.Clone(files)
	slices.Sort(want)
	if diff := cmp.Diff(want, regular); diff != "" {
		t.Errorf("regular files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"link-file": ignoreSymlink, "a/link-dir": ignoreSymlink, "z/fifo": ignoreSpecial}, ignored); diff != "" {
		t.Errorf("ignored (-want +got):\n%s", diff)
	}
	// filepath.WalkDir sorts by name within a directory, so it puts a/b
	// before a-b: the order a cursor must not follow.
	var walkOrder []string
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			walkOrder = append(walkOrder, filepath.ToSlash(rel))
		}
		return err
	}))
	if slices.Equal(walkOrder, want) {
		t.Fatalf("the fixture does not tell key order from filepath.WalkDir's: %q", walkOrder)
	}
	// Resuming after every key (and between keys) yields exactly the rest.
	for i, k := range keys {
		rest := walkAll(t, tr, k, nil)
		var restKeys []string
		for _, e := range rest {
			restKeys = append(restKeys, e.key)
		}
		if !slices.Equal(keys[i+1:], restKeys) {
			t.Errorf("walk after %q: %q, want %q", k, restKeys, keys[i+1:])
		}
	}
	if rest := walkAll(t, tr, "a/", nil); len(rest) == 0 || rest[0].key != "a/b" {
		t.Errorf("walk after the directory key a/: first %v, want a/b", rest)
	}
	// An excluded directory is not read.
	for _, e := range walkAll(t, tr, "", func(d string) bool { return d == "z/" }) {
		if len(e.key) >= 2 && e.key[:2] == "z/" {
			t.Errorf("excluded directory z/ walked: %s", e.key)
		}
	}
}

// TestOpenTreeRefuses: a directory outside allow_dirs, a symlink to one, a
// file and a missing directory are refused, with the setting to change.
func TestOpenTreeRefuses(t *testing.T) {
	t.Parallel()
	allowed, dir, _ := treeFixture(t)
	s, err := newSources([]string{allowed}, nil, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	must(t, os.Symlink(outside, filepath.Join(allowed, "to-outside")))
	must(t, os.Symlink("tree", filepath.Join(allowed, "to-tree")))
	for _, tc := range []struct{ dir, want string }{
		{outside, "outside the worker's allowed directories"},
		{filepath.Join(allowed, "to-outside"), "is a symlink"},
		{filepath.Join(allowed, "to-tree", "a"), "lies under the symlink " + filepath.Join(allowed, "to-tree")},
		{filepath.Join(dir, "a0"), "is not a directory"},
		{filepath.Join(allowed, "missing"), "does not exist"},
	} {
		_, err := s.openTree(tc.dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("openTree(%s) = %v, want %q", tc.dir, err, tc.want)
		}
	}
	if _, err := s.openTree(outside); err == nil || !strings.Contains(err.Error(), "allow_dirs") {
		t.Errorf("outside: %v, want the setting named", err)
	}
	none, _ := newSources(nil, nil, http.DefaultClient)
	if _, err := none.openTree(dir); err == nil || !strings.Contains(err.Error(), "--allow-dir") {
		t.Errorf("no allow_dirs: %v", err)
	}
}

// TestListSourceKeepsItsWalk: a page handled in part (the window had room
// for some of it) is followed by a page that starts with the rest, from the
// same walk; only a cursor outside what was read starts a new one. Every
// page is exactly the keys after its cursor.
func TestListSourceKeepsItsWalk(t *testing.T) {
	t.Parallel()
	allowed, dir, _ := treeFixture(t)
	m := &migration{tree: openTestTree(t, allowed, dir)}
	defer func() { m.walk.close() }()
	var all []string
	for _, e := range walkAll(t, m.tree, "", nil) {
		all = append(all, e.key)
	}
	page := func(cursor string, n int) []string {
		t.Helper()
		got, err := m.listSource(context.Background(), cursor, n)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, e := range got {
			keys = append(keys, e.f.Key)
		}
		i := 0
		if cursor != "" {
			i = slices.Index(all, cursor) + 1
		}
		if want := all[i:min(i+n, len(all))]; !slices.Equal(keys, want) {
			t.Errorf("page after %q (n %d): %q, want %q", cursor, n, keys, want)
		}
		return keys
	}
	p := page("", 6)
	p = page(p[2], 6)           // the window took 3 of 6
	p = page(p[len(p)-1], 6)    // the whole page
	page(p[len(p)-1], len(all)) // to the end
	if m.walks != 1 {
		t.Errorf("%d walks for pages that follow each other, want 1", m.walks)
	}
	page(all[1], 3) // a cursor before what is buffered: a new walk
	if m.walks != 2 {
		t.Errorf("%d walks after a cursor outside the buffer, want 2", m.walks)
	}
}

// TestTreeWalkResumesAfterUnreadableDir: an unreadable directory is
// reported once, as a failure under its own key; a walk resumed with that
// key as its cursor (a page that ended on it, then a retry, a requeue or a
// crash) goes on after it instead of failing on it again, which failed the
// migration on every later run. Run as root, the test runs itself again
// under setpriv without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that
// mode 000 means unreadable.
func TestTreeWalkResumesAfterUnreadableDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 && os.Getenv("FERRY_TEST_UNPRIVILEGED") == "" {
		caps := "-dac_override,-dac_read_search"
		cmd := exec.Command("setpriv", "--bounding-set", caps, "--inh-caps", caps,
			os.Args[0], "-test.run", "^TestTreeWalkResumesAfterUnreadableDir$", "-test.count", "1", "-test.v")
		cmd.Env = append(os.Environ(), "FERRY_TEST_UNPRIVILEGED=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestTreeWalkResumesAfterUnreadableDir") {
			t.Fatalf("unprivileged run: %v\n%s", err, out)
		}
		return
	}
	allowed := t.TempDir()
	dir := filepath.Join(allowed, "tree")
	for _, f := range []string{"a.txt", "locked/x", "z.txt"} {
		p := filepath.Join(dir, filepath.FromSlash(f))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(f), 0o644))
	}
	locked := filepath.Join(dir, "locked")
	must(t, os.Chmod(locked, 0))
	t.Cleanup(func() { _ = os.Chmod(locked, 0o755) }) // so TempDir can be removed
	if _, err := os.ReadDir(locked); err == nil {
		t.Skip("mode 000 does not make a directory unreadable here (root with CAP_DAC_OVERRIDE?)")
	}
	tr := openTestTree(t, allowed, dir)
	keys := func(es []treeEntry) (out []string) {
		for _, e := range es {
			out = append(out, e.key)
		}
		return out
	}
	all := walkAll(t, tr, "", nil)
	if got := keys(all); !slices.Equal(got, []string{"a.txt", "locked/", "z.txt"}) || all[1].fail == "" {
		t.Fatalf("walk: %q (locked/ fail %q); want a.txt, locked/ as a failure, z.txt", got, all[1].fail)
	}
	if got := keys(walkAll(t, tr, "locked/", nil)); !slices.Equal(got, []string{"z.txt"}) {
		t.Errorf("walk after the unreadable directory's key: %q, want [z.txt]", got)
	}
}

// TestOpenTreeFileNoFollow: a tree's file is opened as its walk saw it or
// not at all. A file, its directory or the tree itself replaced by a
// symlink after the walk (one that stays inside the allowed directory, so
// os.Root alone would follow it) fails the item as changed at the source,
// and nothing is read through the symlink. A plain local source (a put)
// still follows a symlink inside the allowed directory.
func TestOpenTreeFileNoFollow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		swap string // what is replaced by a symlink, relative to the allowed directory
		to   string // its target, relative to the allowed directory
	}{
		{"file", "photos/sub/a.jpg", "private/sub/a.jpg"},
		{"parent directory", "photos/sub", "private/sub"},
		{"tree", "photos", "private"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			allowed := t.TempDir()
			for dir, content := range map[string]string{"photos": "public", "private": "secret"} {
				must(t, os.MkdirAll(filepath.Join(allowed, dir, "sub"), 0o755))
				must(t, os.WriteFile(filepath.Join(allowed, dir, "sub", "a.jpg"), []byte(content), 0o644))
			}
			s, err := newSources([]string{allowed}, nil, http.DefaultClient)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := s.openTree(filepath.Join(allowed, "photos"))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			var keys []string
			for e, err := range tr.walk(context.Background(), "", nil) {
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, e.key)
			}
			if !slices.Equal(keys, []string{"sub/a.jpg"}) {
				t.Fatalf("walk = %q", keys)
			}
			loc := tr.source("sub/a.jpg")
			if got := readSource(t, s, loc); got != "public" {
				t.Fatalf("before the swap: read %q", got)
			}

			swapped := filepath.Join(allowed, filepath.FromSlash(tc.swap))
			must(t, os.RemoveAll(swapped))
			// Relative: os.Root refuses an absolute symlink, not this one.
			target, err := filepath.Rel(filepath.Dir(swapped), filepath.Join(allowed, filepath.FromSlash(tc.to)))
			if err != nil {
				t.Fatal(err)
			}
			must(t, os.Symlink(target, swapped))

			src, err := s.openFile(loc.Path, loc.NoFollow)
			if err == nil {
				src.Close()
				t.Fatalf("after the swap: %s opened (through the symlink); want the source-changed error", loc.Path)
			}
			if !errors.Is(err, storage.ErrSourceChanged) || !strings.Contains(err.Error(), "symlink") {
				t.Errorf("after the swap: %v, want the source-changed error naming the symlink", err)
			}
			if got := readSource(t, s, tasks.Location{Path: loc.Path}); got != "secret" {
				t.Errorf("a plain local source read %q through the symlink inside the allowed directory, want it followed as before", got)
			}
		})
	}
}

func readSource(t *testing.T, s *sources, loc tasks.Location) string {
	t.Helper()
	src, err := s.openFile(loc.Path, loc.NoFollow)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, err := src.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
