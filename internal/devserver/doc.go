// Package devserver runs the embedded servers of `ferry dev`: a
// Redis-compatible server (miniredis) and an S3-compatible server (gofakes3)
// that keeps buckets, objects and unfinished multipart uploads in a
// directory, so they survive a restart. Both listen on real TCP ports, so
// other processes (the ferry CLI, asynqmon, the AWS CLI) reach them.
//
// Production code used only by cmd/ferry, for `ferry dev` (checked by
// internal/archtest): it ships in the binary, but no worker or dashboard path
// depends on it.
//
// It is for development and fast tests only — never a production
// deployment, and never the only proof of a feature (the project's tests run
// against redis-server and versitygw). miniredis keeps its data in memory: Redis state is lost at
// exit unless RedisOptions.SnapshotFile is set, and a snapshot is a plain
// dump of the keys, not Redis's AOF or RDB.
//
// # Considerations
//
// miniredis does not expire keys on its own clock; StartRedis advances it
// every second so that TTLs (asynq's unique locks, ferry's progress keys)
// behave as on a real Redis. The S3 server accepts any credentials, answers
// path-style requests, and holds no object in memory: puts, parts and
// completes stream through files.
package devserver
