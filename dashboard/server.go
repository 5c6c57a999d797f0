package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
)

// Defaults of Config's zero values.
const (
	// DefaultScanInterval is how often the index is reconciled with a SCAN.
	DefaultScanInterval = 30 * time.Second
	// DefaultMaxIndexed bounds the transfers the index keeps.
	DefaultMaxIndexed = 10000
)

// MonitoringPath is where asynqmon is mounted.
const MonitoringPath = "/monitoring"

// tokenCookie is the cookie set by ?token= so that the browser's later
// requests (pages, fetch, EventSource, asynqmon) carry the token.
const tokenCookie = "ferry_dashboard_token"

// Config configures a Server. Only Redis is required.
type Config struct {
	// Redis is the Redis of the queue and of progress (single, Sentinel or
	// Cluster client). Required. The dashboard never closes it.
	Redis redis.UniversalClient
	// ReadOnly hides and refuses actions: cancel answers 403 and asynqmon
	// runs read-only. False allows them (asynqmon's only with AuthToken).
	ReadOnly bool
	// AuthToken, when set, is required on every request but /healthz and
	// /readyz: "Authorization: Bearer <token>", or the cookie set by visiting
	// any page with ?token=<token>. It must pass CheckToken. Empty means no
	// authentication, which New allows only when Addr is loopback, and
	// asynqmon then runs read-only: its actions (delete, archive, pause a
	// queue) are for whoever holds the token.
	AuthToken string
	// Addr is the address the dashboard is served on (host:port, as given
	// to net.Listen). It decides which Host headers are the dashboard's own
	// (see PublicNames) and whether AuthToken is required (any address but
	// loopback). Empty means a loopback address.
	Addr string
	// PublicNames are the further host names the dashboard answers to,
	// e.g. "dash.example.com" behind a reverse proxy or an ingress, or
	// "dash.example.com:8443" for that port only. A request with any other
	// Host is refused with 421, to defeat DNS rebinding; loopback names,
	// and IP addresses when Addr listens on every interface, are always
	// allowed. Nil means none.
	PublicNames []string
	// Logger receives the dashboard's logs. Nil means zap.NewNop().
	Logger *zap.Logger
	// Registry holds extra collectors (the worker's, Go and process
	// metrics) to expose on /metrics next to the dashboard's. Nil means none.
	Registry *prometheus.Registry
	// ScanInterval is how often the transfer index is reconciled with a SCAN
	// of the progress hashes. Zero means DefaultScanInterval.
	ScanInterval time.Duration
	// MaxIndexed bounds the transfers kept in the index and listed by
	// /api/transfers. Zero means DefaultMaxIndexed.
	MaxIndexed int
	// APITokens are the bearer tokens of the versioned API (/api/v1/), each
	// with its scope; AuthToken is valid there too, with every scope. Each
	// must pass CheckToken. Nil means none: the API then takes AuthToken
	// only, or, with no AuthToken either, is open (loopback only).
	APITokens []APIToken
	// APIRate is the requests per second one API token may send, answered
	// 429 beyond; zero means DefaultAPIRate.
	APIRate float64
	// APIBurst is the requests one API token may send at once; zero means
	// DefaultAPIBurst.
	APIBurst int
	// WebhookAllow is the workers' webhook allowlist (their webhook_allow):
	// POST /api/v1/transfers refuses a notify URL off it with 400 and the
	// reason. Nil means unknown here: only the URL's shape is checked, and
	// a worker archives a delivery it refuses.
	WebhookAllow []string
}

func (c *Config) validate() error {
	if c.Redis == nil {
		return errors.New("dashboard: Config.Redis is required")
	}
	if c.ScanInterval < 0 {
		return errors.New("dashboard: Config.ScanInterval is negative: use 0 for the default")
	}
	if c.MaxIndexed < 0 {
		return errors.New("dashboard: Config.MaxIndexed is negative: use 0 for the default")
	}
	if err := CheckAccess(c.Addr, c.AuthToken, c.PublicNames); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if err := checkAPITokens(c.AuthToken, c.APITokens); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if _, err := webhook.ParseAllowlist(c.WebhookAllow); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if c.APIRate < 0 || c.APIBurst < 0 {
		return errors.New("dashboard: Config.APIRate or APIBurst is negative: use 0 for the default")
	}
	if c.APIRate == 0 {
		c.APIRate = DefaultAPIRate
	}
	if c.APIBurst == 0 {
		c.APIBurst = DefaultAPIBurst
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = DefaultScanInterval
	}
	if c.MaxIndexed == 0 {
		c.MaxIndexed = DefaultMaxIndexed
	}
	return nil
}

// webhookAllow is the parsed allowlist (validated in validate); nil when
// none is configured.
func webhookAllow(entries []string) *webhook.Allowlist {
	if len(entries) == 0 {
		return nil
	}
	a, _ := webhook.ParseAllowlist(entries)
	return a
}

// Server is the dashboard, an http.Handler. Close it to stop its background
// goroutines and end open event streams.
type Server struct {
	cfg     Config
	hosts   hostPolicy
	log     *zap.Logger
	client  *tasks.Client
	ckpt    *checkpoint.Store // read only: the parts maps
	hub     *hub
	handler http.Handler
	pages   *pages
	metrics *serverMetrics
	auth    *authenticator
	limits  *limiters

	// apiPatterns are the ServeMux patterns of the versioned API, as
	// registered (the OpenAPI test checks the document against them).
	apiPatterns []string
	openapi     []byte // GET /api/v1/openapi.json

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New validates cfg and returns a Server. It does not wait for Redis: the
// subscription and the first scan start in the background, and /readyz
// tells whether Redis answers.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hosts, err := newHostPolicy(cfg.Addr, cfg.PublicNames)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	pg, err := newPages()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:     cfg,
		hosts:   hosts,
		log:     cfg.Logger,
		client:  tasks.NewClient(cfg.Redis, func(o *tasks.ClientOptions) { o.WebhookAllow = webhookAllow(cfg.WebhookAllow) }),
		ckpt:    checkpoint.New(cfg.Redis, checkpoint.Options{}),
		pages:   pg,
		metrics: newServerMetrics(),
		auth:    newAuthenticator(cfg.AuthToken, cfg.APITokens),
		limits:  newLimiters(cfg.APIRate, cfg.APIBurst),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	s.hub = newHub(cfg.Redis, cfg.Logger, cfg.ScanInterval, cfg.MaxIndexed, s.metrics)
	go func() {
		defer close(s.done)
		s.hub.run(ctx)
	}()
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP serves the dashboard.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// Close stops the subscription and the index, ends every open event stream
// and waits for the background goroutines. It does not close Config.Redis.
// Close is idempotent and returns nil.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
	})
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleIndexPage)
	mux.HandleFunc("GET /transfers/{id}", s.handleTransferPage)
	mux.Handle("GET /static/", s.pages.staticHandler())
	mux.HandleFunc("GET /api/transfers", s.handleListTransfers)
	mux.HandleFunc("GET /api/transfers/{id}", s.handleGetTransfer)
	mux.HandleFunc("POST /api/transfers/{id}/cancel", s.handleCancel)
	mux.HandleFunc("GET /api/events", s.handleEvents)
	s.registerAPI(mux)
	mux.Handle(MonitoringPath+"/", s.monitoring())

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(s.client.Inspector(), s.log))
	reg.MustRegister(s.metrics)
	gatherers := prometheus.Gatherers{reg}
	if s.cfg.Registry != nil {
		gatherers = append(gatherers, s.cfg.Registry)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(s.log),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.handleReadyz)

	cop := http.NewCrossOriginProtection()
	return securityHeaders(hostCheck(s.hosts, tokenAuth(s.auth, cop.Handler(mux))))
}

// monitoring is asynqmon on the shared Redis client. asynqmon builds its
// clients from an asynq.RedisConnOpt; sharedConnOpt hands it the client we
// already have (its concrete type, so asynqmon's Redis info page works).
// The asynqmon handler is never Closed: that would close Config.Redis, and it
// holds nothing else.
//
// asynqmon is read-only with ReadOnly and without an AuthToken: its actions
// delete and archive tasks and pause or delete queues, so they are for
// whoever holds the token. asynqmon then hides its buttons and answers 405 on
// its API; readOnlyActions refuses every non-GET request under
// /monitoring/ first, with the reason.
func (s *Server) monitoring() http.Handler {
	why := ""
	switch {
	case s.cfg.ReadOnly:
		why = "the dashboard is read-only: asynqmon's actions are disabled"
	case s.cfg.AuthToken == "":
		why = "asynqmon is read-only because the dashboard has no auth token: start it with one (FERRY_DASHBOARD_TOKEN) to use asynqmon's actions"
	}
	h := asynqmon.New(asynqmon.Options{
		RootPath:         MonitoringPath,
		RedisConnOpt:     sharedConnOpt{s.cfg.Redis},
		PayloadFormatter: PayloadFormatter,
		ResultFormatter:  ResultFormatter,
		ReadOnly:         why != "",
	})
	if why != "" {
		return readOnlyActions(why, h)
	}
	return h
}

// sharedConnOpt is an asynq.RedisConnOpt that returns an existing client
// instead of making one.
type sharedConnOpt struct{ c redis.UniversalClient }

func (o sharedConnOpt) MakeRedisClient() any { return o.c }

var _ asynq.RedisConnOpt = sharedConnOpt{}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.cfg.Redis.Ping(ctx).Err(); err != nil {
		// The details go to the log only: /readyz needs no token.
		s.log.Warn("readyz: redis ping failed", zap.Error(err))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("redis unreachable\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// securityHeaders sets headers every response should carry.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}
