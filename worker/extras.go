package worker

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
)

// --delete-extra tuning.
const (
	// maxExtrasPerRound caps the keys one round of --delete-extra holds
	// (about 100 B each): more extras than that are deleted in further
	// rounds, each after two fresh complete listings.
	maxExtrasPerRound = 100_000
	// extraClockSkew is subtracted from the destination server's clock at
	// the start of a migration: an extra whose LastModified is later than
	// that is never deleted. It allows for the server's own nodes (Date
	// from one, LastModified from another) disagreeing by up to a second;
	// erring this way keeps an object, never deletes one.
	extraClockSkew = time.Second
)

// lister is what the --delete-extra phase needs of a storage.
type lister interface {
	List(ctx context.Context, prefix string, limit int) iter.Seq2[storage.StoredFile, error]
}

// extras is what one comparison of two complete listings found.
type extras struct {
	// keys are destination keys to delete, in key order, at most the
	// keep passed to findExtras.
	keys []string
	// found counts every extra, recent ones excepted (keys may hold fewer).
	found int64
	// recent counts extras kept because they were modified at the
	// destination at or after the migration started.
	recent int64
}

// findExtras lists the source under srcPrefix and the destination under
// dstPrefix to their ends and merges them: a destination object is extra
// when selects(its relative key) and the source has no object at that
// relative key. It deletes nothing: the caller deletes only what a call
// that returned no error found, so every deletion rests on two complete
// listings that passed storage.List's checks (keys strictly increasing and
// inside the prefix, no truncated page without a continuation token —
// errors wrapping storage.ErrListingInconsistent otherwise). Extras
// modified at or after since are counted in recent, never in keys.
func findExtras(ctx context.Context, src, dst lister, srcPrefix, dstPrefix string, selects func(string) bool, since time.Time, keep int) (extras, error) {
	var x extras
	nextSrc, stopSrc := iter.Pull2(src.List(ctx, srcPrefix, 0))
	defer stopSrc()
	srcRel, srcOK := "", true
	advance := func() error {
		f, err, ok := nextSrc()
		if err != nil {
			return fmt.Errorf("list source: %w", err)
		}
		srcOK, srcRel = ok, strings.TrimPrefix(f.Key, srcPrefix)
		return nil
	}
	if err := advance(); err != nil {
		return extras{}, err
	}
	for f, err := range dst.List(ctx, dstPrefix, 0) {
		if err != nil {
			return extras{}, fmt.Errorf("list destination: %w", err)
		}
		rel := strings.TrimPrefix(f.Key, dstPrefix)
		for srcOK && srcRel < rel {
			if err := advance(); err != nil {
				return extras{}, err
			}
		}
		switch {
		case srcOK && srcRel == rel, !selects(rel):
		case !f.LastModified.Before(since):
			x.recent++
		default:
			x.found++
			if len(x.keys) < keep {
				x.keys = append(x.keys, f.Key)
			}
		}
	}
	// The source must be complete and consistent to its end as well.
	for srcOK {
		if err := advance(); err != nil {
			return extras{}, err
		}
	}
	return x, nil
}

// State fields of the --delete-extra phase in the migration's hash.
const (
	// stateDeleteSince is the destination server's clock when the migration
	// first ran (Unix seconds), or "unknown" when the server sent no Date.
	stateDeleteSince   = "delete_since"
	deleteSinceUnknown = "unknown"
)

// recordStart notes the destination server's clock once, when the
// migration first runs: retries and resumed runs keep the first value, so
// whatever was written at the destination since the migration started is
// never deleted as extra.
func (m *migration) recordStart(ctx context.Context) error {
	if !m.p.DeleteExtra {
		return nil
	}
	if n, err := m.w.rdb.HExists(ctx, migrateKey(m.id), stateDeleteSince).Result(); err != nil || n {
		return err
	}
	t, err := m.dst.ServerTime(ctx)
	if err != nil {
		return fmt.Errorf("--delete-extra: read the destination server's clock: %w", err)
	}
	v := deleteSinceUnknown
	if !t.IsZero() {
		v = strconv.FormatInt(t.Unix(), 10)
	}
	return m.w.rdb.HSetNX(ctx, migrateKey(m.id), stateDeleteSince, v).Err()
}

// errDeleteSkipped ends a migration whose --delete-extra phase could not
// be trusted to run; the report says why.
var errDeleteSkipped = errors.New("--delete-extra skipped")

// deleteExtras is the --delete-extra phase, after every copy succeeded: in
// rounds, it finds the extras from two complete listings and only then
// deletes them (a dry run reports them instead). A listing that fails its
// checks, or an unknown server clock, skips the phase with the reason in
// rep.DeleteSkipped and errDeleteSkipped.
func (m *migration) deleteExtras(ctx context.Context, st map[string]string, rep *MigrateReport) error {
	secs, err := strconv.ParseInt(st[stateDeleteSince], 10, 64)
	if err != nil {
		rep.DeleteSkipped = "the destination server sent no Date header, so objects written there since the migration started cannot be told apart: nothing deleted at the destination"
		return errDeleteSkipped
	}
	since := time.Unix(secs, 0).Add(-extraClockSkew)
	keep := maxExtrasPerRound
	if m.p.DryRun {
		keep = maxDryRunSample
	}
	for {
		x, err := findExtras(ctx, m.src, m.dst, m.p.Source.Key, m.p.Dest.Key, m.p.Selects, since, keep)
		if errors.Is(err, storage.ErrListingInconsistent) {
			rep.DeleteSkipped = fmt.Sprintf("%v: nothing deleted at the destination", err)
			return errDeleteSkipped
		}
		if err != nil {
			return err
		}
		rep.KeptRecent = x.recent
		if m.p.DryRun {
			rep.WouldDelete, rep.DeleteSample = x.found, x.keys
			return nil
		}
		if len(x.keys) == 0 {
			return nil
		}
		n, err := m.dst.DeleteMany(ctx, x.keys)
		total, cerr := m.w.rdb.HIncrBy(ctx, migrateKey(m.id), "deleted", int64(n)).Result()
		if err != nil {
			return err
		}
		if cerr != nil {
			return fmt.Errorf("migration state: %w", cerr)
		}
		m.prog.counters(ctx, map[string]int64{"deleted": total}, false)
		m.log.Info("deleted extras at the destination", zap.Int("deleted", n), zap.Int64("found", x.found),
			zap.Int64("kept_recent", x.recent), zap.Time("since", since))
		if int64(len(x.keys)) == x.found {
			return nil
		}
		if err := m.w.checkInterrupt(ctx, m.id); err != nil {
			return err
		}
	}
}

// previewDelete is a recursive delete's dry run: it lists prefix and
// returns how many objects the delete would remove, with the first
// maxDryRunSample keys. It writes nothing.
func previewDelete(ctx context.Context, dst lister, prefix string) (map[string]any, error) {
	var n int64
	sample := []string{}
	for f, err := range dst.List(ctx, prefix, 0) {
		if err != nil {
			return nil, err
		}
		n++
		if len(sample) < maxDryRunSample {
			sample = append(sample, f.Key)
		}
	}
	return map[string]any{"dry_run": true, "would_delete": n, "delete_sample": sample}, nil
}
