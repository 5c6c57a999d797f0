package worker

// Redis keys the worker owns, all built here. Keys of one migration share
// the hash tag {<task_id>} so they live in one Redis Cluster slot and can be
// updated together in a transaction or script.

// janitorBucketsKey is a set of "profile\x00bucket" that workers have run
// multipart uploads in: the buckets the janitor lists (to count the uploads
// of other applications there, and to find an upload whose id its
// registration never received).
const janitorBucketsKey = "ferry:janitor:buckets"

// uploadsKey is the registry of every multipart upload ferry creates (see
// registry.go): a hash from uploadField (or intentField, before the upload
// id is known) to the JSON of an uploadEntry. It is one key, so one Redis
// Cluster slot; it holds one small entry per upload in flight.
const uploadsKey = "ferry:uploads"

// uploadField is the registry field of task's upload uploadID. Fields start
// with the task id and a NUL, so one task's entries are found with
// HSCAN MATCH (see taskFieldPattern).
func uploadField(task, uploadID string) string { return task + "\x00u:" + uploadID }

// intentField is the registry field of an upload task is about to create,
// token telling two such intents apart.
func intentField(task, token string) string { return task + "\x00i:" + token }

// cancelAbortKey, while it exists, names the worker aborting the uploads
// of a task cancelled while not running: the others leave them to it.
func cancelAbortKey(id string) string { return "ferry:abort:{" + id + "}" }

// migrateKey is a migration's state hash: the listing cursor and counters.
func migrateKey(id string) string { return "ferry:migrate:{" + id + "}" }

// migratePendingKey is the set of a migration's copy tasks not yet
// finished: the fan-out window, so its size is bounded by the window.
func migratePendingKey(id string) string { return "ferry:migrate:{" + id + "}:pending" }

// migrateBatchesKey is a hash of a migration's batches not yet counted,
// each with its number of objects: with migratePendingKey (its copies),
// the window.
func migrateBatchesKey(id string) string { return "ferry:migrate:{" + id + "}:batches" }

// migrateOutboxKey is a hash of the tasks of a migration's committed page
// not yet known to be enqueued (task id → payload): at most one page's.
func migrateOutboxKey(id string) string { return "ferry:migrate:{" + id + "}:outbox" }

// migrateFailuresKey is a hash of failed keys and their reasons (capped).
func migrateFailuresKey(id string) string { return "ferry:migrate:{" + id + "}:failures" }

// migrateIgnoredKey is a hash of a local tree's entries passed over
// (symlinks, special files) and why: a sample for the report, capped.
func migrateIgnoredKey(id string) string { return "ferry:migrate:{" + id + "}:ignored" }

// migrateWakeKey is a list a migration's batch or copy pushes its id to
// when it ends, which the migration waits on (BLPOP) between its looks at
// its window: it counts the end at once instead of at its next poll, and
// inspects that child alone.
func migrateWakeKey(id string) string { return "ferry:migrate:{" + id + "}:wake" }

// migrateBackoffKey, while it exists, holds back every copy of the
// migration: set with a PX expiry when one of them is throttled (SlowDown).
func migrateBackoffKey(id string) string { return "ferry:migrate:{" + id + "}:backoff" }

// batchKey is a batch's record of its finished items: a bitmap, bit i set
// when item i is written (about 63 bytes for 500 items). Deleted when the
// batch finishes; it never outlives a running or resumable batch by more
// than batchStateTTL.
func batchKey(id string) string { return "ferry:batch:{" + id + "}" }

// batchBytesKey counts the bytes of the items batchKey records as finished
// (what was written, not the producer's estimate); it lives and dies with
// batchKey.
func batchBytesKey(id string) string { return "ferry:batch:{" + id + "}:bytes" }

// sourceChangesKey counts how often a task started over because its source
// changed mid-transfer (see maxSourceRestarts); it expires a day after the
// last change.
func sourceChangesKey(id string) string { return "ferry:srcchanged:{" + id + "}" }

// integrityFailuresKey counts how often a task started over because the
// bytes it read failed their checksum (see maxIntegrityRestarts).
func integrityFailuresKey(id string) string { return "ferry:integrity:{" + id + "}" }

// takeoverIndexKey is a hash of the task ids whose upload a worker has owned
// (see checkpoint.Claim), each with its queue: what the takeover loop scans
// for uploads whose owner stopped renewing. No hash tag: it is updated with
// its own commands, never inside a script with a task's keys.
const takeoverIndexKey = "ferry:own:index"
