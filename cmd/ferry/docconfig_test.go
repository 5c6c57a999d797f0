package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/worker"
)

// yamlBlocks returns the ```yaml blocks of a markdown file.
func yamlBlocks(t *testing.T, path string) []string {
	t.Helper()
	md, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?ms)^```yaml\n(.*?)^```").FindAllStringSubmatch(string(md), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestDocumentedConfigLoads: every ```yaml example of docs/cli.md loads
// through the real config loader (strict: an unknown or refused setting
// fails), so the docs cannot promise a setting the parser refuses. The
// documented way to disable the janitor disables it.
func TestDocumentedConfigLoads(t *testing.T) {
	t.Parallel()
	blocks := yamlBlocks(t, filepath.Join("..", "..", "docs", "cli.md"))
	if len(blocks) < 2 {
		t.Fatalf("docs/cli.md has %d yaml blocks; want the config file and the janitor examples", len(blocks))
	}
	disabled := 0
	for i, b := range blocks {
		path := filepath.Join(t.TempDir(), "ferry.yaml")
		if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfig(path, "", func(string) string { return "" })
		if err != nil {
			t.Errorf("docs/cli.md yaml block %d does not load: %v\n%s", i+1, err, b)
			continue
		}
		if regexp.MustCompile(`(?m)^\s*janitor_interval:\s*off\b`).MatchString(b) {
			disabled++
			if c.Worker.JanitorInterval >= 0 {
				t.Errorf("yaml block %d says janitor_interval: off, loaded as %v", i+1, time.Duration(c.Worker.JanitorInterval))
			}
		}
	}
	if disabled == 0 {
		t.Error("docs/cli.md shows no `janitor_interval: off` example")
	}
}

// TestJanitorInterval: janitor_interval and --janitor-interval take a
// duration, or off (or a negative duration) to disable the janitor; the
// flag overrides the file.
func TestJanitorInterval(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, in string
		want     time.Duration
		wantErr  bool
	}{
		{desc: "duration", in: "30m", want: 30 * time.Minute},
		{desc: "zero is the default", in: "0", want: 0},
		{desc: "off", in: "off", want: -1},
		{desc: "OFF", in: " OFF ", want: -1},
		{desc: "negative is off", in: "-1s", want: -1},
		{desc: "garbage", in: "soon", wantErr: true},
		{desc: "empty", in: "", wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "ferry.yaml")
			if err := os.WriteFile(path, []byte("worker:\n  janitor_interval: \""+tc.in+"\"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path, "", func(string) string { return "" })
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "off to disable") {
					t.Errorf("config %q: err %v, want one saying how to write it", tc.in, err)
				}
			} else if err != nil || time.Duration(c.Worker.JanitorInterval) != tc.want {
				t.Errorf("config %q: %v, %v; want %v", tc.in, c, err, tc.want)
			}

			cmd := &cobra.Command{}
			f := &workerFlags{}
			f.register(cmd.Flags())
			err = cmd.ParseFlags([]string{"--janitor-interval=" + tc.in})
			if tc.wantErr {
				if err == nil {
					t.Errorf("--janitor-interval=%q accepted", tc.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wc := f.apply(cmd.Flags(), workerConfig{Config: worker.Config{JanitorInterval: time.Hour}})
			if wc.JanitorInterval != tc.want {
				t.Errorf("--janitor-interval=%q: %v; want %v", tc.in, wc.JanitorInterval, tc.want)
			}
		})
	}
}
