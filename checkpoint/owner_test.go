package checkpoint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
)

// TestStaleOwnerIsFenced: a worker whose ownership expired (a pause longer
// than the TTL) and was claimed by another worker can no longer record a
// part, renew, pass the check before Complete, write in a Fenced
// transaction or mark the task done; the new owner can, and the stale
// worker's writes never land.
func TestStaleOwnerIsFenced(t *testing.T) {
	t.Parallel()
	b := setup(t, checkpoint.Options{})
	id := testenv.UniqueName("fenced-task") // the test runs again on the same Redis with -count
	fencedKey := "ferry:test:{" + id + "}"
	t.Cleanup(func() { b.rdb.Del(context.Background(), fencedKey) }) // t.Context() is done by then
	mustCreate(t, b, id, knownPlan())

	stale, err := b.store.Claim(b.ctx, id, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Claim(b.ctx, id, time.Second); !errors.Is(err, checkpoint.ErrNotOwner) {
		t.Fatalf("second Claim while owned: %v; want ErrNotOwner", err)
	}
	if err := b.store.RecordPartOwned(b.ctx, id, "upload-1", stale, checkpoint.Part{Number: 1, ETag: "stale-1", Size: 8 << 20}); err != nil {
		t.Fatalf("owner's RecordPartOwned: %v", err)
	}
	time.Sleep(1200 * time.Millisecond) // the stale owner pauses past its TTL
	fresh, err := b.store.Claim(b.ctx, id, time.Minute)
	if err != nil {
		t.Fatalf("Claim after expiry: %v", err)
	}
	if fresh <= stale {
		t.Errorf("new token %d is not larger than the old %d", fresh, stale)
	}
	for desc, err := range map[string]error{
		"RecordPartOwned": b.store.RecordPartOwned(b.ctx, id, "upload-1", stale, checkpoint.Part{Number: 2, ETag: "stale-2", Size: 8 << 20}),
		"Renew":           b.store.Renew(b.ctx, id, stale, time.Minute),
		"CheckOwner":      b.store.CheckOwner(b.ctx, id, stale),
		"MarkDone":        b.store.MarkDone(b.ctx, id, stale, time.Minute, []byte("stale")),
		"Fenced": b.store.Fenced(b.ctx, id, stale, func(p redis.Pipeliner) error {
			return p.Set(b.ctx, fencedKey, "stale", 0).Err()
		}),
	} {
		if !errors.Is(err, checkpoint.ErrNotOwner) {
			t.Errorf("stale token's %s: %v; want ErrNotOwner", desc, err)
		}
	}
	if err := b.store.Release(b.ctx, id, stale); err != nil {
		t.Fatal(err)
	}
	if err := b.store.CheckOwner(b.ctx, id, fresh); err != nil {
		t.Fatalf("the stale Release removed the new owner: %v", err)
	}
	if err := b.store.RecordPartOwned(b.ctx, id, "upload-1", fresh, checkpoint.Part{Number: 2, ETag: "fresh-2", Size: 8 << 20}); err != nil {
		t.Fatalf("new owner's RecordPartOwned: %v", err)
	}
	ck := mustLoad(t, b, id)
	if len(ck.Parts) != 2 || ck.Parts[1].ETag != "fresh-2" {
		t.Errorf("parts %+v; want part 1 stale-1 and part 2 fresh-2 only", ck.Parts)
	}
	if n, _ := b.rdb.Exists(b.ctx, fencedKey).Result(); n != 0 {
		t.Errorf("the stale token's Fenced transaction wrote %s", fencedKey)
	}
	if err := b.store.Fenced(b.ctx, id, fresh, func(p redis.Pipeliner) error {
		return p.Set(b.ctx, fencedKey, "fresh", 0).Err()
	}); err != nil {
		t.Fatalf("new owner's Fenced: %v", err)
	}
	if v, _ := b.rdb.Get(b.ctx, fencedKey).Result(); v != "fresh" {
		t.Errorf("%s = %q after the new owner's Fenced; want fresh", fencedKey, v)
	}
	if _, done, _ := b.store.Done(b.ctx, id); done {
		t.Fatal("done before MarkDone")
	}
	if err := b.store.MarkDone(b.ctx, id, fresh, time.Minute, []byte(`{"result":1}`)); err != nil {
		t.Fatal(err)
	}
	if out, done, _ := b.store.Done(b.ctx, id); !done || string(out) != `{"result":1}` {
		t.Errorf("MarkDone left mark %v with outcome %q; want the outcome given", done, out)
	}
	if owned, _ := b.store.Owned(b.ctx, id); owned {
		t.Error("MarkDone did not release the ownership")
	}
}
