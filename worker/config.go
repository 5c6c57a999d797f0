package worker

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/webhook"
)

// Config configures a Worker. Zero values mean the documented defaults; cmd/
// reads flags, environment and the config file into it — the worker itself
// reads neither.
type Config struct {
	// Redis is shared by asynq, checkpoints and progress. Required. The
	// worker does not close it.
	Redis redis.UniversalClient
	// Profiles maps a profile name (as used in task payloads) to its S3
	// settings; Bucket is ignored. Tasks naming another profile are archived.
	Profiles map[string]storage.Config
	// Concurrency is the number of tasks run at once; zero means 4.
	Concurrency int
	// Queues maps queue names to priorities; nil means {"default": 1}.
	Queues map[string]int
	// StrictPriority processes higher-priority queues first, always.
	StrictPriority bool
	// AllowDirs are the directories local sources may be read from (through
	// os.Root: ".." and symlinks cannot escape them). Empty means no local
	// files are allowed.
	AllowDirs []string
	// AllowURLHosts are the hosts https sources may be fetched from. Empty
	// means no https sources are allowed.
	AllowURLHosts []string
	// PartSize is the default multipart part size; zero means 16 MiB.
	PartSize int64
	// PartConcurrency is the default number of parts in flight per upload;
	// zero means 4.
	PartConcurrency int
	// BatchConcurrency is the number of items of one ferry:batch task in
	// flight (a batch's payload may ask for another, 1..64); zero means 16.
	// Each reads its object into a buffer of MaxBufferMemory's pool, so
	// memory stays within that bound whatever the concurrency.
	BatchConcurrency int
	// MaxBufferMemory caps the part buffers of all uploads together; zero
	// means Concurrency × PartConcurrency × PartSize. Peak memory is about
	// this plus a fixed overhead, whatever the file sizes.
	MaxBufferMemory int64
	// ShutdownTimeout is how long Run waits on shutdown for tasks to reach a
	// part boundary before asynq puts them back in the queue; zero means 20s.
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how often an idle worker polls for tasks; zero
	// means 20ms. asynq's default of 1s adds up to a second of latency to
	// every pickup of an idle queue, and a migration pays it twice (its
	// own task, then its first batches): at 100ms the local-tree
	// benchmark spent 180–270 ms of a 1.3 s run before its first object,
	// at 20ms 44–60 ms (docs/performance.md, fifth round). An idle
	// worker's polling then costs about 2.5 % of a core and 430 Redis
	// commands a second with three queues; raise it for a large idle
	// fleet.
	TaskCheckInterval time.Duration
	// TakeoverInterval is how often this worker looks for tasks (multipart
	// uploads, migrations, recursive deletes, batches) whose owner stopped
	// renewing its ownership (a crashed worker) and continues them from
	// their record; zero means 2s, negative disables it in this worker
	// (asynq's lease recovery still retries them, in 1-2 min).
	TakeoverInterval time.Duration
	// JanitorInterval is how often the janitor runs; zero means 1h, negative
	// disables it in this worker.
	JanitorInterval time.Duration
	// JanitorUploadTTL: ferry's own multipart uploads (registered, or named
	// by a checkpoint) older than this whose task is no longer live in
	// asynq are aborted; zero means 24h. Other applications' uploads are
	// never aborted.
	JanitorUploadTTL time.Duration
	// ProgressTTL keeps the progress of a finished task; zero means 24h.
	ProgressTTL time.Duration
	// WebhookAllow are the hosts completion webhooks may be delivered to
	// (webhook.ParseAllowlist: names, "*.domain", IPs, CIDRs). Loopback,
	// private, link-local and metadata addresses are reachable only through
	// an IP or CIDR entry. Empty means no webhooks are delivered: ferry:notify
	// tasks are archived with the reason.
	WebhookAllow []string
	// WebhookSecrets sign every delivery, one v1 per secret (two during a
	// rotation); each at least webhook.MinSecretLength bytes. Required with
	// WebhookAllow. They never appear in payloads, logs, Redis or errors.
	WebhookSecrets [][]byte
	// WebhookQueueDefaults maps a queue name to the notify URL of its
	// transfers that carry none; WebhookProfileDefaults does the same by the
	// destination's profile. A transfer's own notify wins, then its queue's,
	// then its profile's. Nil means no defaults.
	WebhookQueueDefaults   map[string]string
	WebhookProfileDefaults map[string]string
	// WebhookRetryDelay is the delay before a failed delivery's first retry,
	// doubled on each retry up to an hour; zero means 10s (with MaxRetry
	// tasks.NotifyMaxRetry, retries span about 7 hours).
	WebhookRetryDelay time.Duration
	// WebhookTimeout bounds one delivery attempt; zero means
	// webhook.DefaultTimeout (10s).
	WebhookTimeout time.Duration
	// HTTPClient fetches https sources; nil means a client with sane timeouts.
	HTTPClient *http.Client
	// Logger; nil means no logging.
	Logger *zap.Logger
	// Metrics; nil means none are recorded.
	Metrics *Metrics
}

// requestsInFlight is the most requests this worker's tasks send to one
// endpoint at once: each slot's parts (an upload) or items (a batch).
func (c *Config) requestsInFlight() int {
	return c.Concurrency * max(c.PartConcurrency, c.BatchConcurrency)
}

func (c *Config) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if len(c.Queues) == 0 {
		c.Queues = map[string]int{"default": 1}
	}
	if c.PartSize <= 0 {
		c.PartSize = storage.DefaultPartSize
	}
	if c.PartConcurrency <= 0 {
		c.PartConcurrency = storage.DefaultPartConcurrency
	}
	if c.BatchConcurrency <= 0 {
		c.BatchConcurrency = 16
	}
	if c.MaxBufferMemory <= 0 {
		c.MaxBufferMemory = int64(c.Concurrency) * int64(c.PartConcurrency) * c.PartSize
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 20 * time.Second
	}
	if c.TaskCheckInterval <= 0 {
		c.TaskCheckInterval = 20 * time.Millisecond
	}
	if c.TakeoverInterval == 0 {
		c.TakeoverInterval = 2 * time.Second
	}
	if c.JanitorInterval == 0 {
		c.JanitorInterval = time.Hour
	}
	if c.JanitorUploadTTL <= 0 {
		c.JanitorUploadTTL = 24 * time.Hour
	}
	if c.ProgressTTL <= 0 {
		c.ProgressTTL = 24 * time.Hour
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 0, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.WebhookRetryDelay <= 0 {
		c.WebhookRetryDelay = 10 * time.Second
	}
	if c.WebhookTimeout <= 0 {
		c.WebhookTimeout = webhook.DefaultTimeout
	}
}

func (c *Config) validate() error {
	if c.Redis == nil {
		return errors.New("worker config: Redis is required")
	}
	if len(c.Profiles) == 0 {
		return errors.New("worker config: no S3 profiles: add one under profiles: in the config file")
	}
	for i, d := range c.AllowDirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("worker config: allow_dirs: %q is not absolute", d)
		}
		c.AllowDirs[i] = filepath.Clean(d)
	}
	if c.PartSize < storage.MinPartSize || c.PartSize > storage.MaxPartSize {
		return fmt.Errorf("worker config: part_size %d is out of range: S3 parts are 5 MiB to 5 GiB", c.PartSize)
	}
	if c.MaxBufferMemory < c.PartSize {
		return fmt.Errorf("worker config: max_buffer_memory %d is smaller than one part (%d)", c.MaxBufferMemory, c.PartSize)
	}
	return c.validateWebhooks()
}

// validateWebhooks checks the webhook settings: a parsable allowlist, a
// signing secret when webhooks can be delivered, and defaults the allowlist
// permits (a default it refuses would fail every transfer's notification).
func (c *Config) validateWebhooks() error {
	allow, err := webhook.ParseAllowlist(c.WebhookAllow)
	if err != nil {
		return fmt.Errorf("worker config: %w", err)
	}
	for i, s := range c.WebhookSecrets {
		if len(s) < webhook.MinSecretLength {
			// The length only: a secret never goes into a message.
			return fmt.Errorf("worker config: webhook secret %d is %d bytes: use at least %d random bytes (openssl rand -hex 32)", i+1, len(s), webhook.MinSecretLength)
		}
	}
	if len(c.WebhookAllow) > 0 && len(c.WebhookSecrets) == 0 {
		return errors.New("worker config: webhook_allow is set but there is no signing secret: set FERRY_WEBHOOK_SECRET or FERRY_WEBHOOK_SECRET_FILE")
	}
	for _, d := range []struct {
		what string
		m    map[string]string
	}{{"queue", c.WebhookQueueDefaults}, {"profile", c.WebhookProfileDefaults}} {
		for _, k := range slices.Sorted(maps.Keys(d.m)) {
			if _, err := allow.CheckURL(d.m[k]); err != nil {
				return fmt.Errorf("worker config: default webhook of %s %q: %w", d.what, k, err)
			}
		}
	}
	return nil
}

// profileNames lists the configured profiles, sorted, for error messages.
func (c *Config) profileNames() []string { return slices.Sorted(maps.Keys(c.Profiles)) }
