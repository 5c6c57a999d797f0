// Package tasks is ferry's producer side: the task type names, their JSON
// payloads and validation, the constructors that turn a payload into an
// *asynq.Task with sensible default options, a Client that enqueues, and the
// progress and cancel protocols shared with the worker.
//
// It imports asynq and go-redis only. It never runs a transfer: the worker
// package does, and it depends on this package, not the other way round.
//
// # Payloads
//
// A payload is plain JSON in Redis, visible to anyone who can read the queue
// (asynqmon included). Locations therefore carry a profile name for S3, never
// credentials, and URLs with user:password@ are refused. Every payload is
// validated when the task is built (NewPutTask, ...) and again when the worker
// decodes it (DecodePut, ...); a decode or validation error wraps
// asynq.SkipRetry, because retrying a bad payload cannot succeed.
//
// # Batches
//
// Many small objects go in TypeBatch tasks (NewBatchTask, Client.EnqueueBatch):
// up to MaxBatchItems objects or MaxBatchBytes bytes per task, each a put
// from a local file or a copy from S3, validated as a put's or copy's would
// be; objects of MaxBatchObjectSize or more are refused (they get their own
// upload or copy task). One task per object costs several Redis round trips
// and two kept keys per object; a batch costs that once per batch.
// Client.EnqueueBatch cuts a job into SplitBatches batches when it is small
// (SplitBatch), so that every worker slot has work to its end. The worker
// records finished items in one small key per batch, in groups (every
// 100 ms), and resumes without writing them again — but for those finished
// since the last write; the result is a compact BatchResult.
//
// # Default options
//
// Constructors attach MaxRetry (25 for upload, copy, move, migrate and batch,
// where a worker crash counts as a retry; 10 otherwise), Retention(24h; 15
// minutes for batches, BatchRetention) so results and errors stay visible and TaskID conflicts keep working after completion, and a
// Timeout sized from the object (TimeoutFor) instead of asynq's 30 minutes.
// Options passed by the caller come later and win.
//
// # Progress and cancel
//
// The worker writes a last-value hash per task (ProgressKey) and publishes
// each change as JSON on ProgressChannel (PublishProgress); the hash fields
// and the JSON both come from the Progress struct. Client.Progress reads one
// task, falling back to asynq's own state when no hash exists yet.
// SubscribeProgress is the one subscriber to the channel, telling its reader
// when to re-read the hashes after a reconnect; Client.Watch and the
// dashboard use it, and both keep a value only if it supersedes the last
// (Progress.Supersedes). Client.Cancel sets a flag (CancelKey) and publishes
// the id on CancelChannel: the worker running the task stops it at once and
// archives it as cancelled (asynq's Inspector.CancelProcessing alone ends in
// a retry); tasks not running are archived directly, and a worker aborts the
// multipart uploads their earlier runs left. Handlers also check the flag
// between parts (Cancelled), for a missed message. Workers also add the bytes
// they move to per-10-second counters (PublishProgressMoved,
// RecordThroughput) that Throughput reads as the fleet's aggregate
// throughput of the last 15 minutes; each counter expires on its own, so
// they cost a few KiB of Redis in all. All Redis key names live in keys.go.
package tasks
