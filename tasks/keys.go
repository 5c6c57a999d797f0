package tasks

// Every Redis key and channel name this package reads or writes. Keys are
// hash-tagged on the task id ({id}) so that a task's keys share a Redis
// Cluster slot with its checkpoint (ferry:ckpt:{id}).

// ProgressChannel is the pub/sub channel on which every progress update is
// published, as the JSON encoding of Progress.
const ProgressChannel = "ferry:progress"

// CancelChannel is the pub/sub channel on which Client.Cancel publishes the id
// of a task to cancel. Handlers also poll CancelKey, so a missed message only
// delays the cancel.
const CancelChannel = "ferry:cancel"

// ProgressKey is the hash holding the last progress value of a task.
func ProgressKey(taskID string) string { return "ferry:progress:{" + taskID + "}" }

// CancelKey is the flag ("1") set by Client.Cancel for a task to cancel.
func CancelKey(taskID string) string { return "ferry:cancel:{" + taskID + "}" }
