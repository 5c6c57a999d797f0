package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ownership of a task, with fencing tokens.
//
// One worker at a time runs a task: the one whose token is stored in
// ferry:own:{<task_id>}. The owner renews the key well within its short
// expiry; when the owner dies (or pauses longer than the expiry) the key
// expires and another worker may Claim the task with a new, larger token.
// Every write that matters compares the caller's token with the stored one
// — RecordPartOwned, Fenced (a transaction on the task's own keys: a
// migration's cursor, a batch's record of finished items), and CheckOwner
// right before a write outside Redis (CompleteMultipartUpload,
// DeleteObjects) — so a worker that comes back after losing ownership is
// refused and stops.

// ownerRenewScript extends the ownership only if token still holds it.
//
//	KEYS[1] -> ferry:own:{<task_id>}
//	ARGV[1] -> token
//	ARGV[2] -> expiry in milliseconds
//
// Returns 1 when extended, 0 when another token (or none) is stored.
var ownerRenewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
`)

// ownerReleaseScript deletes the ownership only if token still holds it.
//
//	KEYS[1] -> ferry:own:{<task_id>}
//	ARGV[1] -> token
//
// Returns 1 when deleted, 0 otherwise.
var ownerReleaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// markDoneScript records that token's owner ended the task, with its
// outcome, and releases the ownership, atomically, only while token still
// owns it.
//
//	KEYS[1] -> ferry:own:{<task_id>}
//	KEYS[2] -> ferry:own:{<task_id>}:done
//	ARGV[1] -> token
//	ARGV[2] -> expiry of the done mark in milliseconds
//	ARGV[3] -> the outcome (opaque bytes, the caller's)
//
// Returns 1 when marked, 0 when token no longer owns the task.
var markDoneScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call("SET", KEYS[2], ARGV[3], "PX", ARGV[2])
redis.call("DEL", KEYS[1])
return 1
`)

// Claim makes the caller the owner of the task for ttl, with a new fencing
// token larger than every token handed out before. It returns ErrNotOwner
// when another worker holds the task.
func (s *Store) Claim(ctx context.Context, taskID string, ttl time.Duration) (int64, error) {
	if err := validTaskID(taskID); err != nil {
		return 0, err
	}
	token, err := s.rdb.Incr(ctx, tokenKey).Result()
	if err != nil {
		return 0, fmt.Errorf("checkpoint: task %q: new fencing token: %w", taskID, err)
	}
	ok, err := s.rdb.SetNX(ctx, ownerKey(taskID), token, ttl).Result()
	if err != nil {
		return 0, fmt.Errorf("checkpoint: task %q: claim: %w", taskID, err)
	}
	if !ok {
		return 0, fmt.Errorf("checkpoint: task %q: claim: %w", taskID, ErrNotOwner)
	}
	return token, nil
}

// Renew extends the ownership of token by ttl, or returns ErrNotOwner when
// the task has another owner (or none) now.
func (s *Store) Renew(ctx context.Context, taskID string, token int64, ttl time.Duration) error {
	n, err := ownerRenewScript.Run(ctx, s.rdb, []string{ownerKey(taskID)}, token, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return fmt.Errorf("checkpoint: task %q: renew ownership: %w", taskID, err)
	}
	if n == 0 {
		return fmt.Errorf("checkpoint: task %q: renew ownership with token %d: %w", taskID, token, ErrNotOwner)
	}
	return nil
}

// CheckOwner returns nil while token owns the task, else ErrNotOwner. It is
// the fence before writes outside Redis (CompleteMultipartUpload).
func (s *Store) CheckOwner(ctx context.Context, taskID string, token int64) error {
	v, err := s.rdb.Get(ctx, ownerKey(taskID)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("checkpoint: task %q: check ownership: %w", taskID, err)
	}
	if err != nil || v != token {
		return fmt.Errorf("checkpoint: task %q: token %d: %w", taskID, token, ErrNotOwner)
	}
	return nil
}

// Owned reports whether any worker owns the task now.
func (s *Store) Owned(ctx context.Context, taskID string) (bool, error) {
	n, err := s.rdb.Exists(ctx, ownerKey(taskID)).Result()
	if err != nil {
		return false, fmt.Errorf("checkpoint: task %q: ownership: %w", taskID, err)
	}
	return n == 1, nil
}

// Release gives up the ownership of token; releasing an ownership already
// lost is not an error (there is nothing left to give up).
func (s *Store) Release(ctx context.Context, taskID string, token int64) error {
	if err := ownerReleaseScript.Run(ctx, s.rdb, []string{ownerKey(taskID)}, token).Err(); err != nil {
		return fmt.Errorf("checkpoint: task %q: release ownership: %w", taskID, err)
	}
	return nil
}

// MarkDone records that the owner with token ended the task, with its
// outcome (what the caller needs to end the task's other runs the same way:
// a result, a failure), and releases the ownership, atomically; the mark
// lives for ttl. A later run of the same task finds it with Done and ends
// at once instead of running the task again. ErrNotOwner when token no
// longer owns the task.
func (s *Store) MarkDone(ctx context.Context, taskID string, token int64, ttl time.Duration, outcome []byte) error {
	n, err := markDoneScript.Run(ctx, s.rdb, []string{ownerKey(taskID), doneKey(taskID)}, token, max(ttl.Milliseconds(), 1), outcome).Int()
	if err != nil {
		return fmt.Errorf("checkpoint: task %q: mark done: %w", taskID, err)
	}
	if n == 0 {
		return fmt.Errorf("checkpoint: task %q: mark done with token %d: %w", taskID, token, ErrNotOwner)
	}
	return nil
}

// Done reports whether MarkDone recorded the task as ended, and the
// outcome it recorded.
func (s *Store) Done(ctx context.Context, taskID string) (outcome []byte, done bool, err error) {
	b, err := s.rdb.Get(ctx, doneKey(taskID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint: task %q: done mark: %w", taskID, err)
	}
	return b, true, nil
}

// ClearDone deletes the done mark once the run that found it finished.
func (s *Store) ClearDone(ctx context.Context, taskID string) error {
	if err := s.rdb.Del(ctx, doneKey(taskID)).Err(); err != nil {
		return fmt.Errorf("checkpoint: task %q: clear done mark: %w", taskID, err)
	}
	return nil
}

// fencedAttempts bounds Fenced's retries: its transaction is also aborted
// when the owner's own renewal (a PEXPIRE) touches the key meanwhile.
const fencedAttempts = 10

// Fenced runs fn's commands in one MULTI/EXEC that applies only while token
// owns the task: the owner key is WATCHed and compared first, so a worker
// that lost the task writes nothing (ErrNotOwner). fn must touch only keys
// hash-tagged with the task id ({<task_id>}), the owner key's slot in a
// Redis Cluster.
func (s *Store) Fenced(ctx context.Context, taskID string, token int64, fn func(redis.Pipeliner) error) error {
	key := ownerKey(taskID)
	for range fencedAttempts {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.Get(ctx, key).Int64()
			if err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("checkpoint: task %q: check ownership: %w", taskID, err)
			}
			if err != nil || v != token {
				return fmt.Errorf("checkpoint: task %q: token %d: %w", taskID, token, ErrNotOwner)
			}
			_, err = tx.TxPipelined(ctx, fn)
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return fmt.Errorf("checkpoint: task %q: the owner key changed under %d transactions in a row: %w", taskID, fencedAttempts, redis.TxFailedErr)
}
