package main

import (
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/worker"
)

// A setting is one key of a config file section: the field it sets, typed
// as the file writes it (a *size over an int64 field, a *duration over a
// time.Duration, ...), and, for the worker's settings, the `ferry worker`
// flag that overrides it ("" for none) with the flag's usage.
type setting struct {
	key, flag, usage string
	field            any
}

// decodeSettings decodes the mapping n into settings, strictly: a key that
// is no setting's is an error naming its line. A dotted key is a nested
// mapping: "webhook_defaults.queues". section names n in errors.
func decodeSettings(n *yaml.Node, section string, settings []setting) error {
	return decodeSettingsAt(n, section, "", settings)
}

func decodeSettingsAt(n *yaml.Node, section, prefix string, settings []setting) error {
	if n.ShortTag() == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s is a mapping of settings, not %q", n.Line, strings.TrimSuffix(section+"."+prefix, "."), n.Value)
	}
	seen := map[string]int{} // key: line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := prefix + k.Value
		if line, ok := seen[key]; ok {
			return fmt.Errorf("line %d: mapping key %q already defined at line %d", k.Line, k.Value, line)
		}
		seen[key] = k.Line
		i := slices.IndexFunc(settings, func(s setting) bool { return s.key == key })
		switch {
		case i >= 0:
			if err := v.Decode(settings[i].field); err != nil {
				return err
			}
		case slices.ContainsFunc(settings, func(s setting) bool { return strings.HasPrefix(s.key, key+".") }):
			if err := decodeSettingsAt(v, section, key+".", settings); err != nil {
				return err
			}
		default:
			return fmt.Errorf("line %d: field %s not found in %s", k.Line, key, section)
		}
	}
	return nil
}

// profileConfig is one profile of the config file: a storage.Config,
// decoded through storage's own yaml tags but for three keys. bucket and
// integrity are refused: a profile serves every bucket (the s3:// URL names
// it), and integrity is a switch for measuring what integrity costs
// (docs/performance.md), not a setting. presigned_expiry is written as
// ferry's other durations are ("2h").
type profileConfig storage.Config

func (p *profileConfig) UnmarshalYAML(n *yaml.Node) error {
	sc := (*storage.Config)(p)
	var settings []setting
	t, v := reflect.TypeFor[storage.Config](), reflect.ValueOf(sc).Elem()
	for i := range t.NumField() {
		switch key := t.Field(i).Tag.Get("yaml"); key {
		case "", "-", "bucket", "integrity":
		case "presigned_expiry":
			settings = append(settings, setting{key: key, field: (*duration)(&sc.PresignedExpiry)})
		default:
			settings = append(settings, setting{key: key, field: v.Field(i).Addr().Interface()})
		}
	}
	return decodeSettings(n, "profile", settings)
}

// workerConfig is the worker: section of the config file, with `ferry
// worker`'s flags over it: worker.Config's settings, and the address cmd
// serves metrics on. worker.Config is not decoded through yaml tags of its
// own because the file and the flags write units it does not read (64MiB,
// 1h, off, critical=6,default=3) and it also holds what no file carries
// (the Redis client, the logger, metrics): settings maps each key onto its
// field, in this one place. newWorker sets the rest.
type workerConfig struct {
	worker.Config
	MetricsAddr string
}

// settings is the one list of the worker's settings: adding one is a row
// here (and its field in worker.Config, and a line in docs/cli.md). The
// config file decodes through it, and `ferry worker` defines its flags and
// applies them through it (workerFlags).
func (wc *workerConfig) settings() []setting {
	c := &wc.Config
	return []setting{
		{"concurrency", "concurrency", "tasks run at once (default 4)", &c.Concurrency},
		{"queues", "queues", "queues and weights NAME=WEIGHT,... (default default=1)", (*queues)(&c.Queues)},
		{"strict_priority", "strict-priority", "always empty higher-weight queues first", &c.StrictPriority},
		{"allow_dirs", "allow-dir", "directory local sources may be read from (repeatable; default none)", (*dirs)(&c.AllowDirs)},
		{"allow_url_hosts", "allow-url-host", "host https sources may be fetched from (repeatable; default none)", &c.AllowURLHosts},
		{"part_size", "part-size", "default multipart part size, e.g. 16MiB", (*size)(&c.PartSize)},
		{"part_concurrency", "part-concurrency", "default parts in flight per upload (default 4)", &c.PartConcurrency},
		{"max_buffer_memory", "max-buffer-memory", "cap on all part buffers together, e.g. 1GiB (default concurrency × part-concurrency × part-size)", (*size)(&c.MaxBufferMemory)},
		{"batch_concurrency", "", "", &c.BatchConcurrency},
		{"shutdown_timeout", "shutdown-timeout", "how long shutdown waits for tasks to reach a part boundary (default 20s)", (*duration)(&c.ShutdownTimeout)},
		{"task_check_interval", "", "", (*duration)(&c.TaskCheckInterval)},
		{"janitor_interval", "janitor-interval", "how often the janitor runs, e.g. 30m, or off to disable it in this worker (default 1h)", (*interval)(&c.JanitorInterval)},
		{"janitor_upload_ttl", "", "", (*duration)(&c.JanitorUploadTTL)},
		{"progress_ttl", "", "", (*duration)(&c.ProgressTTL)},
		{"metrics_addr", "metrics-addr", "serve Prometheus metrics on this address, e.g. :9464 (default off)", &wc.MetricsAddr},
		// The hosts completion webhooks may go to (names, "*.domain", IPs,
		// CIDRs); empty means none. The CLI and the HTTP API also refuse a
		// notify URL off this list at enqueue, when it is set. The signing
		// secrets (WebhookSecrets) come from the environment only.
		{"webhook_allow", "webhook-allow", "host, *.domain, IP or CIDR completion webhooks may be delivered to (repeatable; default none; loopback and private addresses only as an IP or CIDR); signing secret from $" + envWebhookSecret + "[_FILE]", &c.WebhookAllow},
		// Notify URLs for transfers that carry none, by queue and by
		// destination profile; a queue's wins over a profile's.
		{"webhook_defaults.queues", "", "", &c.WebhookQueueDefaults},
		{"webhook_defaults.profiles", "", "", &c.WebhookProfileDefaults},
	}
}

func (wc *workerConfig) UnmarshalYAML(n *yaml.Node) error {
	return decodeSettings(n, "worker", wc.settings())
}

// newWorker is the worker.Config of these settings on rdb, with c's
// profiles; log and metrics may be nil. The caller owns rdb. `ferry
// worker` and ferry dev share it.
func (wc workerConfig) newWorker(c *config, rdb redis.UniversalClient, log *zap.Logger, metrics *worker.Metrics) worker.Config {
	w := wc.Config
	w.Redis, w.Profiles, w.Logger, w.Metrics = rdb, maps.Clone(c.Profiles), log, metrics
	// worker.New cleans AllowDirs in place; the lists stay this config's.
	w.AllowDirs, w.AllowURLHosts, w.WebhookAllow = slices.Clone(w.AllowDirs), slices.Clone(w.AllowURLHosts), slices.Clone(w.WebhookAllow)
	return w
}

// settingFlags are a command's flags over a config section C: register
// binds each flag to its setting in a C of their own (given; a flag's
// default is what given holds then); apply copies the ones given on the
// command line over the configuration, last: flags beat environment beat
// file. The flags are the section's settings that name one.
type settingFlags[C any, P interface {
	*C
	settings() []setting
}] struct{ given C }

// workerFlags are `ferry worker`'s flags; dashboardFlags `ferry dashboard`'s.
type (
	workerFlags    = settingFlags[workerConfig, *workerConfig]
	dashboardFlags = settingFlags[dashboardConfig, *dashboardConfig]
)

func (f *settingFlags[C, P]) register(fs *pflag.FlagSet) {
	for _, s := range P(&f.given).settings() {
		if s.flag == "" {
			continue
		}
		switch p := s.field.(type) {
		case *int:
			fs.IntVar(p, s.flag, *p, s.usage)
		case *bool:
			fs.BoolVar(p, s.flag, *p, s.usage)
		case *string:
			fs.StringVar(p, s.flag, *p, s.usage)
		case *[]string:
			fs.StringArrayVar(p, s.flag, *p, s.usage)
		case pflag.Value:
			fs.Var(p, s.flag, s.usage)
		default:
			panic(fmt.Sprintf("setting %s: no flag type for %T", s.key, p))
		}
	}
}

// apply returns c with the settings whose flags fs saw set from them.
func (f *settingFlags[C, P]) apply(fs *pflag.FlagSet, c C) C {
	given := P(&f.given).settings()
	for i, s := range P(&c).settings() {
		if s.flag != "" && fs.Changed(s.flag) {
			reflect.ValueOf(s.field).Elem().Set(reflect.ValueOf(given[i].field).Elem())
		}
	}
	return c
}

// queues are queue names and their weights: a mapping {critical: 6} in
// the file, "critical=6,default=3,low" on the command line (see
// parseQueues).
type queues map[string]int

func (q *queues) String() string {
	if q == nil {
		return ""
	}
	var items []string
	for _, name := range slices.Sorted(maps.Keys(*q)) {
		items = append(items, name+"="+strconv.Itoa((*q)[name]))
	}
	return strings.Join(items, ",")
}

func (q *queues) Set(s string) error {
	v, err := parseQueues(s)
	if err != nil {
		return err
	}
	*q = v
	return nil
}

func (*queues) Type() string { return "string" }

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

// dirs are directories. In the file a relative one is relative to the
// file (loadConfig); on the command line, to the working directory: a
// flag's value is made absolute as it is given.
type dirs []string

func (d *dirs) String() string {
	if d == nil {
		return ""
	}
	return strings.Join(*d, ",")
}

func (d *dirs) Set(s string) error {
	abs, err := filepath.Abs(s)
	if err != nil {
		return fmt.Errorf("--allow-dir %q: %w", s, err)
	}
	*d = append(*d, abs)
	return nil
}

func (*dirs) Type() string { return "stringArray" }
