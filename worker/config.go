package worker

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
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
	// MaxBufferMemory caps the part buffers of all uploads together; zero
	// means Concurrency × PartConcurrency × PartSize. Peak memory is about
	// this plus a fixed overhead, whatever the file sizes.
	MaxBufferMemory int64
	// ShutdownTimeout is how long Run waits on shutdown for tasks to reach a
	// part boundary before asynq puts them back in the queue; zero means 20s.
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how often an idle worker polls for tasks; zero
	// means 100ms (asynq's default of 1s adds up to a second of latency).
	TaskCheckInterval time.Duration
	// TakeoverInterval is how often this worker looks for uploads whose
	// owner stopped renewing its ownership (a crashed worker) and continues
	// them from their checkpoint; zero means 2s, negative disables it in
	// this worker (asynq's lease recovery still retries them, in 1-2 min).
	TakeoverInterval time.Duration
	// JanitorInterval is how often the janitor runs; zero means 1h, negative
	// disables it in this worker.
	JanitorInterval time.Duration
	// JanitorUploadTTL: multipart uploads older than this that no live
	// checkpoint owns are aborted; zero means 24h.
	JanitorUploadTTL time.Duration
	// ProgressTTL keeps the progress of a finished task; zero means 24h.
	ProgressTTL time.Duration
	// HTTPClient fetches https sources; nil means a client with sane timeouts.
	HTTPClient *http.Client
	// Logger; nil means no logging.
	Logger *zap.Logger
	// Metrics; nil means none are recorded.
	Metrics *Metrics
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
	if c.MaxBufferMemory <= 0 {
		c.MaxBufferMemory = int64(c.Concurrency) * int64(c.PartConcurrency) * c.PartSize
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 20 * time.Second
	}
	if c.TaskCheckInterval <= 0 {
		c.TaskCheckInterval = 100 * time.Millisecond
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
	return nil
}

// profileNames lists the configured profiles, sorted, for error messages.
func (c *Config) profileNames() []string {
	names := make([]string, 0, len(c.Profiles))
	for n := range c.Profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
