package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/internal/devserver"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// The dev profile, bucket and fixed credentials (the embedded S3 server
// accepts any).
const (
	devProfile   = "dev"
	devBucket    = "dev"
	devAccessKey = "ferry-dev"
	devSecretKey = "ferry-dev-secret"
	devRegion    = "us-east-1"
	// devShutdownTimeout is the dev worker's shutdown timeout: shorter than
	// the production default, so Ctrl-C is quick.
	devShutdownTimeout = 5 * time.Second
)

type devFlags struct {
	dataDir       string
	addr          string
	redisPort     int
	s3Port        int
	demo          bool
	redisSnapshot time.Duration
}

func devCmd(a *app) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process for development: embedded Redis and S3, a worker, the dashboard",
		Long: `Run an embedded Redis-compatible server (miniredis), an embedded S3-compatible
server keeping its objects under --data-dir, a worker and the dashboard, in one
process, with nothing to install. Ctrl-C stops it gracefully.

It is for development only: objects live in --data-dir/s3 and survive a
restart, but Redis state (queues, checkpoints, progress) is in memory and lost
at exit unless --redis-snapshot is given. Production runs "ferry worker" and
"ferry dashboard" against a real Redis and S3 (see docs/operations.md).

ferry dev creates the "dev" bucket and the "dev" profile ("default" is an
alias of it), and writes --data-dir/ferry.yaml so that ferry commands in other
terminals reach it: export FERRY_CONFIG as printed at start. The worker reads
local files under the current directory and --data-dir/uploads.

--demo enqueues a showcase: puts, a copy, a move, a delete, and a 200 MiB
upload interrupted by a worker restart and resumed from its checkpoint.`,
		Example: `  ferry dev
  ferry dev --demo
  ferry dev --addr 127.0.0.1:8081 --redis-port 6380 --s3-port 9001 --data-dir /tmp/ferry-dev
  ferry dev --redis-snapshot 30s`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Default ports that are taken (a machine's own Redis on 6379 is
			// common) move to free ones; a port given explicitly is kept, and
			// refused with a clear message when taken.
			for _, p := range []struct {
				flag string
				port *int
			}{{"redis-port", &f.redisPort}, {"s3-port", &f.s3Port}} {
				if !cmd.Flags().Changed(p.flag) {
					if free, moved := freeIfTaken(*p.port); moved {
						fmt.Fprintf(a.stderr, "ferry dev: port %d is taken; using %d instead (set --%s to choose)\n", *p.port, free, p.flag)
						*p.port = free
					}
				}
			}
			return runDev(cmd.Context(), a, f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", ".ferry-dev", "directory for S3 objects, uploads, the generated ferry.yaml and the Redis snapshot")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "dashboard address")
	fs.IntVar(&f.redisPort, "redis-port", 6379, "port of the embedded Redis on 127.0.0.1")
	fs.IntVar(&f.s3Port, "s3-port", 9000, "port of the embedded S3 server on 127.0.0.1")
	fs.BoolVar(&f.demo, "demo", false, "enqueue a showcase of every task type, with an interrupted and resumed 200 MiB upload")
	fs.Var((*duration)(&f.redisSnapshot), "redis-snapshot", "keep Redis state across restarts: save it to --data-dir/redis-snapshot.json this often and at exit, e.g. 30s (default off: in memory only)")
	return cmd
}

// devEnv is what a running ferry dev is made of.
type devEnv struct {
	dataDir, uploadsDir, configPath, cwd string
	redis                                *devserver.Redis
	s3                                   *devserver.S3
	demoParts                            *partCounter
}

func runDev(ctx context.Context, a *app, f *devFlags) error {
	log, err := a.logger()
	if err != nil {
		return err
	}
	e := &devEnv{demoParts: &partCounter{}}
	if e.dataDir, err = filepath.Abs(f.dataDir); err != nil {
		return err
	}
	if e.cwd, err = os.Getwd(); err != nil {
		return err
	}
	e.uploadsDir = filepath.Join(e.dataDir, "uploads")
	e.configPath = filepath.Join(e.dataDir, defaultConfigFile)
	if err := os.MkdirAll(e.uploadsDir, 0o750); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	redisAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.redisPort))
	s3Addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.s3Port))
	// Check every port before starting anything: one clear message, nothing
	// to tear down.
	for _, p := range []struct{ addr, flag, what string }{
		{redisAddr, "--redis-port", "Redis"}, {s3Addr, "--s3-port", "S3"}, {f.addr, "--addr", "dashboard"},
	} {
		if err := checkPort(p.addr, p.flag, p.what); err != nil {
			return err
		}
	}

	fmt.Fprintf(a.stderr, "ferry dev is for development only: objects are local files under %s; Redis state is in memory (%s).\n",
		filepath.Join(e.dataDir, "s3"), snapshotNote(f.redisSnapshot, e.dataDir))
	ropts := devserver.RedisOptions{}
	if f.redisSnapshot > 0 {
		ropts = devserver.RedisOptions{SnapshotFile: filepath.Join(e.dataDir, "redis-snapshot.json"), SnapshotInterval: f.redisSnapshot,
			OnSnapshotError: func(err error) { log.Warn("redis snapshot failed", zap.Error(err)) }}
	}
	if e.redis, err = devserver.StartRedis(redisAddr, ropts); err != nil {
		return portError(err, "--redis-port", "Redis")
	}
	defer func() {
		if err := e.redis.Close(); err != nil {
			log.Warn("embedded Redis: close", zap.Error(err))
		}
	}()
	s3opts := devserver.S3Options{Dir: filepath.Join(e.dataDir, "s3"), Buckets: []string{devBucket}}
	if f.demo {
		s3opts.Wrap = e.demoParts.wrap
	}
	if e.s3, err = devserver.StartS3(s3Addr, s3opts); err != nil {
		return portError(err, "--s3-port", "S3")
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.s3.Close(sctx)
	}()
	if err := os.WriteFile(e.configPath, []byte(e.configYAML(f.addr)), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", e.configPath, err)
	}
	// The generated file alone configures the dev servers: FERRY_REDIS_URL
	// or FERRY_CONFIG left in the shell must not point them elsewhere.
	c, err := loadConfig(e.configPath, "", func(k string) string {
		if k == envRedisURL || k == envRedisPassword || k == envConfig {
			return ""
		}
		return a.getenv(k)
	})
	if err != nil {
		return err
	}
	a.cfg = c
	// --addr beyond loopback needs FERRY_DASHBOARD_TOKEN, as ferry dashboard.
	if err := checkDashboardAccess(c.Dashboard); err != nil {
		return err
	}
	rdb, err := a.redis(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()

	reg := newRegistry()
	metrics := worker.NewMetrics(reg)
	wcfg := c.Worker.newWorker(c, rdb, log, metrics)
	sup := &devWorker{cfg: wcfg, errc: make(chan error, 1)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := sup.start(ctx); err != nil {
		return err
	}
	dc := c.Dashboard
	dsrv, err := dashboard.New(newDashboardConfig(dc, c.Worker.WebhookAllow, rdb, log, reg))
	if err != nil {
		_ = sup.stop()
		return err
	}
	defer dsrv.Close()
	dashErr := make(chan error, 1)
	go func() { dashErr <- serveHTTP(ctx, dc.Addr, dsrv, log, "dashboard") }()

	e.printBanner(a.stdout, f, c.Redis.Display)
	log.Info("ferry dev ready", zap.String("dashboard", "http://"+dc.Addr), zap.String("redis", e.redis.URL()),
		zap.String("s3", e.s3.Endpoint()), zap.String("config", e.configPath))

	demoDone := make(chan error, 1)
	if f.demo {
		tc := tasks.NewClient(rdb)
		go func() { demoDone <- runDemo(ctx, tc, sup, e, a.stdout, log) }()
	}
	var runErr error
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case err := <-dashErr:
			runErr, done = err, true
			dashErr <- nil
		case err := <-sup.errc:
			runErr, done = err, true
		case err := <-demoDone:
			if err != nil && ctx.Err() == nil {
				log.Error("demo failed", zap.Error(err))
				fmt.Fprintf(a.stdout, "demo: FAILED: %v\n", err)
			}
		}
	}
	fmt.Fprintln(a.stderr, "ferry dev: shutting down (uploads stop at a part boundary and keep their checkpoint)")
	cancel()
	runErr = errors.Join(runErr, sup.stop(), <-dashErr)
	if runErr == nil && ctx.Err() != nil {
		fmt.Fprintln(a.stderr, "ferry dev: stopped")
	}
	return runErr
}

func snapshotNote(every time.Duration, dataDir string) string {
	if every <= 0 {
		return "lost at exit; --redis-snapshot 30s keeps it"
	}
	return fmt.Sprintf("saved to %s every %s and at exit", filepath.Join(dataDir, "redis-snapshot.json"), every)
}

// freeIfTaken returns port when it can be listened on, else a free port and
// true.
func freeIfTaken(port int) (int, bool) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err == nil {
		l.Close()
		return port, false
	}
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return port, false
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, true
}

// checkPort fails with a message naming flag when addr cannot be listened on.
func checkPort(addr, flag, what string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return portError(err, flag, what)
	}
	return ln.Close()
}

func portError(err error, flag, what string) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s port is taken: %w\nis another ferry dev or a %s server running? stop it, or pick a free port with %s",
			what, err, what, flag)
	}
	return fmt.Errorf("%s: %w (change it with %s)", what, err, flag)
}

// configYAML is the ferry.yaml other terminals use to reach this ferry dev.
func (e *devEnv) configYAML(dashAddr string) string {
	profile := fmt.Sprintf(`    provider: generic
    endpoint_url: %s
    region: %s
    access_key_id: %s
    secret_access_key: %s
    force_path_style: true
`, e.s3.Endpoint(), devRegion, devAccessKey, devSecretKey)
	return fmt.Sprintf(`# Written by "ferry dev" at %s; rewritten at every start.
# Point ferry commands in other terminals here:
#   export FERRY_CONFIG=%s
redis:
  url: %s
profiles:
  %s:
%s  # "default" is an alias of dev, so s3://dev/key needs no --profile.
  default:
%sworker:
  allow_dirs:
    - %s
    - %s
  shutdown_timeout: %s
dashboard:
  addr: %s
`, time.Now().Format(time.RFC3339), e.configPath, e.redis.URL(), devProfile, profile, profile,
		strconv.Quote(e.cwd), strconv.Quote(e.uploadsDir), devShutdownTimeout, dashAddr)
}

func (e *devEnv) printBanner(w io.Writer, f *devFlags, redisDisplay string) {
	dash := "http://" + f.addr
	exe, _ := os.Executable() // "" when unknown: the banner says "ferry"
	ferry := ferryCommand(exe, e.cwd, exec.LookPath)
	sample := e.relative(filepath.Join(e.uploadsDir, "hello.txt"))
	_ = os.WriteFile(filepath.Join(e.uploadsDir, "hello.txt"), []byte("hello from ferry dev\n"), 0o640)
	redisNote := "miniredis, in memory"
	if f.redisSnapshot > 0 {
		redisNote = "miniredis, snapshot every " + f.redisSnapshot.String()
	}
	fmt.Fprintf(w, `
ferry dev — everything in one process, for development only

  dashboard  %s  (queues in asynqmon: %s%s/)
  redis      %s  (%s)
  s3         %s  (bucket %q; objects under %s; any access key)
  worker     reads local files under %s and %s
  config     %s  (profiles: dev, and default = dev)

In another terminal:

  export FERRY_CONFIG=%s FERRY_REDIS_URL=%s
  %s upload %s s3://dev/hello.txt --wait
  %s watch <task id>      # the id "upload" (without --wait) prints
  open %s

Ctrl-C stops everything gracefully.
`, dash, dash, dashboard.MonitoringPath, redisDisplay, redisNote, e.s3.Endpoint(), devBucket,
		e.relative(filepath.Join(e.dataDir, "s3")), e.cwd, e.uploadsDir, e.configPath,
		shellQuote(e.configPath), e.redis.URL(), ferry, shellQuote(sample), ferry, dash)
	if f.demo {
		fmt.Fprintf(w, "\nDemo: enqueueing puts, a copy, a move, a delete and a 200 MiB upload that will be interrupted and resumed; watch them at %s\n", dash)
	}
}

// ferryCommand is how a shell in cwd runs the ferry at exe, for the
// commands the banner suggests: "ferry" when that name on PATH is exe,
// else exe's path, relative to cwd when under it ("./bin/ferry" after
// make dev, whose bin/ is not on PATH), so the lines work as pasted.
func ferryCommand(exe, cwd string, lookPath func(string) (string, error)) string {
	if exe == "" {
		return "ferry"
	}
	if found, err := lookPath("ferry"); err == nil && sameFile(found, exe) {
		return "ferry"
	}
	if r, err := filepath.Rel(cwd, exe); err == nil && !strings.HasPrefix(r, "..") {
		return shellQuote("./" + r)
	}
	return shellQuote(exe)
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// relative shows p relative to the working directory when it is under it.
func (e *devEnv) relative(p string) string {
	if r, err := filepath.Rel(e.cwd, p); err == nil && !strings.HasPrefix(r, "..") {
		return "./" + r
	}
	return p
}

func shellQuote(s string) string {
	if strings.ContainsAny(s, " \t'\"$`\\") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

// devWorker runs the dev worker and can restart it (the demo interrupts an
// upload so).
type devWorker struct {
	cfg  worker.Config
	errc chan error // an unexpected end of the worker

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

func (d *devWorker) start(ctx context.Context) error {
	w, err := worker.New(d.cfg)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		err := w.Run(wctx)
		if wctx.Err() == nil { // it ended on its own
			select {
			case d.errc <- fmt.Errorf("worker stopped: %w", err):
			default:
			}
		}
		done <- err
	}()
	d.mu.Lock()
	d.cancel, d.done = cancel, done
	d.mu.Unlock()
	return nil
}

// stop stops the running worker gracefully and waits for it.
func (d *devWorker) stop() error {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.cancel, d.done = nil, nil
	d.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	return <-done
}

// restart stops the worker gracefully (uploads pause at a part boundary
// and keep their checkpoint) and starts a new one.
func (d *devWorker) restart(ctx context.Context) error {
	if err := d.stop(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return d.start(ctx)
}
