package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Env variable names, in one place.
const (
	EnvRedisAddr   = "FERRY_TEST_REDIS_ADDR"
	EnvS3Endpoint  = "FERRY_TEST_S3_ENDPOINT"
	EnvS3AccessKey = "FERRY_TEST_S3_ACCESS_KEY"
	EnvS3SecretKey = "FERRY_TEST_S3_SECRET_KEY"
	EnvReal        = "FERRY_TEST_REAL"
)

// ExtrasSettle is how long a test waits after writing destination objects
// that a later --delete-extra must see as older than the migration (else it
// keeps them as written during it — the safe way to err, but a flaky test).
// It covers LastModified and Date of whole seconds, the 1 s of skew ferry
// allows, and versitygw's Date header, which its HTTP server (fasthttp)
// refreshes only once a second, so it can lag by a second more.
const ExtrasSettle = 4 * time.Second

var (
	mu       sync.Mutex
	stoppers []func()
)

// OnStop registers f to run when Run (or Stop) stops this binary's servers:
// for servers a test package starts itself, such as a Redis Cluster.
func OnStop(f func()) { onStop(f) }

func onStop(f func()) {
	mu.Lock()
	defer mu.Unlock()
	stoppers = append(stoppers, f)
}

// Run runs the tests and then stops every server this binary started. Use it
// from TestMain: os.Exit(testenv.Run(m)).
func Run(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops every server started so far, newest first.
func Stop() {
	mu.Lock()
	s := stoppers
	stoppers = nil
	mu.Unlock()
	for i := len(s) - 1; i >= 0; i-- {
		s[i]()
	}
}

// RealRequired reports whether FERRY_TEST_REAL=1 forbids falling back to fakes.
func RealRequired() bool { return os.Getenv(EnvReal) == "1" }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitTCP waits until addr accepts connections.
func waitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not accept connections: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// UniqueName returns a lower-case name with the given prefix that no other
// test uses: safe for buckets, queues and keys. Buckets allow 3..63 chars.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(prefix) + "-" + hex.EncodeToString(b[:])
}

// moduleRoot finds the directory holding go.mod, walking up from the cwd.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(dir + "/go.mod"); err == nil {
			return dir
		}
		parent := dir[:max(strings.LastIndex(dir, "/"), 0)]
		if parent == dir || parent == "" {
			return ""
		}
		dir = parent
	}
}
