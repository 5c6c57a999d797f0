// Package webhook is ferry's signed completion webhook protocol, for both
// sides: the Event a worker POSTs when a transfer ends, the Ferry-Signature
// header that signs it (Sign, Verify), and the Allowlist that decides which
// URLs a worker may deliver to.
//
// A receiver written in Go needs only Verify (or VerifyRequest) and Event:
// the package imports nothing but the standard library.
//
// # Signature
//
// The header is the scheme payment providers use (Stripe's):
//
//	Ferry-Signature: t=1764528000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//
// where t is the Unix time of the delivery attempt and v1 is the lower-case
// hex HMAC-SHA256, keyed with the shared secret, of the bytes
// t + "." + body. A worker holding several secrets (a rotation) sends one v1
// per secret; a receiver accepts the request when any of them matches one of
// its secrets. Verify also refuses a t further than its tolerance (5 minutes
// by default, DefaultTolerance) from the receiver's clock, so a captured
// request cannot be replayed later: receivers should keep the event ids they
// have processed for at least that long and ignore repeats, because delivery
// is at least once.
//
// # Allowlist
//
// A worker POSTs only to hosts its configuration lists (webhook_allow).
// Addresses a webhook must not reach by accident or by DNS tricks — loopback,
// private, link-local (the cloud metadata service 169.254.169.254),
// carrier-grade NAT, unspecified, multicast — are refused unless an IP or CIDR
// entry lists them explicitly; a host name entry never makes them reachable,
// and the check runs on the resolved address at dial time (DialControl), so a
// name that resolves to a public address when checked and to 127.0.0.1 when
// dialed (DNS rebinding) is still refused.
package webhook
