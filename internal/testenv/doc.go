// Package testenv gives ferry's tests a real Redis and a real S3 server.
//
// By default each test binary starts its own redis-server and versitygw
// (posix backend on a temp dir), both bound to 127.0.0.1 on free ports, and
// stops them when the binary exits. Servers that already run are used instead
// when these variables are set:
//
//	FERRY_TEST_REDIS_ADDR      host:port of a Redis server (never flushed)
//	FERRY_TEST_S3_ENDPOINT     http://host:port of an S3 server
//	FERRY_TEST_S3_ACCESS_KEY   its access key
//	FERRY_TEST_S3_SECRET_KEY   its secret key
//
// When neither a configured server nor the binary (redis-server on PATH,
// versitygw in ./bin or on PATH) is available, tests fall back to in-process
// fakes (miniredis, gofakes3) so `go test` works anywhere — unless
// FERRY_TEST_REAL=1 (set by `make test`), which turns the fallback into a
// failure: CI must prove the code against real servers.
//
// It also holds the helpers that tests of several packages share: Enqueue
// and WaitTask (a task enqueued from its constructor, followed to its end),
// RandomFile, LongKey (a key a migration cannot write at its destination),
// AwkwardKeys (keys S3 allows that naive code mangles), ObjectHeaders (an
// object's headers as the plain SDK sets and reads them), CountingProxy (a
// proxy that counts the requests a code path sends), and the servers of
// their own that some tests start: StartRedisProcess, StartVersitygw, and
// StartRedisCluster and StartRedisSentinelSet (internal/clustertest).
//
// Test support only: nothing outside _test.go files imports it (checked by
// internal/archtest).
package testenv
