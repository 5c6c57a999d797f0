package tasks_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/tasks"
)

var (
	s3Src = tasks.Location{Profile: "aws", Bucket: "src-bucket", Key: "in/big.bin"}
	s3Dst = tasks.Location{Profile: "r2", Bucket: "dst-bucket", Key: "out/big.bin"}
)

func TestPayloadValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		p       interface{ Validate() error }
		wantErr string // "" means valid
	}{
		{desc: "put from inline", p: tasks.PutPayload{Source: tasks.Location{Data: []byte("hi")}, Dest: s3Dst, ContentType: "text/plain; charset=utf-8", Metadata: map[string]string{"owner": "ops", "x-1": "ü"}}},
		{desc: "put from file", p: tasks.PutPayload{Source: tasks.Location{Path: "/a"}, Dest: s3Dst}},
		{desc: "put from s3", p: tasks.PutPayload{Source: s3Src, Dest: s3Dst}},
		{desc: "put to a file", p: tasks.PutPayload{Source: s3Src, Dest: tasks.Location{Path: "/a"}}, wantErr: "dest: must be an s3://bucket/key location"},
		{desc: "put bad content type", p: tasks.PutPayload{Source: s3Src, Dest: s3Dst, ContentType: "text/"}, wantErr: "content_type"},
		{desc: "put metadata uppercase key", p: tasks.PutPayload{Source: s3Src, Dest: s3Dst, Metadata: map[string]string{"Owner": "x"}}, wantErr: `metadata key "Owner"`},
		{desc: "put metadata reserved key", p: tasks.PutPayload{Source: s3Src, Dest: s3Dst, Metadata: map[string]string{"ferry-task-id": "x"}}, wantErr: "reserved for ferry"},
		{desc: "put metadata control char", p: tasks.PutPayload{Source: s3Src, Dest: s3Dst, Metadata: map[string]string{"a": "b\r\nc"}}, wantErr: "control characters"},
		{desc: "put metadata too big", p: tasks.PutPayload{Source: s3Src, Dest: s3Dst, Metadata: map[string]string{"a": strings.Repeat("v", 2048)}}, wantErr: "more than S3's 2048"},
		{desc: "put oversized inline", p: tasks.PutPayload{Source: tasks.Location{Data: make([]byte, tasks.MaxInlineSize+1)}, Dest: s3Dst}, wantErr: "source: inline data"},
		{desc: "upload ok", p: tasks.UploadPayload{Source: tasks.Location{Path: "/big"}, Dest: s3Dst, PartSize: 8 << 20, PartConcurrency: 5, Size: 1 << 30}},
		{desc: "upload from inline", p: tasks.UploadPayload{Source: tasks.Location{Data: []byte("x")}, Dest: s3Dst}, wantErr: "use a put task"},
		{desc: "upload part too small", p: tasks.UploadPayload{Source: tasks.Location{Path: "/big"}, Dest: s3Dst, PartSize: 1 << 20}, wantErr: "part_size 1048576 is out of range"},
		{desc: "upload part too big", p: tasks.UploadPayload{Source: tasks.Location{Path: "/big"}, Dest: s3Dst, PartSize: 6 << 30}, wantErr: "is out of range"},
		{desc: "upload concurrency", p: tasks.UploadPayload{Source: tasks.Location{Path: "/big"}, Dest: s3Dst, PartConcurrency: 65}, wantErr: "part_concurrency 65"},
		{desc: "upload negative size", p: tasks.UploadPayload{Source: tasks.Location{Path: "/big"}, Dest: s3Dst, Size: -1}, wantErr: "size -1"},
		{desc: "upload too many parts", p: tasks.UploadPayload{Source: tasks.Location{Path: "/big"}, Dest: s3Dst, PartSize: 5 << 20, Size: 100 << 30}, wantErr: "more than 10000 parts"},
		{desc: "upload relative path", p: tasks.UploadPayload{Source: tasks.Location{Path: "big"}, Dest: s3Dst}, wantErr: "source: path \"big\" is relative"},
		{desc: "copy ok", p: tasks.CopyPayload{Source: s3Src, Dest: s3Dst}},
		{desc: "copy same key other profile", p: tasks.CopyPayload{Source: s3Src, Dest: tasks.Location{Profile: "r2", Bucket: s3Src.Bucket, Key: s3Src.Key}}},
		{desc: "copy onto itself", p: tasks.CopyPayload{Source: s3Src, Dest: s3Src}, wantErr: "same object"},
		{desc: "copy from https", p: tasks.CopyPayload{Source: tasks.Location{URL: "https://x.y/z"}, Dest: s3Dst}, wantErr: "source: must be an s3://bucket/key"},
		{desc: "move onto itself, default profile spelled two ways", p: tasks.MovePayload{Source: tasks.Location{Bucket: "bkt", Key: "k"}, Dest: tasks.Location{Profile: "default", Bucket: "bkt", Key: "k"}}, wantErr: `move: s3://bkt/k via profile "default" and s3://bkt/k via profile "default" are the same object`},
		{desc: "put from s3 onto itself", p: tasks.PutPayload{Source: s3Src, Dest: s3Src}, wantErr: "put: "},
		{desc: "upload from s3 onto itself", p: tasks.UploadPayload{Source: s3Src, Dest: s3Src}, wantErr: "are the same object"},
		{desc: "migrate overlapping prefixes", p: tasks.MigratePayload{Source: tasks.Location{Bucket: "bkt", Key: "photos/"}, Dest: tasks.Location{Bucket: "bkt", Key: "photos/2019/"}}, wantErr: "prefixes overlap"},
		{desc: "migrate a local directory", p: tasks.MigratePayload{Source: tasks.Location{Path: "/data/photos"}, Dest: tasks.Location{Bucket: "bkt", Key: "photos/"}}},
		{desc: "migrate a relative directory", p: tasks.MigratePayload{Source: tasks.Location{Path: "data"}, Dest: s3Dst}, wantErr: "source: path \"data\" is relative"},
		{desc: "migrate an unclean directory", p: tasks.MigratePayload{Source: tasks.Location{Path: "/data/"}, Dest: s3Dst}, wantErr: "is not clean"},
		{desc: "migrate from https", p: tasks.MigratePayload{Source: tasks.Location{URL: "https://x.y/z"}, Dest: s3Dst}, wantErr: "or a local directory on the worker"},
		{desc: "migrate to a local directory", p: tasks.MigratePayload{Source: s3Src, Dest: tasks.Location{Path: "/data"}}, wantErr: "dest: must be an s3://"},
		{desc: "migrate same prefix, other profile", p: tasks.MigratePayload{Source: tasks.Location{Bucket: "bkt", Key: "photos/"}, Dest: tasks.Location{Profile: "r2", Bucket: "bkt", Key: "photos/"}}},
		{desc: "move bad dest key", p: tasks.MovePayload{Source: s3Src, Dest: tasks.Location{Bucket: "bkt", Key: "../k"}}, wantErr: "dest: s3://bkt"},
		{desc: "delete object", p: tasks.DeletePayload{Dest: s3Dst}},
		{desc: "delete object needs a key", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt"}}, wantErr: "key is empty"},
		{desc: "delete prefix", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt", Key: "logs/"}, Recursive: true}},
		{desc: "delete empty prefix refused", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt"}, Recursive: true}, wantErr: "set allow_all"},
		{desc: "delete whole bucket allowed", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt"}, Recursive: true, AllowAll: true}},
		{desc: "delete allow_all without recursive", p: tasks.DeletePayload{Dest: s3Dst, AllowAll: true}, wantErr: "recursive deletes only"},
		{desc: "delete bad prefix", p: tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt", Key: "a//"}, Recursive: true}, wantErr: "prefix"},
		{desc: "delete a file", p: tasks.DeletePayload{Dest: tasks.Location{Path: "/x"}}, wantErr: "must be an s3"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			err := tc.p.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	put := tasks.PutPayload{Source: tasks.Location{Data: []byte{}}, Dest: s3Dst, Metadata: map[string]string{"k": "v"}}
	upload := tasks.UploadPayload{Source: tasks.Location{URL: "https://example.com/f"}, Dest: s3Dst, PartSize: 16 << 20, PartConcurrency: 4, ContentType: "application/octet-stream", Size: 3 << 30}
	cp := tasks.CopyPayload{Source: s3Src, Dest: s3Dst, Size: 1}
	mv := tasks.MovePayload{Source: s3Src, Dest: s3Dst, PartConcurrency: 2}
	del := tasks.DeletePayload{Dest: tasks.Location{Bucket: "bkt", Key: "p/"}, Recursive: true}

	tests := []struct {
		desc   string
		newFn  func() (*asynq.Task, error)
		decode func(*asynq.Task) (any, error)
		want   any
	}{
		{desc: "put (empty inline survives)", newFn: func() (*asynq.Task, error) { return tasks.NewPutTask(put) },
			decode: func(t *asynq.Task) (any, error) { return tasks.DecodePut(t) }, want: put},
		{desc: "upload", newFn: func() (*asynq.Task, error) { return tasks.NewUploadTask(upload) },
			decode: func(t *asynq.Task) (any, error) { return tasks.DecodeUpload(t) }, want: upload},
		{desc: "copy", newFn: func() (*asynq.Task, error) { return tasks.NewCopyTask(cp) },
			decode: func(t *asynq.Task) (any, error) { return tasks.DecodeCopy(t) }, want: cp},
		{desc: "move", newFn: func() (*asynq.Task, error) { return tasks.NewMoveTask(mv) },
			decode: func(t *asynq.Task) (any, error) { return tasks.DecodeMove(t) }, want: mv},
		{desc: "delete", newFn: func() (*asynq.Task, error) { return tasks.NewDeleteTask(del) },
			decode: func(t *asynq.Task) (any, error) { return tasks.DecodeDelete(t) }, want: del},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			task, err := tc.newFn()
			if err != nil {
				t.Fatalf("new task: %v", err)
			}
			got, err := tc.decode(task)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrorsSkipRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		task    *asynq.Task
		wantErr string
	}{
		{desc: "unknown field", task: asynq.NewTask(tasks.TypeCopy, []byte(`{"source":{"bucket":"src","key":"a"},"dest":{"bucket":"dst","key":"b"},"access_key":"AKIA"}`)), wantErr: `unknown field "access_key"`},
		{desc: "unknown field in a location", task: asynq.NewTask(tasks.TypeCopy, []byte(`{"source":{"bucket":"src","key":"a","secret":"x"},"dest":{"bucket":"dst","key":"b"}}`)), wantErr: `unknown field "secret"`},
		{desc: "not JSON", task: asynq.NewTask(tasks.TypeCopy, []byte(`{`)), wantErr: "decode ferry:copy payload"},
		{desc: "trailing data", task: asynq.NewTask(tasks.TypeCopy, []byte(`{"source":{"bucket":"src","key":"a"},"dest":{"bucket":"dst","key":"b"}} {}`)), wantErr: "trailing data"},
		{desc: "invalid payload", task: asynq.NewTask(tasks.TypeCopy, []byte(`{"source":{"bucket":"src","key":"a"},"dest":{"path":"/x"}}`)), wantErr: "invalid ferry:copy payload: dest"},
		{desc: "wrong type", task: asynq.NewTask(tasks.TypeMove, []byte(`{}`)), wantErr: `task has type "ferry:move"`},
		{desc: "nil task", task: nil, wantErr: "nil task"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := tasks.DecodeCopy(tc.task)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("DecodeCopy error = %v, want one containing %q", err, tc.wantErr)
			}
			if !errors.Is(err, asynq.SkipRetry) {
				t.Errorf("DecodeCopy error %v does not wrap asynq.SkipRetry", err)
			}
		})
	}
}

func TestNewTaskRefusesInvalid(t *testing.T) {
	t.Parallel()
	_, err := tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: "../x"}, Dest: s3Dst})
	if err == nil || !strings.Contains(err.Error(), "new ferry:upload task: source: path") {
		t.Fatalf("NewUploadTask error = %v, want a source path error", err)
	}
}

func TestTimeoutFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		size int64
		want time.Duration
	}{
		{desc: "unknown", size: 0, want: time.Hour},
		{desc: "negative is unknown", size: -5, want: time.Hour},
		{desc: "small gets the minimum", size: 1, want: 10 * time.Minute},
		{desc: "1 GiB: 256 s + 5 min is under the minimum", size: 1 << 30, want: 10 * time.Minute},
		{desc: "10 GiB: 2560 s + 5 min", size: 10 << 30, want: 2560*time.Second + 5*time.Minute},
		{desc: "1 TiB is capped", size: 1 << 40, want: 48 * time.Hour},
		{desc: "max int64 does not overflow", size: 1<<63 - 1, want: 48 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, tasks.TimeoutFor(tc.size)); diff != "" {
				t.Errorf("TimeoutFor(%d) mismatch (-want +got):\n%s", tc.size, diff)
			}
		})
	}
}

func TestTaskID(t *testing.T) {
	t.Parallel()
	id := tasks.TaskID(tasks.TypeCopy, s3Src, s3Dst)
	tests := []struct {
		desc string
		got  string
		same bool
	}{
		{desc: "same inputs, same id", got: tasks.TaskID(tasks.TypeCopy, s3Src, s3Dst), same: true},
		{desc: "other type", got: tasks.TaskID(tasks.TypeMove, s3Src, s3Dst)},
		{desc: "swapped", got: tasks.TaskID(tasks.TypeCopy, s3Dst, s3Src)},
		{desc: "other source profile", got: tasks.TaskID(tasks.TypeCopy, tasks.Location{Profile: "other", Bucket: s3Src.Bucket, Key: s3Src.Key}, s3Dst)},
		{desc: "other dest key", got: tasks.TaskID(tasks.TypeCopy, s3Src, tasks.Location{Profile: "r2", Bucket: s3Dst.Bucket, Key: "other"})},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			if (tc.got == id) != tc.same {
				t.Errorf("TaskID = %q, first id %q: same = %v, want %v", tc.got, id, tc.got == id, tc.same)
			}
		})
	}
	if len(id) != len("ferry-")+24 || !strings.HasPrefix(id, "ferry-") {
		t.Errorf("TaskID = %q, want ferry- and 24 hex digits", id)
	}
	def := tasks.TaskID(tasks.TypePut, tasks.Location{Path: "/a"}, tasks.Location{Bucket: "bkt", Key: "k"})
	named := tasks.TaskID(tasks.TypePut, tasks.Location{Path: "/a"}, tasks.Location{Profile: "default", Bucket: "bkt", Key: "k"})
	if def != named {
		t.Errorf("empty profile id %q != \"default\" profile id %q", def, named)
	}
	a := tasks.TaskID(tasks.TypePut, tasks.Location{Data: []byte("aaa")}, s3Dst)
	b := tasks.TaskID(tasks.TypePut, tasks.Location{Data: []byte("bbb")}, s3Dst)
	if a == b {
		t.Errorf("inline sources of equal length but different bytes share id %q", a)
	}
}
