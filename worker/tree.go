package worker

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// Reasons a local tree's entry is passed over (ignored): counted by reason
// in the migration's report, never followed or read.
const (
	ignoreSymlink = "symlink (not followed)"
	ignoreSpecial = "not a regular file (FIFO, socket or device)"
	ignoreName    = "name is not valid UTF-8 (an S3 key must be)"
)

// tree is a local directory migrated to S3: a walk of its regular files in
// the order S3 lists keys, so that the migration's cursor, its side-by-side
// comparison with the destination's listing and --delete-extra's merge work
// as for an S3 source.
type tree struct {
	// dir is the directory's absolute path (the payload's Source.Path).
	dir string
	// root is the directory itself, opened through the os.Root of the
	// allowed directory containing it: nothing it opens leaves it.
	root *os.Root
}

// openTree opens dir, which must lie under one of the allowed directories.
func (s *sources) openTree(dir string) (*tree, error) {
	if len(s.dirs) == 0 {
		return nil, fmt.Errorf("source directory %s: local files are %w on this worker: add the directory (or a parent) to the worker's allow_dirs (config file) or start it with --allow-dir DIR", dir, errNotAllowed)
	}
	if d, rel, ok := s.allowedDir(dir); ok {
		// Its files are opened without following any symlink below the
		// allowed directory (see tree.source): refuse a tree reached
		// through one now rather than fail every file.
		if link := symlinkAbove(s.roots[d], rel); link != "" {
			return nil, fmt.Errorf("source directory %s lies under the symlink %s: ferry does not follow symlinks in a migrated tree; migrate the directory it points to: %w", dir, filepath.Join(d, link), errNotAllowed)
		}
		st, err := s.roots[d].Lstat(rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("source directory %s does not exist on the worker: %w", dir, storage.ErrNotFound)
		case err != nil:
			return nil, fmt.Errorf("source directory %s: %w", dir, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("source directory %s is a symlink: ferry does not follow symlinks in a migrated tree; migrate the directory it points to: %w", dir, errNotAllowed)
		case !st.IsDir():
			return nil, fmt.Errorf("source %s is not a directory: migrate a directory, or put one file with ferry put: %w", dir, errNotAllowed)
		}
		r, err := s.roots[d].OpenRoot(rel)
		if err != nil {
			return nil, fmt.Errorf("open source directory %s: %w", dir, err)
		}
		return &tree{dir: dir, root: r}, nil
	}
	return nil, fmt.Errorf("source directory %s is outside the worker's allowed directories (%s): %w; add it (or a parent) to the worker's allow_dirs (config file) or --allow-dir",
		dir, strings.Join(s.dirs, ", "), errNotAllowed)
}

// symlinkAbove returns the first parent directory of rel (relative to
// root) that is a symlink, or "".
func symlinkAbove(root *os.Root, rel string) string {
	parts := strings.Split(rel, string(filepath.Separator))
	for i := 1; i < len(parts); i++ {
		p := filepath.Join(parts[:i]...)
		if st, err := root.Lstat(p); err == nil && st.Mode()&fs.ModeSymlink != 0 {
			return p
		}
	}
	return ""
}

func (t *tree) Close() error { return t.root.Close() }

// path is the absolute path of the entry with relative key rel.
func (t *tree) path(rel string) string { return filepath.Join(t.dir, filepath.FromSlash(rel)) }

// source is the location of the file with key rel, as a batch item or an
// upload task names it: opened without following any symlink, so the
// worker reads the file the walk saw there, or nothing.
func (t *tree) source(rel string) tasks.Location {
	return tasks.Location{Path: t.path(rel), NoFollow: true}
}

// treeEntry is one entry of a walk.
type treeEntry struct {
	// key is the entry's path relative to the tree, "/"-separated: the
	// object's key relative to the destination prefix.
	key   string
	size  int64
	mtime int64 // ns
	// ignore, when set, says why the entry is passed over; the entry
	// stands for whatever the destination holds at its key or under it
	// (--delete-extra keeps that).
	ignore string
	// fail, when set, says why the entry (a directory) could not be
	// read: a failure of the migration, like an object it cannot copy.
	fail string
}

// walk yields the tree's entries whose keys come after the key after, in
// byte order of their keys: the order in which S3 lists them. That is not
// the order of filepath.Walk: "a/b" comes after "a-b" and "a.b" (the bytes
// '-' and '.' sort before '/') but before "a0". So each directory's entries
// are sorted by their key form, a directory's name with "/" appended; as
// no name holds "/", every key under a directory d then falls between d's
// predecessor and successor, and the whole walk is in key order.
//
// Regular files are yielded with their size and mtime; symlinks (to files
// or directories, inside or outside the allowed directories), FIFOs,
// sockets, devices and names that are not UTF-8 with a reason in ignore:
// none is followed, opened or descended into. A directory that cannot be
// read is yielded with a reason in fail. excluded, when it reports true for
// a directory's key ("tmp/"), skips the directory without reading it.
func (t *tree) walk(ctx context.Context, after string, excluded func(string) bool) iter.Seq2[treeEntry, error] {
	return func(yield func(treeEntry, error) bool) {
		t.walkDir(ctx, "", nil, after, excluded, yield)
	}
}

// dirItem is an entry of one directory, with its key.
type dirItem struct {
	key  string
	info fs.FileInfo
}

// walkDir yields the entries under the directory whose key is prefix ("" is
// the tree itself; want is its lstat, nil for the tree) with keys after
// after. It returns false when yield asked to stop.
func (t *tree) walkDir(ctx context.Context, prefix string, want fs.FileInfo, after string, excluded func(string) bool, yield func(treeEntry, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(treeEntry{}, err)
		return false
	}
	items, err := t.readDir(prefix, want)
	if err != nil {
		if prefix == "" {
			yield(treeEntry{}, fmt.Errorf("read source directory %s: %w", t.dir, err))
			return false
		}
		if strings.HasPrefix(after, prefix) && after != prefix {
			// Read before, and the cursor is inside it: what follows
			// the cursor there cannot be passed over as if it were not
			// there (--delete-extra would take it for extra). Retry.
			// (A cursor equal to prefix is this very failure, already
			// reported: the walk goes on after it.)
			yield(treeEntry{}, fmt.Errorf("read source directory %s again: %w", t.path(prefix), err))
			return false
		}
		if prefix <= after {
			return true
		}
		return yield(treeEntry{key: prefix, fail: fmt.Sprintf("cannot read the directory %s: %v", t.path(prefix), err)}, nil)
	}
	for _, it := range items {
		mode := it.info.Mode()
		if mode.IsDir() && utf8.ValidString(it.key) {
			// Every key under it starts with it.key: when after is
			// past it.key without being under it, so are they all.
			if it.key <= after && !strings.HasPrefix(after, it.key) {
				continue
			}
			if excluded != nil && excluded(it.key) {
				continue
			}
			if !t.walkDir(ctx, it.key, it.info, after, excluded, yield) {
				return false
			}
			continue
		}
		if it.key <= after {
			continue
		}
		e := treeEntry{key: it.key}
		switch {
		case !utf8.ValidString(it.key):
			e.ignore = ignoreName
		case mode&fs.ModeSymlink != 0:
			e.ignore = ignoreSymlink
		case !mode.IsRegular():
			e.ignore = ignoreSpecial
		default:
			e.size, e.mtime = it.info.Size(), it.info.ModTime().UnixNano()
		}
		if !yield(e, nil) {
			return false
		}
	}
	return true
}

// readDir reads the directory with key prefix and returns its entries
// sorted by key (see walk). The directory is opened through the tree's
// root and must be the one its parent's listing showed (want): a directory
// replaced by a symlink since is not read.
func (t *tree) readDir(prefix string, want fs.FileInfo) ([]dirItem, error) {
	name := "."
	if prefix != "" {
		name = filepath.FromSlash(strings.TrimSuffix(prefix, "/"))
	}
	f, err := t.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	if want != nil {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("stat: %w", err)
		}
		if !os.SameFile(st, want) {
			return nil, fmt.Errorf("replaced while the tree was walked: %w", errNotAllowed)
		}
	}
	// Entries of a directory opened in a root carry their lstat (taken
	// relative to the directory, never through a symlink).
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	items := make([]dirItem, 0, len(ents))
	for _, e := range ents {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", e.Name(), err)
		}
		key := prefix + e.Name()
		if info.IsDir() {
			key += "/"
		}
		items = append(items, dirItem{key: key, info: info})
	}
	slices.SortFunc(items, func(a, b dirItem) int { return strings.Compare(a.key, b.key) })
	return items, nil
}

// md5 reads the regular file with key rel and returns its MD5 (hex), with
// its size and mtime, which must still be size and mtime: the file is the
// one the walk saw, not something put in its place.
func (t *tree) md5(ctx context.Context, rel string, size, mtime int64) (string, error) {
	name := filepath.FromSlash(rel)
	st, err := t.root.Lstat(name)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() || st.Size() != size || st.ModTime().UnixNano() != mtime {
		return "", fmt.Errorf("%s changed since it was listed: %w", t.path(rel), storage.ErrSourceChanged)
	}
	f, err := t.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if st2, err := f.Stat(); err != nil || !os.SameFile(st, st2) {
		return "", fmt.Errorf("%s was replaced since it was listed: %w", t.path(rel), storage.ErrSourceChanged)
	}
	h := md5.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
