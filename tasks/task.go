package tasks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// Default task options; see the package doc.
const (
	// DefaultRetention keeps a finished task (and its result or error) for
	// inspection, and keeps TaskID conflicts working for that long.
	DefaultRetention = 24 * time.Hour
	// TransferMaxRetry is MaxRetry for upload, copy and move: a worker crash
	// counts as a retry (asynq #1015) and checkpoints make retries cheap.
	TransferMaxRetry = 25
	// DefaultMaxRetry is MaxRetry for the other task types.
	DefaultMaxRetry = 10
)

// Bounds of TimeoutFor.
const (
	minTimeout     = 10 * time.Minute
	maxTimeout     = 48 * time.Hour
	unknownTimeout = time.Hour
	timeoutSlack   = 5 * time.Minute
	// timeoutRate is the slowest transfer rate a Timeout allows: 4 MiB/s.
	timeoutRate = 4 << 20
)

// TimeoutFor is the default Timeout of a task moving size bytes: the time to
// move them at 4 MiB/s plus 5 minutes, at least 10 minutes and at most 48
// hours. A size <= 0 means unknown and gives 1 hour.
func TimeoutFor(size int64) time.Duration {
	if size <= 0 {
		return unknownTimeout
	}
	secs := size / timeoutRate
	if secs >= int64(maxTimeout/time.Second) {
		return maxTimeout
	}
	d := time.Duration(secs)*time.Second + timeoutSlack
	return min(max(d, minTimeout), maxTimeout)
}

// TaskID is a deterministic task id for a transfer of type typ from src to
// dst: "ferry-" and 24 hex digits of a SHA-256 over the type, both locations
// and their profiles. Pass it as asynq.TaskID to enqueue idempotently: a
// second enqueue of the same transfer fails with asynq.ErrTaskIDConflict while
// the first task's record exists (Retention keeps it after completion).
// Inline sources also hash their bytes, so different contents for one dest
// get different ids.
func TaskID(typ string, src, dst Location) string {
	h := sha256.New()
	for _, s := range []string{typ, src.String(), ProfileName(src.Profile), dst.String(), ProfileName(dst.Profile)} {
		h.Write([]byte(s))
		h.Write([]byte{'|'})
	}
	if src.Kind() == KindInline {
		h.Write(src.Data)
	}
	return "ferry-" + hex.EncodeToString(h.Sum(nil))[:24]
}

// defaults are the options every constructor attaches before the caller's.
func defaults(maxRetry int, timeout time.Duration, opts []asynq.Option) []asynq.Option {
	return defaultsRetained(maxRetry, timeout, DefaultRetention, opts)
}

func defaultsRetained(maxRetry int, timeout, retention time.Duration, opts []asynq.Option) []asynq.Option {
	return append([]asynq.Option{
		asynq.MaxRetry(maxRetry),
		asynq.Retention(retention),
		asynq.Timeout(timeout),
	}, opts...)
}

func newTask(typ string, p validator, maxRetry int, timeout time.Duration, opts []asynq.Option) (*asynq.Task, error) {
	return newTaskRetained(typ, p, maxRetry, timeout, DefaultRetention, opts)
}

func newTaskRetained(typ string, p validator, maxRetry int, timeout, retention time.Duration, opts []asynq.Option) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("new %s task: %w", typ, err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("new %s task: encode payload: %w", typ, err)
	}
	return asynq.NewTask(typ, b, defaultsRetained(maxRetry, timeout, retention, opts)...), nil
}

// NewPutTask validates p and returns a TypePut task with the default options
// (MaxRetry 10, Retention 24h, Timeout 10 min for inline data, else 1 h),
// followed by opts.
func NewPutTask(p PutPayload, opts ...asynq.Option) (*asynq.Task, error) {
	timeout := TimeoutFor(0)
	if p.Source.Kind() == KindInline {
		timeout = minTimeout
	}
	return newTask(TypePut, p, DefaultMaxRetry, timeout, opts)
}

// NewUploadTask validates p and returns a TypeUpload task with the default
// options (MaxRetry 25, Retention 24h, Timeout TimeoutFor(p.Size)), followed
// by opts.
func NewUploadTask(p UploadPayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newTask(TypeUpload, p, TransferMaxRetry, TimeoutFor(p.Size), opts)
}

// NewCopyTask validates p and returns a TypeCopy task with the default
// options (MaxRetry 25, Retention 24h, Timeout TimeoutFor(p.Size)), followed
// by opts.
func NewCopyTask(p CopyPayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newTask(TypeCopy, p, TransferMaxRetry, TimeoutFor(p.Size), opts)
}

// NewMigrateTask validates p and returns a TypeMigrate task: MaxRetry 25 (a
// crashed migration resumes from its listing cursor), Retention 24h (for
// its report), Timeout 48h; opts follow.
func NewMigrateTask(p MigratePayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newTask(TypeMigrate, p, TransferMaxRetry, maxTimeout, opts)
}

// NewMoveTask validates p and returns a TypeMove task with the default
// options (MaxRetry 25, Retention 24h, Timeout TimeoutFor(p.Size)), followed
// by opts.
func NewMoveTask(p MovePayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newTask(TypeMove, p, TransferMaxRetry, TimeoutFor(p.Size), opts)
}

// NewDeleteTask validates p and returns a TypeDelete task with the default
// options (MaxRetry 10, Retention 24h, Timeout 1 h), followed by opts.
func NewDeleteTask(p DeletePayload, opts ...asynq.Option) (*asynq.Task, error) {
	return newTask(TypeDelete, p, DefaultMaxRetry, TimeoutFor(0), opts)
}

// NewJanitorTask returns a TypeJanitor task (no payload) with the default
// options (MaxRetry 10, Retention 24h, Timeout 1 h), followed by opts.
func NewJanitorTask(opts ...asynq.Option) *asynq.Task {
	return asynq.NewTask(TypeJanitor, nil, defaults(DefaultMaxRetry, TimeoutFor(0), opts)...)
}
