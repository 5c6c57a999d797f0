package worker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/checkpoint"
	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// TestKilledUploadRecordsExactChecksum: a worker is SIGKILLed mid-upload
// and another finishes the upload from the checkpoint. The checkpoint holds
// each finished part's CRC32C (the one computed from the bytes sent) and
// the object's; the object completes recording, in its ferry-crc32c
// metadata, the CRC32C of the file, and the finished parts are not sent
// again.
func TestKilledUploadRecordsExactChecksum(t *testing.T) {
	t.Parallel()
	const partConc, parts = 2, 24
	b := setup(t, nil)
	ctx := context.Background()
	path, data := testenv.RandomFile(t, b.dir, "sum.bin", parts*storage.MinPartSize-123)
	key := "resume/sum.bin"
	id := b.enq(t)(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path}, Dest: s3loc("", b.bucket, key)}))
	first := b.startChild(t, "first", partConc)
	waitParts(t, b, id, 6)
	first.kill(t)

	want := storage.ChecksumOf(data).String()
	h, err := b.rdb.HGetAll(ctx, "ferry:ckpt:{"+id+"}").Result()
	if err != nil || len(h) == 0 {
		t.Fatalf("no checkpoint after the kill (%v)", err)
	}
	if h["checksum"] != want {
		t.Errorf("checkpoint plan checksum = %q, want the file's CRC32C %q", h["checksum"], want)
	}
	recorded := 0
	for f, v := range h {
		ns, ok := strings.CutPrefix(f, "p:")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(ns)
		chunk := data[(n-1)*storage.MinPartSize : min(n*storage.MinPartSize, len(data))]
		if _, sum, _ := strings.Cut(v, "|crc32c="); sum != storage.ChecksumOf(chunk).String() {
			t.Errorf("checkpointed part %d = %q: want its CRC32C %s", n, v, storage.ChecksumOf(chunk))
		}
		recorded++
	}
	if recorded < 6 {
		t.Fatalf("only %d parts checkpointed", recorded)
	}

	second := b.startChild(t, "second", partConc)
	if p := b.wait(t, id, 4*time.Minute); p.State != tasks.StateCompleted || p.ResumedFrom == 0 {
		t.Fatalf("after the kill the upload ended %+v (log %s)", p, second.Log)
	}
	checkObject(t, b, key, sha256.Sum256(data))
	info, err := b.storage(t).Info(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Metadata[storage.MetaChecksum] != want || info.Checksum != want {
		t.Errorf("object records checksum %q (Checksum %q), want the file's CRC32C %q", info.Metadata[storage.MetaChecksum], info.Checksum, want)
	}
	a, c := first.partsUploaded(t), second.partsUploaded(t)
	twice := 0
	for n := range c {
		if a[n] {
			twice++
		}
	}
	if twice > partConc || len(a)+len(c)-twice != parts {
		t.Errorf("parts uploaded: first %d, second %d, %d twice; want %d in all, at most %d twice", len(a), len(c), twice, parts, partConc)
	}
	t.Logf("killed after %d checkpointed parts; second worker sent %d of %d parts; recorded %s", recorded, len(c), parts, want)
}

// TestResumeCombinesCheckpointedChecksums: the object's checksum of a
// resumed upload is combined from the checkpoint's part checksums, not
// assumed. A checkpoint whose part 1 records the checksum of other bytes
// than the ones the object must have makes Complete refuse: the upload is
// aborted, and the retry uploads everything again and completes with the
// right bytes and checksum.
func TestResumeCombinesCheckpointedChecksums(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	s := b.storage(t)
	path, data := testenv.RandomFile(t, b.dir, "combine.bin", 2*storage.MinPartSize+10)
	key := "resume/combine.bin"
	sum := storage.ChecksumOf(data).String()
	id := "combine-" + fmt.Sprint(time.Now().UnixNano())
	u, err := s.StartMultipartUpload(ctx, key, &storage.MultipartOptions{PartSize: storage.MinPartSize,
		Metadata: map[string]string{"ferry-task-id": id, storage.MetaChecksum: sum}})
	if err != nil {
		t.Fatal(err)
	}
	store := checkpoint.New(b.rdb, checkpoint.Options{})
	if err := store.Create(ctx, id, checkpoint.Plan{UploadID: u.UploadID, Profile: "default", Bucket: b.bucket,
		Key: key, PartSize: storage.MinPartSize, PartCount: 3, TotalSize: int64(len(data)),
		Fingerprint: worker.FileFingerprint(t, path), CreatedAt: time.Now(), Checksum: sum}); err != nil {
		t.Fatal(err)
	}
	p, err := s.UploadPart(ctx, u, 1, data[:storage.MinPartSize])
	if err != nil {
		t.Fatal(err)
	}
	wrong := storage.ChecksumOf(data[1 : storage.MinPartSize+1]).String()
	if err := store.RecordPart(ctx, id, u.UploadID, checkpoint.Part{Number: 1, ETag: p.ETag, Size: p.Size, Checksum: wrong}); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.enqueue(t, mustTask(tasks.NewUploadTask(tasks.UploadPayload{Source: tasks.Location{Path: path},
		Dest: s3loc("", b.bucket, key)})), nil, asynq.TaskID(id))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
		t.Fatalf("upload ended %+v", p)
	}
	checkObject(t, b, key, sha256.Sum256(data))
	info, err := s.Info(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Metadata[storage.MetaChecksum] != sum {
		t.Errorf("object records checksum %q, want %q", info.Metadata[storage.MetaChecksum], sum)
	}
	ti := b.info(t, id)
	if ti.Retried != 1 || !strings.Contains(ti.LastErr, "integrity check failed") {
		t.Errorf("task retried %d times, last error %q: want one retry after Complete refused the parts (integrity check failed)", ti.Retried, ti.LastErr)
	}
	if _, err := s.ListParts(ctx, key, u.UploadID); err == nil {
		t.Error("the upload whose parts did not combine to the object's checksum was not aborted")
	}
}

// TestMoveCarriesChecksum: a move, server-side (another bucket on the same
// server) or streamed (another server), small or multipart, leaves a
// destination recording the source's CRC32C (ferry-crc32c), which is the
// CRC32C of the bytes, and deletes its source only then. A streamed move
// of a source whose record does not match its bytes never completes: it
// fails naming the integrity check and keeps its source.
func TestMoveCarriesChecksum(t *testing.T) {
	t.Parallel()
	var far *testenv.S3Server
	b := setup(t, func(c *worker.Config) {
		smallCopyParts(c)
		far = farProfile(t, c)
	})
	b.start(t)
	ctx := context.Background()
	s := b.storage(t)
	farBucket, nearBucket := far.Bucket(t), b.s3.Bucket(t)
	type move struct {
		id, src string
		dst     *storage.S3
		sum     string
	}
	var moves []move
	for sz, n := range map[string]int{"small": 1000, "multipart": 2*storage.MinPartSize + 7} {
		for _, path := range []struct{ name, profile, bucket string }{{"server-side", "", nearBucket}, {"streamed", "far", farBucket}} {
			data := randomBytes(n)
			src := "mv/" + sz + "-" + path.name
			if _, err := s.PutLarge(ctx, src, bytes.NewReader(data), &storage.LargeOptions{Size: int64(n), PartSize: storage.MinPartSize}); err != nil {
				t.Fatal(err)
			}
			id := b.enq(t)(tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, src), Dest: s3loc(path.profile, path.bucket, src)}))
			dst := b.storageOn(t, nearBucket)
			if path.profile == "far" {
				dst = storageOf(t, far, farBucket)
			}
			moves = append(moves, move{id, src, dst, storage.ChecksumOf(data).String()})
		}
	}
	for _, m := range moves {
		if p := b.wait(t, m.id, 2*time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("move %s: %+v (%s)", m.src, p, b.info(t, m.id).LastErr)
		}
		d, err := m.dst.Info(ctx, m.src)
		if err != nil {
			t.Fatal(err)
		}
		if d.Metadata[storage.MetaChecksum] != m.sum {
			t.Errorf("move %s: destination records %q, want the source's CRC32C %q", m.src, d.Metadata[storage.MetaChecksum], m.sum)
		}
		if ok, err := s.Exists(ctx, m.src); ok || err != nil {
			t.Errorf("move %s completed but its source is still there (%v)", m.src, err)
		}
	}

	// A source whose record lies about its bytes.
	data := randomBytes(2*storage.MinPartSize + 7)
	lie := storage.ChecksumOf(data[1:]).String()
	if _, err := b.s3.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: &b.bucket, Key: aws.String("mv/lying"),
		Body: bytes.NewReader(data), Metadata: map[string]string{storage.MetaChecksum: lie}}); err != nil {
		t.Fatal(err) // ferry itself refuses to write bytes under a record that does not match them
	}
	id := b.enq(t)(tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, "mv/lying"), Dest: s3loc("far", farBucket, "mv/lying")}))
	if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateFailed || !strings.Contains(b.info(t, id).LastErr, "integrity check failed") {
		t.Errorf("move of a source whose checksum does not match its bytes: %+v (%s); want failed naming the integrity check", p, b.info(t, id).LastErr)
	}
	if ok, err := s.Exists(ctx, "mv/lying"); !ok || err != nil {
		t.Errorf("the move deleted a source it could not prove copied (%v)", err)
	}
	if ok, _ := storageOf(t, far, farBucket).Exists(ctx, "mv/lying"); ok {
		t.Error("the move left a destination from bytes that do not match their record")
	}
}

// storageOf opens bucket on the test server srv.
func storageOf(t testing.TB, srv *testenv.S3Server, bucket string) *storage.S3 {
	t.Helper()
	cfg := srv.Profile()
	cfg.Bucket = bucket
	s, err := storage.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMigrateComparesChecksums: a migration with CheckHeaders (which HEADs
// both sides of every object of the same size) compares the CRC32Cs both
// sides record. A destination with the source's size, ETag, record of its
// source and headers, but another recorded CRC32C, is copied again; once
// it records the source's, a re-run skips it. (Without CheckHeaders equal
// ETags — MD5s of the bytes — decide from the listings: see
// TestMigrateRerunCostsNothing.)
func TestMigrateComparesChecksums(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.start(t)
	ctx := context.Background()
	other := b.s3.Bucket(t)
	if _, err := b.storage(t).PutBytes(ctx, "mig/a", randomBytes(1000), nil); err != nil {
		t.Fatal(err)
	}
	migrate := func() worker.MigrateReport {
		t.Helper()
		id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: s3loc("", b.bucket, "mig/"), Dest: s3loc("", other, "mig/"), CheckHeaders: true}))
		if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("migrate: %+v (%s)", p, b.info(t, id).LastErr)
		}
		return migrateReport(t, b, id)
	}
	if rep := migrate(); rep.Copied != 1 {
		t.Fatalf("first run: %+v; want 1 copied", rep)
	}
	if rep := migrate(); rep.Copied != 0 || rep.Skipped != 1 {
		t.Fatalf("unchanged re-run: %+v; want 1 skipped", rep)
	}
	d := b.storageOn(t, other)
	info, err := d.Info(ctx, "mig/a")
	if err != nil {
		t.Fatal(err)
	}
	want := info.Checksum
	meta := maps.Clone(info.Metadata)
	meta[storage.MetaChecksum] = storage.ChecksumOf([]byte("other bytes")).String()
	in := &s3.CopyObjectInput{Bucket: &other, Key: aws.String("mig/a"), CopySource: aws.String(other + "/mig/a"),
		MetadataDirective: types.MetadataDirectiveReplace, Metadata: meta}
	if info.ContentType != "" {
		in.ContentType = aws.String(info.ContentType)
	}
	if _, err := b.s3.Client().CopyObject(ctx, in); err != nil {
		t.Fatal(err)
	}
	if rep := migrate(); rep.Copied != 1 {
		t.Errorf("re-run with a destination recording another CRC32C: %+v; want it copied again", rep)
	}
	if got, err := d.Info(ctx, "mig/a"); err != nil || got.Checksum != want {
		t.Errorf("after the re-run the destination records %q (%v); want the source's %q", got.Checksum, err, want)
	}
}
