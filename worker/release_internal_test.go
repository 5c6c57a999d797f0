package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
)

// TestReleaseKeepsAFailedRunIndexed: a run of asynq that failed for now
// releases its ownership but stays in the takeover index, stamped with the
// time of its failure, so that the loop continues the task if asynq could
// not record its retry (a Redis failover: TestFailover's Cluster case
// waited 60–120 s for asynq's lease recovery) and passes over it while
// asynq records the retry. A run that succeeded, or failed for good, is
// unindexed as before.
func TestReleaseKeepsAFailedRunIndexed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := testenv.RedisClient(t)
	w := &Worker{log: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), rdb: rdb, ckpt: checkpoint.New(rdb, checkpoint.Options{})}
	for _, tc := range []struct {
		name    string
		err     error
		indexed bool
	}{
		{"failed for now", errors.New("put part 3: 503 SlowDown"), true},
		{"completed", nil, false},
		{"failed for good", permanent(errors.New("access denied")), false},
		{"cancelled", errCancelled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, queue := testenv.UniqueName("rel"), testenv.UniqueName("q")
			t.Cleanup(func() { rdb.HDel(context.Background(), takeoverIndexKey, id) })
			if err := indexTask.Run(ctx, rdb, []string{takeoverIndexKey}, id, queue).Err(); err != nil {
				t.Fatal(err)
			}
			token, err := w.ckpt.Claim(ctx, id, ownershipTTL)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			failed := time.Now().Add(-5 * time.Millisecond) // the Redis clock is this machine's
			w.release(ctx, &claim{id: id, token: token, queue: queue}, nil, tc.err, w.log)
			if owned, err := w.ckpt.Owned(ctx, id); err != nil || owned {
				t.Errorf("owned after release: %v, %v", owned, err)
			}
			index, _, err := readIndex(ctx, rdb)
			if err != nil {
				t.Fatal(err)
			}
			entry, indexed := index[id]
			if indexed != tc.indexed {
				t.Fatalf("indexed after release: %v (%q), want %v", indexed, entry, tc.indexed)
			}
			if !indexed {
				return
			}
			q, at := parseIndexEntry(entry)
			if q != queue || at.Before(failed) {
				t.Errorf("index entry %q after release: queue %q at %s, want %q stamped at the failure (after %s)", entry, q, at, queue, failed)
			}
		})
	}
}
