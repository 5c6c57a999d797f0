package tasks

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Redis Cluster failover: go-redis's ClusterClient sends a slot's commands
// to the master its slot map names, and reloads that map only after a MOVED
// or ASK reply, or once the map is older than ClusterStateReloadInterval
// (60 s by default). A master that died answers nothing — every command to
// it fails with a dial error, never a MOVED — so after the cluster promoted
// its replica (2–3 s in TestFailover, cluster-node-timeout plus an election
// in production) the client kept sending the dead master's slots to its
// address for up to a minute: asynq's dequeue, lease extensions and
// completions of every queue hashed there, enqueues to those queues, and
// the checkpoints and progress of tasks hashed there all failed that long,
// and a completion or retry asynq could not record waited for asynq's lease
// recovery on top (60–120 s in all). followClusterFailover reloads the slot
// map as soon as a command fails the way a dead or failing node makes it
// fail; go-redis runs one reload at a time and at most one per 200 ms, so
// an outage costs a CLUSTER SLOTS every 200 ms at most until the promotion.

// followedClusters holds the cluster clients that have the hook already: a
// process usually makes several Clients (and a worker) on one Redis client.
var followedClusters sync.Map // *redis.ClusterClient -> struct{}

// followClusterFailover adds reloadOnNodeFailure to rdb when it is a
// cluster client, once per client.
func followClusterFailover(rdb redis.UniversalClient) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return
	}
	if _, had := followedClusters.LoadOrStore(cc, struct{}{}); had {
		return
	}
	cc.AddHook(reloadOnNodeFailure{cc})
}

// reloadOnNodeFailure asks its cluster client for a fresh slot map when a
// command or pipeline failed as a dead, unreachable or failing-over node
// makes it fail (see nodeFailure).
type reloadOnNodeFailure struct{ cc *redis.ClusterClient }

func (h reloadOnNodeFailure) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnNodeFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if nodeFailure(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadOnNodeFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if nodeFailure(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

// nodeFailure reports whether err is how a command fails when its node is
// down, unreachable or not serving its slots for now: a network error, or
// a CLUSTERDOWN, TRYAGAIN, MASTERDOWN or LOADING reply. A nil reply, a
// script's NOSCRIPT, a cancelled context and other replies are not.
func nodeFailure(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}
