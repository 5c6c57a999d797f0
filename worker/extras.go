package worker

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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
	// keep passed to findExtras; etags and modified are their ETags and
	// LastModified as listed (a delete checks both are still so).
	keys, etags []string
	modified    []time.Time
	// found counts every extra, recent ones excepted (keys may hold fewer).
	found int64
	// recent counts extras kept because they were modified at the
	// destination at or after the migration started.
	recent int64
}

// listedKey is an entry of the source's complete listing, for
// --delete-extra: rel is its key relative to the source prefix; covers
// marks an entry the migration passed over (a local tree's symlink or
// special file), which stands for whatever the destination holds at its
// key or under it as a directory: none of that is extra.
type listedKey struct {
	rel    string
	covers bool
}

// findExtras merges the source's complete listing (src, in key order) with
// the destination's under dstPrefix, listed to its end: a destination
// object is extra when selects(its relative key) and the source has no
// entry at that relative key (nor a covering entry at it or at one of its
// leading directories). It deletes nothing: the caller deletes only what a
// call that returned no error found, so every deletion rests on two
// complete listings that passed their checks (storage.List: keys strictly
// increasing and inside the prefix, no truncated page without a
// continuation token — errors wrapping storage.ErrListingInconsistent
// otherwise). Extras modified at or after since are counted in recent,
// never in keys.
func findExtras(ctx context.Context, src iter.Seq2[listedKey, error], dst lister, dstPrefix string, selects func(string) bool, since time.Time, keep int) (extras, error) {
	var x extras
	nextSrc, stopSrc := iter.Pull2(src)
	defer stopSrc()
	var cur listedKey
	srcOK := true
	// covers holds the covering entries met that may still cover a
	// destination key to come (c itself, or keys under c+"/").
	var covers []string
	advance := func() error {
		k, err, ok := nextSrc()
		if err != nil {
			return err
		}
		srcOK, cur = ok, k
		if ok && k.covers {
			covers = append(covers, k.rel)
		}
		return nil
	}
	covered := func(rel string) bool {
		keep := covers[:0]
		hit := false
		for _, c := range covers {
			if rel >= c+"0" { // past every key under c+"/" ('0' follows '/')
				continue
			}
			keep = append(keep, c)
			hit = hit || rel == c || strings.HasPrefix(rel, c+"/")
		}
		covers = keep
		return hit
	}
	if err := advance(); err != nil {
		return extras{}, err
	}
	for f, err := range dst.List(ctx, dstPrefix, 0) {
		if err != nil {
			return extras{}, fmt.Errorf("list destination: %w", err)
		}
		rel := strings.TrimPrefix(f.Key, dstPrefix)
		for srcOK && cur.rel < rel {
			if err := advance(); err != nil {
				return extras{}, err
			}
		}
		switch {
		case rel == "", srcOK && cur.rel == rel, !selects(rel), covered(rel):
			// rel "" is the destination directory's own marker: never
			// extra (listPage skips it likewise when it has no place).
		case !f.LastModified.Before(since):
			x.recent++
		default:
			x.found++
			if len(x.keys) < keep {
				x.keys, x.etags, x.modified = append(x.keys, f.Key), append(x.etags, f.ETag), append(x.modified, f.LastModified)
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
	// stateKeptChanged counts the extras kept because they changed
	// between the listings and their deletion.
	stateKeptChanged = "kept_changed"
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
		x, err := findExtras(ctx, m.sourceKeys(ctx), m.dst, m.p.Dest.Key, m.p.Selects, since, keep)
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
		// Before every batch, the first too: nothing is deleted after a
		// cancel.
		if err := m.w.checkCancel(ctx, m.id); err != nil {
			return err
		}
		if err := m.w.checkOwner(ctx, m.id); err != nil {
			return err // the fence before a write outside Redis
		}
		if m.w.beforeExtrasDelete != nil {
			m.w.beforeExtrasDelete()
		}
		listed := make([]storage.StoredFile, len(x.keys))
		for i, k := range x.keys {
			listed[i] = storage.StoredFile{Key: k, ETag: x.etags[i], LastModified: x.modified[i]}
		}
		// Each is deleted only if still the version listed: one rewritten
		// at the destination since is someone's new object.
		n, changed, err := m.dst.DeleteIfUnchanged(ctx, listed)
		var total, keptChanged *redis.IntCmd
		_, cerr := m.w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			total = p.HIncrBy(ctx, migrateKey(m.id), "deleted", int64(n))
			keptChanged = p.HIncrBy(ctx, migrateKey(m.id), stateKeptChanged, int64(len(changed)))
			return nil
		})
		if err != nil {
			return err
		}
		if cerr != nil {
			return fmt.Errorf("migration state: %w", cerr)
		}
		rep.KeptChanged = keptChanged.Val()
		m.prog.counters(ctx, map[string]int64{"deleted": total.Val()}, false)
		m.log.Info("deleted extras at the destination", zap.Int("deleted", n), zap.Int64("found", x.found),
			zap.Int64("kept_recent", x.recent), zap.Int("kept_changed", len(changed)), zap.Time("since", since))
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
