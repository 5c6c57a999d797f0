// ferry dashboard: renders /api/v1/transfers and keeps it live with the
// Server-Sent Events of /api/v1/events (a transfer's page: those of
// /api/v1/transfers/{id}/events). The page uses the versioned API that
// producers use (docs/api.md), authenticated by the dashboard's cookie.
// No build step, no dependencies.
"use strict";

(function () {
  const body = document.body;
  const readOnly = body.dataset.readOnly === "true";
  const detailID = body.dataset.taskId || "";
  const live = document.getElementById("live");
  const transfers = new Map(); // task_id -> Transfer
  const listLimit = 200; // transfers on the front page: unfinished first

  // ---- formatting ----
  function bytes(n) {
    if (!n) return "0 B";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
  }
  function rate(r) { return r > 0 ? bytes(r) + "/s" : "—"; }
  function eta(s) {
    if (!s || s <= 0) return "—";
    if (s < 1) return "<1s";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h > 0 ? h + "h" + String(m).padStart(2, "0") + "m" : m > 0 ? m + "m" + String(sec).padStart(2, "0") + "s" : sec + "s";
  }
  function pct(t) { return (Math.floor(t.percent * 10) / 10).toFixed(1) + "%"; }
  function bytesText(t) { return bytes(t.bytes_done) + (t.bytes_total ? " / " + bytes(t.bytes_total) : ""); }
  function partsText(t) { return t.parts_total ? t.parts_done + " / " + t.parts_total : "—"; }
  function when(s) { return s ? new Date(s).toLocaleString() : "—"; }
  function terminal(state) { return state === "completed" || state === "failed" || state === "cancelled"; }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function newer(a, b) { return !b || !a.updated_at || !b.updated_at || new Date(a.updated_at) >= new Date(b.updated_at); }

  // setBar draws a progress bar element: width, label and ARIA value.
  function setBar(bar, t) {
    const fill = bar.querySelector(".fill");
    fill.style.width = t.percent.toFixed(2) + "%";
    bar.dataset.percent = t.percent.toFixed(2);
    bar.dataset.state = t.state;
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", t.percent.toFixed(2));
    const label = bar.querySelector(".label");
    if (label) label.textContent = pct(t);
  }

  async function cancel(id, button, msg) {
    if (readOnly) return;
    if (!confirm("Cancel transfer " + id + "?")) return;
    button.disabled = true;
    try {
      const r = await fetch("/api/v1/transfers/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
      const j = await r.json().catch(() => ({}));
      if (msg) msg.textContent = r.ok ? "cancel requested" : (j.error || r.statusText);
      if (!r.ok) button.disabled = false;
    } catch (e) {
      if (msg) msg.textContent = String(e);
      button.disabled = false;
    }
  }

  // ---- list page ----
  const table = document.getElementById("transfers");
  const tbody = table ? table.querySelector("tbody") : null;
  const rows = new Map(); // task_id -> <tr>

  function row(t) {
    let tr = rows.get(t.task_id);
    if (!tr) {
      tr = el("tr");
      tr.dataset.taskId = t.task_id;
      const idCell = el("td", "id");
      const a = el("a", "", t.task_id);
      a.href = "/transfers/" + encodeURIComponent(t.task_id);
      idCell.append(a, el("div", "type"));
      const bar = el("div", "bar");
      bar.append(el("div", "fill"), el("span", "label"));
      const progress = el("td", "progress-col");
      progress.append(bar, el("div", "error"), el("div", "counters"));
      const actions = el("td", "actions");
      const b = el("button", "cancel", "Cancel");
      b.type = "button";
      b.disabled = readOnly;
      if (readOnly) b.title = "read-only dashboard";
      b.addEventListener("click", () => cancel(t.task_id, b, null));
      actions.append(b);
      tr.append(idCell, el("td", "state"), progress, el("td", "bytes"), el("td", "rate"),
        el("td", "eta"), el("td", "parts"), el("td", "locs"), actions);
      rows.set(t.task_id, tr);
    }
    tr.querySelector(".type").textContent = t.type || "";
    const st = tr.querySelector(".state");
    st.textContent = t.state;
    st.dataset.state = t.state;
    setBar(tr.querySelector(".bar"), t);
    tr.querySelector(".error").textContent = t.error || "";
    const counters = t.counters ? Object.entries(t.counters).map(([k, v]) => k + " " + v).join(" · ") : "";
    tr.querySelector(".counters").textContent = counters;
    tr.querySelector(".bytes").textContent = bytesText(t) + (t.resumed_from ? " (resumed from " + bytes(t.resumed_from) + ")" : "");
    tr.querySelector(".rate").textContent = terminal(t.state) ? "—" : rate(t.rate);
    tr.querySelector(".eta").textContent = eta(t.eta_seconds);
    tr.querySelector(".parts").textContent = partsText(t);
    tr.querySelector(".locs").textContent = (t.source || "") + (t.dest ? " → " + t.dest : "");
    tr.querySelector(".cancel").hidden = terminal(t.state);
    return tr;
  }

  // ---- counts and filters (front page) ----
  // The counts are over every transfer the page holds (the first page of
  // /api/v1/transfers, then the updates), whatever the filters; "failed in the last hour" goes by
  // updated_at, the time the worker reported the failure.
  const hour = 3600 * 1000;
  const fState = document.getElementById("f-state");
  const fType = document.getElementById("f-type");
  const fQueue = document.getElementById("f-queue");
  const filterNote = document.getElementById("filter-note");
  let queueName = "";       // the queue filter in force ("" = any)
  let queueIDs = null;      // task ids asynq holds in that queue, null until known
  let queueTimer = 0;

  function renderCounts() {
    const since = Date.now() - hour;
    const n = { active: 0, retrying: 0, "failed-1h": 0 };
    for (const t of transfers.values()) {
      if (t.state === "active") n.active++;
      else if (t.state === "retrying") n.retrying++;
      else if (t.state === "failed" && t.updated_at && Date.parse(t.updated_at) >= since) n["failed-1h"]++;
    }
    document.querySelectorAll("#summary [data-count]").forEach(b => {
      const v = n[b.dataset.count];
      b.querySelector(".n").textContent = String(v);
      b.classList.toggle("zero", v === 0);
    });
  }

  // The type filter offers the types the page has seen, keeping the choice.
  function renderTypeOptions() {
    const types = [...new Set([...transfers.values()].map(t => t.type).filter(Boolean))].sort();
    const have = [...fType.options].slice(1).map(o => o.value);
    if (types.length === have.length && types.every((v, i) => v === have[i])) return;
    const chosen = fType.value;
    fType.replaceChildren(el("option", "", "all"), ...types.map(v => {
      const o = el("option", "", v.replace(/^ferry:/, ""));
      o.value = v;
      return o;
    }));
    fType.options[0].value = "";
    if (chosen && !types.includes(chosen)) {
      const o = el("option", "", chosen.replace(/^ferry:/, ""));
      o.value = chosen;
      fType.append(o);
    }
    fType.value = chosen;
  }

  function matches(t) {
    if (fState.value && t.state !== fState.value) return false;
    if (fType.value && t.type !== fType.value) return false;
    if (queueName && !(queueIDs && queueIDs.has(t.task_id))) return false;
    return true;
  }

  // A transfer does not carry its queue: asynq knows it. The queue filter
  // asks the versioned API which tasks the queue holds (its ?queue= filter,
  // up to 10 pages of 1000), then again every 15 s and soon after an
  // update about a transfer it did not list.
  async function loadQueue() {
    clearTimeout(queueTimer);
    queueTimer = 0;
    const name = queueName;
    if (!name) return;
    const ids = new Set();
    let cursor = "";
    try {
      for (let page = 0; page < 10; page++) {
        const r = await fetch("/api/v1/transfers?limit=1000&queue=" + encodeURIComponent(name) + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
        const j = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(j.message || j.error || r.statusText);
        (j.transfers || []).forEach(t => ids.add(t.task_id));
        cursor = j.next_cursor || "";
        if (!cursor) break;
      }
      if (name !== queueName) return; // the filter changed meanwhile
      queueIDs = ids;
      filterNote.textContent = "";
    } catch (e) {
      if (name === queueName) filterNote.textContent = "queue " + name + ": " + e.message;
    }
    if (name === queueName) {
      renderList();
      queueTimer = setTimeout(loadQueue, 15000);
    }
  }
  function queueSoon() {
    if (queueName && queueTimer) { clearTimeout(queueTimer); queueTimer = setTimeout(loadQueue, 1000); }
  }

  if (fState) {
    fState.addEventListener("change", renderList);
    fType.addEventListener("change", renderList);
    let typing = 0;
    fQueue.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        queueName = fQueue.value.trim();
        queueIDs = null;
        filterNote.textContent = queueName ? "loading queue " + queueName + "…" : "";
        renderList();
        loadQueue();
      }, 300);
    });
    document.querySelectorAll("#summary [data-filter-state]").forEach(b =>
      b.addEventListener("click", () => { fState.value = b.dataset.filterState; renderList(); }));
    setInterval(renderCounts, 30000); // failures age out of the last hour
  }

  // renderList orders rows as the API does: unfinished first, newest first.
  function renderList() {
    const all = [...transfers.values()].sort((a, b) => {
      const ta = terminal(a.state), tb = terminal(b.state);
      if (ta !== tb) return ta ? 1 : -1;
      const ua = a.updated_at || "", ub = b.updated_at || "";
      return ua < ub ? 1 : ua > ub ? -1 : a.task_id.localeCompare(b.task_id);
    });
    const shown = all.filter(matches);
    tbody.replaceChildren(...shown.map(row));
    document.getElementById("empty").hidden = all.length > 0;
    document.getElementById("no-match").hidden = all.length === 0 || shown.length > 0;
    renderCounts();
    renderTypeOptions();
  }

  // ---- fleet (front page): aggregate throughput and workers ----
  // Throughput: GET /api/v1/throughput, the bytes every worker moved per
  // 10 s bucket over the last 15 minutes, redrawn every 10 s. Workers:
  // GET /api/v1/workers (asynq's servers and the tasks each runs), every
  // 5 s; a task's progress comes from the live list when the page has it.
  const tpChart = document.getElementById("tp-chart");
  const workersTable = document.getElementById("workers");

  async function getJSON(url) {
    const r = await fetch(url);
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.error || r.statusText);
    return j;
  }

  async function loadThroughput() {
    try {
      drawThroughput(await getJSON("/api/v1/throughput"));
    } catch (e) {
      document.getElementById("tp-summary").textContent = "Throughput unavailable: " + e.message;
    }
  }
  function drawThroughput(j) {
    const pts = j.points || [];
    const n = pts.length;
    const peak = Math.max(...pts.map(p => p.rate), 1);
    const xy = pts.map((p, i) => [(n > 1 ? i / (n - 1) : 0) * 600, 118 - p.rate / peak * 112]);
    tpChart.querySelector(".line").setAttribute("points", xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" "));
    tpChart.querySelector(".area").setAttribute("d", n ? "M0,120 " + xy.map(([x, y]) => "L" + x.toFixed(1) + "," + y.toFixed(1)).join(" ") + " L600,120 Z" : "");
    tpChart.dataset.points = String(n);
    tpChart.dataset.totalBytes = String(j.total_bytes || 0);
    tpChart.dataset.peakRate = String(j.peak_rate || 0);
    document.getElementById("tp-peak-label").textContent = j.peak_rate > 0 ? "peak " + rate(j.peak_rate) : "";
    const last = n > 1 ? pts[n - 2] : null; // the last complete bucket
    document.getElementById("tp-summary").textContent = j.total_bytes > 0
      ? "Last " + j.bucket_seconds + " s: " + rate(last ? last.rate : 0) + " · average " + rate(j.average_rate) +
        " · peak " + rate(j.peak_rate) + " · " + bytes(j.total_bytes) + " moved in 15 min, all workers"
      : "Nothing moved in the last 15 minutes.";
  }

  async function loadWorkers() {
    const note = document.getElementById("workers-note");
    try {
      const j = await getJSON("/api/v1/workers");
      const ws = j.workers || [];
      workersTable.querySelector("tbody").replaceChildren(...ws.map(workerRow));
      workersTable.hidden = ws.length === 0;
      note.textContent = ws.length === 0 ? "No worker is running (none sent a heartbeat in the last seconds)." : "";
    } catch (e) {
      note.textContent = "Workers unavailable: " + e.message;
    }
  }
  function workerRow(w) {
    const tr = el("tr");
    tr.dataset.workerId = w.id;
    const name = el("td", "wname", w.host + ":" + w.pid);
    name.title = "asynq server " + w.id + ", " + w.status + ", started " + when(w.started);
    const queues = el("td", "wqueues", Object.entries(w.queues || {}).sort().map(([q, p]) => q + " (" + p + ")").join(", "));
    const busy = el("td", "wbusy", (w.active || []).length + " / " + w.concurrency);
    const cur = el("td", "wtasks");
    if (!(w.active || []).length) cur.append(el("span", "idle", "idle"));
    (w.active || []).forEach(a => {
      const t = transfers.get(a.task_id) || a.transfer;
      const line = el("span", "wt");
      line.dataset.taskId = a.task_id;
      const link = el("a", "", a.task_id);
      link.href = "/transfers/" + encodeURIComponent(a.task_id);
      let text = " " + (a.type || "").replace(/^ferry:/, "");
      if (t) text += " " + pct(t) + (t.rate > 0 && !terminal(t.state) ? " · " + rate(t.rate) : "") + (t.dest ? " → " + t.dest : "");
      text += " · since " + eta((Date.now() - Date.parse(a.started)) / 1000);
      line.append(link, document.createTextNode(text));
      cur.append(line);
    });
    tr.append(name, queues, busy, cur);
    return tr;
  }
  if (tpChart) {
    loadThroughput();
    loadWorkers();
    setInterval(loadThroughput, 10000);
    setInterval(loadWorkers, 5000);
  }

  // ---- detail page ----
  const samples = []; // {t: ms, rate: bytes/s}
  function renderDetail(t) {
    const d = document.getElementById("detail");
    setBar(d.querySelector(".bar"), t);
    const f = (name, text) => { d.querySelector('[data-field="' + name + '"]').textContent = text; };
    f("state", t.state); f("type", t.type || "—"); f("source", t.source || "—"); f("dest", t.dest || "—");
    f("bytes", bytesText(t) + " (" + pct(t) + ")");
    const avg = average(t);
    f("rate", terminal(t.state) ? (avg > 0 ? rate(avg) + " average" : "—") : rate(t.rate)); f("eta", eta(t.eta_seconds)); f("parts", partsText(t));
    f("resumed", t.resumed_from ? bytes(t.resumed_from) : "—");
    f("started", when(t.started_at)); f("updated", when(t.updated_at)); f("error", t.error || "—");
    const isMig = t.type === "ferry:migrate" && !!t.counters;
    if (isMig) renderMigration(t);
    const counters = document.getElementById("counters");
    counters.hidden = !t.counters || isMig;
    if (t.counters && !isMig) {
      const dl = counters.querySelector("dl");
      dl.replaceChildren(...Object.entries(t.counters).flatMap(([k, v]) => [el("dt", "", k), el("dd", "", String(v))]));
    }
    drawParts(t);
    partsDue(t);
    const button = document.getElementById("cancel");
    button.hidden = terminal(t.state);
    if (!terminal(t.state)) {
      samples.push({ t: Date.now(), rate: t.rate || 0 });
      if (samples.length > 300) samples.shift();
      drawSparkline();
    } else {
      // A finished transfer opened afterwards has no live samples: say its
      // average instead of drawing an empty chart.
      const note = document.getElementById("spark-note");
      document.getElementById("sparkline").classList.toggle("empty", samples.length < 2);
      if (avg > 0) {
        note.textContent = (samples.length < 2 ? "" : note.textContent + " ") + "Average " + rate(avg) +
          " over " + eta((Date.parse(t.updated_at) - Date.parse(t.started_at)) / 1000) + " (this run).";
      } else if (samples.length < 2) {
        note.textContent = "No throughput recorded: the transfer finished before this page was opened.";
      }
    }
  }
  // A migration: its counters, bytes, rates and ETA from its progress; once
  // it ended, its report's failures and the command that re-runs it
  // (GET /api/v1/transfers/{id}/report).
  let reportLoaded = false;
  function migrationCounts(t) {
    const c = t.counters;
    const parts = [c.listed + " listed", (c.copied || 0) + " copied", (c.skipped || 0) + " skipped", (c.failed || 0) + " failed"];
    [["would_copy", "would copy"], ["filtered", "filtered"], ["ignored", "ignored"], ["deleted", "deleted"], ["pending", "in flight"]].forEach(([k, label]) => {
      if (c[k] > 0) parts.push(c[k] + " " + label);
    });
    return parts.join(" · ") + (!terminal(t.state) && c.listing_done !== 1 ? " · listing…" : "");
  }
  function renderMigration(t) {
    const m = document.getElementById("migration");
    m.hidden = false;
    const f = (name, text) => { m.querySelector('[data-mig="' + name + '"]').textContent = text; };
    f("objects", migrationCounts(t));
    f("bytes", bytes(t.counters.bytes || 0));
    const rates = [];
    if (t.rate > 0) rates.push(rate(t.rate));
    if (t.objects_rate > 0) rates.push(t.objects_rate.toFixed(1) + " objects/s");
    f("rate", terminal(t.state) ? (rates.length ? rates.join(" · ") + " (this run)" : "—") : (rates.join(" · ") || "—"));
    f("eta", terminal(t.state) ? "—" : t.eta_seconds > 0 ? eta(t.eta_seconds) : t.counters.listing_done !== 1 ? "once the source is listed" : "—");
    if (terminal(t.state) && !reportLoaded) { reportLoaded = true; loadReport(); }
  }
  async function loadReport() {
    let j;
    try {
      j = await getJSON("/api/v1/transfers/" + encodeURIComponent(detailID) + "/report");
    } catch (e) {
      document.getElementById("mig-failures-note").textContent = "Report unavailable: " + e.message;
      document.getElementById("mig-failures").hidden = false;
      return;
    }
    const rep = j.report || {};
    const failures = Object.entries(rep.failures || {}).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
    const box = document.getElementById("mig-failures");
    box.hidden = failures.length === 0 && !rep.failed;
    box.querySelector("tbody").replaceChildren(...failures.map(([k, reason]) => {
      const tr = el("tr");
      tr.append(el("td", "key", k), el("td", "reason", reason));
      return tr;
    }));
    const more = (rep.failed || 0) - failures.length;
    document.getElementById("mig-failures-note").textContent = (rep.failed || 0) + " objects failed, from the migration's report" +
      (more > 0 ? "; the report names the first " + failures.length : "") + (rep.delete_skipped ? ". --delete-extra skipped: " + rep.delete_skipped : "") + ".";
    if (j.rerun) {
      document.getElementById("mig-rerun-cmd").textContent = j.rerun;
      document.getElementById("mig-rerun").hidden = false;
    }
  }

  // Parts map: done parts from the checkpoint (GET /api/v1/transfers/{id}/parts,
  // again at most once a second while they change), in flight and resumed
  // ones from the live updates (parts_active, parts_resumed).
  let partsMap = null, partsKey = "", partsTimer = 0, lastDetail = null;
  function parseParts(s) {
    const out = [];
    (s || "").split(",").filter(Boolean).forEach(r => {
      const [a, b] = r.split("-").map(Number);
      for (let n = a; n <= (b || a); n++) out.push(n);
    });
    return out;
  }
  function partsDue(t) {
    lastDetail = t;
    const key = t.state + "|" + t.parts_done + "|" + (t.parts_active || "") + "|" + (t.parts_resumed || "");
    if (key === partsKey || partsTimer) return;
    partsKey = key;
    partsTimer = setTimeout(loadParts, partsMap ? 1000 : 0);
  }
  async function loadParts() {
    try {
      partsMap = await getJSON("/api/v1/transfers/" + encodeURIComponent(detailID) + "/parts");
    } catch (e) {
      document.getElementById("parts-note").textContent = "Parts map unavailable: " + e.message;
    }
    partsTimer = 0;
    if (lastDetail) { drawParts(lastDetail); partsDue(lastDetail); }
  }
  function drawParts(t) {
    const parts = document.getElementById("parts");
    const n = Math.min(Math.max(t.parts_total || 0, partsMap ? partsMap.parts_total : 0), 10000);
    if (parts.childElementCount !== n) {
      parts.replaceChildren(...Array.from({ length: n }, (_, i) => { const c = el("span", "part"); c.dataset.part = String(i + 1); return c; }));
    }
    // Until the map is loaded, and for a transfer that keeps no checkpoint
    // while it runs (a streamed upload), the first parts_done cells stand
    // for the count.
    const exact = partsMap && (partsMap.checkpoint || terminal(t.state));
    const done = exact ? new Set(partsMap.done) : null;
    const resumed = new Set(t.parts_resumed !== undefined ? parseParts(t.parts_resumed) : (partsMap ? partsMap.resumed : []));
    const inflight = new Set(t.state === "active" ? parseParts(t.parts_active) : []);
    let nd = 0, nr = 0, nf = 0;
    [...parts.children].forEach((c, i) => {
      const num = i + 1;
      const isDone = done ? done.has(num) : i < t.parts_done;
      const isFlight = !isDone && inflight.has(num);
      const isResumed = isDone && resumed.has(num);
      c.classList.toggle("done", isDone);
      c.classList.toggle("resumed", isResumed);
      c.classList.toggle("inflight", isFlight);
      c.title = "part " + num + ": " + (isResumed ? "done by an earlier attempt" : isDone ? "done" : isFlight ? "in flight" : "to do");
      nd += isDone; nr += isResumed; nf += isFlight;
    });
    if (n > 0) {
      document.getElementById("parts-note").textContent = nd + " of " + n + " parts done" +
        (nr ? " (" + nr + " resumed from an earlier attempt)" : "") + ", " + nf + " in flight." +
        (partsMap && !exact ? " This transfer keeps no checkpoint: the cells count its finished parts." : "") +
        (partsMap && !partsMap.checkpoint && (t.state === "failed" || t.state === "cancelled") ? " No checkpoint is kept: a re-run starts over." : "");
    }
  }

  // average is the bytes this run moved (a resumed run's start excluded)
  // over its time from started_at to its last update; 0 when unknown.
  function average(t) {
    const secs = (Date.parse(t.updated_at) - Date.parse(t.started_at)) / 1000;
    const moved = (t.bytes_done || 0) - (t.resumed_from || 0);
    return secs > 0 && moved > 0 ? moved / secs : 0;
  }
  function drawSparkline() {
    const line = document.querySelector("#sparkline polyline");
    if (samples.length < 2) { line.setAttribute("points", ""); return; }
    const t0 = samples[0].t, span = Math.max(samples[samples.length - 1].t - t0, 1);
    const peak = Math.max(...samples.map(s => s.rate), 1);
    line.setAttribute("points", samples.map(s =>
      ((s.t - t0) / span * 300).toFixed(1) + "," + (58 - s.rate / peak * 56).toFixed(1)).join(" "));
    document.getElementById("spark-note").textContent = "Peak " + rate(peak) + " since this page was opened.";
  }

  // ---- data flow ----
  function apply(t) {
    if (!newer(t, transfers.get(t.task_id))) return;
    if (!detailID && queueIDs && !transfers.has(t.task_id)) queueSoon();
    transfers.set(t.task_id, t);
    if (detailID) { if (t.task_id === detailID) renderDetail(t); } else renderList();
  }

  async function load() {
    try {
      if (detailID) {
        const r = await fetch("/api/v1/transfers/" + encodeURIComponent(detailID));
        if (r.status === 404) {
          document.getElementById("detail").hidden = true;
          document.getElementById("missing").hidden = false;
          return;
        }
        if (r.ok) apply(await r.json());
      } else {
        const r = await fetch("/api/v1/transfers?limit=" + listLimit);
        if (r.ok) (await r.json()).transfers.forEach(apply);
        renderList();
      }
    } catch (e) {
      live.textContent = "error: " + e;
    }
  }

  // The stream is opened first and the snapshot loaded once it is open, so
  // no update falls between the two; EventSource reconnects by itself.
  // A transfer's stream ends after it finishes; the reconnection then gets
  // 204 (or 404 for an unknown id) and the EventSource closes for good.
  function connect() {
    const url = detailID ? "/api/v1/transfers/" + encodeURIComponent(detailID) + "/events" : "/api/v1/events";
    const es = new EventSource(url);
    es.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); load(); });
    es.addEventListener("error", () => {
      live.classList.remove("on");
      if (es.readyState === EventSource.CLOSED) {
        live.textContent = "ended";
        load();
        return;
      }
      live.textContent = "reconnecting…";
    });
    es.addEventListener("progress", (ev) => { try { apply(JSON.parse(ev.data)); } catch (e) { /* ignore */ } });
  }

  if (detailID) {
    const button = document.getElementById("cancel");
    button.addEventListener("click", () => cancel(detailID, button, document.getElementById("msg")));
  }
  connect();
})();
