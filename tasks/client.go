package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/objectid"
	"github.com/ferryhq/ferry/webhook"
)

// ErrNotFound is returned when neither ferry's progress hash nor asynq knows
// a task id.
var ErrNotFound = errors.New("task not found")

// Errors of Enqueue (and of the payloads' Validate) that callers branch on
// with errors.Is.
var (
	// ErrSameObject: a transfer's source and destination are one stored
	// object (a copy would rewrite it, a move would delete it).
	ErrSameObject = objectid.ErrSameObject
	// ErrOverlap: a migration's source and destination prefixes overlap.
	ErrOverlap = objectid.ErrOverlap
)

// ProfileInfo is what a producer needs to know of a worker profile to tell
// whether two locations are the same stored object. It holds no credentials.
type ProfileInfo struct {
	// EndpointURL is the profile's endpoint_url; empty means AWS.
	EndpointURL string
	// Region is the profile's region; for AWS it selects the partition.
	Region string
	// Prefix is the profile's key prefix ("archive" means "archive/").
	Prefix string
}

// ClientOptions are the optional settings of NewClient.
type ClientOptions struct {
	// ProfileFunc returns the named profile's endpoint, region and prefix,
	// and false for a profile it does not know. With it, Enqueue refuses a
	// copy or move onto itself (and a migration between overlapping
	// prefixes) however the two profiles spell one server: profile "archive"
	// with prefix "archive/" on the endpoint of "default" makes
	// s3://b/x.txt via "archive" the object s3://b/archive/x.txt via
	// "default". Nil means profiles are known by name only: Enqueue then
	// refuses the same name, bucket and key only, and the worker, which
	// knows its profiles, refuses the rest when it runs the task.
	ProfileFunc func(name string) (ProfileInfo, bool)
	// WebhookAllow is the workers' webhook allowlist (their webhook_allow).
	// With it, Enqueue refuses a notify URL the workers would refuse, with
	// the reason (errors.Is(err, webhook.ErrRefused)), and enqueues nothing.
	// Nil means the allowlist is unknown here: only the URL's shape is
	// checked, and a worker archives a delivery it refuses, with the reason.
	WebhookAllow *webhook.Allowlist
}

// Client enqueues ferry tasks and reads their progress. It shares the caller's
// Redis client, which it never closes. A Client is safe for concurrent use.
type Client struct {
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	opts      ClientOptions
}

// NewClient returns a Client on rdb, with options set by optFns. The caller
// keeps ownership of rdb and closes it after Close. A Redis Cluster client
// (*redis.ClusterClient) gets a hook that reloads its slot map when a node
// fails, once per client: without it, go-redis keeps sending a dead
// master's slots to it for up to a minute after its replica took over
// (cluster.go).
func NewClient(rdb redis.UniversalClient, optFns ...func(*ClientOptions)) *Client {
	followClusterFailover(rdb)
	c := &Client{
		rdb:       rdb,
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
	}
	for _, f := range optFns {
		f(&c.opts)
	}
	return c
}

// Enqueue enqueues t with its options followed by opts. Errors wrap asynq's:
// errors.Is(err, asynq.ErrTaskIDConflict) and asynq.ErrDuplicateTask work.
//
// After a successful enqueue, a cancel flag left by an earlier task with the
// same (deterministic) id is cleared, so re-enqueueing a cancelled transfer
// runs it.
func (c *Client) Enqueue(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if t == nil {
		return nil, errors.New("enqueue: nil task")
	}
	if err := c.checkIdentity(t); err != nil {
		return nil, fmt.Errorf("enqueue %s: %w", t.Type(), err)
	}
	if err := c.checkNotify(t); err != nil {
		return nil, fmt.Errorf("enqueue %s: %w", t.Type(), err)
	}
	info, err := c.client.EnqueueContext(ctx, t, opts...)
	if err != nil {
		return nil, fmt.Errorf("enqueue %s: %w", t.Type(), err)
	}
	// A reused id (TaskID, --task-id) may still have a cancel flag and the
	// finished progress of its last run: the flag would cancel the new run,
	// the progress would end its watchers at once. One round trip clears both.
	// An id asynq generated (a random UUID) is new: nothing to clear, and
	// small-object producers save the round trip.
	if generatedID(info.ID) {
		return info, nil
	}
	if err := clearStale.Run(ctx, c.rdb, []string{CancelKey(info.ID), ProgressKey(info.ID)}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return info, fmt.Errorf("enqueue %s: task %s enqueued, but clearing its old cancel flag and progress failed: %w", t.Type(), info.ID, err)
	}
	return info, nil
}

// checkIdentity refuses a transfer onto itself, and a migration between
// overlapping prefixes, with the profiles' endpoints and prefixes from
// ProfileFunc. Without ProfileFunc the payloads' own checks (by profile
// name) are all a producer can do. A payload that does not decode is left
// to the worker, which archives it with the reason.
func (c *Client) checkIdentity(t *asynq.Task) error {
	if c.opts.ProfileFunc == nil {
		return nil
	}
	switch t.Type() {
	case TypePut, TypeUpload, TypeCopy, TypeMove, TypeMigrate:
	case TypeBatch:
		return c.checkBatchIdentity(t)
	default:
		return nil
	}
	var p struct{ Source, Dest Location }
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Source.Kind() != KindS3 || p.Dest.Kind() != KindS3 {
		return nil
	}
	src, dst := c.ref(p.Source), c.ref(p.Dest)
	if t.Type() == TypeMigrate {
		return objectid.CheckNoOverlap(c.ref(p.Source.dir()), c.ref(p.Dest.dir()))
	}
	return objectid.CheckDistinct(src, dst)
}

// checkBatchIdentity is checkIdentity for each copy of a batch.
func (c *Client) checkBatchIdentity(t *asynq.Task) error {
	var p BatchPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return nil
	}
	for i, it := range p.Items {
		if it.Source.Kind() != KindS3 || it.Dest.Kind() != KindS3 {
			continue
		}
		if err := objectid.CheckDistinct(c.ref(it.Source), c.ref(it.Dest)); err != nil {
			return fmt.Errorf("item %d (%s): %w", i, it.Dest.String(), err)
		}
	}
	return nil
}

// ref is l for object identity, with its profile's endpoint and prefix
// when ProfileFunc knows it.
func (c *Client) ref(l Location) objectid.Ref {
	r := l.nameRef()
	if info, ok := c.opts.ProfileFunc(r.Profile.Name); ok {
		r.Profile = objectid.Profile{Name: r.Profile.Name, EndpointURL: info.EndpointURL, Region: info.Region, Prefix: info.Prefix}
	}
	return r
}

// checkNotify refuses a notify URL that WebhookAllow does not permit. A
// payload that does not decode is left to the worker.
func (c *Client) checkNotify(t *asynq.Task) error {
	if c.opts.WebhookAllow == nil {
		return nil
	}
	url := ""
	if t.Type() == TypeNotify {
		var p NotifyPayload
		if json.Unmarshal(t.Payload(), &p) != nil {
			return nil
		}
		url = p.URL
	} else {
		var p struct{ Notify *Notify }
		if json.Unmarshal(t.Payload(), &p) != nil || p.Notify == nil {
			return nil
		}
		url = p.Notify.URL
	}
	if _, err := c.opts.WebhookAllow.CheckURL(url); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// generatedID reports whether id looks like one asynq generates: a random
// (version 4) UUID, which no earlier task can have used.
func generatedID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && len(id) == 36 && u.Version() == 4
}

// clearStale deletes a task id's cancel flag, and its progress hash when that
// is in a terminal state (one a worker already made active for the new run
// is kept).
//
// KEYS[1] cancel flag, KEYS[2] progress hash
var clearStale = redis.NewScript(`
redis.call("DEL", KEYS[1])
local s = redis.call("HGET", KEYS[2], "state")
if s == "completed" or s == "failed" or s == "cancelled" then
  redis.call("DEL", KEYS[2])
end
return 0`)

// Inspector is asynq's Inspector on the same Redis, for queue management.
func (c *Client) Inspector() *asynq.Inspector { return c.inspector }

// Close releases the Client. It does not close the Redis client passed to
// NewClient (asynq does not own it either), so it has nothing to fail on.
func (c *Client) Close() error { return nil }

// Lookup returns asynq's record of the task id, searched in every queue:
// its queue, state, type and payload. It returns ErrNotFound when no queue
// holds it (never enqueued, or its Retention ran out).
func (c *Client) Lookup(ctx context.Context, id string) (*asynq.TaskInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.findTask(id)
}

// findTask looks id up in every asynq queue. It returns ErrNotFound when no
// queue holds it.
func (c *Client) findTask(id string) (*asynq.TaskInfo, error) {
	queues, err := c.inspector.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	for _, q := range queues {
		info, err := c.inspector.GetTaskInfo(q, id)
		switch {
		case err == nil:
			return info, nil
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			continue
		default:
			return nil, fmt.Errorf("look up task %s in queue %q: %w", id, q, err)
		}
	}
	return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
}
