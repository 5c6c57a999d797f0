package faulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/internal/workerproc"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

func TestMain(m *testing.M) {
	if workerproc.IsChild() {
		os.Exit(workerproc.ChildMain())
	}
	os.Exit(testenv.Run(m))
}

const mib = 1 << 20

// requireFaults skips the test unless FERRY_FAULTS=1 (make test-faults).
func requireFaults(t *testing.T) {
	t.Helper()
	if os.Getenv("FERRY_FAULTS") != "1" {
		t.Skip("fault suite: run with FERRY_FAULTS=1 (make test-faults)")
	}
}

// suite is one fault test's world: a private redis-server, a bucket on the
// shared versitygw, an allowed directory, a queue, worker processes.
type suite struct {
	t      *testing.T
	redis  *testenv.RedisProcess
	rdb    *redis.Client
	s3     *testenv.S3Server
	sc     *s3.Client
	bucket string
	dir    string
	logDir string
	queue  string
	client *tasks.Client
	// endpoint is what workers use to reach S3 (a Proxy, usually).
	endpoint string
	// destProfile is the destination profile of copies and moves; empty
	// picks "default" (server-side) or "other" (streamed) at random.
	destProfile string
	// provider, when set, is the workers' profiles' provider (the
	// server's own profile says generic: Content-MD5 on every write).
	provider storage.Provider
	// recordChecksum makes putSource record the object's CRC32C in its
	// metadata, as ferry does for what it writes (ferry-crc32c).
	recordChecksum bool
	// multipartSource makes putSource write sources above 5 MiB with a
	// multipart upload (an opaque "-N" ETag), as other tools do.
	multipartSource bool
	nchild          atomic.Int64
}

func newSuite(t *testing.T, redisArgs ...string) *suite {
	t.Helper()
	rp, err := testenv.StartRedisProcess("", t.TempDir(), redisArgs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rp.Stop)
	s := &suite{t: t, redis: rp, s3: testenv.S3(t), dir: t.TempDir(), logDir: t.TempDir(), queue: testenv.UniqueName("faults")}
	s.rdb = redis.NewClient(&redis.Options{Addr: rp.Addr})
	t.Cleanup(func() { _ = s.rdb.Close() })
	s.sc = s.s3.Client()
	s.bucket = s.s3.Bucket(t)
	s.client = tasks.NewClient(s.rdb)
	s.endpoint = s.s3.Endpoint
	return s
}

// proxy puts a fault-injecting proxy between the workers and S3.
func (s *suite) proxy(f Faults) *Proxy {
	s.t.Helper()
	p, err := NewProxy(s.s3.Endpoint, f)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = p.Close() })
	s.endpoint = p.URL
	return p
}

// tlsProxy puts a fault-injecting TLS-terminating proxy (a middlebox with
// a self-signed certificate the profiles accept) between the workers and S3.
func (s *suite) tlsProxy(f Faults) *Proxy {
	s.t.Helper()
	p, err := NewTLSProxy(s.s3.Endpoint, f)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = p.Close() })
	s.endpoint = p.URL
	return p
}

// profiles: "default" and "other" reach the same server by two host names,
// so copies between them take the streamed, checkpointed path.
func (s *suite) profiles() map[string]storage.Config {
	p := s.s3.Profile()
	if s.provider != "" {
		p.Provider = s.provider
	}
	p.EndpointURL = s.endpoint // through the fault proxy when there is one
	if strings.HasPrefix(s.endpoint, "https://") {
		p.VerifySSL = aws.Bool(false) // the proxy's self-signed certificate
	}
	o := p
	o.EndpointURL = strings.Replace(s.endpoint, "127.0.0.1", "localhost", 1)
	return map[string]storage.Config{"default": p, "other": o}
}

// child starts a worker process: Concurrency 2, 5 MiB parts, 2 in flight.
func (s *suite) child(mutate func(*workerproc.ChildConfig)) *workerproc.Child {
	s.t.Helper()
	cc := workerproc.ChildConfig{Redis: s.redis.Addr, Profiles: s.profiles(), Queue: s.queue, Dir: s.dir, Concurrency: 2,
		PartSize: storage.MinPartSize, PartConcurrency: 2, Shutdown: 5 * time.Second, JanitorUploadTTL: time.Second}
	if mutate != nil {
		mutate(&cc)
	}
	n := s.nchild.Add(1)
	return workerproc.StartChild(s.t, "", s.logDir, fmt.Sprintf("worker-%03d", n), cc)
}

// op is one acknowledged (or attempted) enqueue and what it must produce.
type op struct {
	id      string
	kind    string // upload, put, copy, move
	src     string // source key (copy, move) or path
	dst     string
	sum     [32]byte
	size    int64
	ackedAt time.Time // zero: the enqueue was not acknowledged
}

// ledger records every enqueue of a workload.
type ledger struct {
	mu  sync.Mutex
	ops []*op
	n   atomic.Int64
}

func (l *ledger) add(o *op) {
	l.mu.Lock()
	l.ops = append(l.ops, o)
	l.mu.Unlock()
}

func (l *ledger) all() []*op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*op(nil), l.ops...)
}

func randomBytes(n int64) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// randSize is a size in [lo, hi) bytes.
func randSize(lo, hi int64) int64 { return lo + mrand.Int64N(hi-lo) }

// putSource writes a source object directly (not through ferry).
func (s *suite) putSource(key string, data []byte) {
	s.t.Helper()
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: bytes.NewReader(data)}
	if s.recordChecksum {
		in.Metadata = map[string]string{storage.MetaChecksum: storage.ChecksumOf(data).String()}
	}
	if s.multipartSource && len(data) > storage.MinPartSize {
		s.putMultipart(key, data, in.Metadata)
		return
	}
	_, err := s.sc.PutObject(context.Background(), in)
	if err != nil {
		s.t.Fatalf("put source %s: %v", key, err)
	}
}

// putMultipart writes data at key with a two-part multipart upload.
func (s *suite) putMultipart(key string, data []byte, meta map[string]string) {
	s.t.Helper()
	ctx := context.Background()
	up, err := s.sc.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key, Metadata: meta})
	if err != nil {
		s.t.Fatalf("multipart source %s: %v", key, err)
	}
	var parts []types.CompletedPart
	for i, chunk := range [][]byte{data[:storage.MinPartSize], data[storage.MinPartSize:]} {
		n := aws.Int32(int32(i + 1))
		out, err := s.sc.UploadPart(ctx, &s3.UploadPartInput{Bucket: &s.bucket, Key: &key, UploadId: up.UploadId, PartNumber: n, Body: bytes.NewReader(chunk)})
		if err != nil {
			s.t.Fatalf("multipart source %s: part %d: %v", key, i+1, err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: n, ETag: out.ETag})
	}
	if _, err := s.sc.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		s.t.Fatalf("multipart source %s: complete: %v", key, err)
	}
}

// newOp prepares the source of one operation of the given kind and returns
// the op and its task; the caller enqueues it.
func (s *suite) newOp(kind string, n int64, lo, hi int64) (*op, *asynq.Task, error) {
	data := randomBytes(randSize(lo, hi))
	o := &op{kind: kind, sum: sha256.Sum256(data), size: int64(len(data)), dst: fmt.Sprintf("dst/%s-%04d", kind, n)}
	prof := s.destProfile
	if prof == "" {
		prof = []string{"default", "other"}[mrand.IntN(2)]
	}
	switch kind {
	case "upload", "put":
		o.src = filepath.Join(s.dir, fmt.Sprintf("%s-%04d.bin", kind, n))
		if err := os.WriteFile(o.src, data, 0o644); err != nil {
			s.t.Fatal(err)
		}
		if kind == "put" {
			t, err := tasks.NewPutTask(tasks.PutPayload{Source: tasks.Location{Path: o.src}, Dest: tasks.Location{Bucket: s.bucket, Key: o.dst}})
			return o, t, err
		}
		t, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: o.src}, Dest: tasks.Location{Bucket: s.bucket, Key: o.dst}, Size: o.size})
		return o, t, err
	case "copy", "move":
		o.src = fmt.Sprintf("src/%s-%04d", kind, n)
		s.putSource(o.src, data)
		src, dst := tasks.Location{Bucket: s.bucket, Key: o.src}, tasks.Location{Profile: prof, Bucket: s.bucket, Key: o.dst}
		if kind == "copy" {
			t, err := tasks.NewCopyTask(tasks.CopyPayload{Source: src, Dest: dst, Size: o.size})
			return o, t, err
		}
		t, err := tasks.NewMoveTask(tasks.MovePayload{Source: src, Dest: dst, Size: o.size})
		return o, t, err
	}
	panic("unknown op kind " + kind)
}

// enqueueOp enqueues and records the op; an unacknowledged enqueue is
// recorded with a zero ackedAt.
func (s *suite) enqueueOp(l *ledger, kind string, lo, hi int64) *op {
	n := l.n.Add(1)
	o, t, err := s.newOp(kind, n, lo, hi)
	if err != nil {
		s.t.Fatalf("new %s task: %v", kind, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := s.client.Enqueue(ctx, t, asynq.Queue(s.queue))
	if err == nil {
		o.id, o.ackedAt = info.ID, time.Now()
	} else if info != nil {
		// Enqueued, but clearing an old cancel flag failed: still acknowledged.
		o.id, o.ackedAt = info.ID, time.Now()
	}
	l.add(o)
	return o
}

// waitAll waits until every op in must is completed or archived, or the
// timeout passes; it returns the ops not completed, with their state.
func (s *suite) waitAll(must []*op, timeout time.Duration) map[*op]string {
	deadline := time.Now().Add(timeout)
	for {
		left := map[*op]string{}
		for _, o := range must {
			ti, err := s.client.Inspector().GetTaskInfo(s.queue, o.id)
			switch {
			case err != nil:
				left[o] = "lookup: " + err.Error()
			case ti.State == asynq.TaskStateCompleted:
			case ti.State == asynq.TaskStateArchived:
				left[o] = "archived: " + ti.LastErr
			default:
				left[o] = ti.State.String() + " (last error: " + ti.LastErr + ")"
			}
		}
		done := true
		for _, st := range left {
			if !strings.HasPrefix(st, "archived") {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			return left
		}
		time.Sleep(time.Second)
	}
}

// taskStats sums asynq's retry counts over ops and counts those whose last
// error says a lease expired (a worker died under them).
func (s *suite) taskStats(ops []*op) (retries, crashed int) {
	for _, o := range ops {
		ti, err := s.client.Inspector().GetTaskInfo(s.queue, o.id)
		if err != nil {
			continue
		}
		retries += ti.Retried
		if strings.Contains(ti.LastErr, "lease expired") || strings.Contains(ti.LastErr, "deadline exceeded") {
			crashed++
		}
	}
	return retries, crashed
}

// objectSum reads an object and returns its SHA-256 and size.
func (s *suite) objectSum(key string) ([32]byte, int64, error) {
	out, err := s.sc.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer out.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, out.Body)
	if err != nil {
		return [32]byte{}, n, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, nil
}

func (s *suite) exists(key string) (bool, error) {
	_, err := s.sc.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err == nil {
		return true, nil
	}
	var nf interface{ ErrorCode() string }
	if errors.As(err, &nf) && (nf.ErrorCode() == "NotFound" || nf.ErrorCode() == "NoSuchKey") {
		return false, nil
	}
	return false, err
}

// verify checks completed ops (see checkOp) and returns the bytes verified.
func (s *suite) verify(ops []*op) int64 {
	s.t.Helper()
	var verified int64
	for _, o := range ops {
		n, _ := s.checkOp(o)
		verified += n
	}
	return verified
}

// checkOp checks a completed op: its destination's SHA-256 and size equal
// its source's (else corrupt), a copy kept its source, a move removed it.
// Each problem is a test error. It returns the bytes verified.
func (s *suite) checkOp(o *op) (verified int64, corrupt bool) {
	s.t.Helper()
	sum, n, err := s.objectSum(o.dst)
	switch {
	case err != nil:
		s.t.Errorf("%s %s → %s: destination unreadable: %v", o.kind, o.id, o.dst, err)
		return 0, true
	case sum != o.sum || n != o.size:
		s.t.Errorf("%s %s → %s: destination differs from its source (%d bytes, want %d; sha256 mismatch=%v)", o.kind, o.id, o.dst, n, o.size, sum != o.sum)
		return 0, true
	}
	switch o.kind {
	case "copy":
		if ok, err := s.exists(o.src); !ok || err != nil {
			s.t.Errorf("copy %s deleted or lost its source %s (%v)", o.id, o.src, err)
		}
	case "move":
		if ok, err := s.exists(o.src); ok || err != nil {
			s.t.Errorf("move %s completed but its source %s is still there (%v)", o.id, o.src, err)
		}
	}
	return n, false
}

// moveMonitor checks, while the workload runs, that a move's source never
// disappears before its destination holds the same bytes (Jepsen-style:
// the invariant is checked on the live system, not only at the end).
type moveMonitor struct {
	s          *suite
	mu         sync.Mutex
	pending    map[*op]bool
	violations []string
	checks     int
	done       chan struct{} // closed when the monitor's goroutine has returned
}

func (s *suite) monitorMoves(ctx context.Context) *moveMonitor {
	m := &moveMonitor{s: s, pending: map[*op]bool{}, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			m.mu.Lock()
			ops := make([]*op, 0, len(m.pending))
			for o := range m.pending {
				ops = append(ops, o)
			}
			m.mu.Unlock()
			for _, o := range ops {
				if ctx.Err() != nil {
					break
				}
				ok, err := s.exists(o.src)
				if err != nil || ok {
					continue
				}
				// The source is gone: the destination must be complete now.
				sum, n, err := s.objectSum(o.dst)
				m.mu.Lock()
				m.checks++
				if err != nil || sum != o.sum || n != o.size {
					m.violations = append(m.violations, fmt.Sprintf("move %s: source %s deleted while destination %s is not its copy (%d bytes, err %v)", o.id, o.src, o.dst, n, err))
				}
				delete(m.pending, o)
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return m
}

// wait returns once the monitor, whose context has ended, has stopped: a
// check it had begun is finished. Call it before anything removes the
// objects it watches, or it sees a source gone and a destination gone and
// reports a move that never happened.
func (m *moveMonitor) wait() { <-m.done }

func (m *moveMonitor) watch(o *op) {
	if o.kind == "move" && o.id != "" {
		m.mu.Lock()
		m.pending[o] = true
		m.mu.Unlock()
	}
}

// watching reports whether the monitor still waits for o's source to go.
func (m *moveMonitor) watching(o *op) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending[o]
}

func (m *moveMonitor) result() (checks int, violations []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checks, append([]string(nil), m.violations...)
}

// janitorAndCheckUploads runs a janitor task (child workers abort orphaned
// uploads older than 1 s) and then requires ListMultipartUploads to be
// empty. It returns how many orphans the janitor aborted.
func (s *suite) janitorAndCheckUploads() int {
	s.t.Helper()
	ctx := context.Background()
	info, err := s.client.Enqueue(ctx, tasks.NewJanitorTask(), asynq.Queue(s.queue))
	if err != nil {
		s.t.Fatal(err)
	}
	left := s.waitAll([]*op{{id: info.ID}}, 2*time.Minute)
	if len(left) > 0 {
		s.t.Errorf("janitor did not complete: %v", left)
	}
	aborted := 0
	if ti, err := s.client.Inspector().GetTaskInfo(s.queue, info.ID); err == nil {
		var rep struct {
			Aborted int `json:"aborted"`
		}
		_ = jsonUnmarshal(ti.Result, &rep)
		aborted = rep.Aborted
	}
	out, err := s.sc.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &s.bucket})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, u := range out.Uploads {
		s.t.Errorf("multipart upload left on the server: key %s id %s initiated %v", aws.ToString(u.Key), aws.ToString(u.UploadId), u.Initiated)
	}
	return aborted
}

// checkNoSecret requires that no worker log and no Redis value (SCAN of
// every key, with its value by type) contains the S3 secret key.
func (s *suite) checkNoSecret() {
	s.t.Helper()
	secret := s.s3.SecretKey
	if len(secret) < 8 {
		s.t.Fatalf("secret %q too short to search for", secret)
	}
	logs, _ := filepath.Glob(filepath.Join(s.logDir, "*.log"))
	var logBytes int64
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			s.t.Fatal(err)
		}
		logBytes += int64(len(b))
		if bytes.Contains(b, []byte(secret)) {
			s.t.Errorf("worker log %s contains the S3 secret key", p)
		}
	}
	keys, values := s.dumpRedis(func(v string) {
		if strings.Contains(v, secret) {
			s.t.Errorf("a Redis value contains the S3 secret key: %.200q", v)
		}
	})
	s.t.Logf("secrets: searched %d worker logs (%d bytes) and %d Redis keys (%d values): secret key not found", len(logs), logBytes, keys, values)
}

// dumpRedis SCANs every key and passes each key name and value to check.
func (s *suite) dumpRedis(check func(string)) (keys, values int) {
	ctx := context.Background()
	iter := s.rdb.Scan(ctx, 0, "*", 500).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		keys++
		check(k)
		var vals []string
		switch s.rdb.Type(ctx, k).Val() {
		case "string":
			vals = []string{s.rdb.Get(ctx, k).Val()}
		case "hash":
			for f, v := range s.rdb.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "list":
			vals = s.rdb.LRange(ctx, k, 0, -1).Val()
		case "set":
			vals = s.rdb.SMembers(ctx, k).Val()
		case "zset":
			vals = s.rdb.ZRange(ctx, k, 0, -1).Val()
		case "stream":
			for _, m := range s.rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					vals = append(vals, f, fmt.Sprint(v))
				}
			}
		}
		for _, v := range vals {
			values++
			check(v)
		}
	}
	if err := iter.Err(); err != nil {
		s.t.Fatal(err)
	}
	return keys, values
}

// grepLogs counts log lines containing needle across the worker logs.
func (s *suite) grepLogs(needle string) int {
	logs, _ := filepath.Glob(filepath.Join(s.logDir, "*.log"))
	n := 0
	for _, p := range logs {
		b, _ := os.ReadFile(p)
		n += bytes.Count(b, []byte(needle))
	}
	return n
}

// slowChild runs one part at a time, so uploads last long enough to be
// killed in the middle.
func slowChild(c *workerproc.ChildConfig) { c.PartConcurrency = 1 }
