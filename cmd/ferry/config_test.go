package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/worker"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		in      string
		want    int64
		wantErr bool
	}{
		{desc: "bytes", in: "1048576", want: 1 << 20},
		{desc: "MiB", in: "16MiB", want: 16 << 20},
		{desc: "M is binary", in: "16M", want: 16 << 20},
		{desc: "GB is decimal", in: "5GB", want: 5e9},
		{desc: "fraction and space", in: "1.5 GiB", want: 3 << 29},
		{desc: "lower case", in: "8mib", want: 8 << 20},
		{desc: "unit B", in: "100B", want: 100},
		{desc: "unknown unit", in: "12XB", wantErr: true},
		{desc: "no number", in: "MiB", wantErr: true},
		{desc: "empty", in: "", wantErr: true},
		{desc: "negative", in: "-1", wantErr: true},
		{desc: "fractional bytes", in: "1.5", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := parseSize(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseQueues(t *testing.T) {
	t.Parallel()
	got, err := parseQueues("critical=6, default=3,low")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"critical": 6, "default": 3, "low": 1}, got); diff != "" {
		t.Errorf("parseQueues (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "a=0", "a=x", "=3"} {
		if _, err := parseQueues(bad); err == nil {
			t.Errorf("parseQueues(%q) = nil error", bad)
		}
	}
}

// TestLoadConfig covers the file's sections and the Redis variants that
// the end-to-end tests cannot reach (Sentinel, Cluster, TLS).
func TestLoadConfig(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	tests := []struct {
		desc    string
		yaml    string
		flag    string
		env     map[string]string
		check   func(t *testing.T, c *config)
		wantErr string
	}{
		{desc: "defaults", yaml: "", check: func(t *testing.T, c *config) {
			o := c.Redis.Opts
			if diff := cmp.Diff([]any{[]string{"127.0.0.1:6379"}, 0, "default"}, []any{o.Addrs, o.DB, c.Redis.Source}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !c.implicitDefault || len(c.Profiles) != 1 {
				t.Errorf("want an implicit default profile, got %v", c.profileNames())
			}
		}},
		{desc: "url with password and db, password from env wins over file", yaml: "redis:\n  url: redis://:filepw@h:1/3\n  password: other\n",
			env: map[string]string{envRedisPassword: "envpw"}, check: func(t *testing.T, c *config) {
				o := c.Redis.Opts
				if diff := cmp.Diff([]any{[]string{"h:1"}, 3, "envpw"}, []any{o.Addrs, o.DB, o.Password}); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
				if strings.Contains(c.Redis.Display, "filepw") {
					t.Errorf("display %q shows the password", c.Redis.Display)
				}
			}},
		{desc: "flag URL password beats env password", flag: "redis://:flagpw@f:2/1", env: map[string]string{envRedisPassword: "envpw"},
			check: func(t *testing.T, c *config) {
				if c.Redis.Opts.Password != "flagpw" || c.Redis.Source != "--redis" {
					t.Errorf("password %q from %s", c.Redis.Opts.Password, c.Redis.Source)
				}
			}},
		{desc: "rediss", yaml: "redis:\n  url: rediss://h:6380/0\n  tls: {insecure_skip_verify: true}\n", check: func(t *testing.T, c *config) {
			if tc := c.Redis.Opts.TLSConfig; tc == nil || !tc.InsecureSkipVerify {
				t.Errorf("TLS config = %+v", tc)
			}
		}},
		{desc: "tls: true on redis://", yaml: "redis:\n  url: redis://h:6380/0\n  tls: true\n", check: func(t *testing.T, c *config) {
			if tc := c.Redis.Opts.TLSConfig; tc == nil || tc.ServerName != "h" || tc.InsecureSkipVerify {
				t.Errorf("TLS config = %+v", tc)
			}
		}},
		{desc: "sentinel", yaml: "redis:\n  sentinel:\n    master_name: mymaster\n    addrs: [s1:26379, s2:26379]\n  password: pw\n  db: 2\n",
			check: func(t *testing.T, c *config) {
				o := c.Redis.Opts
				if diff := cmp.Diff([]any{"mymaster", []string{"s1:26379", "s2:26379"}, "pw", 2}, []any{o.MasterName, o.Addrs, o.Password, o.DB}); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}},
		{desc: "env URL beats sentinel", yaml: "redis:\n  sentinel:\n    master_name: m\n    addrs: [s1:26379]\n",
			env: map[string]string{envRedisURL: "redis://e:9/0"}, check: func(t *testing.T, c *config) {
				if o := c.Redis.Opts; o.MasterName != "" || o.Addrs[0] != "e:9" {
					t.Errorf("opts = %+v", o)
				}
			}},
		{desc: "cluster", yaml: "redis:\n  cluster:\n    addrs: [c1:7000, c2:7000]\n  tls: true\n", check: func(t *testing.T, c *config) {
			if o := c.Redis.Opts; !o.IsClusterMode || len(o.Addrs) != 2 || o.TLSConfig == nil {
				t.Errorf("opts = %+v", o)
			}
		}},
		{desc: "profile and worker sections", yaml: `profiles:
  r2-prod:
    provider: r2
    endpoint_url: https://acct.r2.cloudflarestorage.com
    presigned_expiry: 2h
    use_ssl: true
worker:
  concurrency: 8
  queues: {critical: 6, default: 3}
  part_size: 64MiB
  max_buffer_memory: 2GiB
  shutdown_timeout: 1m
  allow_dirs: [data, /abs]
`, env: map[string]string{"FERRY_PROFILE_R2_PROD_ACCESS_KEY_ID": "AK", "FERRY_PROFILE_R2_PROD_SECRET_ACCESS_KEY": "SK"},
			check: func(t *testing.T, c *config) {
				p := c.Profiles["r2-prod"]
				if diff := cmp.Diff([]any{"AK", "SK", 2 * time.Hour, true}, []any{p.AccessKeyID, p.SecretAccessKey, p.PresignedExpiry, *p.UseSSL}); diff != "" {
					t.Errorf("profile (-want +got):\n%s", diff)
				}
				if _, err := c.profile(""); err == nil || !strings.Contains(err.Error(), "known profiles: r2-prod") {
					t.Errorf("default profile error = %v", err)
				}
				w := c.Worker
				if diff := cmp.Diff([]any{8, int64(64 << 20), int64(2 << 30), time.Minute, "/abs"},
					[]any{w.Concurrency, int64(w.PartSize), int64(w.MaxBufferMemory), time.Duration(w.ShutdownTimeout), w.AllowDirs[1]}); diff != "" {
					t.Errorf("worker (-want +got):\n%s", diff)
				}
				if !filepath.IsAbs(w.AllowDirs[0]) || filepath.Base(w.AllowDirs[0]) != "data" {
					t.Errorf("relative allow_dir not made absolute: %q", w.AllowDirs[0])
				}
			}},
		{desc: "unknown field", yaml: "profiles:\n  default:\n    bucket: x\n", wantErr: "field bucket not found"},
		{desc: "unknown top-level field", yaml: "redsi:\n  url: x\n", wantErr: "field redsi not found"},
		{desc: "bad duration", yaml: "profiles:\n  default:\n    presigned_expiry: 1hour\n", wantErr: `invalid duration "1hour"`},
		{desc: "bad tls", yaml: "redis:\n  tls: maybe\n", wantErr: "redis.tls"},
		{desc: "url and cluster", yaml: "redis:\n  url: redis://h:1\n  cluster: {addrs: [a:1]}\n", wantErr: "only one of url, sentinel and cluster"},
		{desc: "bad url scheme", flag: "http://h:1", wantErr: "redis URL from --redis"},
		{desc: "bad profile name", yaml: "profiles:\n  \"a b\": {}\n", wantErr: `"a b" is not a profile name`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "ferry.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path, tc.flag, env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("loadConfig error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			tc.check(t, c)
		})
	}
}

// TestAPITokensFromEnv: tokens come from the variables and from files (a
// mounted Kubernetes secret), each with its scope; an unreadable file is an
// error naming the variable.
func TestAPITokensFromEnv(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "viewers")
	if err := os.WriteFile(file, []byte("# viewers\nv2d4f6a8c0e1b3d5f7a9c1e3b5d7f9a1\n\nw3e5a7c9e1b3d5f7a9c1e3b5d7f9a1b2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		envAPIProducerTokens:               "p7c1e5a9b3d2f4068a1b2c3d4e5f6a7b, q8d2f6b0c4e3a5179b2c3d4e5f6a7b8c",
		envAPIViewerTokens + envFileSuffix: file,
	}
	got, err := apiTokensFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := []dashboard.APIToken{
		{Token: "p7c1e5a9b3d2f4068a1b2c3d4e5f6a7b", Scope: dashboard.ScopeProducer},
		{Token: "q8d2f6b0c4e3a5179b2c3d4e5f6a7b8c", Scope: dashboard.ScopeProducer},
		{Token: "v2d4f6a8c0e1b3d5f7a9c1e3b5d7f9a1", Scope: dashboard.ScopeViewer},
		{Token: "w3e5a7c9e1b3d5f7a9c1e3b5d7f9a1b2", Scope: dashboard.ScopeViewer},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tokens (-want +got):\n%s", diff)
	}
	env[envAPIViewerTokens+envFileSuffix] = file + ".missing"
	if _, err := apiTokensFromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), envAPIViewerTokens+envFileSuffix) {
		t.Errorf("missing file: %v; want an error naming the variable", err)
	}
}

// TestWorkerSettingsPrecedence: a worker setting given as a flag beats the
// environment and the config file, one given only in the file is kept (a
// flag's default never overrides it), and the webhook secret comes from
// the environment; the worker.Config built carries them all.
func TestWorkerSettingsPrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(`worker:
  concurrency: 8
  queues: {critical: 6, default: 3}
  strict_priority: true
  allow_dirs: [data]
  part_size: 64MiB
  janitor_interval: 2h
  metrics_addr: ":9000"
  webhook_defaults:
    queues: {critical: "https://hooks.example.com/c"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("s", 32)
	c, err := loadConfig(path, "", func(k string) string { return map[string]string{envWebhookSecret: secret}[k] })
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	f := &workerFlags{}
	f.register(fs)
	if err := fs.Parse([]string{"--concurrency", "3", "--queues", "low=2", "--strict-priority=false", "--allow-dir", "in", "--allow-dir", "/abs", "--metrics-addr", ":9464"}); err != nil {
		t.Fatal(err)
	}
	got := f.apply(fs, c.Worker)
	cwd, _ := os.Getwd()
	want := worker.Config{
		Concurrency: 3, Queues: map[string]int{"low": 2}, StrictPriority: false,
		AllowDirs: []string{filepath.Join(cwd, "in"), "/abs"}, PartSize: 64 << 20, JanitorInterval: 2 * time.Hour,
		WebhookQueueDefaults: map[string]string{"critical": "https://hooks.example.com/c"}, WebhookSecrets: [][]byte{[]byte(secret)},
	}
	if diff := cmp.Diff(workerConfig{Config: want, MetricsAddr: ":9464"}, got); diff != "" {
		t.Errorf("flags over file and environment (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{filepath.Join(dir, "data")}, c.Worker.AllowDirs); diff != "" {
		t.Errorf("the file's allow_dirs, relative to the file, changed by the flags (-want +got):\n%s", diff)
	}
	wc := got.newWorker(c, nil, nil, nil)
	if wc.Concurrency != 3 || wc.PartSize != 64<<20 || len(wc.WebhookSecrets) != 1 || len(wc.Profiles) != 1 {
		t.Errorf("worker.Config: concurrency %d, part size %d, %d secrets, %d profiles; want 3, 64 MiB, 1, 1", wc.Concurrency, wc.PartSize, len(wc.WebhookSecrets), len(wc.Profiles))
	}
}
