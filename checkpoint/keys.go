package checkpoint

import "strconv"

// Every Redis key and hash field name this package uses is built here.
//
// The Lua scripts in store.go refer to fieldUploadID and fieldPartCount by
// their literal names ("upload_id", "part_count"): change them together.

// indexKey is the sorted set of task ids scored by the unix time, in
// milliseconds, of their last Create or RecordPart. It has no hash tag: in
// Redis Cluster it lives in its own slot, so it is updated with separate
// commands, never inside a script that touches a checkpoint hash.
const indexKey = "ferry:ckpt:index"

// checkpointKey returns the hash holding the plan and parts of one task:
// ferry:ckpt:{<task_id>}. The braces are a Redis Cluster hash tag, so every
// per-task key of ferry (see also the progress keys) lands in one slot.
func checkpointKey(taskID string) string {
	return "ferry:ckpt:{" + taskID + "}"
}

// Plan fields of the checkpoint hash.
const (
	fieldUploadID    = "upload_id"
	fieldProfile     = "profile"
	fieldBucket      = "bucket"
	fieldKey         = "key"
	fieldPartSize    = "part_size"
	fieldPartCount   = "part_count"
	fieldTotalSize   = "total_size"
	fieldFingerprint = "fingerprint"
	fieldCreatedAt   = "created_at"
	// fieldChecksum and fieldChecksumMode are optional: a checkpoint of an
	// older ferry has none.
	fieldChecksum     = "checksum"
	fieldChecksumMode = "checksum_mode"
)

// partFieldPrefix starts the field of one finished part: p:<n> =
// <etag>|<size>, or <etag>|<size>|crc32c=<checksum> when the part's
// checksum is known.
const partFieldPrefix = "p:"

// partChecksumPrefix starts the optional last segment of a part value. A
// size is decimal, so the segment cannot be mistaken for one.
const partChecksumPrefix = "crc32c="

// partField returns the hash field of part n, e.g. "p:7".
func partField(n int) string {
	return partFieldPrefix + strconv.Itoa(n)
}

// partValue encodes a part as <etag>|<size>[|crc32c=<checksum>]. Decoding
// takes the checksum segment off by its prefix, then splits at the last
// '|', so an ETag containing '|' still round-trips.
func partValue(p Part) string {
	v := p.ETag + "|" + strconv.FormatInt(p.Size, 10)
	if p.Checksum != "" {
		v += "|" + partChecksumPrefix + p.Checksum
	}
	return v
}

// ownerKey holds the fencing token of the worker that currently owns the
// task: ferry:own:{<task_id>}, with a short PX expiry its owner renews.
// Same hash tag as the checkpoint (and every other key of the task), so
// RecordPart can check it in the same script and Fenced in the same
// transaction.
func ownerKey(taskID string) string {
	return "ferry:own:{" + taskID + "}"
}

// doneKey marks a task a takeover ended, with its outcome (see MarkDone):
// ferry:own:{<task_id>}:done.
func doneKey(taskID string) string {
	return "ferry:own:{" + taskID + "}:done"
}

// tokenKey is the counter fencing tokens come from (INCR). No hash tag: it
// is read with its own command before the claim.
const tokenKey = "ferry:own:token"
