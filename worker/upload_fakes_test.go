package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// These tests drive the multipart upload and a move's last checks through
// call-recording fakes of the consumer-side interfaces (uploadTarget,
// uploadCheckpoints, objectInfo, checksumSource): they assert which calls
// an upload or a move makes, in which order and with which fence token,
// without an S3 server. The bytes and the servers' answers are the
// end-to-end tests' (resume_test.go, cancel_test.go, integrity_test.go).

// calls records the calls made to the fakes, in order.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf(format, args...))
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// fakeBucket is an uploadTarget that records its calls. UploadParts sends
// (calls OnPartFunc for) every part it is not told to skip, or fails with
// uploadErr.
type fakeBucket struct {
	calls     *calls
	bucket    string
	listed    []storage.Part // ListParts' answer
	uploadErr error          // UploadParts' error
	mode      string         // UploadChecksumMode's answer; "" is storage.ChecksumModeNone
}

func (b *fakeBucket) Bucket() string { return b.bucket }

func (b *fakeBucket) UploadChecksumMode() string {
	if b.mode == "" {
		return storage.ChecksumModeNone
	}
	return b.mode
}

func (b *fakeBucket) Info(_ context.Context, key string) (storage.StoredFile, error) {
	b.calls.add("Info %s", key)
	return storage.StoredFile{}, storage.ErrNotFound
}

func (b *fakeBucket) StartMultipartUpload(_ context.Context, key string, opts *storage.MultipartOptions) (*storage.MultipartUpload, error) {
	b.calls.add("StartMultipartUpload %s task=%s", key, opts.Metadata[metaTaskID])
	return storage.NewMultipartUpload(key, "up-new", opts.PartSize, nil), nil
}

func (b *fakeBucket) ListParts(_ context.Context, key, uploadID string) ([]storage.Part, error) {
	b.calls.add("ListParts %s %s", key, uploadID)
	return b.listed, nil
}

func (b *fakeBucket) UploadParts(_ context.Context, u *storage.MultipartUpload, src storage.PartSource, o storage.PartsOptions) error {
	var skipped []string
	n := int((src.(fakeParts).size + u.PartSize - 1) / u.PartSize)
	for i := 1; i <= n; i++ {
		if o.Skip(i) {
			skipped = append(skipped, fmt.Sprint(i))
		}
	}
	b.calls.add("UploadParts %s skip=[%s]", u.UploadID, strings.Join(skipped, " "))
	if b.uploadErr != nil {
		return b.uploadErr
	}
	for i := 1; i <= n; i++ {
		if o.Skip(i) {
			continue
		}
		size := min(u.PartSize, src.(fakeParts).size-int64(i-1)*u.PartSize)
		if err := o.OnPartFunc(storage.Part{Number: i, ETag: fmt.Sprintf("e%d", i), Size: size}); err != nil {
			return err
		}
	}
	return nil
}

func (b *fakeBucket) CompleteMultipartUpload(_ context.Context, u *storage.MultipartUpload) (storage.StoredFile, error) {
	b.calls.add("CompleteMultipartUpload %s", u.UploadID)
	return storage.StoredFile{Key: u.Key}, nil
}

func (b *fakeBucket) AbortMultipartUpload(_ context.Context, key, uploadID string) error {
	b.calls.add("AbortMultipartUpload %s %s", key, uploadID)
	return nil
}

// fakeParts is a source's PartSource of size bytes that the fake bucket
// never reads.
type fakeParts struct{ size int64 }

func (fakeParts) ReadPart(context.Context, int, []byte) (int, error) {
	return 0, errors.New("fakeParts: not read")
}
func (fakeParts) Sequential() bool { return false }

// fakeCheckpoints is the checkpoint store of one task, recording the
// calls an upload makes of it. The rest of checkpoints (ownership, the
// janitor's listing) is nil: an upload that called it would panic.
type fakeCheckpoints struct {
	checkpoints
	calls *calls
	ck    *checkpoint.Checkpoint // Load's answer; nil is ErrNotFound
	// lost makes CheckOwner answer ErrNotOwner: a takeover claimed the
	// task with a newer token.
	lost bool
}

func (c *fakeCheckpoints) Create(_ context.Context, taskID string, p checkpoint.Plan) error {
	c.calls.add("ckpt.Create %s %s mode=%s", taskID, p.UploadID, p.ChecksumMode)
	c.ck = &checkpoint.Checkpoint{Plan: p}
	return nil
}

func (c *fakeCheckpoints) Load(_ context.Context, taskID string) (checkpoint.Checkpoint, error) {
	c.calls.add("ckpt.Load %s", taskID)
	if c.ck == nil {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return *c.ck, nil
}

func (c *fakeCheckpoints) RecordPartOwned(_ context.Context, taskID, uploadID string, token int64, p checkpoint.Part) error {
	c.calls.add("ckpt.RecordPartOwned %s %s token=%d part=%d", taskID, uploadID, token, p.Number)
	return nil
}

func (c *fakeCheckpoints) CheckOwner(_ context.Context, taskID string, token int64) error {
	c.calls.add("ckpt.CheckOwner %s token=%d", taskID, token)
	if c.lost {
		return fmt.Errorf("fake: token %d: %w", token, checkpoint.ErrNotOwner)
	}
	return nil
}

func (c *fakeCheckpoints) Delete(_ context.Context, taskID, uploadID string) error {
	c.calls.add("ckpt.Delete %s %s", taskID, uploadID)
	return nil
}

// fakeUpload is an upload of a new task to key "k" of dst (bucket "b",
// default profile) of a source of two and a half parts, on a worker whose
// checkpoint store is a fake holding ck (nil: none); Redis (progress, the
// upload registry) is real.
func fakeUpload(t *testing.T, c *calls, ck *checkpoint.Checkpoint, dst *fakeBucket) (*Worker, *upload) {
	t.Helper()
	return fakeUploadOf(t, &fakeCheckpoints{calls: c, ck: ck}, dst)
}

// fakeUploadOf is fakeUpload with the fake checkpoint store given.
func fakeUploadOf(t *testing.T, store *fakeCheckpoints, dst *fakeBucket) (*Worker, *upload) {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	w := &Worker{log: log, rdb: testenv.RedisClient(t), ckpt: store}
	id := testenv.UniqueName("t1")
	const ps = storage.MinPartSize
	size := int64(2*ps + ps/2)
	prog := w.newProgress(context.Background(), id, tasks.TypeUpload, "file", "s3://b/k")
	t.Cleanup(prog.close)
	return w, &upload{taskID: id, profile: tasks.ProfileName(""), dst: dst, key: "k", partSize: ps, concurrency: 2,
		src: &source{display: "file", size: size, fingerprint: "fp", parts: fakeParts{size}}, prog: prog, log: log}
}

// expect replaces TASK in each call by the task's id.
func expect(id string, want ...string) []string {
	for i := range want {
		want[i] = strings.ReplaceAll(want[i], "TASK", id)
	}
	return want
}

// TestResumedUploadSendsOnlyMissingParts: an upload with a checkpoint
// asks the checkpoint for its plan and the server for the parts it holds
// before it sends anything, skips the parts both agree on, records each part
// it sends and checks its ownership before Complete, all under its own fence
// token, and deletes the checkpoint once complete. It starts no new upload.
func TestResumedUploadSendsOnlyMissingParts(t *testing.T) {
	t.Parallel()
	c := &calls{}
	const ps = storage.MinPartSize
	ck := &checkpoint.Checkpoint{
		Plan: checkpoint.Plan{UploadID: "up-old", Profile: tasks.ProfileName(""), Bucket: "b", Key: "k", PartSize: ps, PartCount: 3, Fingerprint: "fp"},
		// Part 2's ETag is not the server's: it is sent again.
		Parts: []checkpoint.Part{{Number: 1, ETag: "e1", Size: ps}, {Number: 2, ETag: "stale", Size: ps}},
	}
	dst := &fakeBucket{calls: c, bucket: "b", listed: []storage.Part{{Number: 1, ETag: "e1", Size: ps}, {Number: 2, ETag: "e2", Size: ps}}}
	w, u := fakeUpload(t, c, ck, dst)
	if _, err := w.uploadOwned(context.Background(), u, 7); err != nil {
		t.Fatalf("uploadOwned: %v", err)
	}
	want := expect(u.taskID,
		"ckpt.Load TASK",
		"ListParts k up-old",
		"UploadParts up-old skip=[1]",
		"ckpt.RecordPartOwned TASK up-old token=7 part=2",
		"ckpt.RecordPartOwned TASK up-old token=7 part=3",
		"ckpt.CheckOwner TASK token=7",
		"CompleteMultipartUpload up-old",
		"ckpt.Delete TASK up-old",
	)
	if diff := cmp.Diff(want, c.list()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestInterruptedUploadAbortsOrKeeps: an upload stopped between parts
// aborts its multipart upload and deletes its checkpoint when a user
// cancelled it, and keeps both (for the next worker to resume) when the
// worker shuts down; a checkpoint of another version of the source, or of
// an upload created in another checksum mode than the destination's now,
// is aborted before a new upload starts, which records the mode. A
// checkpoint without a mode (an older ferry's) resumes. Every abort is
// fenced: a run whose ownership a takeover claimed (which may be resuming
// the same upload) aborts nothing and keeps the checkpoint.
func TestInterruptedUploadAbortsOrKeeps(t *testing.T) {
	t.Parallel()
	const ps = storage.MinPartSize
	plan := func(fingerprint, mode string) *checkpoint.Checkpoint {
		return &checkpoint.Checkpoint{Plan: checkpoint.Plan{UploadID: "up-old", Profile: tasks.ProfileName(""), Bucket: "b", Key: "k",
			PartSize: ps, PartCount: 3, Fingerprint: fingerprint, ChecksumMode: mode}}
	}
	for _, tc := range []struct {
		desc      string
		ck        *checkpoint.Checkpoint
		mode      string // the destination's checksum mode; "" is none
		lost      bool   // a takeover holds the task: CheckOwner fails
		uploadErr error
		wantErr   error
		want      []string
	}{
		{desc: "cancelled", uploadErr: errCancelled, wantErr: errCancelled, want: []string{
			"ckpt.Load TASK",
			"StartMultipartUpload k task=TASK",
			"ckpt.Create TASK up-new mode=none",
			"UploadParts up-new skip=[]",
			"ckpt.CheckOwner TASK token=1",
			"AbortMultipartUpload k up-new",
			"ckpt.Delete TASK up-new",
		}},
		{desc: "shutting down", uploadErr: errShuttingDown, wantErr: errShuttingDown, want: []string{
			"ckpt.Load TASK",
			"StartMultipartUpload k task=TASK",
			"ckpt.Create TASK up-new mode=none",
			"UploadParts up-new skip=[]",
		}},
		{desc: "source changed since the checkpoint", uploadErr: errShuttingDown, wantErr: errShuttingDown,
			ck: plan("another version", storage.ChecksumModeNone),
			want: []string{
				"ckpt.Load TASK",
				"ckpt.CheckOwner TASK token=1",
				"AbortMultipartUpload k up-old",
				"ckpt.Delete TASK up-old",
				"StartMultipartUpload k task=TASK",
				"ckpt.Create TASK up-new mode=none",
				"UploadParts up-new skip=[]",
			}},
		{desc: "checksum mode changed since the checkpoint", uploadErr: errShuttingDown, wantErr: errShuttingDown,
			ck: plan("fp", storage.ChecksumModeNone), mode: storage.ChecksumModeCRC32C,
			want: []string{
				"ckpt.Load TASK",
				"ListParts k up-old", // an upload gone already was completed: not uploaded again
				"ckpt.CheckOwner TASK token=1",
				"AbortMultipartUpload k up-old",
				"ckpt.Delete TASK up-old",
				"StartMultipartUpload k task=TASK",
				"ckpt.Create TASK up-new mode=crc32c",
				"UploadParts up-new skip=[]",
			}},
		{desc: "ownership lost before the old upload is aborted", uploadErr: errShuttingDown, wantErr: checkpoint.ErrNotOwner,
			ck: plan("another version", storage.ChecksumModeNone), lost: true,
			want: []string{
				"ckpt.Load TASK",
				"ckpt.CheckOwner TASK token=1", // the newer run may be resuming up-old
			}},
		{desc: "ownership lost before a cancelled upload is aborted", uploadErr: errCancelled, wantErr: checkpoint.ErrNotOwner,
			lost: true, want: []string{
				"ckpt.Load TASK",
				"StartMultipartUpload k task=TASK",
				"ckpt.Create TASK up-new mode=none",
				"UploadParts up-new skip=[]",
				"ckpt.CheckOwner TASK token=1",
			}},
		{desc: "same checksum mode", uploadErr: errShuttingDown, wantErr: errShuttingDown,
			ck: plan("fp", storage.ChecksumModeCRC32C), mode: storage.ChecksumModeCRC32C,
			want: []string{
				"ckpt.Load TASK",
				"ListParts k up-old",
				"UploadParts up-old skip=[]",
			}},
		{desc: "checkpoint without a checksum mode", uploadErr: errShuttingDown, wantErr: errShuttingDown,
			ck: plan("fp", ""), mode: storage.ChecksumModeCRC32C,
			want: []string{
				"ckpt.Load TASK",
				"ListParts k up-old",
				"UploadParts up-old skip=[]",
			}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			c := &calls{}
			w, u := fakeUploadOf(t, &fakeCheckpoints{calls: c, ck: tc.ck, lost: tc.lost},
				&fakeBucket{calls: c, bucket: "b", uploadErr: tc.uploadErr, mode: tc.mode})
			_, err := w.uploadOwned(context.Background(), u, 1)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("uploadOwned = %v; want %v", err, tc.wantErr)
			}
			if tc.lost {
				for _, call := range c.list() {
					if strings.HasPrefix(call, "AbortMultipartUpload") || strings.HasPrefix(call, "ckpt.Delete") {
						t.Errorf("a run that lost its ownership called %s: the newer run's upload and checkpoint must be left alone", call)
					}
				}
				if errors.Is(err, errCancelled) || errors.Is(err, asynq.SkipRetry) {
					t.Errorf("uploadOwned = %v; a run that lost its ownership must not end the task (cancelled, failed)", err)
				}
			}
			if diff := cmp.Diff(expect(u.taskID, tc.want...), c.list()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeObjects is an objectInfo whose objects are files, recording the
// HEADs made of it under its name.
type fakeObjects struct {
	name  string
	calls *calls
	files map[string]storage.StoredFile
}

func (o *fakeObjects) Info(_ context.Context, key string) (storage.StoredFile, error) {
	o.calls.add("%s.Info %s", o.name, key)
	f, ok := o.files[key]
	if !ok {
		return storage.StoredFile{}, storage.ErrNotFound
	}
	return f, nil
}

// TestConfirmMoveBeforeDelete: a move checks the destination holds this
// task's copy of the source before it looks at the source, and deletes
// nothing when the destination is another writer's or when the source
// carries this task's id (one object under two spellings: permanent).
func TestConfirmMoveBeforeDelete(t *testing.T) {
	t.Parallel()
	info := storage.StoredFile{Key: "a", Size: 10, ETag: `"s"`}
	ours := storage.StoredFile{Key: "b", Size: 10, Metadata: map[string]string{metaTaskID: "t1", metaSourceETag: `"s"`}}
	theirs := storage.StoredFile{Key: "b", Size: 10, Metadata: map[string]string{metaTaskID: "t0", metaSourceETag: `"s"`}}
	for _, tc := range []struct {
		desc          string
		src, dst      map[string]storage.StoredFile
		ok, permanent bool
		want          []string
	}{
		{desc: "this task's copy", src: map[string]storage.StoredFile{"a": info}, dst: map[string]storage.StoredFile{"b": ours},
			ok: true, want: []string{"dst.Info b", "src.Info a"}},
		{desc: "source already gone", dst: map[string]storage.StoredFile{"b": ours},
			ok: true, want: []string{"dst.Info b", "src.Info a"}},
		{desc: "another writer's destination", src: map[string]storage.StoredFile{"a": info}, dst: map[string]storage.StoredFile{"b": theirs},
			want: []string{"dst.Info b"}},
		{desc: "source is the copy", src: map[string]storage.StoredFile{"a": ours}, dst: map[string]storage.StoredFile{"b": ours},
			permanent: true, want: []string{"dst.Info b", "src.Info a"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			c := &calls{}
			src := &fakeObjects{name: "src", calls: c, files: tc.src}
			dst := &fakeObjects{name: "dst", calls: c, files: tc.dst}
			_, err := confirmMove(context.Background(), "t1", src, tasks.Location{Bucket: "x", Key: "a"}, dst, tasks.Location{Bucket: "y", Key: "b"}, info)
			switch {
			case tc.ok && err != nil:
				t.Errorf("confirmMove = %v; want nil", err)
			case !tc.ok && err == nil:
				t.Error("confirmMove = nil; want the source kept")
			case !tc.ok && errors.Is(err, asynq.SkipRetry) != tc.permanent:
				t.Errorf("confirmMove = %v: permanent %v, want %v", err, !tc.permanent, tc.permanent)
			}
			if diff := cmp.Diff(tc.want, c.list()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeChecksums is a checksumSource whose profile proves integrity or not,
// recording each read of an object for its checksum; the read answers sum
// or err.
type fakeChecksums struct {
	calls  *calls
	client *storage.Client
	sum    storage.Checksum
	err    error
}

func (s *fakeChecksums) Client() *storage.Client { return s.client }

func (s *fakeChecksums) ChecksumObject(_ context.Context, key, etag string) (storage.Checksum, error) {
	s.calls.add("src.ChecksumObject %s %s", key, etag)
	return s.sum, s.err
}

// TestSameChecksumReadsOnlyWhatItMust: a move proves the destination's
// CRC32C equal to the source's, reading the source again only when nothing
// told its checksum already (it records none, it was streamed, and its
// bytes could not be checked against its ETag while read); a server-side
// copy, a profile without integrity and a destination without a checksum
// have nothing to compare. Any mismatch is an ErrIntegrity; a failed read
// is not.
func TestSameChecksumReadsOnlyWhatItMust(t *testing.T) {
	t.Parallel()
	client := func(integrity bool) *storage.Client {
		c, err := storage.NewClientWithAPI(storage.Config{Provider: storage.ProviderGeneric, EndpointURL: "http://fake.invalid",
			Integrity: &integrity}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	body := storage.ChecksumOf([]byte("the source's bytes"))
	other := storage.ChecksumOf([]byte("other bytes"))
	read := []string{`src.ChecksumObject a "s"`}
	for _, tc := range []struct {
		desc                    string
		recorded, got           string // the source's record, the destination's
		serverSide, readChecked bool
		noIntegrity             bool
		readErr                 error
		wantErr                 error // what err must wrap; nil: no error
		want                    []string
	}{
		{desc: "recorded, equal", recorded: body.String(), got: body.String()},
		{desc: "recorded, different", recorded: body.String(), got: other.String(), wantErr: storage.ErrIntegrity},
		{desc: "server-side, no record", got: other.String(), serverSide: true},
		{desc: "integrity off on the source", got: other.String(), noIntegrity: true},
		{desc: "checked against its ETag while read", got: other.String(), readChecked: true},
		{desc: "destination without a checksum", got: ""},
		{desc: "read again, equal", got: body.String(), want: read},
		{desc: "read again, different", got: other.String(), wantErr: storage.ErrIntegrity, want: read},
		{desc: "read again fails", got: body.String(), readErr: storage.ErrSourceChanged, wantErr: storage.ErrSourceChanged, want: read},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			c := &calls{}
			src := &fakeChecksums{calls: c, client: client(!tc.noIntegrity), sum: body, err: tc.readErr}
			info := storage.StoredFile{Key: "a", Size: body.Size, ETag: `"s"`, Checksum: tc.recorded}
			err := sameChecksum(context.Background(), src, tasks.Location{Bucket: "x", Key: "a"}, info,
				tasks.Location{Bucket: "y", Key: "b"}, storage.StoredFile{Key: "b", Checksum: tc.got}, tc.serverSide, tc.readChecked)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Errorf("sameChecksum = %v; want nil", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("sameChecksum = %v; want %v", err, tc.wantErr)
			case tc.wantErr != storage.ErrIntegrity && errors.Is(err, storage.ErrIntegrity):
				t.Errorf("sameChecksum = %v; want no ErrIntegrity", err)
			}
			if diff := cmp.Diff(tc.want, c.list()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
}
