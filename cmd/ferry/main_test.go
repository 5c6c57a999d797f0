package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/internal/ferrybin"
	"github.com/ferryhq/ferry/internal/testenv"
)

// ferryBin is the binary under test, built once by TestMain.
var ferryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if ferryBin, err = ferrybin.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := testenv.Run(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// bundle is what a CLI test needs: servers, a bucket, a config file, a
// queue of its own and a directory the worker may read.
type bundle struct {
	redisURL string
	s3       *testenv.S3Server
	bucket   string
	dir      string // the test's temp dir; the worker's --allow-dir
	config   string // path of ferry.yaml
	queue    string
}

// configYAML is a ferry.yaml with a default profile on the test S3 server,
// then extra.
func configYAML(s3 *testenv.S3Server, redisURL, extra string) string {
	return ferrybin.Config(redisURL, map[string]ferrybin.Profile{"default": {Endpoint: s3.Endpoint, Region: s3.Region,
		AccessKey: s3.AccessKey, SecretKey: s3.SecretKey}}, "    presigned_expiry: 30m\n"+extra)
}

func setup(t *testing.T) bundle {
	t.Helper()
	s3 := testenv.S3(t)
	b := bundle{
		redisURL: "redis://" + testenv.Redis(t).Addr + "/0",
		s3:       s3,
		bucket:   s3.Bucket(t),
		dir:      t.TempDir(),
		queue:    testenv.UniqueName("q"),
	}
	b.config = filepath.Join(b.dir, "ferry.yaml")
	writeFile(t, b.config, configYAML(s3, b.redisURL, ""))
	return b
}

// setupWorker is setup with `ferry worker` running on the bundle's queue.
func setupWorker(t *testing.T) bundle {
	t.Helper()
	b := setup(t)
	b.startWorker(t)
	return b
}

// url is the s3:// URL of key in the bundle's bucket.
func (b bundle) url(key string) string { return "s3://" + b.bucket + "/" + key }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// result is the outcome of one run of the binary.
type result = ferrybin.Result

// run runs ferry with args in dir (the cwd), with env added to a clean
// environment, and stdin when not empty.
func run(t *testing.T, dir string, env []string, stdin string, argv ...string) result {
	t.Helper()
	return ferrybin.Cmd{Bin: ferryBin, Dir: dir, Env: env}.Run(t, stdin, argv...)
}

// cmd runs ferry with the bundle's config, and env.
func (b bundle) cmd(env ...string) ferrybin.Cmd {
	return ferrybin.Cmd{Bin: ferryBin, Dir: b.dir, Env: append([]string{envConfig + "=" + b.config}, env...)}
}

// ferry runs the binary with the bundle's config.
func (b bundle) ferry(t *testing.T, argv ...string) result {
	t.Helper()
	return b.cmd().Run(t, "", argv...)
}

// must runs ferry and fails the test unless it exits 0.
func (b bundle) must(t *testing.T, argv ...string) result {
	t.Helper()
	r := b.ferry(t, argv...)
	if r.Code != 0 {
		t.Fatalf("ferry %s: %s", strings.Join(argv, " "), r)
	}
	return r
}

// startWorker runs `ferry worker` on the bundle's queue until the test ends.
// It returns the worker's log.
func (b bundle) startWorker(t *testing.T, extra ...string) *ferrybin.LockedBuffer {
	t.Helper()
	return b.cmd().StartWorker(t, b.queue, append([]string{"--allow-dir", b.dir}, extra...)...)
}

// start runs ferry with argv in the background until the test ends (then
// SIGTERM, and SIGKILL after 30s), once its log contains ready.
func (b bundle) start(t *testing.T, ready string, argv ...string) *ferrybin.LockedBuffer {
	t.Helper()
	return b.cmd().Start(t, ready, argv...)
}

// startEnv is start with env added to the environment.
func (b bundle) startEnv(t *testing.T, env []string, ready string, argv ...string) *ferrybin.LockedBuffer {
	t.Helper()
	return b.cmd(env...).Start(t, ready, argv...)
}

// jsonLines decodes every line of s as a JSON object.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}
