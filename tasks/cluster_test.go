package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// replyErr is a Redis error reply, as go-redis returns one.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

// TestNodeFailure: the errors of a dead, unreachable or failing-over node
// reload the cluster's slot map; replies about the command itself do not.
func TestNodeFailure(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{redis.Nil, false},
		{context.Canceled, false},
		{fmt.Errorf("read: %w", context.DeadlineExceeded), false},
		{redis.ErrClosed, false},
		{replyErr("NOSCRIPT No matching script. Please use EVAL."), false},
		{replyErr("ERR wrong number of arguments"), false},
		{replyErr("MOVED 3999 127.0.0.1:6381"), false}, // go-redis follows and reloads itself
		{refused, true},
		{fmt.Errorf("redis eval error: %w", refused), true},
		{io.EOF, true},
		{syscall.ECONNRESET, true},
		{replyErr("CLUSTERDOWN The cluster is down"), true},
		{replyErr("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{replyErr("MASTERDOWN Link with MASTER is down"), true},
		{replyErr("LOADING Redis is loading the dataset in memory"), true},
		{errors.New("some other error"), false},
	} {
		if got := nodeFailure(tc.err); got != tc.want {
			t.Errorf("nodeFailure(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
