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
// # Default options
//
// Constructors attach MaxRetry (25 for upload, copy and move, where a worker
// crash counts as a retry; 10 otherwise), Retention(24h) so results and errors
// stay visible and TaskID conflicts keep working after completion, and a
// Timeout sized from the object (TimeoutFor) instead of asynq's 30 minutes.
// Options passed by the caller come later and win.
//
// # Progress and cancel
//
// The worker writes a last-value hash per task (ProgressKey) and publishes
// each change as JSON on ProgressChannel (PublishProgress). Client.Progress
// reads one task, falling back to asynq's own state when no hash exists yet;
// Client.Watch streams several. Client.Cancel sets a flag (CancelKey, and a
// message on CancelChannel) that the running handler watches, because asynq's
// Inspector.CancelProcessing always ends in a retry; tasks not yet running are
// archived directly. All Redis key names live in keys.go.
package tasks
