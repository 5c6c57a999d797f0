package bench

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/tasks"
	"github.com/ferryhq/ferry/worker"
)

// BenchmarkMigrateEndpoints (issue 12): BenchmarkMigrate's workload
// migrated between two S3 endpoints — the shared versitygw and a second
// versitygw process of its own (testenv.OtherS3: another port on
// 127.0.0.1 and another data directory, stopped when the binary ends), the
// worker's profiles "default" and "other" — by ferry migrate and by a
// direct program doing GET + PUT from 16 goroutines, alternating which
// goes first (a round's bucket is created in its timing, on both paths).
// Both have 16 transfers in flight: worker slots 5 (the
// migration and 4 batches or copies), 4 items in flight per batch.
// Target: ratio ≥ 0.9.
func BenchmarkMigrateEndpoints(b *testing.B) {
	e := newEnv(b)
	other := testenv.OtherS3(b)
	e.startWorker(b, func(c *worker.Config) {
		c.Concurrency, c.BatchConcurrency = 5, 4
		c.Profiles["other"] = versity(other)
	})
	src := e.s3.Bucket(b)
	e.fillMigrationSource(b, src)
	const objects = migSmall + migLarge

	alternate(b, objects, "", func(string) {
		_, rep := e.migrate(b, tasks.Location{Bucket: src}, tasks.Location{Profile: "other", Bucket: other.Bucket(b)}, 10*time.Minute)
		if rep.Copied != objects || rep.Failed != 0 {
			b.Fatalf("migration: %+v", rep)
		}
	}, func(string) { directGetPut(b, e.s3.Client(), other.Client(), src, other.Bucket(b)) })
}

// directGetPut is the direct SDK path between two endpoints: ListObjectsV2
// pages of src on from, each object read whole with GetObject and written
// to dst on to with one PutObject, from migConc goroutines.
func directGetPut(tb testing.TB, from, to *s3.Client, src, dst string) {
	forEachListed(tb, from, src, migConc, func(ctx context.Context, key string) error {
		out, err := from.GetObject(ctx, &s3.GetObjectInput{Bucket: &src, Key: &key})
		if err != nil {
			return err
		}
		data, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			return err
		}
		_, err = to.PutObject(ctx, &s3.PutObjectInput{Bucket: &dst, Key: &key, Body: bytes.NewReader(data),
			ContentLength: aws.Int64(int64(len(data))), ContentType: out.ContentType})
		return err
	})
}
