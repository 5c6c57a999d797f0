package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RedisServer is a Redis server for tests.
type RedisServer struct {
	// Addr is host:port.
	Addr string
	// Real is false when the server is an in-process miniredis fallback.
	Real bool
	// Owned is true when this binary started the server (and may flush it).
	Owned bool
}

var (
	redisOnce sync.Once
	redisSrv  *RedisServer
	redisErr  error
)

// Redis returns the shared Redis server of this test binary, starting it on
// first use. Tests isolate themselves by unique queue names and key prefixes
// (UniqueName), never by flushing.
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	redisOnce.Do(func() { redisSrv, redisErr = startRedis() })
	if redisErr != nil {
		t.Fatalf("testenv: %v", redisErr)
	}
	return redisSrv
}

// RedisClient returns a go-redis client on the shared server, closed at cleanup.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: Redis(t).Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// PrivateRedisClient starts a redis-server of the test's own (stopped at
// cleanup) and returns a client on it: for numbers of the whole Redis
// (throughput counters, counts by state) that no other test may write to.
// Without redis-server it skips, or fails when FERRY_TEST_REAL=1.
func PrivateRedisClient(t testing.TB) *redis.Client {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if RealRequired() {
			t.Fatalf("redis-server is not installed and %s=1 forbids skipping: %v", EnvReal, err)
		}
		t.Skip("needs a private redis-server: ", err)
	}
	rp, err := StartRedisProcess("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rp.Stop)
	c := redis.NewClient(&redis.Options{Addr: rp.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func startRedis() (*RedisServer, error) {
	if addr := os.Getenv(EnvRedisAddr); addr != "" {
		return &RedisServer{Addr: addr, Real: true}, nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if RealRequired() {
			return nil, fmt.Errorf("redis-server is not on PATH and %s=1 forbids the miniredis fallback: install it (apt-get install redis-server) or set %s", EnvReal, EnvRedisAddr)
		}
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			return nil, fmt.Errorf("start miniredis: %w", err)
		}
		onStop(m.Close)
		return &RedisServer{Addr: m.Addr(), Owned: true}, nil
	}
	p, err := StartRedisProcess(bin, "")
	if err != nil {
		return nil, err
	}
	onStop(p.Stop)
	return &RedisServer{Addr: p.Addr, Real: true, Owned: true}, nil
}

// RedisProcess is a redis-server child process. The fault suite restarts it.
type RedisProcess struct {
	Addr string
	bin  string
	dir  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// StartRedisProcess starts redis-server on a free 127.0.0.1 port. dir holds
// its files (a temp dir when empty); extra args are appended, e.g.
// "--appendonly", "yes".
func StartRedisProcess(bin, dir string, extra ...string) (*RedisProcess, error) {
	if bin == "" {
		b, err := lookRedisServer()
		if err != nil {
			return nil, err
		}
		bin = b
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "ferry-redis-")
		if err != nil {
			return nil, fmt.Errorf("redis temp dir: %w", err)
		}
		dir = d
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p := &RedisProcess{Addr: "127.0.0.1:" + strconv.Itoa(port), bin: bin, dir: dir}
	p.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir, "--maxmemory-policy", "noeviction"}, extra...)
	return p, p.Start()
}

// lookRedisServer finds redis-server on PATH.
func lookRedisServer() (string, error) {
	b, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server not found (apt-get install redis-server, or make tools): %w", err)
	}
	return b, nil
}

// Start (re)starts the process on its port and waits until it answers.
func (p *RedisProcess) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.bin, p.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	p.cmd = cmd
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return waitTCP(ctx, p.Addr)
}

// Stop stops the process (SIGTERM, then SIGKILL) and waits for it.
func (p *RedisProcess) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	stopCmd(p.cmd)
	p.cmd = nil
}

// Kill kills the process with SIGKILL, as a crash would.
func (p *RedisProcess) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
	p.cmd = nil
}

func stopCmd(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// RedisMemory is the server's INFO memory used_memory and, of it,
// mem_clients_normal: the buffers of client connections, which grow with
// a worker's concurrency rather than with what it moved, so what a test
// or benchmark says Redis keeps is used less clients.
func RedisMemory(ctx context.Context, rdb *redis.Client) (used, clients int64, err error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("INFO memory: %w", err)
	}
	for _, l := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			continue
		}
		switch k {
		case "used_memory":
			_, _ = fmt.Sscan(v, &used)
		case "mem_clients_normal":
			_, _ = fmt.Sscan(v, &clients)
		}
	}
	if used == 0 {
		return 0, 0, fmt.Errorf("no used_memory in INFO memory")
	}
	return used, clients, nil
}
