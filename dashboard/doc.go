// Package dashboard is ferry's web dashboard: a live transfers page, a JSON
// and Server-Sent Events API, asynqmon embedded at /monitoring/, Prometheus
// metrics and health checks, all served by one http.Handler (Server).
//
// It reads progress through package tasks (the hashes ProgressKey and the
// channel ProgressChannel), with one exception: the parts map of a
// multipart transfer (GET /api/v1/transfers/{id}/parts, parts.go) reads the
// finished parts from the transfer's checkpoint, through package
// checkpoint's Store.Load, read-only, because the progress hash counts parts
// but does not name them. It changes jobs only through tasks.Client.Cancel
// and asynq's Inspector. It never imports worker or storage, and it does not
// start an HTTP server or read the environment: cmd/ferry does.
//
// # Routes
//
//	GET  /                              transfers page (HTML)
//	GET  /transfers/{id}                one transfer: parts map, throughput sparkline
//	GET  /api/transfers                 JSON list of active and recent transfers
//	GET  /api/transfers/{id}            JSON of one transfer
//	GET  /api/events                    Server-Sent Events: every progress update
//	POST /api/transfers/{id}/cancel     cancel (403 with ReadOnly)
//	     /api/v1/                       the HTTP API for producers (apiv1.go; docs/api.md, /api/v1/openapi.json)
//	     /monitoring/                   asynqmon (read-only without AuthToken)
//	GET  /metrics                       Prometheus: asynq queue metrics, the dashboard's own, Config.Registry
//	GET  /healthz                       the process is up
//	GET  /readyz                        Redis answers PING
//
// # Implementation
//
// One Redis subscription to tasks.ProgressChannel per Server feeds both an
// in-memory index of transfers (what /api/transfers lists) and every
// connected SSE client. The index is seeded, and reconciled every
// ScanInterval, by SCAN MATCH ferry:progress:{* over the keyspace (every
// master of a Redis Cluster): that repairs updates missed while the
// subscription reconnected and drops hashes that expired. SCAN walks the
// whole keyspace, which is fine at dashboard scale (one SCAN pass per
// interval, whatever the number of browsers); the index holds at most
// MaxIndexed transfers, keeping active ones first and then the most
// recently updated.
//
// # Safe by default
//
// Every route sits behind three middlewares (guard.go): a Host check that
// answers only to the dashboard's own names (loopback spellings, IPs when
// Config.Addr listens on every interface, Config.PublicNames) and refuses
// others with 421, which defeats DNS rebinding; the token (AuthToken), when
// set; and http.CrossOriginProtection against cross-site POSTs. New refuses
// (CheckAccess) an Addr beyond loopback without a token and a token that is
// a placeholder or too short (CheckToken). Without a token asynqmon is
// read-only. Routes added to the mux get all of it.
package dashboard
