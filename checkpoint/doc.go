// Package checkpoint stores, in Redis, the plan of each multipart upload and
// the ETag (and CRC32C) of every part finished so far, so that a retried or
// recovered task resumes its upload instead of starting over; and which
// worker owns a task, with fencing tokens (owner.go), so that two workers
// never write for one task.
//
// A worker calls Create once when it starts a multipart upload,
// RecordPartOwned after each UploadPart succeeds, Load when a task runs
// again, and Delete after CompleteMultipartUpload or AbortMultipartUpload.
// The janitor calls List to learn which uploads still have a live
// checkpoint. A run Claims its task, Renews the claim while it works, and
// fences its writes with the token (RecordPartOwned, Fenced, CheckOwner
// before a write outside Redis); the run that ends the task records its
// outcome with MarkDone, so that a later run of the same task ends at once
// the same way (Done).
//
// It is not the source of truth for which parts exist: on resume ListParts
// is, and a checkpoint only says which plan (upload id, part size, source
// fingerprint, checksum mode) to resume and which parts it believes are
// done. It knows nothing of S3, the queue or the worker (it imports
// go-redis only), does not decide when to abort, and does not hold
// progress (see the progress keys of the worker).
//
// # Key layout
//
//	ferry:ckpt:{<task_id>}  hash, expires Options.TTL after the last write
//	    upload_id, profile, bucket, key, part_size, part_count,
//	    total_size, fingerprint, created_at,
//	    checksum, checksum_mode (optional)    the plan, written once
//	    p:<n> = <etag>|<size>[|crc32c=<sum>]  one field per finished part
//	ferry:ckpt:index        sorted set: task id -> unix milliseconds of
//	                        its last Create or RecordPart
//	ferry:own:{<task_id>}       the owner's fencing token, short expiry
//	ferry:own:{<task_id>}:done  the outcome MarkDone recorded
//	ferry:own:token             the counter tokens come from
//
// The braces are a Redis Cluster hash tag: each checkpoint lives in one slot
// and is changed by Lua scripts atomically. The index lives in another slot,
// so it is updated by separate commands and is only eventually exact: it may
// hold ids whose hash expired or was deleted half way (List prunes them), and
// Create indexes an id before writing its hash so that every live checkpoint
// is listed. Nothing here uses SCAN or KEYS.
//
// # Considerations
//
// Redis must not evict these keys (maxmemory-policy noeviction), and should
// persist them (AOF) if uploads are to resume after a Redis restart.
// A checkpoint that nobody touches for Options.TTL (7 days by default)
// expires; its upload can then no longer be resumed and is the janitor's to
// abort.
package checkpoint
