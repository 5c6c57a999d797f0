#!/usr/bin/env python3
"""Enqueue an upload with ferry's HTTP API and follow it to the end.

A producer that knows nothing of Go, using only Python's standard library
(urllib): it enqueues an upload with an Idempotency-Key, sends the same
request again as a client would after a lost answer (ferry answers 200 with
the same transfer and enqueues nothing twice), then follows the transfer's
Server-Sent Events until it completes, fails or is cancelled, and prints the
result as JSON. Exit status: 0 when the transfer completed, 1 otherwise.

    FERRY_URL=http://127.0.0.1:8080 FERRY_API_TOKEN=<producer token> \\
      python3 ferry_producer.py --source /data/report.bin \\
        --bucket archive --key 2026/report.bin

With --webhook-listen 127.0.0.1:0 it also asks for a signed completion
webhook: it serves a receiver there, passes its URL as notify, and once the
transfer ended waits for the event and checks its Ferry-Signature with
FERRY_WEBHOOK_SECRET (verify_ferry_signature: HMAC-SHA256 of "<t>.<body>",
5-minute replay window). The receiver's host must be on the workers'
webhook_allow.

docs/api.md describes the API; GET /api/v1/openapi.json is its reference.
"""

import argparse
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

TERMINAL = {"completed", "failed", "cancelled"}


class APIError(Exception):
    """An error answer of the API: its status and JSON body."""

    def __init__(self, status, body):
        self.status, self.body = status, body
        super().__init__(f"HTTP {status}: {body.get('error', body)}")


def request(base, token, method, path, body=None, headers=None, timeout=30):
    """Sends one request; returns (status, response) for a 2xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        try:
            err = json.load(e)
        except ValueError:
            err = {"error": e.reason}
        raise APIError(e.code, err) from None


def enqueue(base, token, body, key):
    """POST /api/v1/transfers; returns (status, transfer)."""
    with request(base, token, "POST", "/api/v1/transfers", body, {"Idempotency-Key": key}) as r:
        return r.status, json.load(r)


def events(base, token, task_id, last_event_id=None):
    """Yields (id, transfer) for each event of the transfer's stream."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    with request(base, token, "GET", f"/api/v1/transfers/{task_id}/events", headers=headers, timeout=300) as r:
        if r.status == 204:  # finished, and its last state already seen
            return
        event_id, data = None, []
        for raw in r:
            line = raw.decode().rstrip("\r\n")
            if line == "":  # the end of one event
                if data:
                    yield event_id, json.loads("\n".join(data))
                data = []
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            # "event:", "retry:" and ": comments" need nothing here.


def follow(base, token, task_id):
    """Follows the transfer until a terminal state, reconnecting with
    Last-Event-ID when the stream breaks; returns the last transfer."""
    last_id, last = None, None
    for _ in range(10):
        try:
            for last_id, last in events(base, token, task_id, last_id):
                print(f"{last['state']:>9} {last.get('percent', 0):5.1f}%  {last.get('bytes_done', 0)} bytes", flush=True)
                if last["state"] in TERMINAL:
                    return last
        except (OSError, urllib.error.URLError) as e:
            print(f"stream broke ({e}); reconnecting", file=sys.stderr)
        if last and last["state"] in TERMINAL:
            return last
    with request(base, token, "GET", f"/api/v1/transfers/{task_id}") as r:
        return json.load(r)


def verify_ferry_signature(body, header, secrets, tolerance=300, now=None):
    """Raises ValueError unless header, a Ferry-Signature ("t=<unix>,v1=<hex>"),
    signs body (the raw bytes received) under one of secrets (bytes) and its
    timestamp is within tolerance seconds of now: a request replayed later
    is refused. Compare in constant time; verify before parsing the body."""
    ts, sigs = None, []
    for part in (header or "").split(","):
        k, _, v = part.strip().partition("=")
        if k == "t":
            ts = v
        elif k == "v1":
            sigs.append(v)
    if ts is None or not ts.isdigit() or not sigs:
        raise ValueError("no valid Ferry-Signature header")
    signed = ts.encode() + b"." + body
    if not any(hmac.compare_digest(hmac.new(s, signed, hashlib.sha256).hexdigest(), v) for s in secrets for v in sigs):
        raise ValueError("signature does not match: wrong secret, or the body was changed")
    if abs((time.time() if now is None else now) - int(ts)) > tolerance:
        raise ValueError("timestamp outside the replay window: an old (replayed) request, or a clock far off")


def receive_webhooks(secrets, listen):
    """Serves a webhook receiver on listen ("host:port"); returns its URL and a
    queue of the events whose signature verified. Others get 401."""
    events = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > 1 << 20:
                self.send_error(413)
                return
            body = self.rfile.read(n)
            try:
                verify_ferry_signature(body, self.headers.get("Ferry-Signature"), secrets)
            except ValueError as e:
                self.send_error(401, str(e))
                return
            events.put(json.loads(body))
            self.send_response(204)  # 2xx once stored: the worker stops retrying
            self.end_headers()

        def log_message(self, *args):
            pass

    host, _, port = listen.rpartition(":")
    srv = HTTPServer((host, int(port)), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://{host}:{srv.server_address[1]}/ferry-events", events


def wait_webhook(events, task_id, timeout=120):
    """Returns the verified event of task_id, dropping repeats of others."""
    deadline = time.time() + timeout
    while True:
        ev = events.get(timeout=max(0.1, deadline - time.time()))
        if ev["id"] == task_id:
            return ev


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=os.environ.get("FERRY_URL", "http://127.0.0.1:8080"), help="ferry server (FERRY_URL)")
    p.add_argument("--source", required=True, help="absolute path of the file on the worker's machine")
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--queue", default="default")
    p.add_argument("--idempotency-key", default=str(uuid.uuid4()), help="one per transfer (default: a new UUID)")
    p.add_argument("--webhook-listen", help="serve a webhook receiver on HOST:PORT and verify the transfer's signed event (FERRY_WEBHOOK_SECRET)")
    a = p.parse_args()
    token = os.environ.get("FERRY_API_TOKEN")
    if not token:
        sys.exit("set FERRY_API_TOKEN to a producer token (FERRY_API_PRODUCER_TOKENS on the server)")
    base = a.url.rstrip("/")

    body = {
        "type": "upload",
        "payload": {"source": {"path": a.source}, "dest": {"bucket": a.bucket, "key": a.key}},
        "queue": a.queue,
    }
    hooks = None
    if a.webhook_listen:
        secrets = [x.strip().encode() for x in os.environ.get("FERRY_WEBHOOK_SECRET", "").split(",") if x.strip()]
        if not secrets:
            sys.exit("set FERRY_WEBHOOK_SECRET to the workers' webhook signing secret")
        url, hooks = receive_webhooks(secrets, a.webhook_listen)
        body["notify"] = {"url": url}
    try:
        status, first = enqueue(base, token, body, a.idempotency_key)
        print(f"enqueued {first['task_id']} (HTTP {status})", flush=True)
        # A client that lost the answer sends the same request again: the
        # key makes it the same transfer, and nothing is enqueued twice.
        status, again = enqueue(base, token, body, a.idempotency_key)
        print(f"retried with the same Idempotency-Key: {again['task_id']} (HTTP {status})", flush=True)
        if again["task_id"] != first["task_id"]:
            sys.exit("the retry made a second transfer: idempotency is broken")
        final = follow(base, token, first["task_id"])
    except APIError as e:
        sys.exit(f"ferry refused: {e} (field {e.body.get('field', '-')})")
    result = {"task_id": final["task_id"], "state": final["state"], "bytes": final.get("bytes_done"),
              "dest": final.get("dest"), "error": final.get("error", "")}
    if hooks is not None:
        try:
            ev = wait_webhook(hooks, final["task_id"])
        except queue.Empty:
            sys.exit("no signed webhook arrived for the transfer")
        print(f"webhook verified: {ev['event_id']} {ev['state']} etag {ev.get('etag', '')}", flush=True)
        result["webhook"] = ev["state"]
    print(json.dumps(result))
    return 0 if final["state"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
