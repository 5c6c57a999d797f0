package ferrybin

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Profile is one profile of a ferry.yaml: a generic S3-compatible server.
type Profile struct {
	Endpoint, Region, AccessKey, SecretKey string
	// Prefix is the profile's key prefix; empty writes none.
	Prefix string
}

// Config is the text of a ferry.yaml with Redis at redisURL and profiles,
// written in the order of their names, then extra as it is: more lines of
// the last profile (indented by four spaces), more profiles (by two), or
// other sections.
func Config(redisURL string, profiles map[string]Profile, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "redis:\n  url: %s\nprofiles:\n", redisURL)
	for _, name := range slices.Sorted(maps.Keys(profiles)) {
		p := profiles[name]
		fmt.Fprintf(&b, "  %s:\n    provider: generic\n    endpoint_url: %s\n    region: %s\n    access_key_id: %s\n    secret_access_key: %s\n",
			name, p.Endpoint, p.Region, p.AccessKey, p.SecretKey)
		if p.Prefix != "" {
			fmt.Fprintf(&b, "    prefix: %s\n", p.Prefix)
		}
	}
	b.WriteString(extra)
	return b.String()
}

// WriteConfig writes Config's text to dir/ferry.yaml and returns its path.
func WriteConfig(t testing.TB, dir, redisURL string, profiles map[string]Profile, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(path, []byte(Config(redisURL, profiles, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
