package worker

// Redis keys the worker owns, all built here. Keys of one migration share
// the hash tag {<task_id>} so they live in one Redis Cluster slot and can be
// updated together in a transaction or script.

// janitorBucketsKey is a set of "profile\x00bucket" that workers have run
// multipart uploads in: the buckets the janitor scans for orphans.
const janitorBucketsKey = "ferry:janitor:buckets"

// migrateKey is a migration's state hash: the listing cursor and counters.
func migrateKey(id string) string { return "ferry:migrate:{" + id + "}" }

// migratePendingKey is the set of a migration's copy tasks not yet
// finished: the fan-out window, so its size is bounded by the window.
func migratePendingKey(id string) string { return "ferry:migrate:{" + id + "}:pending" }

// migrateFailuresKey is a hash of failed keys and their reasons (capped).
func migrateFailuresKey(id string) string { return "ferry:migrate:{" + id + "}:failures" }

// migrateBackoffKey, while it exists, holds back every copy of the
// migration: set with a PX expiry when one of them is throttled (SlowDown).
func migrateBackoffKey(id string) string { return "ferry:migrate:{" + id + "}:backoff" }

// sourceChangesKey counts how often a task started over because its source
// changed mid-transfer (see maxSourceRestarts); it expires a day after the
// last change.
func sourceChangesKey(id string) string { return "ferry:srcchanged:{" + id + "}" }

// takeoverIndexKey is a hash of the task ids whose upload a worker has owned
// (see checkpoint.Claim), each with its queue: what the takeover loop scans
// for uploads whose owner stopped renewing. No hash tag: it is updated with
// its own commands, never inside a script with a task's keys.
const takeoverIndexKey = "ferry:own:index"
