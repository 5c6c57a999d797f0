package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// farProfile adds the profile "far" on a second S3 server (its own
// versitygw): copies between it and "default" are streamed, whatever
// endpoint spellings ferry treats as one.
func farProfile(t testing.TB, c *worker.Config) *testenv.S3Server {
	t.Helper()
	far := testenv.OtherS3(t)
	c.Profiles["far"] = far.Profile()
	return far
}

// smallCopyParts makes the "default" profile copy server-side in parts
// (UploadPartCopy) from 5 MiB, in 5 MiB parts, instead of above 5 GiB.
func smallCopyParts(c *worker.Config) {
	def := c.Profiles["default"]
	def.MultipartCopyThreshold = storage.MinPartSize
	def.CopyPartSize = storage.MinPartSize
	c.Profiles["default"] = def
}

// TestCopiesKeepHeaders: every stored header (Content-Type, -Encoding,
// -Disposition, -Language, Cache-Control, Expires) and the user metadata
// survive every path through the worker, small and multipart: server-side
// copy (CopyObject; UploadPartCopy above the copy threshold, 5 MiB here),
// streamed copy to another server, moves both ways, and migrations both
// ways. A destination whose headers differ from its source is not
// "identical" to a migration: a re-run copies it again.
func TestCopiesKeepHeaders(t *testing.T) {
	t.Parallel()
	var far *testenv.S3Server
	b := setup(t, func(c *worker.Config) {
		smallCopyParts(c)
		far = farProfile(t, c)
	})
	if !b.s3.Real {
		t.Skip("gofakes3 does not store these headers; needs versitygw (make tools)")
	}
	b.start(t)
	near := b.s3
	farBucket := far.Bucket(t)
	nearBucket2 := near.Bucket(t)
	h := testenv.StoredHeaders
	sizes := map[string]int{"small": 5, "multipart": 2*storage.MinPartSize + 7}

	type check struct {
		srv         *testenv.S3Server
		bucket, key string
	}
	var ids []string
	var checks []check
	for sz, n := range sizes {
		for _, path := range []struct {
			name    string
			profile string
			srv     *testenv.S3Server
			bucket  string
		}{{"server-side", "", near, nearBucket2}, {"streamed", "far", far, farBucket}} {
			for _, move := range []bool{false, true} {
				op := "copy"
				if move {
					op = "move"
				}
				src := fmt.Sprintf("%s/%s-%s", sz, path.name, op)
				near.PutObject(t, b.bucket, src, randomBytes(n), h)
				dst := s3loc(path.profile, path.bucket, "out/"+src)
				task, err := tasks.NewCopyTask(tasks.CopyPayload{Source: s3loc("", b.bucket, src), Dest: dst})
				if move {
					task, err = tasks.NewMoveTask(tasks.MovePayload{Source: s3loc("", b.bucket, src), Dest: dst})
				}
				ids = append(ids, b.enqueue(t, task, err))
				checks = append(checks, check{path.srv, path.bucket, "out/" + src})
			}
		}
	}
	for _, id := range ids {
		if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("task %s: %+v (%s)", id, p, b.info(t, id).LastErr)
		}
	}
	for _, c := range checks {
		c.srv.CheckHeaders(t, c.bucket, c.key, h)
	}

	// Migrations, both ways between the servers and within one.
	for sz, n := range sizes {
		near.PutObject(t, b.bucket, "mig/"+sz, randomBytes(n), h)
	}
	migrateChecking := func(src, dst tasks.Location, checkHeaders bool) worker.MigrateReport {
		t.Helper()
		id := b.enq(t)(tasks.NewMigrateTask(tasks.MigratePayload{Source: src, Dest: dst, CheckHeaders: checkHeaders}))
		if p := b.wait(t, id, 2*time.Minute); p.State != tasks.StateCompleted {
			t.Fatalf("migrate %s to %s: %+v (%s)", src, dst, p, b.info(t, id).LastErr)
		}
		return migrateReport(t, b, id)
	}
	migrate := func(src, dst tasks.Location) worker.MigrateReport {
		t.Helper()
		return migrateChecking(src, dst, false)
	}
	for _, m := range []struct {
		src, dst tasks.Location
		srv      *testenv.S3Server
		bucket   string
	}{
		{s3loc("", b.bucket, "mig/"), s3loc("far", farBucket, "mig/"), far, farBucket},
		{s3loc("far", farBucket, "mig/"), s3loc("", b.bucket, "back/"), near, b.bucket},
		{s3loc("", b.bucket, "mig/"), s3loc("", nearBucket2, "mig/"), near, nearBucket2},
	} {
		if rep := migrate(m.src, m.dst); rep.Copied != int64(len(sizes)) {
			t.Errorf("migrate %s to %s: %+v", m.src, m.dst, rep)
		}
		for sz := range sizes {
			m.srv.CheckHeaders(t, m.bucket, m.dst.Key+sz, h)
		}
	}

	// An unchanged destination is identical (ferry's own metadata, such as
	// the checksum it records, does not count) ...
	if rep := migrate(s3loc("", b.bucket, "mig/"), s3loc("far", farBucket, "mig/")); rep.Skipped != int64(len(sizes)) || rep.Copied != 0 {
		t.Errorf("re-run of an unchanged migration: %+v; want both skipped", rep)
	}
	// ... and one that differs only in a header is copied again.
	for sz := range sizes {
		key := "mig/" + sz
		md := map[string]string{} // ferry's record of the source included
		for k, v := range far.Headers(t, farBucket, key) {
			if name, ok := strings.CutPrefix(k, "x-amz-meta-"); ok {
				md[name] = v
			}
		}
		_, err := far.Client().CopyObject(context.Background(), &s3.CopyObjectInput{Bucket: &farBucket, Key: &key,
			CopySource: aws.String(farBucket + "/" + key), MetadataDirective: types.MetadataDirectiveReplace,
			Metadata: md, ContentType: aws.String(h["Content-Type"]), CacheControl: aws.String("no-store")})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A listing carries no headers: by default (like rclone and aws s3 sync)
	// a re-run decides by size and ETag and leaves them (docs/migrate.md,
	// "The trade-off, and --check-headers") ...
	if rep := migrate(s3loc("", b.bucket, "mig/"), s3loc("far", farBucket, "mig/")); rep.Copied != 0 || rep.Skipped != int64(len(sizes)) {
		t.Errorf("default re-run after the destination's headers changed: %+v; want both skipped (listing only)", rep)
	}
	// ... and --check-headers sees them. Within the earlier copies'
	// retention: their finished tasks prove nothing about the destination
	// now (issue 17).
	if rep := migrateChecking(s3loc("", b.bucket, "mig/"), s3loc("far", farBucket, "mig/"), true); rep.Copied != int64(len(sizes)) || rep.Skipped != 0 {
		t.Errorf("re-run with check_headers after the destination's headers changed: %+v; want both copied again", rep)
	}
	for sz := range sizes {
		far.CheckHeaders(t, farBucket, "mig/"+sz, h)
	}
}
