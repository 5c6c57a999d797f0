package tasks

import "strconv"

// Every Redis key and channel name this package reads or writes. Keys are
// hash-tagged on the task id ({id}) so that a task's keys share a Redis
// Cluster slot with its checkpoint (ferry:ckpt:{id}).

// ProgressChannel is the pub/sub channel on which every progress update is
// published, as the JSON encoding of Progress.
const ProgressChannel = "ferry:progress"

// ProgressKey is the hash holding the last progress value of a task.
func ProgressKey(taskID string) string { return "ferry:progress:{" + taskID + "}" }

// CancelKey is the flag ("1") set by Client.Cancel for a task to cancel. It
// outlives a missed message: handlers check it between parts (Cancelled),
// and the janitor aborts a cancelled task's uploads without waiting for
// their TTL.
func CancelKey(taskID string) string { return "ferry:cancel:{" + taskID + "}" }

// CancelChannel is the pub/sub channel on which Client.Cancel publishes the
// id of a task it cancelled, after setting its CancelKey (and archiving it
// when it was not running). Workers subscribe: the one running the task
// stops it at once; for a task that was not running, one of them aborts
// the multipart uploads it recorded for it.
const CancelChannel = "ferry:cancel"

// throughputKey is the counter of the bytes every worker moved in the
// throughput bucket starting at Unix second bucket (see throughput.go). The
// hash tag is shared by every bucket, so one MGET reads the window on a
// Redis Cluster; each key expires on its own (EXPIREAT).
func throughputKey(bucket int64) string {
	return "ferry:throughput:{tp}:" + strconv.FormatInt(bucket, 10)
}
