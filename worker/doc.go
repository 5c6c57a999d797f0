// Package worker runs ferry's tasks: it is the consumer side of the queue.
// A Worker takes tasks from Redis with asynq, moves bytes with the storage
// package, keeps multipart checkpoints with the checkpoint package, and
// reports progress, results and webhooks back through Redis.
//
// It is not the producer side (the tasks package builds, validates and
// enqueues tasks, and reads progress back: any process may import it
// without pulling in S3), nor the S3 client (storage), nor configuration
// reading (cmd/ferry decodes files, flags and environment into Config and
// passes it in; nothing here reads the environment).
//
// # The life of a task
//
// Handler wraps one handler per task type (handlers.go: put, upload, copy,
// move, delete; migrate.go; batch.go; notify.go; janitor.go) in middleware,
// outermost first:
//
//  1. notifyOnEnd (notify.go) enqueues the transfer's webhook once it has
//     ended for good: completed, archived or cancelled — never on a retry.
//  2. recoverPanics turns a panic into the task's error.
//  3. logTasks logs and measures every run, by type and outcome.
//  4. cancellable (cancel.go) gives the run its own context, which a user's
//     cancel (ferry cancel, the HTTP API, the dashboard, asynqmon) ends at
//     once; a shutdown or a lost lease ends it differently, so the task is
//     retried rather than archived.
//
// A handler decodes and validates its payload (a bad one is archived at
// once with its reason, asynq.SkipRetry), checks its sources against the
// worker's allow_dirs, allow_url_hosts and profiles (sources.go,
// profiles.go), and runs. Puts, uploads and streamed copies share
// transfer (transfer.go), told what to write by a transferSpec (copies and
// moves by a copySpec; a zero field is the worker's default): one
// PutObject up to a part size, else a plan kept in a checkpoint, parts sent
// with bounded concurrency and memory, each finished part's ETag and CRC32C
// recorded in the checkpoint, and Complete checked against the
// whole-object checksum. Progress is
// published as the run goes (progress.go). Errors are classified once
// (classify): what a retry cannot fix is archived, the rest is retried
// with transferDelay.
//
// # When a worker stops
//
// A graceful shutdown (Run's context ends) stops uploads at a part
// boundary with their checkpoint kept, and asynq hands the tasks back at
// once. A worker killed outright loses its runs' ownership within seconds:
// another worker's takeover loop (takeover.go) continues each resumable
// task — checkpointed uploads and copies, migrations, recursive deletes,
// batches — from its own record, under the same task id, fenced so two
// workers never write for one task. The janitor (janitor.go) aborts
// multipart uploads that ferry created (registry.go) for tasks that are
// gone, and never touches anyone else's.
//
// # What it uses of storage and checkpoint
//
// The worker reaches the checkpoint store, and a transfer's destination
// bucket, through small interfaces it declares next to each consumer, with
// only the methods that consumer calls, in the storage and checkpoint
// packages' own signatures, so that *checkpoint.Store and *storage.S3
// satisfy them and a test can put a call-recording fake in their place
// (upload_fakes_test.go): transfer.go's transferTarget, uploadTarget,
// putTarget and uploadCheckpoints for a transfer and its multipart upload
// (putSpec says what a one-request write writes), sources.go's s3Object
// for a source read from S3 (a batch's streamed copies use both),
// takeover.go's ownership, janitor.go's
// checkpointIndex, and handlers.go's objectInfo and checksumSource for a
// move's last checks. Worker.ckpt is the union of the checkpoint ones
// (checkpoints). The rest still takes *storage.S3: the copy and move
// handlers' opening of both buckets and server-side CopyFrom (whose source
// is a *storage.S3), a move's deletes, migrations, batches, deletes and
// the janitor's buckets.
//
// docs/worker.md tells the same story for operators, with the protocols
// (checkpoints, cancel, takeover) and their races.
package worker
