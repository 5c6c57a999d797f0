package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/worker"
)

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
// webhookAllow is the workers' webhook_allow, for the HTTP API to refuse a
// notify URL they would refuse.
func newDashboardConfig(dc dashboardConfig, webhookAllow []string, rdb redis.UniversalClient, log *zap.Logger, reg *prometheus.Registry) dashboard.Config {
	return dashboard.Config{Redis: rdb, ReadOnly: dc.ReadOnly, AuthToken: dc.AuthToken, Addr: dc.Addr,
		PublicNames: slices.Clone(dc.PublicNames), APITokens: slices.Clone(dc.APITokens), Logger: log, Registry: reg,
		WebhookAllow: slices.Clone(webhookAllow)}
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
			wc := f.apply(cmd.Flags(), c.Worker)
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
			w, err := worker.New(wc.newWorker(c, rdb, log, metrics))
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
	f.register(cmd.Flags())
	return cmd
}

func dashboardCmd(a *app) *cobra.Command {
	f := &dashboardFlags{given: dashboardConfig{Addr: defaultDashboardAddr}}
	cmd := &cobra.Command{
		Use:     "dashboard",
		Aliases: []string{"server"},
		Short:   "Serve the HTTP API and the web dashboard (also: ferry server)",
		Long: `Serve until SIGINT or SIGTERM: the HTTP API for producers in any language at
/api/v1/ (docs/api.md; its OpenAPI document at /api/v1/openapi.json), live
transfers at /, asynqmon at /monitoring/, Prometheus metrics at /metrics,
/healthz and /readyz. "ferry server" is the same command.

API tokens: FERRY_API_PRODUCER_TOKENS (enqueue, cancel, read) and
FERRY_API_VIEWER_TOKENS (read), comma-separated, or the same names with
_FILE for a file of one token per line (a Kubernetes secret).

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
  FERRY_DASHBOARD_TOKEN=$(cat /run/secrets/ferry-admin) FERRY_API_PRODUCER_TOKENS_FILE=/run/secrets/ferry-producers ferry server --addr :8080
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
			if dc.Addr == "" {
				dc.Addr = defaultDashboardAddr
			}
			dc = f.apply(cmd.Flags(), dc)
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
			srv, err := dashboard.New(newDashboardConfig(dc, c.Worker.WebhookAllow, rdb, log, newRegistry()))
			if err != nil {
				return err
			}
			defer srv.Close()
			return serveHTTP(ctx, dc.Addr, srv, log, "dashboard")
		},
	}
	f.register(cmd.Flags())
	return cmd
}
