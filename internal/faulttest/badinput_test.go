package faulttest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

// TestBadInputCorpus enqueues raw payloads no producer-side validation has
// seen (asynq.NewTask directly) and requires each to be archived at once
// with a reason that names the problem, nothing deleted or written, and
// the worker process still serving. It extends
// worker.TestBadInputIsArchivedWithReason (malformed JSON, unknown field,
// "..", missing file, outside path, symlink file, unknown profile, unknown
// type) with oversized payloads, invalid UTF-8, over-long and control-char
// keys, directory symlinks, FIFOs, devices and more.
func TestBadInputCorpus(t *testing.T) {
	requireFaults(t)
	t.Parallel()
	s := newSuite(t)
	w := s.child(nil)
	ctx := context.Background()
	s.putSource("keep/me", []byte("precious"))
	s.putSource("keep/other", []byte("also precious"))
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(s.dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(s.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(s.dir, "zero")); err != nil {
		t.Fatal(err)
	}
	b := s.bucket
	dest := `{"bucket":"` + b + `","key":"out/x"}`
	big := strings.Repeat("A", 400<<10) // base64 of 300 KiB, over the 256 KiB inline limit
	for _, tc := range []struct {
		desc, typ, payload, want string
	}{
		{"empty payload", tasks.TypeUpload, ``, "payload"},
		{"JSON null", tasks.TypePut, `null`, ""},
		{"JSON array", tasks.TypeCopy, `[1,2,3]`, "payload"},
		{"trailing data", tasks.TypePut, `{"source":{"data":"eA=="},"dest":` + dest + `} {}`, "trailing"},
		{"oversized garbage (4 MiB)", tasks.TypeUpload, strings.Repeat("x", 4<<20), "payload"},
		{"oversized inline data", tasks.TypePut, `{"source":{"data":"` + big + `"},"dest":` + dest + `}`, "inline"},
		{"invalid UTF-8 key", tasks.TypePut, "{\"source\":{\"data\":\"eA==\"},\"dest\":{\"bucket\":\"" + b + "\",\"key\":\"out/\xff\xfe\"}}", "UTF-8"},
		{"over-long key", tasks.TypePut, `{"source":{"data":"eA=="},"dest":{"bucket":"` + b + `","key":"out/` + strings.Repeat("k", 1100) + `"}}`, "1024"},
		{"control character in key", tasks.TypePut, `{"source":{"data":"eA=="},"dest":{"bucket":"` + b + `","key":"out/a\u0000b"}}`, "key"},
		{"dot-dot key on delete", tasks.TypeDelete, `{"dest":{"bucket":"` + b + `","key":"keep/../keep/me"}}`, ".."},
		{"dot-dot path escape", tasks.TypeUpload, `{"source":{"path":"` + s.dir + `/../` + filepath.Base(outside) + `/secret.txt"},"dest":` + dest + `}`, ""},
		{"relative path", tasks.TypeUpload, `{"source":{"path":"secret.txt"},"dest":` + dest + `}`, "absolute"},
		{"symlinked directory escape", tasks.TypeUpload, `{"source":{"path":"` + filepath.Join(s.dir, "linkdir", "secret.txt") + `"},"dest":` + dest + `}`, "symlink"},
		{"symlink to a device", tasks.TypeUpload, `{"source":{"path":"` + filepath.Join(s.dir, "zero") + `"},"dest":` + dest + `}`, ""},
		{"directory as source", tasks.TypeUpload, `{"source":{"path":"` + filepath.Join(s.dir, "sub") + `"},"dest":` + dest + `}`, "regular file"},
		{"unknown dest profile", tasks.TypeUpload, `{"source":{"path":"` + filepath.Join(s.dir, "nope") + `"},"dest":{"profile":"nosuch","bucket":"` + b + `","key":"k"}}`, ""},
		{"unknown source profile on move", tasks.TypeMove, `{"source":{"profile":"nosuch","bucket":"` + b + `","key":"keep/me"},"dest":{"bucket":"` + b + `","key":"out/m"}}`, `nosuch`},
		{"credentials in a profile name", tasks.TypeCopy, `{"source":{"profile":"AKIA:secret","bucket":"` + b + `","key":"keep/me"},"dest":{"bucket":"` + b + `","key":"out/c"}}`, "profile"},
		{"invalid bucket name", tasks.TypePut, `{"source":{"data":"eA=="},"dest":{"bucket":"Not_A_Bucket","key":"k"}}`, "bucket"},
		{"bucket that does not exist", tasks.TypePut, `{"source":{"data":"eA=="},"dest":{"bucket":"ferry-no-such-bucket-xyz","key":"k"}}`, ""},
		{"recursive delete of a whole bucket without allow_all", tasks.TypeDelete, `{"dest":{"bucket":"` + b + `","key":""},"recursive":true}`, "allow_all"},
		{"reserved metadata key", tasks.TypePut, `{"source":{"data":"eA=="},"dest":` + dest + `,"metadata":{"ferry-task-id":"spoof"}}`, "reserved"},
		{"part size below 5 MiB", tasks.TypeUpload, `{"source":{"path":"` + fifo + `"},"dest":` + dest + `,"part_size":1024}`, "part_size"},
		{"part concurrency 1000", tasks.TypeUpload, `{"source":{"path":"` + fifo + `"},"dest":` + dest + `,"part_concurrency":1000}`, "part_concurrency"},
		{"http (not https) source", tasks.TypePut, `{"source":{"url":"http://127.0.0.1:1/x"},"dest":` + dest + `}`, "https"},
		{"https host not on the allowlist", tasks.TypePut, `{"source":{"url":"https://example.com/x"},"dest":` + dest + `}`, "allow"},
		{"two sources at once", tasks.TypePut, `{"source":{"data":"eA==","path":"/etc/passwd"},"dest":` + dest + `}`, ""},
		{"move onto itself", tasks.TypeMove, `{"source":{"bucket":"` + b + `","key":"keep/me"},"dest":{"bucket":"` + b + `","key":"keep/me"}}`, "same object"},
		{"FIFO as source", tasks.TypeUpload, `{"source":{"path":"` + fifo + `"},"dest":` + dest + `}`, ""},
	} {
		info, err := s.client.Enqueue(ctx, asynq.NewTask(tc.typ, []byte(tc.payload)), asynq.Queue(s.queue), asynq.MaxRetry(5), asynq.Timeout(time.Minute), asynq.Retention(time.Hour))
		if err != nil {
			t.Errorf("%s: enqueue: %v", tc.desc, err)
			continue
		}
		var ti *asynq.TaskInfo
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			ti, err = s.client.Inspector().GetTaskInfo(s.queue, info.ID)
			if err != nil {
				break
			}
			if ti.State == asynq.TaskStateArchived || ti.State == asynq.TaskStateCompleted {
				break
			}
		}
		switch {
		case err != nil:
			t.Errorf("%s: task %s: %v", tc.desc, info.ID, err)
		case ti.State != asynq.TaskStateArchived:
			t.Errorf("%s: task is %s after 20 s (retried %d, last error %q), want archived at once", tc.desc, ti.State, ti.Retried, ti.LastErr)
		case ti.Retried != 0:
			t.Errorf("%s: retried %d times; a permanent error must not be retried (%q)", tc.desc, ti.Retried, ti.LastErr)
		case ti.LastErr == "" || !strings.Contains(ti.LastErr, tc.want):
			t.Errorf("%s: archived with %q, want a reason mentioning %q", tc.desc, ti.LastErr, tc.want)
		default:
			t.Logf("%s: archived: %.160s", tc.desc, ti.LastErr)
		}
	}
	for key, want := range map[string]string{"keep/me": "precious", "keep/other": "also precious"} {
		if sum, _, err := s.objectSum(key); err != nil || sum != sha(want) {
			t.Errorf("bad input changed or deleted %s (%v)", key, err)
		}
	}
	out, err := s.sc.ListObjectsV2(ctx, &listInput{Bucket: &b, Prefix: strPtr("out/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Contents {
		t.Errorf("bad input wrote an object: %q", *o.Key)
	}
	// The worker still serves good work.
	var l ledger
	good := s.enqueueOp(&l, "upload", 6*mib, 7*mib)
	if left := s.waitAll([]*op{good}, time.Minute); len(left) > 0 {
		t.Errorf("after the corpus the worker no longer serves: %v", left[good])
	}
	s.verify([]*op{good})
	if w.Exited() {
		t.Errorf("the worker process exited (log %s)", w.Log)
	}
	s.checkNoSecret()
}
