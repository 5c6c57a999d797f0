package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/ferryhq/ferry/dashboard"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/webhook"
)

// Environment variables the CLI reads. Flags beat them; they beat the file.
const (
	envConfig        = "FERRY_CONFIG"
	envRedisURL      = "FERRY_REDIS_URL"
	envRedisPassword = "FERRY_REDIS_PASSWORD"
	envDashToken     = "FERRY_DASHBOARD_TOKEN"
	// envDashPublicNames is a comma-separated list of the dashboard's public
	// names (dashboard.public_names, --public-name).
	envDashPublicNames = "FERRY_DASHBOARD_PUBLIC_NAMES"
	// envAPIProducerTokens and envAPIViewerTokens are comma-separated bearer
	// tokens of the HTTP API; with the suffix envFileSuffix they name a file
	// holding one token per line (a Kubernetes secret mounted as a file).
	envAPIProducerTokens = "FERRY_API_PRODUCER_TOKENS"
	envAPIViewerTokens   = "FERRY_API_VIEWER_TOKENS"
	envFileSuffix        = "_FILE"
	// envWebhookSecret is the workers' webhook signing secret (two,
	// comma-separated, during a rotation); with envFileSuffix it names a
	// file holding one per line.
	envWebhookSecret = "FERRY_WEBHOOK_SECRET"
	// envProfilePrefix + NAME + one of the suffixes below carries a profile's
	// secrets: FERRY_PROFILE_<NAME>_ACCESS_KEY_ID, NAME upper-cased, '-' and
	// '.' as '_'.
	envProfilePrefix = "FERRY_PROFILE_"
)

const (
	defaultConfigFile = "ferry.yaml"
	defaultRedisURL   = "redis://127.0.0.1:6379/0"
)

// fileConfig is the YAML config file. Unknown fields are an error. A
// profile decodes into a storage.Config and the worker: section into a
// worker.Config, through the settings of settings.go.
type fileConfig struct {
	Redis     redisConfig              `yaml:"redis"`
	Profiles  map[string]profileConfig `yaml:"profiles"`
	Worker    workerConfig             `yaml:"worker"`
	Dashboard dashboardConfig          `yaml:"dashboard"`
}

// redisConfig selects one Redis deployment: url, sentinel or cluster.
type redisConfig struct {
	// URL is redis://[user:password@]host:port/db or rediss://... (TLS).
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	// Password; FERRY_REDIS_PASSWORD overrides it.
	Password string          `yaml:"password"`
	DB       int             `yaml:"db"`
	Sentinel *sentinelConfig `yaml:"sentinel"`
	Cluster  *clusterConfig  `yaml:"cluster"`
	TLS      tlsSetting      `yaml:"tls"`
}

type sentinelConfig struct {
	MasterName string   `yaml:"master_name"`
	Addrs      []string `yaml:"addrs"`
	Password   string   `yaml:"password"` // of the sentinels, when they have one
}

type clusterConfig struct {
	Addrs []string `yaml:"addrs"`
}

// tlsSetting is `tls: true` or `tls: {insecure_skip_verify: true}`.
type tlsSetting struct {
	Enabled            bool
	InsecureSkipVerify bool
}

func (t *tlsSetting) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Errorf("line %d: redis.tls: %q is neither true/false nor a mapping {insecure_skip_verify: true}", n.Line, n.Value)
		}
		*t = tlsSetting{Enabled: b}
		return nil
	}
	var m struct {
		InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	}
	if err := decodeStrict(n, &m); err != nil {
		return err
	}
	*t = tlsSetting{Enabled: true, InsecureSkipVerify: m.InsecureSkipVerify}
	return nil
}

// dashboardConfig is the `dashboard:` section; `ferry dashboard` flags
// override it. Its settings are listed once, in settings.
type dashboardConfig struct {
	// Addr is the listen address; empty means --addr's default,
	// defaultDashboardAddr.
	Addr     string
	ReadOnly bool
	// AuthToken; FERRY_DASHBOARD_TOKEN overrides it. Empty means none,
	// allowed only on a loopback Addr.
	AuthToken string
	// PublicNames are the host names the dashboard answers to besides
	// loopback (and IPs when it listens on every interface);
	// FERRY_DASHBOARD_PUBLIC_NAMES overrides them. Empty means none.
	PublicNames []string
	// APITokens are the bearer tokens of the HTTP API (/api/v1/), from the
	// environment only (FERRY_API_PRODUCER_TOKENS, FERRY_API_VIEWER_TOKENS
	// and their _FILE variants), never from the config file: no setting.
	// Nil means none.
	APITokens []dashboard.APIToken
}

// defaultDashboardAddr is where the dashboard listens when neither the
// file nor --addr says.
const defaultDashboardAddr = "127.0.0.1:8080"

// settings is the one list of the dashboard's settings: the config file
// decodes through it, and `ferry dashboard` defines its flags and applies
// them through it (dashboardFlags), as the worker's settings do.
func (dc *dashboardConfig) settings() []setting {
	return []setting{
		{"addr", "addr", "address to listen on", &dc.Addr},
		{"read_only", "read-only", "refuse actions (cancel, asynqmon's) and hide their buttons", &dc.ReadOnly},
		{"auth_token", "auth-token", "require this token (Authorization: Bearer, or ?token= once in a browser); required beyond loopback; prefer $" + envDashToken, &dc.AuthToken},
		{"public_names", "public-name", "a host name the dashboard answers to, e.g. dash.example.com behind a proxy (repeatable; or $" + envDashPublicNames + "=a,b)", &dc.PublicNames},
	}
}

func (dc *dashboardConfig) UnmarshalYAML(n *yaml.Node) error {
	return decodeSettings(n, "dashboard", dc.settings())
}

func decodeStrict(n *yaml.Node, v any) error {
	// Node.Decode has no KnownFields switch: re-encode and decode strictly.
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// config is everything the CLI resolved from flags, environment and file.
type config struct {
	// File is the config file read, "" when none.
	File string
	// Redis is the resolved Redis connection.
	Redis redisTarget
	// Profiles are the S3 profiles, secrets from the environment applied.
	Profiles map[string]storage.Config
	// implicitDefault: the file defines no profiles, so "default" is AWS
	// with the SDK's default credential chain.
	implicitDefault bool
	Worker          workerConfig
	Dashboard       dashboardConfig
}

// redisTarget is how to reach Redis, and where that setting came from.
type redisTarget struct {
	Opts    *redis.UniversalOptions
	Display string // the address for messages, without secrets
	Source  string // "--redis", "FERRY_REDIS_URL", "config file ...", "default"
}

// loadConfig resolves the configuration. flagConfig and flagRedis are the
// global flags ("" when unset); getenv reads the environment.
func loadConfig(flagConfig, flagRedis string, getenv func(string) string) (*config, error) {
	path, explicit := flagConfig, flagConfig != ""
	if path == "" {
		path, explicit = getenv(envConfig), getenv(envConfig) != ""
	}
	if path == "" {
		if _, err := os.Stat(defaultConfigFile); err == nil {
			path = defaultConfigFile
		}
	}
	var fc fileConfig
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && explicit {
				return nil, fmt.Errorf("config file %s does not exist: check --config / %s", path, envConfig)
			}
			return nil, fmt.Errorf("config file: %w", err)
		}
		defer f.Close()
		if err := decodeConfig(f, &fc); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	c := &config{File: path, Worker: fc.Worker, Dashboard: fc.Dashboard, Profiles: map[string]storage.Config{}}
	rt, err := resolveRedis(fc.Redis, flagRedis, path, getenv)
	if err != nil {
		return nil, err
	}
	c.Redis = rt
	for name, p := range fc.Profiles {
		if !validProfileName(name) {
			return nil, fmt.Errorf("config file %s: profiles: %q is not a profile name: use 1 to 64 letters, digits, '_', '.' or '-'", path, name)
		}
		c.Profiles[name] = applyProfileEnv(name, storage.Config(p), getenv)
	}
	if len(c.Profiles) == 0 {
		c.implicitDefault = true
		c.Profiles[tasks.DefaultProfile] = applyProfileEnv(tasks.DefaultProfile, storage.Config{}, getenv)
	}
	if tok := getenv(envDashToken); tok != "" {
		c.Dashboard.AuthToken = tok
	}
	if names := getenv(envDashPublicNames); names != "" {
		c.Dashboard.PublicNames = splitList(names)
	}
	toks, err := apiTokensFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	c.Dashboard.APITokens = toks
	secrets, err := secretsFromEnv(getenv, envWebhookSecret)
	if err != nil {
		return nil, err
	}
	for _, s := range secrets {
		c.Worker.WebhookSecrets = append(c.Worker.WebhookSecrets, []byte(s))
	}
	// Relative allow_dirs are relative to the config file.
	for i, d := range c.Worker.AllowDirs {
		if !filepath.IsAbs(d) && path != "" {
			c.Worker.AllowDirs[i] = filepath.Join(filepath.Dir(path), d)
		}
	}
	return c, nil
}

// webhookAllow is the workers' webhook allowlist for producers (the CLI,
// the HTTP API) to refuse a notify URL at enqueue; nil when the config file
// sets none: this machine's config may not be the workers', so only the
// URL's shape is checked then.
func (c *config) webhookAllow() (*webhook.Allowlist, error) {
	if len(c.Worker.WebhookAllow) == 0 {
		return nil, nil
	}
	a, err := webhook.ParseAllowlist(c.Worker.WebhookAllow)
	if err != nil {
		return nil, fmt.Errorf("config file %s: worker: %w", c.File, err)
	}
	return a, nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func decodeConfig(r io.Reader, fc *fileConfig) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(fc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file is an empty config
		}
		return err
	}
	return nil
}

func validProfileName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// profileEnvName is the environment prefix of profile name's secrets.
func profileEnvName(name string) string {
	r := strings.NewReplacer("-", "_", ".", "_")
	return envProfilePrefix + strings.ToUpper(r.Replace(name)) + "_"
}

func applyProfileEnv(name string, sc storage.Config, getenv func(string) string) storage.Config {
	pre := profileEnvName(name)
	if v := getenv(pre + "ACCESS_KEY_ID"); v != "" {
		sc.AccessKeyID = v
	}
	if v := getenv(pre + "SECRET_ACCESS_KEY"); v != "" {
		sc.SecretAccessKey = v
	}
	if v := getenv(pre + "SESSION_TOKEN"); v != "" {
		sc.SessionToken = v
	}
	return sc
}

// profile returns the named profile ("" means default) or an error listing
// the known ones.
func (c *config) profile(name string) (storage.Config, error) {
	name = tasks.ProfileName(name)
	p, ok := c.Profiles[name]
	if !ok {
		return storage.Config{}, c.unknownProfile(name)
	}
	return p, nil
}

func (c *config) unknownProfile(name string) error {
	where := "no config file was read"
	if c.File != "" {
		where = "config file " + c.File
	}
	return fmt.Errorf("unknown profile %q: known profiles: %s (%s); add it under profiles: or pick one with --profile",
		name, strings.Join(c.profileNames(), ", "), where)
}

// profileInfo is tasks.ClientOptions.ProfileFunc: the endpoint, region and
// prefix of a configured profile, so that enqueueing refuses a copy or move
// onto itself through two profiles of one server. Without a config file of
// its own the CLI does not know the worker's profiles: false.
func (c *config) profileInfo(name string) (tasks.ProfileInfo, bool) {
	p, ok := c.Profiles[name]
	if !ok || c.implicitDefault {
		return tasks.ProfileInfo{}, false
	}
	return tasks.ProfileInfo{EndpointURL: p.EndpointURL, Region: p.Region, Prefix: p.Prefix}, true
}

// checkProfile is for enqueueing: the worker resolves profiles, so a CLI
// without a config file of its own does not second-guess the name.
func (c *config) checkProfile(name string) error {
	if c.implicitDefault {
		return nil
	}
	_, err := c.profile(name)
	return err
}

func (c *config) profileNames() []string { return slices.Sorted(maps.Keys(c.Profiles)) }

// resolveRedis applies flag > env > file > default to the Redis settings.
func resolveRedis(rc redisConfig, flagURL, file string, getenv func(string) string) (redisTarget, error) {
	fileSrc := "config file " + file
	var rawURL, source string
	switch {
	case flagURL != "":
		rawURL, source = flagURL, "--redis"
	case getenv(envRedisURL) != "":
		rawURL, source = getenv(envRedisURL), envRedisURL
	}
	n := 0
	for _, set := range []bool{rc.URL != "", rc.Sentinel != nil, rc.Cluster != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return redisTarget{}, fmt.Errorf("%s: redis: set only one of url, sentinel and cluster", fileSrc)
	}
	var tlsCfg *tls.Config
	if rc.TLS.Enabled {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: rc.TLS.InsecureSkipVerify} //nolint:gosec // asked for in the config
	}
	password := func(fromURL string, urlFromFile bool) string {
		switch {
		case fromURL != "" && !urlFromFile:
			return fromURL // a flag or env URL carries its own password
		case getenv(envRedisPassword) != "":
			return getenv(envRedisPassword)
		case rc.Password != "":
			return rc.Password
		}
		return fromURL
	}
	if rawURL == "" && rc.Sentinel != nil {
		s := rc.Sentinel
		if s.MasterName == "" || len(s.Addrs) == 0 {
			return redisTarget{}, fmt.Errorf("%s: redis.sentinel needs master_name and addrs", fileSrc)
		}
		return redisTarget{
			Opts: &redis.UniversalOptions{MasterName: s.MasterName, Addrs: s.Addrs, SentinelPassword: s.Password,
				Username: rc.Username, Password: password("", true), DB: rc.DB, TLSConfig: tlsCfg},
			Display: fmt.Sprintf("sentinel master %q at %s", s.MasterName, strings.Join(s.Addrs, ",")),
			Source:  fileSrc,
		}, nil
	}
	if rawURL == "" && rc.Cluster != nil {
		if len(rc.Cluster.Addrs) == 0 {
			return redisTarget{}, fmt.Errorf("%s: redis.cluster needs addrs", fileSrc)
		}
		return redisTarget{
			Opts: &redis.UniversalOptions{Addrs: rc.Cluster.Addrs, IsClusterMode: true,
				Username: rc.Username, Password: password("", true), TLSConfig: tlsCfg},
			Display: "cluster " + strings.Join(rc.Cluster.Addrs, ","),
			Source:  fileSrc,
		}, nil
	}
	urlFromFile := false
	if rawURL == "" {
		switch {
		case rc.URL != "":
			rawURL, source, urlFromFile = rc.URL, fileSrc, true
		default:
			rawURL, source, urlFromFile = defaultRedisURL, "default", true
		}
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return redisTarget{}, fmt.Errorf("redis URL from %s is not redis://[:password@]host:port/db or rediss://...: %q", source, redactURL(rawURL))
	}
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return redisTarget{}, fmt.Errorf("redis URL %q from %s: %w", redactURL(rawURL), source, err)
	}
	o.Password = password(o.Password, urlFromFile)
	if o.Username == "" {
		o.Username = rc.Username
	}
	if urlFromFile && u.Path == "" && rc.DB != 0 {
		o.DB = rc.DB
	}
	if tlsCfg != nil && o.TLSConfig == nil {
		tlsCfg.ServerName = u.Hostname()
		o.TLSConfig = tlsCfg
	} else if o.TLSConfig != nil && rc.TLS.InsecureSkipVerify {
		o.TLSConfig.InsecureSkipVerify = true //nolint:gosec // asked for in the config
	}
	return redisTarget{
		Opts: &redis.UniversalOptions{Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password,
			DB: o.DB, TLSConfig: o.TLSConfig, ClientName: o.ClientName},
		Display: redactURL(rawURL),
		Source:  source,
	}, nil
}

// redactURL hides the password of a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// apiTokensFromEnv reads the HTTP API's tokens from FERRY_API_PRODUCER_TOKENS
// and FERRY_API_VIEWER_TOKENS (comma-separated) and from the files named by
// their _FILE variants (one token per line; blank lines and lines starting
// with # are skipped). Errors name the variable or file, never a token.
func apiTokensFromEnv(getenv func(string) string) ([]dashboard.APIToken, error) {
	var out []dashboard.APIToken
	for _, v := range []struct {
		env   string
		scope dashboard.Scope
	}{{envAPIProducerTokens, dashboard.ScopeProducer}, {envAPIViewerTokens, dashboard.ScopeViewer}} {
		toks, err := secretsFromEnv(getenv, v.env)
		if err != nil {
			return nil, err
		}
		for _, tok := range toks {
			out = append(out, dashboard.APIToken{Token: tok, Scope: v.scope})
		}
	}
	return out, nil
}

// secretsFromEnv reads the secrets of env (comma-separated) and of the file
// named by env_FILE (one per line; blank lines and lines starting with #
// are skipped). Errors name the variable or file, never a secret.
func secretsFromEnv(getenv func(string) string, env string) ([]string, error) {
	out := splitList(getenv(env))
	path := getenv(env + envFileSuffix)
	if path == "" {
		return out, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s%s: read the secret file: %w", env, envFileSuffix, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}
