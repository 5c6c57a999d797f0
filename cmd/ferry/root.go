package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ferryhq/ferry/tasks"
)

// Exit codes.
const (
	exitOK         = 0
	exitError      = 1 // configuration, Redis, S3, ...
	exitUsage      = 2 // bad flags or arguments
	exitTaskFailed = 3 // a waited-for or watched task failed or was cancelled
	exitPartial    = 4 // a migration ran to its end, but some objects failed (its report lists them)
	exitInterrupt  = 130
)

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// taskFailedError: a task ended failed or cancelled: exit code 3, or 4
// when partial (migrations that ran to their end with some objects failed).
type taskFailedError struct {
	msg     string
	partial bool
}

func (e *taskFailedError) Error() string { return e.msg }

// errInterrupted ends a command interrupted by SIGINT/SIGTERM that has said
// so itself: exit code 130, nothing more printed.
var errInterrupted = errors.New("interrupted")

// exitCode maps an error returned by a command to the process's exit code.
func exitCode(err error) int {
	var ue *usageError
	var tf *taskFailedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &tf) && tf.partial:
		return exitPartial
	case errors.As(err, &tf):
		return exitTaskFailed
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, context.Canceled), errors.Is(err, errInterrupted):
		return exitInterrupt
	}
	return exitError
}

// app is the state shared by the commands: streams, global flags, and what
// is built from them on first use.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// stdoutTTY reports whether stdout is a terminal (progress bars).
	stdoutTTY bool
	stderrTTY bool

	configFile string
	redisURL   string
	logLevel   string
	logFormat  string

	cfg *config
	log *zap.Logger
}

// config loads the configuration once.
func (a *app) config() (*config, error) {
	if a.cfg != nil {
		return a.cfg, nil
	}
	c, err := loadConfig(a.configFile, a.redisURL, a.getenv)
	if err != nil {
		return nil, err
	}
	a.cfg = c
	return c, nil
}

// logger builds the logger once. Logs go to stderr: JSON when stderr is not
// a terminal (or --log-format json), console otherwise.
func (a *app) logger() (*zap.Logger, error) {
	if a.log != nil {
		return a.log, nil
	}
	lvl, err := zapcore.ParseLevel(a.logLevel)
	if err != nil {
		return nil, usageErrorf("invalid --log-level %q: use debug, info, warn or error", a.logLevel)
	}
	format := a.logFormat
	if format == "" {
		format = "console"
		if !a.stderrTTY {
			format = "json"
		}
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout(time.DateTime)
		if a.stderrTTY {
			ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, usageErrorf("invalid --log-format %q: use json or console", format)
	}
	a.log = zap.New(zapcore.NewCore(enc, zapcore.AddSync(a.stderr), lvl))
	return a.log, nil
}

// redis connects to the configured Redis and checks it answers PING within
// a few seconds, so an unreachable server is reported at once, with the
// address and how to change it. The caller closes the client.
func (a *app) redis(ctx context.Context) (redis.UniversalClient, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	opts := *c.Redis.Opts
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 3 * time.Second
	}
	rdb := redis.NewUniversalClient(&opts)
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach Redis at %s (from %s): %w\nset the address with --redis redis://[:password@]host:port/db, the %s environment variable, or redis.url in the config file",
			c.Redis.Display, c.Redis.Source, err, envRedisURL)
	}
	return rdb, nil
}

// tasksClient connects to Redis and returns a tasks.Client on it, and a func
// closing both.
func (a *app) tasksClient(ctx context.Context) (*tasks.Client, func(), error) {
	rdb, err := a.redis(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, err := a.config()
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	allow, err := c.webhookAllow()
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	tc := tasks.NewClient(rdb, func(o *tasks.ClientOptions) { o.ProfileFunc, o.WebhookAllow = c.profileInfo, allow })
	return tc, func() { _ = tc.Close(); _ = rdb.Close() }, nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

const rootLong = `ferry moves objects to, from and between S3 buckets through a job queue.

Transfers are tasks in Redis (asynq): "ferry put", "upload", "copy", "move",
"delete" and "migrate" enqueue them, "ferry worker" runs them against AWS S3 and any
S3-compatible service (R2, B2, Spaces, MinIO, versitygw), and large uploads
resume after a crash from checkpoints. "status", "watch" and "cancel" follow
tasks; "ls", "info" and "url" call S3 directly.

Configuration: flags beat environment variables, which beat the config file
(--config, $FERRY_CONFIG, or ./ferry.yaml when present). S3 profiles (endpoint,
credentials) live in the config file; secrets may come from
FERRY_PROFILE_<NAME>_ACCESS_KEY_ID / _SECRET_ACCESS_KEY / _SESSION_TOKEN
instead, or else from the AWS default credential chain.

Exit codes: 0 success, 1 error, 2 bad usage, 3 task failed or cancelled,
130 interrupted.`

// newRootCmd builds the command tree on a.
func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "ferry",
		Short:         "Asynchronous S3 transfers through a Redis job queue",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  # run a worker that may read local files under /data
  ferry worker --allow-dir /data

  # upload a file and wait for it, with a progress bar
  ferry upload ./backup.tar s3://backups/2026/backup.tar --wait

  # copy between providers, then follow the task
  ferry copy s3://src/a.bin s3://dst/a.bin --src-profile aws --dst-profile r2
  ferry watch <task-id>

  # list a prefix, print a presigned URL
  ferry ls s3://backups/2026/
  ferry url s3://backups/2026/backup.tar --expires 15m`,
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.configFile, "config", "", "config file (env "+envConfig+"; default ./"+defaultConfigFile+" when present)")
	pf.StringVar(&a.redisURL, "redis", "", "Redis URL redis://[:password@]host:port/db or rediss:// (env "+envRedisURL+"; default "+defaultRedisURL+")")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&a.logFormat, "log-format", "", "log format: json or console (default console on a terminal, else json)")

	// The groups of `ferry --help`, in its order.
	for _, g := range []struct {
		group cobra.Group
		cmds  []*cobra.Command
	}{
		{cobra.Group{ID: "run", Title: "Servers:"}, serverCommands(a)},
		{cobra.Group{ID: "enqueue", Title: "Transfers (enqueue a task):"}, enqueueCommands(a)},
		{cobra.Group{ID: "tasks", Title: "Tasks:"}, taskCommands(a)},
		{cobra.Group{ID: "s3", Title: "Objects (direct S3 calls, no queue):"}, objectCommands(a)},
	} {
		root.AddGroup(&g.group)
		for _, c := range g.cmds {
			c.GroupID = g.group.ID
			root.AddCommand(c)
		}
	}
	return root
}

// args wraps a cobra.PositionalArgs so that its errors are usage errors.
func args(fn cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := fn(cmd, a); err != nil {
			return &usageError{fmt.Errorf("%w\nusage: %s", err, cmd.UseLine())}
		}
		return nil
	}
}

// printError prints err for a user: "ferry: " and the message.
func printError(w io.Writer, err error) {
	if errors.Is(err, errInterrupted) {
		return
	}
	msg := err.Error()
	if errors.Is(err, context.Canceled) {
		msg = "interrupted"
	}
	fmt.Fprintln(w, "ferry: "+strings.TrimSpace(msg))
}
