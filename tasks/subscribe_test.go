package tasks_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// TestProgressFeedResubscribes kills the feed's connection on the server:
// the feed reports the interruption, then Resubscribed once go-redis is back
// (the reader's cue to re-read the hashes), then delivers updates again.
func TestProgressFeedResubscribes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var conns []int64 // CLIENT IDs of the feed client's connections
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t).Addr, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
		id, err := cn.ClientID(ctx).Result()
		mu.Lock()
		conns = append(conns, id)
		mu.Unlock()
		return err
	}})
	t.Cleanup(func() { _ = rdb.Close() })
	admin := testenv.RedisClient(t)

	feed, err := tasks.SubscribeProgress(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	mu.Lock()
	for _, id := range conns {
		if err := admin.ClientKillByFilter(ctx, "ID", itoa(id)).Err(); err != nil {
			t.Fatalf("CLIENT KILL ID %d: %v", id, err)
		}
	}
	mu.Unlock()

	id := testenv.UniqueName("after")
	resubscribed := false
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("no update after the reconnect (resubscribed: %v)", resubscribed)
		case e, ok := <-feed.C:
			if !ok {
				t.Fatal("feed closed after its connection was killed")
			}
			switch {
			case e.Resubscribed:
				resubscribed = true
				if err := tasks.PublishProgress(ctx, admin, tasks.Progress{TaskID: id, State: tasks.StateActive}, time.Minute); err != nil {
					t.Fatal(err)
				}
			case e.Err != nil:
				t.Logf("interruption reported: %v", e.Err)
			case e.Progress.TaskID == id:
				if !resubscribed {
					t.Fatal("an update arrived before the Resubscribed event")
				}
				return
			}
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
