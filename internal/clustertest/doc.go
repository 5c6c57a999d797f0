// Package clustertest runs ferry against a real Redis Cluster and a real
// Sentinel set (issue 14). The tests start redis-server processes of their
// own on loopback ports, so they are heavier than the rest of the suite and
// run from their own target, `make test-cluster`, which CI runs; they skip
// unless FERRY_CLUSTER=1.
//
// Test support only: it has no code outside its _test.go files.
package clustertest
