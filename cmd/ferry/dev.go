package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
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
	fs.Var(durationFlag{&f.redisSnapshot}, "redis-snapshot", "keep Redis state across restarts: save it to --data-dir/redis-snapshot.json this often and at exit, e.g. 30s (default off: in memory only)")
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
	wcfg := newWorkerConfig(c, c.Worker, rdb, log, metrics)
	sup := &devWorker{cfg: wcfg, errc: make(chan error, 1)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := sup.start(ctx); err != nil {
		return err
	}
	dc := c.Dashboard
	dsrv, err := dashboard.New(newDashboardConfig(dc, rdb, log, reg))
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
  ferry upload %s s3://dev/hello.txt --wait
  ferry watch <task id>      # the id "ferry upload" (without --wait) prints
  open %s

Ctrl-C stops everything gracefully.
`, dash, dash, dashboard.MonitoringPath, redisDisplay, redisNote, e.s3.Endpoint(), devBucket,
		e.relative(filepath.Join(e.dataDir, "s3")), e.cwd, e.uploadsDir, e.configPath,
		shellQuote(e.configPath), e.redis.URL(), shellQuote(sample), dash)
	if f.demo {
		fmt.Fprintf(w, "\nDemo: enqueueing puts, a copy, a move, a delete and a 200 MiB upload that will be interrupted and resumed; watch them at %s\n", dash)
	}
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

// The demo's objects are under demoPrefix in the dev bucket; its big upload
// is throttled so that a person (and a test) can watch it being interrupted.
const (
	demoPrefix   = "demo/"
	demoBigKey   = demoPrefix + "big-200MiB.bin"
	demoBigSize  = 200 << 20
	demoPartSize = 8 << 20
	// demoRate caps each part request of the demo; with 2 parts in flight
	// the 200 MiB upload takes about 5 s.
	demoRate = 20 << 20
)

// runDemo enqueues the showcase and follows it to the end.
func runDemo(ctx context.Context, tc *tasks.Client, sup *devWorker, e *devEnv, out io.Writer, log *zap.Logger) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, "demo: "+format+"\n", args...) }
	s3loc := func(key string) tasks.Location {
		return tasks.Location{Profile: devProfile, Bucket: devBucket, Key: key}
	}
	enqueue := func(t *asynq.Task, err error) (string, error) {
		if err != nil {
			return "", err
		}
		info, err := tc.Enqueue(ctx, t)
		if err != nil {
			return "", err
		}
		return info.ID, nil
	}

	// 1. Puts of inline bytes.
	var ids []string
	for _, p := range []struct{ key, body, ct string }{
		{demoPrefix + "hello.txt", "hello from ferry dev\n", "text/plain"},
		{demoPrefix + "report.json", `{"ferry":"dev","demo":true}` + "\n", "application/json"},
		{demoPrefix + "tmp/scratch.txt", "this one will be deleted\n", "text/plain"},
	} {
		id, err := enqueue(tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Data: []byte(p.body)}, Dest: s3loc(p.key), ContentType: p.ct}))
		if err != nil {
			return fmt.Errorf("put %s: %w", p.key, err)
		}
		ids = append(ids, id)
	}
	if err := demoWait(ctx, tc, ids, nil); err != nil {
		return err
	}
	say("3 puts completed: s3://dev/%shello.txt, report.json, tmp/scratch.txt", demoPrefix)

	// 2. A copy, a move and a delete.
	ids = ids[:0]
	for _, mk := range []func() (*asynq.Task, error){
		func() (*asynq.Task, error) {
			return tasks.NewCopyTask(tasks.CopyPayload{Source: s3loc(demoPrefix + "hello.txt"), Dest: s3loc(demoPrefix + "copies/hello.txt")})
		},
		func() (*asynq.Task, error) {
			return tasks.NewMoveTask(tasks.MovePayload{Source: s3loc(demoPrefix + "report.json"), Dest: s3loc(demoPrefix + "archive/report.json")})
		},
		func() (*asynq.Task, error) {
			return tasks.NewDeleteTask(tasks.DeletePayload{Dest: s3loc(demoPrefix + "tmp/scratch.txt")})
		},
	} {
		id, err := enqueue(mk())
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	if err := demoWait(ctx, tc, ids, nil); err != nil {
		return err
	}
	say("copy, move and delete completed: %scopies/hello.txt, %sarchive/report.json; %stmp/scratch.txt is gone", demoPrefix, demoPrefix, demoPrefix)

	// 3. A 200 MiB upload, interrupted by a graceful worker restart and
	// resumed from its checkpoint by the new worker.
	path := filepath.Join(e.uploadsDir, "demo-200MiB.bin")
	if err := writeDemoFile(path, demoBigSize); err != nil {
		return err
	}
	id, err := enqueue(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc(demoBigKey),
		PartSize: demoPartSize, PartConcurrency: 2, Size: demoBigSize}))
	if err != nil {
		return err
	}
	say("uploading %s to s3://dev/%s (task %s): the worker will be restarted a third of the way", e.relative(path), demoBigKey, id)
	var (
		once        sync.Once
		restartErr  = make(chan error, 1)
		interrupted int64
	)
	err = demoWait(ctx, tc, []string{id}, func(p tasks.Progress) {
		if p.PartsTotal == 0 || p.PartsDone*3 < p.PartsTotal || p.ResumedFrom > 0 {
			return
		}
		once.Do(func() {
			interrupted = p.BytesDone
			say("restarting the worker at %d of %d parts: the upload stops at a part boundary and keeps its checkpoint", p.PartsDone, p.PartsTotal)
			go func() { restartErr <- sup.restart(ctx) }()
		})
	})
	if err != nil {
		return err
	}
	select {
	case err := <-restartErr:
		if err != nil {
			return fmt.Errorf("restart the worker: %w", err)
		}
	default:
		return errors.New("the upload finished before the worker could be restarted")
	}
	p, err := tc.Progress(ctx, id)
	if err != nil {
		return err
	}
	if p.ResumedFrom == 0 {
		return fmt.Errorf("the upload of s3://dev/%s completed without resuming from its checkpoint", demoBigKey)
	}
	parts := (demoBigSize + demoPartSize - 1) / demoPartSize
	say("resumed from its checkpoint at %d MiB (interrupted at %d MiB); %d part requests for %d parts; s3://dev/%s completed",
		p.ResumedFrom>>20, interrupted>>20, e.demoParts.count(demoBigKey), parts, demoBigKey)
	say("done: see the transfers in the dashboard and the queue in asynqmon")
	log.Info("demo completed", zap.String("upload_task", id), zap.Int64("resumed_from", p.ResumedFrom))
	return nil
}

// demoWait follows tasks until each is terminal; any that did not complete
// is an error. each, when set, sees every update.
func demoWait(ctx context.Context, tc *tasks.Client, ids []string, each func(tasks.Progress)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := tc.Watch(ctx, ids...)
	if err != nil {
		return err
	}
	last := map[string]tasks.Progress{}
	for p := range ch {
		last[p.TaskID] = p
		if each != nil {
			each(p)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, id := range ids {
		if p := last[id]; p.State != tasks.StateCompleted {
			return fmt.Errorf("task %s (%s) ended %s: %s", id, p.Type, p.State, p.Error)
		}
	}
	return nil
}

// writeDemoFile writes size pseudo-random bytes to path, unless a file of
// that size is already there.
func writeDemoFile(path string, size int64) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'f', 'e', 'r', 'r', 'y'})
	if _, err := io.CopyN(f, rng, size); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// partCounter counts the UploadPart requests of demo objects and throttles
// them to demoRate each.
type partCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (pc *partCounter) count(key string) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.counts[key]
}

func (pc *partCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, key, ok := devserver.ObjectKey(r)
		if ok && r.Method == http.MethodPut && r.URL.Query().Has("partNumber") && strings.HasPrefix(key, demoPrefix) {
			pc.mu.Lock()
			if pc.counts == nil {
				pc.counts = map[string]int{}
			}
			pc.counts[key]++
			pc.mu.Unlock()
			r.Body = &throttledBody{ReadCloser: r.Body, rate: demoRate, start: time.Now()}
		}
		h.ServeHTTP(w, r)
	})
}

// throttledBody reads at most rate bytes per second.
type throttledBody struct {
	io.ReadCloser
	rate  float64
	start time.Time
	n     int64
}

func (t *throttledBody) Read(p []byte) (int, error) {
	if len(p) > 256<<10 {
		p = p[:256<<10]
	}
	n, err := t.ReadCloser.Read(p)
	t.n += int64(n)
	if ahead := time.Duration(float64(t.n)/t.rate*float64(time.Second)) - time.Since(t.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}
