package faulttest

import (
	"bytes"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/ferrybin"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
)

// Exit codes of the ferry binary (cmd/ferry/root.go).
const (
	exitUsage      = 2
	exitTaskFailed = 3
)

// TestSafetyIdentity is issue 11's first scenario, word for word, through
// the real binary: profile "archive" is the same endpoint and bucket as
// "default" with prefix archive/, and
//
//	ferry move s3://b/archive/x.txt s3://b/x.txt --dst-profile archive --wait
//
// must not lose the object. Plus the same move between two profiles whose
// endpoints are one server spelled differently: trailing slash, upper-case
// host, explicit default port (those the CLI refuses at enqueue) and IP vs
// host name (which no normalisation can see: the worker's HEAD check
// catches it after the copy and deletes nothing). Then the archive scenario
// again, enqueued by a Go producer that knows no profiles, so that only the
// worker's own identity check stands between the move and the object.
func TestSafetyIdentity(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	e := newIdentityEnv(t)
	for _, tc := range []struct {
		desc string
		key  string   // the object, seen through profile "default"
		argv []string // the command, after "ferry"
		// refusedAt is "enqueue" (the CLI says no, exit 2) or "worker"
		// (the task fails, exit 3).
		refusedAt string
		skip      string
	}{
		{desc: "archive prefix, issue 11 word for word", key: "archive/x.txt",
			argv:      []string{"move", e.url("archive/x.txt"), e.url("x.txt"), "--dst-profile", "archive", "--wait"},
			refusedAt: "enqueue"},
		{desc: "archive prefix, copy", key: "archive/c.txt",
			argv:      []string{"copy", e.url("archive/c.txt"), e.url("c.txt"), "--dst-profile", "archive", "--wait"},
			refusedAt: "enqueue"},
		{desc: "trailing slash", key: "slash.txt",
			argv:      []string{"move", e.url("slash.txt"), e.url("slash.txt"), "--dst-profile", "slash", "--wait"},
			refusedAt: "enqueue"},
		{desc: "upper-case host", key: "upper.txt",
			argv:      []string{"move", e.url("upper.txt"), e.url("upper.txt"), "--src-profile", "byname", "--dst-profile", "upper", "--wait"},
			refusedAt: "enqueue"},
		{desc: "explicit default port", key: "port.txt",
			argv:      []string{"move", e.url("port.txt"), e.url("port.txt"), "--src-profile", "port80", "--dst-profile", "port80explicit", "--wait"},
			refusedAt: "enqueue", skip: e.port80Skip},
		{desc: "IP vs host name", key: "ipname.txt",
			argv:      []string{"move", e.url("ipname.txt"), e.url("ipname.txt"), "--dst-profile", "byname", "--wait"},
			refusedAt: "worker"},
		{desc: "IP vs host name, prefix on one side", key: "archive/ipname.txt",
			argv:      []string{"move", e.url("archive/ipname.txt"), e.url("ipname.txt"), "--dst-profile", "archivebyname", "--wait"},
			refusedAt: "worker"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			data := randomBytes(1<<10 + mrand.Int64N(1<<10))
			e.put(t, tc.key, data)
			r := e.ferry(t, tc.argv...)
			if got := e.get(t, tc.key); !bytes.Equal(got, data) {
				t.Fatalf("DATA LOST: after `ferry %s` the object %s holds %d bytes, want its %d (nil: deleted)\n%s",
					strings.Join(tc.argv, " "), tc.key, len(got), len(data), r)
			}
			switch tc.refusedAt {
			case "enqueue":
				if r.Code != exitUsage || !strings.Contains(r.Stderr, "are the same object") || strings.Contains(r.Stdout, "enqueued") {
					t.Errorf("want the CLI to refuse with exit %d naming the same object, and enqueue nothing:\n%s", exitUsage, r)
				}
			case "worker":
				if r.Code != exitTaskFailed || !strings.Contains(r.Stdout+r.Stderr, "one object") {
					t.Errorf("want the task to fail (exit %d) saying source and destination are one object:\n%s", exitTaskFailed, r)
				}
			}
		})
	}

	// A producer without the profiles' endpoints (tasks.Client with no
	// profile resolver) can enqueue the archive move: the worker refuses it
	// when it decodes it, before touching S3, and does not retry.
	t.Run("archive prefix, Go producer without profiles", func(t *testing.T) {
		data := []byte("only copy")
		e.put(t, "archive/go.txt", data)
		task, err := tasks.NewMoveTask(tasks.MovePayload{Source: tasks.Location{Bucket: e.bucket, Key: "archive/go.txt"},
			Dest: tasks.Location{Profile: "archive", Bucket: e.bucket, Key: "go.txt"}})
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.client.Enqueue(t.Context(), task, asynq.Queue(e.queue), asynq.MaxRetry(3))
		if err != nil {
			t.Fatal(err)
		}
		ti := e.waitDone(t, info.ID)
		if got := e.get(t, "archive/go.txt"); !bytes.Equal(got, data) {
			t.Fatalf("DATA LOST: the move's source holds %q, want %q (task %s, error %q)", got, data, taskState(ti), ti.LastErr)
		}
		if ti.State != asynq.TaskStateArchived || ti.Retried != 0 || !strings.Contains(ti.LastErr, "are the same object") {
			t.Errorf("want the task archived at once (SkipRetry) naming the same object, got %s after %d retries: %q",
				taskState(ti), ti.Retried, ti.LastErr)
		}
	})
}

// identityEnv is TestSafetyIdentity's world: the ferry binary, a config file
// of profiles that all reach the shared versitygw, a worker on a queue of
// its own.
type identityEnv struct {
	cmd           ferrybin.Cmd // the binary, in a temp dir, with the config file
	s3            *testenv.S3Server
	bucket, queue string
	client        *tasks.Client
	rdb           *asynq.Inspector
	endpoints     map[string]string
	port80Skip    string
}

func newIdentityEnv(t *testing.T) *identityEnv {
	t.Helper()
	srv := testenv.S3(t)
	e := &identityEnv{s3: srv, bucket: srv.Bucket(t), queue: testenv.UniqueName("identity")}
	rs := testenv.Redis(t)
	rdb := testenv.RedisClient(t)
	e.client = tasks.NewClient(rdb)
	e.rdb = e.client.Inspector()
	byName := strings.Replace(srv.Endpoint, "127.0.0.1", "localhost", 1)
	e.endpoints = map[string]string{
		"default":       srv.Endpoint,
		"archive":       srv.Endpoint,
		"slash":         srv.Endpoint + "/",
		"byname":        byName,
		"upper":         strings.Replace(byName, "localhost", "LOCALHOST", 1),
		"archivebyname": byName,
	}
	if addr, err := forwardPort80(t, strings.TrimPrefix(srv.Endpoint, "http://")); err != nil {
		e.port80Skip = fmt.Sprintf("no listener on a loopback port 80 (%v): needs root or net.ipv4.ip_unprivileged_port_start <= 80", err)
	} else {
		e.endpoints["port80"] = "http://" + addr
		e.endpoints["port80explicit"] = "http://" + addr + ":80"
	}
	profiles := map[string]ferrybin.Profile{}
	for name, ep := range e.endpoints {
		p := ferrybin.Profile{Endpoint: ep, Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
		if strings.HasPrefix(name, "archive") {
			p.Prefix = "archive/"
		}
		profiles[name] = p
	}
	dir := t.TempDir()
	e.cmd = ferrybin.Cmd{Bin: buildFerry(t), Dir: dir,
		Env: []string{"FERRY_CONFIG=" + ferrybin.WriteConfig(t, dir, "redis://"+rs.Addr+"/0", profiles, "")}}
	e.cmd.StartWorker(t, e.queue)
	return e
}

func (e *identityEnv) url(key string) string { return "s3://" + e.bucket + "/" + key }

func (e *identityEnv) put(t *testing.T, key string, data []byte) {
	t.Helper()
	e.s3.PutObject(t, e.bucket, key, data, nil)
}

// get reads an object with the plain SDK; nil when it does not exist.
func (e *identityEnv) get(t *testing.T, key string) []byte {
	t.Helper()
	return e.s3.GetObject(t, e.bucket, key)
}

// waitDone polls a task until it completed or was archived.
func (e *identityEnv) waitDone(t *testing.T, id string) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ti, err := e.rdb.GetTaskInfo(e.queue, id)
		if err == nil && (ti.State == asynq.TaskStateCompleted || ti.State == asynq.TaskStateArchived) {
			return ti
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not finish within 60s (last: %v, %v)", id, ti, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ferry runs the binary on the env's queue.
func (e *identityEnv) ferry(t *testing.T, argv ...string) ferrybin.Result {
	t.Helper()
	return e.cmd.Run(t, "", append(argv, "--queue", e.queue)...)
}

// buildFerry builds cmd/ferry into the test's temp dir.
func buildFerry(t *testing.T) string {
	t.Helper()
	bin, err := ferrybin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// forwardPort80 listens on port 80 of a random loopback address other than
// 127.0.0.1 (so parallel runs do not collide) and forwards every connection
// to target, byte for byte: the same server reached as http://127.x.y.z and
// http://127.x.y.z:80. It returns the address without the port.
func forwardPort80(t *testing.T, target string) (string, error) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 5 {
		host := fmt.Sprintf("127.%d.%d.%d", 1+mrand.IntN(250), mrand.IntN(250), 1+mrand.IntN(250))
		if ln, err = net.Listen("tcp", host+":80"); err == nil {
			break
		}
	}
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); _ = u.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	return host, nil
}
