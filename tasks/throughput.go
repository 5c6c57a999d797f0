package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Aggregate throughput: the bytes every worker moved, summed per
// ThroughputBucket in Redis, for the last ThroughputWindow.
//
// Each worker adds the bytes it moved since its last progress update to the
// counter of the current bucket (INCRBY, in the pipeline of that update), so
// the sum is exact with any number of workers: no worker reads or replaces
// another's count. A bucket's key expires at a fixed time (EXPIREAT: its
// start + ThroughputWindow + two buckets), so at most
// ThroughputWindow/ThroughputBucket + 3 keys exist at once, whatever the
// number of workers, tasks or objects: about 100 small strings, some 8 KiB
// of Redis. The keys share one hash tag, so one MGET reads the window on a
// Redis Cluster too.
//
// What counts: the bytes of objects and parts a transfer wrote (put,
// upload, copy, move, batch items), as they finish; bytes a resumed upload
// found already uploaded do not count, parts sent again after a crash do
// (they were moved again). A migration counts through its copies, not
// itself. A worker killed mid-update loses at most its last quarter second.
const (
	// ThroughputBucket is the width of one throughput bucket.
	ThroughputBucket = 10 * time.Second
	// ThroughputWindow is how far back Throughput reads.
	ThroughputWindow = 15 * time.Minute
)

// throughputExpiry is how long after its start a bucket is kept: the
// window, the bucket in progress and one of slack for clocks that differ.
const throughputExpiry = ThroughputWindow + 2*ThroughputBucket

// bucketOf is the start, in Unix seconds, of the bucket holding at.
func bucketOf(at time.Time) int64 {
	w := int64(ThroughputBucket / time.Second)
	s := at.Unix()
	return s - s%w
}

// addThroughput queues on pipe the addition of moved bytes to the bucket of at.
func addThroughput(ctx context.Context, pipe redis.Pipeliner, moved int64, at time.Time) {
	b := bucketOf(at)
	key := throughputKey(b)
	pipe.IncrBy(ctx, key, moved)
	pipe.ExpireAt(ctx, key, time.Unix(b, 0).Add(throughputExpiry))
}

// RecordThroughput adds moved bytes, transferred at time at, to the
// aggregate throughput. Workers call it through PublishProgressMoved; it is
// for bytes moved outside a progress update (a run's last ones).
func RecordThroughput(ctx context.Context, rdb redis.UniversalClient, moved int64, at time.Time) error {
	if moved <= 0 {
		return nil
	}
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		addThroughput(ctx, p, moved, at)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record throughput: %w", err)
	}
	return nil
}

// ThroughputPoint is one bucket of the aggregate throughput.
type ThroughputPoint struct {
	// Start is when the bucket starts; it lasts ThroughputBucket.
	Start time.Time `json:"start"`
	// Bytes is what every worker moved in the bucket.
	Bytes int64 `json:"bytes"`
	// Rate is Bytes per second of the bucket (of its elapsed part, for the
	// bucket in progress).
	Rate float64 `json:"rate"`
	// Partial marks the bucket in progress (the last one).
	Partial bool `json:"partial,omitempty"`
}

// Throughput reads the aggregate throughput of the ThroughputWindow before
// now: one point per bucket, oldest first, the last one the bucket in
// progress; a bucket no worker wrote to is a point of 0 bytes.
func Throughput(ctx context.Context, rdb redis.UniversalClient, now time.Time) ([]ThroughputPoint, error) {
	step := int64(ThroughputBucket / time.Second)
	last := bucketOf(now)
	n := int(ThroughputWindow / ThroughputBucket)
	first := last - int64(n)*step
	keys := make([]string, 0, n+1)
	for b := first; b <= last; b += step {
		keys = append(keys, throughputKey(b))
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read throughput: %w", err)
	}
	out := make([]ThroughputPoint, len(keys))
	for i := range keys {
		b := first + int64(i)*step
		p := ThroughputPoint{Start: time.Unix(b, 0).UTC()}
		if i < len(vals) {
			if s, ok := vals[i].(string); ok {
				p.Bytes, _ = strconv.ParseInt(s, 10, 64)
			}
		}
		secs := ThroughputBucket.Seconds()
		if b == last {
			p.Partial = true
			secs = max(now.Sub(time.Unix(b, 0)).Seconds(), 1)
		}
		p.Rate = float64(p.Bytes) / secs
		out[i] = p
	}
	return out, nil
}
