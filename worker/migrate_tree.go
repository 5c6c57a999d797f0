package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// stateIgnoredPrefix starts the state fields counting a local tree's
// entries passed over, one per reason ("ignored:symlink (not followed)").
const stateIgnoredPrefix = "ignored:"

// listed is one entry of the source's listing: an S3 object, or a local
// tree's entry.
type listed struct {
	// f is the object; for a local tree's file, Key is its relative key,
	// Size and LastModified its size and mtime, ETag "file:SIZE:MTIME"
	// (its version, for the child task's id).
	f     storage.StoredFile
	mtime int64 // ns; local files
	// ignore and fail are a local tree entry's (see treeEntry).
	ignore, fail string
}

// walkState is a migration's walk of its local tree, kept between pages:
// the next page goes on from where the last ended instead of reading every
// directory on the cursor's path again (a flat directory of 200,000 files
// would be read once per page). A page is not always handled whole (the
// window may have room for part of it): the entries pulled from the walk
// and not yet passed by the cursor are kept, so the next page starts with
// them rather than with a new walk.
type walkState struct {
	next func() (treeEntry, error, bool)
	stop func()
	// base is the key buf follows: the cursor of the last page.
	base string
	// buf holds the entries pulled from the walk after base, in key order.
	buf  []treeEntry
	done bool
}

// close ends the walk (nil-safe).
func (ws *walkState) close() {
	if ws != nil && ws.stop != nil {
		ws.stop()
	}
}

// seek moves the walk to the cursor: true when the cursor is base or the
// key of a buffered entry (the entries up to it are dropped), false when
// the walk must start again from the cursor.
func (ws *walkState) seek(cursor string) bool {
	if ws == nil {
		return false
	}
	if cursor == ws.base {
		return true
	}
	i, found := slices.BinarySearchFunc(ws.buf, cursor, func(e treeEntry, k string) int { return strings.Compare(e.key, k) })
	if !found {
		return false
	}
	ws.buf, ws.base = ws.buf[i+1:], cursor
	return true
}

// listSource lists up to n source entries after cursor, in key order.
func (m *migration) listSource(ctx context.Context, cursor string, n int) ([]listed, error) {
	var out []listed
	if m.tree == nil {
		for f, err := range m.src.ListAfter(ctx, m.p.Source.Key, cursor, n) {
			if err != nil {
				return nil, fmt.Errorf("list source: %w", err)
			}
			out = append(out, listed{f: f})
		}
		return out, nil
	}
	if !m.walk.seek(cursor) {
		// First page of this run, or the cursor is elsewhere: walk from
		// the cursor.
		m.walk.close()
		next, stop := iter.Pull2(m.tree.walk(ctx, cursor, m.excludedDir))
		m.walk = &walkState{next: next, stop: stop, base: cursor}
		m.walks++
	}
	ws := m.walk
	for len(ws.buf) < n && !ws.done {
		e, err, ok := ws.next()
		if err != nil {
			ws.close()
			m.walk = nil
			return nil, fmt.Errorf("list source: %w", err)
		}
		if !ok {
			ws.done = true
			break
		}
		ws.buf = append(ws.buf, e)
	}
	for _, e := range ws.buf[:min(n, len(ws.buf))] {
		out = append(out, listed{f: storage.StoredFile{Key: e.key, Size: e.size, LastModified: time.Unix(0, e.mtime),
			ETag: fmt.Sprintf("file:%d:%d", e.size, e.mtime)}, mtime: e.mtime, ignore: e.ignore, fail: e.fail})
	}
	return out, nil
}

// excludedDir reports whether every key under the directory key dir
// ("tmp/") is excluded: the walk then does not read it.
func (m *migration) excludedDir(dir string) bool { return m.p.ExcludesDir(dir) }

// compareFile decides about a local file whose destination counterpart
// dstKey has the same size in the listings. It HEADs the destination: the
// object is the file when ferry recorded writing it from a file of this
// size and mtime (ferry-source-size, ferry-source-mtime), or, when it was
// written otherwise in one part (its ETag a plain MD5), when the file's
// MD5 is that ETag — which costs reading the file, once per run while its
// mtime differs from the recorded one.
func (m *migration) compareFile(ctx context.Context, e listed, dstKey string) (decision, error) {
	d, err := m.dst.Info(ctx, dstKey)
	if errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrBucketNotFound) {
		return decision{verdict: copyIt}, nil // deleted since listed
	}
	if err != nil {
		return objectFailure("compare with the destination", err)
	}
	if d.Size != e.f.Size {
		return decision{verdict: copyIt}, nil
	}
	if d.Metadata[metaSourceSize] == strconv.FormatInt(e.f.Size, 10) && d.Metadata[metaSourceMtime] == strconv.FormatInt(e.mtime, 10) {
		if d.Metadata[metaTaskID] == m.childID(e.f, dstKey) {
			return decision{verdict: copiedAlready}, nil
		}
		return decision{verdict: identical}, nil
	}
	if !d.ETagIsMD5() {
		return decision{verdict: copyIt}, nil
	}
	sum, err := m.tree.md5(ctx, e.f.Key, e.f.Size, e.mtime)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return decision{verdict: identical}, nil // deleted since listed; the destination has what was listed
	case errors.Is(err, storage.ErrSourceChanged):
		return decision{verdict: copyIt}, nil // the upload reads the file as it is now
	case errors.Is(err, fs.ErrPermission):
		return decision{verdict: failed, reason: fmt.Sprintf("read %s: %v", m.tree.path(e.f.Key), err)}, nil
	case err != nil:
		return decision{}, fmt.Errorf("read %s: %w", m.tree.path(e.f.Key), err)
	case sum == d.ETag:
		return decision{verdict: identical}, nil
	}
	return decision{verdict: copyIt}, nil
}

// childTask builds the task that writes the source object f to dstKey and
// returns it with its id: an S3 object's copy, or a local file's upload.
// It is the one place that decides what a migration enqueues for an object.
func (m *migration) childTask(f storage.StoredFile, dstKey string) (*asynq.Task, string, error) {
	if m.tree == nil {
		return m.copyTask(f, dstKey)
	}
	return m.uploadTask(f, dstKey)
}

// uploadTask builds the upload of the local file f to dstKey: one PutObject
// below the part size, else a multipart upload with checkpoints. The
// worker records the file's size and mtime on the object (see
// metaSourceMtime), so the next run finds it identical by them.
func (m *migration) uploadTask(f storage.StoredFile, dstKey string) (*asynq.Task, string, error) {
	cid := m.childID(f, dstKey)
	task, err := tasks.NewUploadTask(tasks.UploadPayload{
		Source:   m.tree.source(f.Key),
		Dest:     m.destAt(dstKey),
		PartSize: m.childPartSize(f.Size), PartConcurrency: m.p.PartConcurrency, Size: f.Size},
		asynq.TaskID(cid), asynq.Queue(m.queue))
	if err != nil {
		return nil, "", fmt.Errorf("upload to %s: %w", dstKey, err)
	}
	return task, cid, nil
}

// childSourceKey is the source key a child task's payload names, for the
// report's failures: the object's key, or a local file's relative key.
func (m *migration) childSourceKey(payload []byte, cid string) string {
	var p struct {
		Source tasks.Location `json:"source"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return cid
	}
	if m.tree != nil {
		rel, err := filepath.Rel(m.tree.dir, p.Source.Path)
		if err != nil {
			return p.Source.Path
		}
		return filepath.ToSlash(rel)
	}
	return p.Source.Key
}

// sourceKeys is the source's complete listing for --delete-extra.
func (m *migration) sourceKeys(ctx context.Context) iter.Seq2[listedKey, error] {
	if m.tree == nil {
		return s3Keys(ctx, m.src, m.p.Source.Key)
	}
	return func(yield func(listedKey, error) bool) {
		for e, err := range m.tree.walk(ctx, "", m.excludedDir) {
			if err == nil && e.fail != "" {
				err = fmt.Errorf("%s: %w", e.fail, storage.ErrListingInconsistent)
			}
			if err != nil {
				yield(listedKey{}, fmt.Errorf("list source: %w", err))
				return
			}
			if !yield(listedKey{rel: e.key, covers: e.ignore != ""}, nil) {
				return
			}
		}
	}
}

// s3Keys lists an S3 source under prefix for --delete-extra.
func s3Keys(ctx context.Context, s lister, prefix string) iter.Seq2[listedKey, error] {
	return func(yield func(listedKey, error) bool) {
		for f, err := range s.List(ctx, prefix, 0) {
			if err != nil {
				yield(listedKey{}, fmt.Errorf("list source: %w", err))
				return
			}
			if !yield(listedKey{rel: strings.TrimPrefix(f.Key, prefix)}, nil) {
				return
			}
		}
	}
}
