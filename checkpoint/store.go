package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTTL is how long a checkpoint untouched by Create or RecordPart lives.
const DefaultTTL = 7 * 24 * time.Hour

// Options configures a Store.
type Options struct {
	// TTL is how long a checkpoint lives after its last Create or
	// RecordPart; then Redis expires it and the upload can no longer be
	// resumed (the janitor aborts it). Zero or negative means DefaultTTL
	// (7 days). Sub-millisecond values are rounded up to 1 ms.
	TTL time.Duration
}

// Store keeps checkpoints in Redis. It is safe for concurrent use by many
// goroutines and many processes sharing one Redis.
type Store struct {
	rdb   redis.UniversalClient
	ttlMS int64
	now   func() time.Time
}

// New returns a Store on rdb (single, Sentinel or Cluster).
func New(rdb redis.UniversalClient, opts Options) *Store {
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Store{rdb: rdb, ttlMS: max(ttl.Milliseconds(), 1), now: time.Now}
}

// createScript writes a plan only if no checkpoint exists for the task.
//
//	KEYS[1] -> ferry:ckpt:{<task_id>}
//	ARGV[1] -> TTL in milliseconds
//	ARGV[2:] -> plan fields and values, alternating
//
// Returns 1 when written, 0 when a checkpoint already exists (untouched).
var createScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 1 then
	return 0
end
redis.call("HSET", KEYS[1], unpack(ARGV, 2))
redis.call("PEXPIRE", KEYS[1], ARGV[1])
return 1
`)

// recordPartScript records one finished part if the checkpoint exists and
// belongs to the given upload (and, with a fencing token, if the caller
// still owns the task), and refreshes the TTL.
//
//	KEYS[1] -> ferry:ckpt:{<task_id>}
//	KEYS[2] -> ferry:own:{<task_id>}
//	ARGV[1] -> upload id the caller is writing for
//	ARGV[2] -> part number
//	ARGV[3] -> part field, p:<n>
//	ARGV[4] -> part value, <etag>|<size>
//	ARGV[5] -> TTL in milliseconds
//	ARGV[6] -> fencing token, "0" for none (unfenced)
//
// Returns 1 when written, 0 when no checkpoint exists, -1 when the stored
// upload_id differs (or is missing), -2 when the part number is above the
// stored part_count (a part_count of 0 means unknown: no upper bound here),
// -3 when the token is not the one in KEYS[2] (the task has a new owner).
var recordPartScript = redis.NewScript(`
if ARGV[6] ~= "0" and redis.call("GET", KEYS[2]) ~= ARGV[6] then
	return -3
end
if redis.call("EXISTS", KEYS[1]) == 0 then
	return 0
end
if redis.call("HGET", KEYS[1], "upload_id") ~= ARGV[1] then
	return -1
end
local count = tonumber(redis.call("HGET", KEYS[1], "part_count"))
if count and count > 0 and tonumber(ARGV[2]) > count then
	return -2
end
redis.call("HSET", KEYS[1], ARGV[3], ARGV[4])
redis.call("PEXPIRE", KEYS[1], ARGV[5])
return 1
`)

// deleteScript deletes a checkpoint only if it belongs to the given upload,
// so a stale run of a task (its lease expired, another run replaced the
// checkpoint with a new upload) cannot delete the live run's checkpoint.
//
//	KEYS[1] -> ferry:ckpt:{<task_id>}
//	ARGV[1] -> upload id the caller completed or aborted ("" matches a
//	           checkpoint without an upload_id field: a corrupt one)
//
// Returns 1 when deleted, 0 when no checkpoint exists, -1 when the stored
// upload_id differs (nothing deleted).
var deleteScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 0 then
	return 0
end
if (redis.call("HGET", KEYS[1], "upload_id") or "") ~= ARGV[1] then
	return -1
end
redis.call("DEL", KEYS[1])
return 1
`)

// pruneScript removes a task id from the index only if its score is still
// the one the caller saw, so an id re-added by a concurrent Create is kept.
//
//	KEYS[1] -> ferry:ckpt:index
//	ARGV[1] -> task id
//	ARGV[2] -> score the caller read
//
// Returns 1 when removed, 0 otherwise.
var pruneScript = redis.NewScript(`
local s = redis.call("ZSCORE", KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
	return redis.call("ZREM", KEYS[1], ARGV[1])
end
return 0
`)

func validTaskID(taskID string) error {
	if taskID == "" {
		return fmt.Errorf("checkpoint: task id is empty: %w", ErrInvalid)
	}
	return nil
}

// touchIndex records the task in the index with the current time.
func (s *Store) touchIndex(ctx context.Context, taskID string) error {
	err := s.rdb.ZAdd(ctx, indexKey, redis.Z{Score: float64(s.now().UnixMilli()), Member: taskID}).Err()
	if err != nil {
		return fmt.Errorf("checkpoint: task %q: index: %w", taskID, err)
	}
	return nil
}

// Create stores the plan of a new upload, only if no checkpoint exists for
// the task; otherwise it returns ErrExists and leaves the stored plan as it
// is. A zero p.CreatedAt is set to the current time.
//
// The task id is added to the index before the hash is written, so that the
// index always lists every live checkpoint (the janitor relies on it to
// never abort an upload that can still be resumed); when the write then
// fails the index holds an id without a hash, which List prunes.
func (s *Store) Create(ctx context.Context, taskID string, p Plan) error {
	if err := validTaskID(taskID); err != nil {
		return err
	}
	if err := p.validate(); err != nil {
		return fmt.Errorf("checkpoint: task %q: %w", taskID, err)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = s.now()
	}
	if err := s.touchIndex(ctx, taskID); err != nil {
		return err
	}
	args := append([]any{s.ttlMS}, p.fields()...)
	n, err := createScript.Run(ctx, s.rdb, []string{checkpointKey(taskID)}, args...).Int()
	if err != nil {
		return fmt.Errorf("checkpoint: task %q: create: %w", taskID, err)
	}
	if n == 0 {
		return fmt.Errorf("checkpoint: task %q: %w", taskID, ErrExists)
	}
	return nil
}

// Load returns the checkpoint of the task, or ErrNotFound. A field that
// cannot be parsed gives a *CorruptError naming the task and the field.
func (s *Store) Load(ctx context.Context, taskID string) (Checkpoint, error) {
	if err := validTaskID(taskID); err != nil {
		return Checkpoint{}, err
	}
	h, err := s.rdb.HGetAll(ctx, checkpointKey(taskID)).Result()
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: task %q: load: %w", taskID, err)
	}
	if len(h) == 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint: task %q: %w", taskID, ErrNotFound)
	}
	return parse(taskID, h)
}

// RecordPart records a finished part of the upload uploadID, atomically and
// only if the task's checkpoint exists (else ErrNotFound) and was created for
// that same upload id (else ErrPlanMismatch): a stale worker can neither
// resurrect a deleted checkpoint nor write into a newer plan. A part number
// outside 1..PartCount (1..MaxParts when PartCount is 0) gives
// ErrPlanMismatch. Recording the same number again replaces the earlier
// record (the last ETag wins). Each call refreshes the TTL and the task's
// index score.
func (s *Store) RecordPart(ctx context.Context, taskID, uploadID string, p Part) error {
	return s.recordPart(ctx, taskID, uploadID, 0, p)
}

// RecordPartOwned is RecordPart fenced by ownership: it writes only while
// token (from Claim) still owns the task, in the same atomic script, else
// it returns ErrNotOwner and writes nothing. A worker that paused past its
// ownership's expiry cannot record a part once another worker claimed the
// task.
func (s *Store) RecordPartOwned(ctx context.Context, taskID, uploadID string, token int64, p Part) error {
	if token <= 0 {
		return fmt.Errorf("checkpoint: task %q: fencing token %d <= 0: %w", taskID, token, ErrInvalid)
	}
	return s.recordPart(ctx, taskID, uploadID, token, p)
}

func (s *Store) recordPart(ctx context.Context, taskID, uploadID string, token int64, p Part) error {
	if err := validTaskID(taskID); err != nil {
		return err
	}
	switch {
	case uploadID == "":
		return fmt.Errorf("checkpoint: task %q: upload id is empty: %w", taskID, ErrInvalid)
	case p.ETag == "":
		return fmt.Errorf("checkpoint: task %q: part %d: etag is empty: %w", taskID, p.Number, ErrInvalid)
	case p.Size < 0:
		return fmt.Errorf("checkpoint: task %q: part %d: size %d < 0: %w", taskID, p.Number, p.Size, ErrInvalid)
	case strings.Contains(p.Checksum, "|"):
		return fmt.Errorf("checkpoint: task %q: part %d: checksum %q contains '|': %w", taskID, p.Number, p.Checksum, ErrInvalid)
	case p.Number < 1 || p.Number > MaxParts:
		return fmt.Errorf("checkpoint: task %q: part %d outside 1..%d: %w", taskID, p.Number, MaxParts, ErrPlanMismatch)
	}
	keys := []string{checkpointKey(taskID), ownerKey(taskID)}
	n, err := recordPartScript.Run(ctx, s.rdb, keys, uploadID, p.Number, partField(p.Number), partValue(p), s.ttlMS, token).Int()
	if err != nil {
		return fmt.Errorf("checkpoint: task %q: record part %d: %w", taskID, p.Number, err)
	}
	switch n {
	case 1:
	case 0:
		return fmt.Errorf("checkpoint: task %q: record part %d: %w", taskID, p.Number, ErrNotFound)
	case -1:
		return fmt.Errorf("checkpoint: task %q: record part %d: stored upload id is not %q: %w", taskID, p.Number, uploadID, ErrPlanMismatch)
	case -2:
		return fmt.Errorf("checkpoint: task %q: part %d is above the plan's part count: %w", taskID, p.Number, ErrPlanMismatch)
	case -3:
		return fmt.Errorf("checkpoint: task %q: record part %d with token %d: %w", taskID, p.Number, token, ErrNotOwner)
	default:
		return fmt.Errorf("checkpoint: task %q: record part %d: unexpected script result %d", taskID, p.Number, n)
	}
	return s.touchIndex(ctx, taskID)
}

// Delete removes the task's checkpoint and its index entry, only if the
// checkpoint belongs to uploadID (the upload the caller completed or
// aborted): a checkpoint of another upload — written by a newer run of the
// task after this one's lease expired — is left intact and Delete returns
// ErrPlanMismatch. Deleting a missing checkpoint is not an error. A corrupt
// checkpoint is deleted with the UploadID its *CorruptError reports.
func (s *Store) Delete(ctx context.Context, taskID, uploadID string) error {
	if err := validTaskID(taskID); err != nil {
		return err
	}
	// The index lives in another Cluster slot, so it cannot be changed in
	// the script. Read the entry's score first and remove it afterwards only
	// if unchanged: an entry re-added by a new Create in between is kept.
	score, err := s.rdb.ZScore(ctx, indexKey, taskID).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("checkpoint: task %q: delete: read index: %w", taskID, err)
	}
	indexed := err == nil
	// Hash first: if the index update fails the index holds a dead id,
	// which List prunes; the reverse order could hide a live checkpoint
	// from the janitor.
	n, err := deleteScript.Run(ctx, s.rdb, []string{checkpointKey(taskID)}, uploadID).Int()
	if err != nil {
		return fmt.Errorf("checkpoint: task %q: delete: %w", taskID, err)
	}
	switch n {
	case 1, 0:
	case -1:
		return fmt.Errorf("checkpoint: task %q: delete: it belongs to another upload than %q (a newer run of the task); left intact: %w", taskID, uploadID, ErrPlanMismatch)
	default:
		return fmt.Errorf("checkpoint: task %q: delete: unexpected script result %d", taskID, n)
	}
	if indexed {
		sc := strconv.FormatFloat(score, 'f', -1, 64)
		if err := pruneScript.Run(ctx, s.rdb, []string{indexKey}, taskID, sc).Err(); err != nil {
			return fmt.Errorf("checkpoint: task %q: delete from index: %w", taskID, err)
		}
	}
	return nil
}

// listBatch is how many checkpoints List reads per pipeline.
const listBatch = 256

// List returns every live checkpoint, least recently updated first. It
// reads the whole index and each hash (O(n), meant for the janitor), and
// removes from the index the ids whose hash is gone (expired, or a write
// that failed half way).
//
// A checkpoint that cannot be parsed is left out and reported in the
// returned error (errors.Join of *CorruptError), while the others are still
// returned: a caller deciding what is orphaned must treat a non-nil error as
// "the list may be incomplete".
func (s *Store) List(ctx context.Context) ([]Checkpoint, error) {
	index, err := s.rdb.ZRangeWithScores(ctx, indexKey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list index: %w", err)
	}
	var (
		out     []Checkpoint
		corrupt []error
	)
	for len(index) > 0 {
		batch := index[:min(listBatch, len(index))]
		index = index[len(batch):]

		cmds := make([]*redis.MapStringStringCmd, len(batch))
		_, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i, z := range batch {
				cmds[i] = pipe.HGetAll(ctx, checkpointKey(z.Member.(string)))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("checkpoint: list: %w", err)
		}
		for i, z := range batch {
			id := z.Member.(string)
			h := cmds[i].Val()
			if len(h) == 0 {
				score := strconv.FormatFloat(z.Score, 'f', -1, 64)
				if err := pruneScript.Run(ctx, s.rdb, []string{indexKey}, id, score).Err(); err != nil {
					return nil, fmt.Errorf("checkpoint: list: prune task %q: %w", id, err)
				}
				continue
			}
			c, err := parse(id, h)
			if err != nil {
				corrupt = append(corrupt, err)
				continue
			}
			out = append(out, c)
		}
	}
	return out, errors.Join(corrupt...)
}
