package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// ProgressEvent is one event of a ProgressFeed: an update, or news about the
// subscription itself.
type ProgressEvent struct {
	// Progress is an update published on ProgressChannel; zero for the
	// events below.
	Progress Progress
	// Resubscribed reports that the subscription came back after an
	// interruption: updates published meanwhile are lost, so the reader
	// re-reads the progress hashes it cares about.
	Resubscribed bool
	// Err reports an interruption (the connection broke); go-redis
	// reconnects by itself, and a Resubscribed event follows.
	Err error
}

// ProgressFeed is one subscription to ProgressChannel: the one progress
// subscriber of ferry, behind Client.Watch and the dashboard's index.
type ProgressFeed struct {
	// C delivers the events; it is closed when ctx is done or Close is
	// called. The reader must drain it.
	C <-chan ProgressEvent

	sub    *redis.PubSub
	cancel context.CancelFunc
	done   chan struct{}
}

// feedPingInterval is how long the subscription may stay silent before a
// PING checks it: a dead connection is noticed, and re-established, within
// about this time.
const feedPingInterval = 30 * time.Second

// feedRetryDelay paces reconnect attempts after an interruption.
const feedRetryDelay = 500 * time.Millisecond

// SubscribeProgress subscribes to ProgressChannel. It returns once Redis has
// confirmed the subscription, so a reader that reads the hashes after it
// misses no update; it fails when Redis does not answer. Messages that are
// not a Progress with a task id are skipped.
func SubscribeProgress(ctx context.Context, rdb redis.UniversalClient) (*ProgressFeed, error) {
	sub := rdb.Subscribe(ctx, ProgressChannel)
	if _, err := sub.Receive(ctx); err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("subscribe to %s: %w", ProgressChannel, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan ProgressEvent, 256)
	f := &ProgressFeed{C: out, sub: sub, cancel: cancel, done: make(chan struct{})}
	go f.read(ctx, out)
	return f, nil
}

// read uses Receive rather than PubSub.Channel because Receive also reports
// re-subscriptions (a *redis.Subscription after go-redis reconnected).
func (f *ProgressFeed) read(ctx context.Context, out chan<- ProgressEvent) {
	defer close(f.done)
	defer close(out)
	send := func(e ProgressEvent) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		m, err := f.sub.ReceiveTimeout(ctx, feedPingInterval)
		if ctx.Err() != nil {
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// Idle: a PING proves the connection (go-redis reconnects and
			// resubscribes when it is dead).
			_ = f.sub.Ping(ctx)
			continue
		}
		if err != nil {
			if errors.Is(err, redis.ErrClosed) || !send(ProgressEvent{Err: err}) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(feedRetryDelay):
			}
			continue
		}
		switch m := m.(type) {
		case *redis.Message:
			var p Progress
			if json.Unmarshal([]byte(m.Payload), &p) != nil || p.TaskID == "" {
				continue // not ours to judge; the hash stays readable
			}
			if !send(ProgressEvent{Progress: p}) {
				return
			}
		case *redis.Subscription:
			if m.Kind == "subscribe" && !send(ProgressEvent{Resubscribed: true}) {
				return
			}
		}
	}
}

// Close ends the subscription and waits for C to be closed.
func (f *ProgressFeed) Close() error {
	f.cancel()
	err := f.sub.Close()
	<-f.done
	return err
}

// Supersedes reports whether p replaces old, an earlier value of the same
// task: the newer by UpdatedAt wins. An equal time is the same update seen
// twice (its message and its hash) and replaces nothing. Client.Watch and
// the dashboard both decide with it.
func (p Progress) Supersedes(old Progress) bool { return p.UpdatedAt.After(old.UpdatedAt) }
