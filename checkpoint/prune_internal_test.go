package checkpoint

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
)

// A List that saw a dead id must not prune it if a Create re-indexed it
// meanwhile (new score): the janitor must see every live checkpoint.
//
// The script runs on an index of the test's own: in the shared one, a
// List of a test running alongside (TestList, ...) prunes this id, which
// has no checkpoint, before the script sees it.
func TestPruneScriptComparesScore(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	ctx := t.Context()
	id := testenv.UniqueName("task")
	index := testenv.UniqueName(indexKey + ":test")
	t.Cleanup(func() { rdb.Del(context.Background(), index) }) // t.Context() is done by then
	rdb.ZAdd(ctx, index, redisZ(1700000000123, id))

	tests := []struct {
		desc    string
		score   string
		removed int64
		inIndex bool
	}{
		{desc: "score changed since read: kept", score: "1700000000000", removed: 0, inIndex: true},
		{desc: "score unchanged: removed", score: "1700000000123", removed: 1, inIndex: false},
	}
	for _, tc := range tests { // sequential: each step depends on the last
		n, err := pruneScript.Run(ctx, rdb, []string{index}, id, tc.score).Int64()
		if err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		if n != tc.removed {
			t.Errorf("%s: removed %d, want %d", tc.desc, n, tc.removed)
		}
		if got := rdb.ZScore(ctx, index, id).Err() == nil; got != tc.inIndex {
			t.Errorf("%s: in index = %v, want %v", tc.desc, got, tc.inIndex)
		}
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
