package worker

import (
	"testing"

	"github.com/hibiken/asynq"

	"github.com/ferryhq/ferry/internal/testenv"
	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// TestMigrationCopyFitsPartSize: a migration's part_size is one preference
// for a whole tree, so an object too big for 10,000 parts of it gets its
// copy enqueued with the part size raised to fit (the same size the worker
// would choose), not a copy refused by validation — which would fail the
// whole migration.
func TestMigrationCopyFitsPartSize(t *testing.T) {
	t.Parallel()
	m := &migration{id: testenv.UniqueName("mig"), queue: testenv.UniqueName("q"), p: tasks.MigratePayload{
		Source:   tasks.Location{Bucket: "src", Key: "photos/"},
		Dest:     tasks.Location{Bucket: "dst", Key: "photos/"},
		PartSize: storage.MinPartSize,
	}}
	const size = 100 << 30 // 100 GiB: 20,480 parts of 5 MiB
	task, _, err := m.copyTask(storage.StoredFile{Key: "photos/huge.bin", Size: size, ETag: "e1"}, "photos/huge.bin")
	if err != nil {
		t.Fatalf("copyTask of a 100 GiB object with part_size 5 MiB: %v", err)
	}
	p, err := tasks.DecodeCopy(asynq.NewTask(task.Type(), task.Payload()))
	if err != nil {
		t.Fatalf("the copy does not decode: %v", err)
	}
	if want := storage.PartSizeFor(size, storage.MinPartSize); p.PartSize != want {
		t.Errorf("copy part_size = %d, want %d (fits %d bytes in 10,000 parts)", p.PartSize, want, int64(size))
	}
}
