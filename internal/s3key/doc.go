// Package s3key validates S3 object keys the way ferry accepts them. Both the
// producer side (tasks) and the storage backend use it, so a bad key is refused
// at enqueue time with the same message the worker would give.
//
// Production leaf used by tasks and storage: it imports no ferry package.
package s3key
