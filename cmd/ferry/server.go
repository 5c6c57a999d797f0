package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/worker"
)

// workerFlags are `ferry worker`'s flags; set ones override the config
// file's worker: section.
type workerFlags struct {
	concurrency     int
	queues          string
	strictPriority  bool
	allowDirs       []string
	allowURLHosts   []string
	partSize        int64
	partConcurrency int
	maxBufferMemory int64
	shutdownTimeout time.Duration
	metricsAddr     string
}

// applyWorkerFlags overlays the flags that were set on wc.
func applyWorkerFlags(cmd *cobra.Command, f *workerFlags, wc workerConfig) (workerConfig, error) {
	changed := cmd.Flags().Changed
	if changed("concurrency") {
		wc.Concurrency = f.concurrency
	}
	if changed("queues") {
		q, err := parseQueues(f.queues)
		if err != nil {
			return wc, err
		}
		wc.Queues = q
	}
	if changed("strict-priority") {
		wc.StrictPriority = f.strictPriority
	}
	if changed("allow-dir") {
		wc.AllowDirs = nil
		for _, d := range f.allowDirs {
			abs, err := filepath.Abs(d)
			if err != nil {
				return wc, fmt.Errorf("--allow-dir %q: %w", d, err)
			}
			wc.AllowDirs = append(wc.AllowDirs, abs)
		}
	}
	if changed("allow-url-host") {
		wc.AllowURLHosts = f.allowURLHosts
	}
	if changed("part-size") {
		wc.PartSize = size(f.partSize)
	}
	if changed("part-concurrency") {
		wc.PartConcurrency = f.partConcurrency
	}
	if changed("max-buffer-memory") {
		wc.MaxBufferMemory = size(f.maxBufferMemory)
	}
	if changed("shutdown-timeout") {
		wc.ShutdownTimeout = duration(f.shutdownTimeout)
	}
	if changed("metrics-addr") {
		wc.MetricsAddr = f.metricsAddr
	}
	return wc, nil
}

// parseQueues parses "critical=6,default=3,low=1" (a bare name weighs 1).
func parseQueues(s string) (map[string]int, error) {
	q := map[string]int{}
	for _, item := range splitList(s) {
		name, w, hasW := strings.Cut(item, "=")
		weight := 1
		if hasW {
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 {
				return nil, usageErrorf("invalid --queues item %q: write NAME=WEIGHT with a weight of 1 or more, e.g. critical=6,default=3", item)
			}
			weight = n
		}
		if name == "" {
			return nil, usageErrorf("invalid --queues item %q: the queue name is empty", item)
		}
		q[name] = weight
	}
	if len(q) == 0 {
		return nil, usageErrorf("--queues is empty: give NAME=WEIGHT,...")
	}
	return q, nil
}

// newWorkerConfig builds worker.Config from the resolved configuration. The
// caller owns rdb; log and metrics may be nil. `ferry worker` and an
// embedding command (ferry dev) share it.
func newWorkerConfig(c *config, wc workerConfig, rdb redis.UniversalClient, log *zap.Logger, metrics *worker.Metrics) worker.Config {
	profiles := make(map[string]storage.Config, len(c.Profiles))
	for name, p := range c.Profiles {
		profiles[name] = p
	}
	return worker.Config{
		Redis:             rdb,
		Profiles:          profiles,
		Concurrency:       wc.Concurrency,
		Queues:            wc.Queues,
		StrictPriority:    wc.StrictPriority,
		AllowDirs:         slices.Clone(wc.AllowDirs),
		AllowURLHosts:     slices.Clone(wc.AllowURLHosts),
		PartSize:          int64(wc.PartSize),
		PartConcurrency:   wc.PartConcurrency,
		MaxBufferMemory:   int64(wc.MaxBufferMemory),
		ShutdownTimeout:   time.Duration(wc.ShutdownTimeout),
		TaskCheckInterval: time.Duration(wc.TaskCheckInterval),
		JanitorInterval:   time.Duration(wc.JanitorInterval),
		JanitorUploadTTL:  time.Duration(wc.JanitorUploadTTL),
		ProgressTTL:       time.Duration(wc.ProgressTTL),
		Logger:            log,
		Metrics:           metrics,
	}
}

// checkDashboardAccess refuses, before anything connects or listens, a
// dashboard that others could reach without a real token, and says how to
// set one. ferry dashboard and ferry dev both call it.
func checkDashboardAccess(dc dashboardConfig) error {
	err := dashboard.CheckAccess(dc.Addr, dc.AuthToken, dc.PublicNames)
	if errors.Is(err, dashboard.ErrTokenRequired) || errors.Is(err, dashboard.ErrWeakToken) {
		return fmt.Errorf("dashboard: %w\nto set one: export %s=\"$(openssl rand -hex 32)\" "+
			"(ferry dashboard also reads dashboard.auth_token from the config file, and --auth-token, which the process list shows to every user)",
			err, envDashToken)
	}
	if err != nil {
		return usageErrorf("dashboard: %v", err)
	}
	return nil
}

// newDashboardConfig builds dashboard.Config; shared with ferry dev.
func newDashboardConfig(dc dashboardConfig, rdb redis.UniversalClient, log *zap.Logger, reg *prometheus.Registry) dashboard.Config {
	return dashboard.Config{Redis: rdb, ReadOnly: dc.ReadOnly, AuthToken: dc.AuthToken, Addr: dc.Addr,
		PublicNames: slices.Clone(dc.PublicNames), APITokens: slices.Clone(dc.APITokens), Logger: log, Registry: reg}
}

// newRegistry is a Prometheus registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveHTTP serves h on addr until ctx is done, then shuts down gracefully.
// It returns once the listener is closed; a listen error is returned at once.
// workerHTTP is what a worker serves on --metrics-addr: Prometheus metrics
// at /metrics (and /, for scrapers configured without a path), /healthz
// (the process answers) and /readyz (Redis answers a PING), for probes.
func workerHTTP(reg *prometheus.Registry, rdb redis.UniversalClient) http.Handler {
	mux := http.NewServeMux()
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mux.Handle("/metrics", metrics)
	mux.Handle("/{$}", metrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

func serveHTTP(ctx context.Context, addr string, h http.Handler, log *zap.Logger, what string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Info(what+" listening", zap.String("addr", "http://"+ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", what, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func serverCommands(a *app) []*cobra.Command {
	return []*cobra.Command{workerCmd(a), dashboardCmd(a), devCmd(a)}
}

func workerCmd(a *app) *cobra.Command {
	f := &workerFlags{}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: take tasks from Redis and run them against S3",
		Long: `Run a worker until SIGINT or SIGTERM. It takes tasks from the given queues and
runs them with the S3 profiles of the config file. On shutdown, uploads stop at
a part boundary and keep their checkpoint, so another worker resumes them.
Start as many workers, on as many machines, as you like: they share the queue.

Local files are readable only under --allow-dir directories, https sources
only from --allow-url-host hosts. Flags override the config file's worker:
section. Logs are JSON when stderr is not a terminal.`,
		Example: `  ferry worker --config /etc/ferry/ferry.yaml
  ferry worker --concurrency 8 --queues critical=6,default=3,low=1 --allow-dir /data --metrics-addr :9464
  ferry worker --allow-url-host downloads.example.com --part-size 64MiB`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.config()
			if err != nil {
				return err
			}
			wc, err := applyWorkerFlags(cmd, f, c.Worker)
			if err != nil {
				return err
			}
			log, err := a.logger()
			if err != nil {
				return err
			}
			rdb, err := a.redis(ctx)
			if err != nil {
				return err
			}
			defer rdb.Close()
			var metrics *worker.Metrics
			var reg *prometheus.Registry
			if wc.MetricsAddr != "" {
				reg = newRegistry()
				metrics = worker.NewMetrics(reg)
			}
			for _, name := range c.profileNames() {
				log.Info("profile", zap.String("name", name), zap.Stringer("config", c.Profiles[name]))
			}
			w, err := worker.New(newWorkerConfig(c, wc, rdb, log, metrics))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			metricsErr := make(chan error, 1)
			if reg != nil {
				go func() {
					metricsErr <- serveHTTP(ctx, wc.MetricsAddr, workerHTTP(reg, rdb), log, "metrics")
					cancel() // a metrics listener that fails stops the worker
				}()
			} else {
				metricsErr <- nil
			}
			err = w.Run(ctx)
			cancel()
			return errors.Join(err, <-metricsErr)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&f.concurrency, "concurrency", 0, "tasks run at once (default 4)")
	fs.StringVar(&f.queues, "queues", "", "queues and weights NAME=WEIGHT,... (default default=1)")
	fs.BoolVar(&f.strictPriority, "strict-priority", false, "always empty higher-weight queues first")
	fs.StringArrayVar(&f.allowDirs, "allow-dir", nil, "directory local sources may be read from (repeatable; default none)")
	fs.StringArrayVar(&f.allowURLHosts, "allow-url-host", nil, "host https sources may be fetched from (repeatable; default none)")
	fs.Var(sizeFlag{&f.partSize}, "part-size", "default multipart part size, e.g. 16MiB")
	fs.IntVar(&f.partConcurrency, "part-concurrency", 0, "default parts in flight per upload (default 4)")
	fs.Var(sizeFlag{&f.maxBufferMemory}, "max-buffer-memory", "cap on all part buffers together, e.g. 1GiB (default concurrency × part-concurrency × part-size)")
	fs.Var(durationFlag{&f.shutdownTimeout}, "shutdown-timeout", "how long shutdown waits for tasks to reach a part boundary (default 20s)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. :9464 (default off)")
	return cmd
}

func dashboardCmd(a *app) *cobra.Command {
	var (
		addr, token string
		readOnly    bool
		publicNames []string
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the web dashboard: transfers, asynqmon, metrics",
		Long: `Serve the dashboard until SIGINT or SIGTERM: live transfers at /, asynqmon at
/monitoring/, Prometheus metrics at /metrics, /healthz and /readyz.

It is safe by default. It listens on 127.0.0.1. An address other machines
can reach (--addr :8080) needs an auth token of at least 16 random
characters: set FERRY_DASHBOARD_TOKEN (or dashboard.auth_token in the config
file; --auth-token works, but a flag's value is visible to every user of the
machine in the process list); without one, or with a placeholder such as
REPLACE-ME, it refuses to start. Without a token asynqmon is read-only.

It answers only to its own names: localhost, 127.0.0.1, [::1], IP addresses
when it listens on every interface, and the names given with --public-name
(FERRY_DASHBOARD_PUBLIC_NAMES=a,b or dashboard.public_names). Any other Host
header gets 421: that stops a web page from reaching it through DNS
rebinding. Behind a reverse proxy or an ingress, add the name browsers use.`,
		Example: `  ferry dashboard
  FERRY_DASHBOARD_TOKEN=$(openssl rand -hex 32) ferry dashboard --addr :8080 --public-name dash.example.com
  ferry dashboard --read-only`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.config()
			if err != nil {
				return err
			}
			dc := c.Dashboard
			if cmd.Flags().Changed("addr") || dc.Addr == "" {
				dc.Addr = addr
			}
			if cmd.Flags().Changed("read-only") {
				dc.ReadOnly = readOnly
			}
			if cmd.Flags().Changed("auth-token") {
				dc.AuthToken = token
			}
			if cmd.Flags().Changed("public-name") {
				dc.PublicNames = publicNames
			}
			if err := checkDashboardAccess(dc); err != nil {
				return err
			}
			log, err := a.logger()
			if err != nil {
				return err
			}
			rdb, err := a.redis(ctx)
			if err != nil {
				return err
			}
			defer rdb.Close()
			srv, err := dashboard.New(newDashboardConfig(dc, rdb, log, newRegistry()))
			if err != nil {
				return err
			}
			defer srv.Close()
			return serveHTTP(ctx, dc.Addr, srv, log, "dashboard")
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "refuse actions (cancel, asynqmon's) and hide their buttons")
	cmd.Flags().StringVar(&token, "auth-token", "", "require this token (Authorization: Bearer, or ?token= once in a browser); required beyond loopback; prefer $"+envDashToken)
	cmd.Flags().StringArrayVar(&publicNames, "public-name", nil, "a host name the dashboard answers to, e.g. dash.example.com behind a proxy (repeatable; or $"+envDashPublicNames+"=a,b)")
	return cmd
}
