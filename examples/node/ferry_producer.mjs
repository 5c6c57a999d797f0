#!/usr/bin/env node
// Enqueue an upload with ferry's HTTP API and follow it to the end.
//
// A producer that knows nothing of Go, using only Node's built-ins (fetch,
// Node 18 or later): it enqueues an upload with an Idempotency-Key, sends
// the same request again as a client would after a lost answer (ferry
// answers 200 with the same transfer and enqueues nothing twice), then
// follows the transfer's Server-Sent Events until it completes, fails or
// is cancelled, and prints the result as JSON. Exit status: 0 when the
// transfer completed, 1 otherwise.
//
//   FERRY_URL=http://127.0.0.1:8080 FERRY_API_TOKEN=<producer token> \
//     node ferry_producer.mjs --source /data/report.bin --bucket archive --key 2026/report.bin
//
// With --webhook-listen 127.0.0.1:0 it also asks for a signed completion
// webhook: it serves a receiver there, passes its URL as notify, and once
// the transfer ended waits for the event and checks its Ferry-Signature with
// FERRY_WEBHOOK_SECRET (verifyFerrySignature: HMAC-SHA256 of "<t>.<body>",
// 5-minute replay window). The receiver's host must be on the workers'
// webhook_allow.
//
// docs/api.md describes the API; GET /api/v1/openapi.json is its reference.

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

class APIError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}: ${body.error ?? JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

// request sends one request and returns the response of a 2xx.
async function request(base, token, method, path, { body, headers = {} } = {}) {
  const h = { Authorization: `Bearer ${token}`, ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const r = await fetch(base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    const err = await r.json().catch(() => ({ error: r.statusText }));
    throw new APIError(r.status, err);
  }
  return r;
}

// enqueue: POST /api/v1/transfers; returns [status, transfer].
async function enqueue(base, token, body, key) {
  const r = await request(base, token, "POST", "/api/v1/transfers", { body, headers: { "Idempotency-Key": key } });
  return [r.status, await r.json()];
}

// events yields [id, transfer] for each event of the transfer's stream.
async function* events(base, token, taskID, lastEventID) {
  const headers = { Accept: "text/event-stream" };
  if (lastEventID) headers["Last-Event-ID"] = lastEventID;
  const r = await request(base, token, "GET", `/api/v1/transfers/${encodeURIComponent(taskID)}/events`, { headers });
  if (r.status === 204) return; // finished, and its last state already seen
  const decoder = new TextDecoder();
  let buf = "", id = null, data = [];
  for await (const chunk of r.body) {
    buf += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (line === "") { // the end of one event
        if (data.length) yield [id, JSON.parse(data.join("\n"))];
        data = [];
      } else if (line.startsWith("id:")) {
        id = line.slice(3).trim();
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      } // "event:", "retry:" and ": comments" need nothing here.
    }
  }
}

// follow follows the transfer until a terminal state, reconnecting with
// Last-Event-ID when the stream breaks; returns the last transfer.
async function follow(base, token, taskID) {
  let lastID = null, last = null;
  for (let attempt = 0; attempt < 10; attempt++) {
    try {
      for await (const [id, t] of events(base, token, taskID, lastID)) {
        lastID = id; last = t;
        console.log(`${t.state.padStart(9)} ${(t.percent ?? 0).toFixed(1).padStart(5)}%  ${t.bytes_done ?? 0} bytes`);
        if (TERMINAL.has(t.state)) return t;
      }
    } catch (e) {
      if (e instanceof APIError) throw e;
      console.error(`stream broke (${e.message}); reconnecting`);
    }
    if (last && TERMINAL.has(last.state)) return last;
  }
  return (await request(base, token, "GET", `/api/v1/transfers/${encodeURIComponent(taskID)}`)).json();
}

// verifyFerrySignature throws unless header, a Ferry-Signature
// ("t=<unix>,v1=<hex>"), signs body (the raw bytes received, a Buffer) under
// one of secrets and its timestamp is within toleranceSeconds of now: a
// request replayed later is refused. Verify before parsing the body.
export function verifyFerrySignature(body, header, secrets, toleranceSeconds = 300, now = Date.now() / 1000) {
  let ts = null;
  const sigs = [];
  for (const part of (header || "").split(",")) {
    const [k, v] = part.trim().split("=", 2);
    if (k === "t") ts = v;
    else if (k === "v1" && /^[0-9a-f]{64}$/.test(v)) sigs.push(Buffer.from(v, "hex"));
  }
  if (!ts || !/^\d+$/.test(ts) || sigs.length === 0) throw new Error("no valid Ferry-Signature header");
  const ok = secrets.some((secret) => {
    const want = createHmac("sha256", secret).update(`${ts}.`).update(body).digest();
    return sigs.some((s) => timingSafeEqual(s, want)); // constant time
  });
  if (!ok) throw new Error("signature does not match: wrong secret, or the body was changed");
  if (Math.abs(now - Number(ts)) > toleranceSeconds) {
    throw new Error("timestamp outside the replay window: an old (replayed) request, or a clock far off");
  }
}

// receiveWebhooks serves a webhook receiver on listen ("host:port") and
// resolves to its URL and next(taskID, ms), which waits for the verified
// event of that transfer. Requests that do not verify get 401.
async function receiveWebhooks(secrets, listen) {
  const events = [];
  let wake = () => {};
  const srv = createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => { size += c.length; if (size <= 1 << 20) chunks.push(c); });
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      try {
        if (size > 1 << 20) throw new Error("too large");
        verifyFerrySignature(body, req.headers["ferry-signature"], secrets);
      } catch (e) {
        res.writeHead(401).end(e.message);
        return;
      }
      events.push(JSON.parse(body.toString("utf8")));
      res.writeHead(204).end(); // 2xx once stored: the worker stops retrying
      wake();
    });
  });
  const i = listen.lastIndexOf(":");
  const host = listen.slice(0, i);
  await new Promise((resolve, reject) => srv.listen(Number(listen.slice(i + 1)), host, resolve).on("error", reject));
  srv.unref();
  return {
    url: `http://${host}:${srv.address().port}/ferry-events`,
    async next(taskID, ms) {
      const deadline = Date.now() + ms;
      for (;;) {
        const ev = events.find((e) => e.id === taskID);
        if (ev) return ev;
        if (Date.now() > deadline) throw new Error("no signed webhook arrived for the transfer");
        await new Promise((r) => { wake = r; setTimeout(r, 200); });
      }
    },
  };
}

async function main() {
  const { values: a } = parseArgs({
    options: {
      url: { type: "string", default: process.env.FERRY_URL ?? "http://127.0.0.1:8080" },
      source: { type: "string" },
      bucket: { type: "string" },
      key: { type: "string" },
      queue: { type: "string", default: "default" },
      "idempotency-key": { type: "string", default: randomUUID() },
      "webhook-listen": { type: "string" },
    },
  });
  for (const f of ["source", "bucket", "key"]) {
    if (!a[f]) throw new Error(`--${f} is required`);
  }
  const token = process.env.FERRY_API_TOKEN;
  if (!token) throw new Error("set FERRY_API_TOKEN to a producer token (FERRY_API_PRODUCER_TOKENS on the server)");
  const base = a.url.replace(/\/+$/, "");

  const body = {
    type: "upload",
    payload: { source: { path: a.source }, dest: { bucket: a.bucket, key: a.key } },
    queue: a.queue,
  };
  let hooks = null;
  if (a["webhook-listen"]) {
    const secrets = (process.env.FERRY_WEBHOOK_SECRET ?? "").split(",").map((x) => x.trim()).filter(Boolean);
    if (!secrets.length) throw new Error("set FERRY_WEBHOOK_SECRET to the workers' webhook signing secret");
    hooks = await receiveWebhooks(secrets, a["webhook-listen"]);
    body.notify = { url: hooks.url };
  }
  const key = a["idempotency-key"];
  const [status, first] = await enqueue(base, token, body, key);
  console.log(`enqueued ${first.task_id} (HTTP ${status})`);
  // A client that lost the answer sends the same request again: the key
  // makes it the same transfer, and nothing is enqueued twice.
  const [status2, again] = await enqueue(base, token, body, key);
  console.log(`retried with the same Idempotency-Key: ${again.task_id} (HTTP ${status2})`);
  if (again.task_id !== first.task_id) throw new Error("the retry made a second transfer: idempotency is broken");
  const final = await follow(base, token, first.task_id);
  const result = { task_id: final.task_id, state: final.state, bytes: final.bytes_done, dest: final.dest, error: final.error ?? "" };
  if (hooks) {
    const ev = await hooks.next(final.task_id, 120_000);
    console.log(`webhook verified: ${ev.event_id} ${ev.state} etag ${ev.etag ?? ""}`);
    result.webhook = ev.state;
  }
  console.log(JSON.stringify(result));
  return final.state === "completed" ? 0 : 1;
}

// Run as a program, not when imported (for verifyFerrySignature).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main().then((code) => process.exit(code), (e) => {
  const field = e instanceof APIError && e.body.field ? ` (field ${e.body.field})` : "";
  console.error(`ferry_producer: ${e.message}${field}`);
  process.exit(1);
});
