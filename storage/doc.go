// Package storage is ferry's S3 backend: a Go port of litestar-storages'
// S3Storage (Put, Get, GetBytes, Delete, Exists, List, URL, Copy, Move, Info,
// Close, the multipart calls and PutLarge), on aws-sdk-go-v2, for AWS S3 and
// S3-compatible services (Cloudflare R2, Backblaze B2, DigitalOcean Spaces,
// MinIO, versitygw).
//
// It is not a queue and knows nothing of tasks or checkpoints: the worker
// builds resumable uploads from StartMultipartUpload, UploadParts, ListParts
// and CompleteMultipartUpload, and keeps the checkpoint itself.
//
// # Configuration
//
// A Config is the seed's S3Config plus Provider and ForcePathStyle. NewClient
// builds one SDK client per profile (endpoint, credentials, provider);
// Client.Bucket opens a storage per bucket on it cheaply. Invalid settings fail
// at construction with a *ConfigError naming the field. Credentials resolve in
// the seed's order: explicit fields, environment, shared credentials file,
// IAM role.
//
// IAM actions used: s3:PutObject, s3:GetObject, s3:DeleteObject,
// s3:ListBucket (List, and HeadBucket to tell a missing bucket from a missing
// key), s3:ListBucketMultipartUploads, s3:ListMultipartUploadParts,
// s3:AbortMultipartUpload. Copy needs s3:GetObject on the source bucket and
// s3:PutObject on the destination.
//
// # Implementation
//
// Every key gets the profile's Prefix (a "/" is added when missing) and is
// validated: UTF-8, at most 1024 bytes, no empty, "." or ".." segments.
// Returned keys have the prefix stripped. SDK errors are translated once, in
// errors.go, by error code then HTTP status, into ErrNotFound (and its
// refinements ErrBucketNotFound, ErrUploadNotFound), ErrPermission and
// ErrExists; the SDK error stays in the chain.
//
// PutLarge and UploadParts run parts concurrently with at most Concurrency
// part buffers at once, drawn from a BufferPool whose byte budget can be
// shared by many uploads, so memory is bounded by configuration and not by
// file size. A stream of unknown length is read part by part; an io.ReaderAt
// of known size is read concurrently. Parts are kept by number, so a retried
// part replaces the earlier one, and Complete sends them sorted.
//
// # Considerations
//
// Provider differences live in one table (providerTable in config.go):
// non-AWS providers get RequestChecksumCalculation/ResponseChecksumValidation
// WhenRequired, because the SDK's 2025 default CRC32 trailers break B2, R2 and
// older MinIO; R2 needs every part but the last to be the same size (checked
// before Complete); MinIO and generic servers are addressed path-style.
//
// Multipart ETags are opaque: VerifyCopy compares them only when both are
// plain MD5s. Reads check a multipart ETag only by recomputing it from the
// bytes and the part sizes the server tells (ETagCheck), on providers known
// to compute it as AWS does. Exists is false only when the server says not found; an auth or
// network failure is an error. SDK retries are few and have no client-side
// retry quota, so a long outage is left to the caller's retries (the queue's,
// with checkpoints) instead of failing with "retry quota exceeded".
package storage
