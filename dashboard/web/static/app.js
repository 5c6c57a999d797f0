// ferry dashboard: renders /api/transfers and keeps it live with the
// Server-Sent Events of /api/events. No build step, no dependencies.
"use strict";

(function () {
  const body = document.body;
  const readOnly = body.dataset.readOnly === "true";
  const detailID = body.dataset.taskId || "";
  const live = document.getElementById("live");
  const transfers = new Map(); // task_id -> Transfer

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
      const r = await fetch("/api/transfers/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
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

  // renderList orders rows as the API does: unfinished first, newest first.
  function renderList() {
    const all = [...transfers.values()].sort((a, b) => {
      const ta = terminal(a.state), tb = terminal(b.state);
      if (ta !== tb) return ta ? 1 : -1;
      const ua = a.updated_at || "", ub = b.updated_at || "";
      return ua < ub ? 1 : ua > ub ? -1 : a.task_id.localeCompare(b.task_id);
    });
    tbody.replaceChildren(...all.map(row));
    document.getElementById("empty").hidden = all.length > 0;
  }

  // ---- detail page ----
  const samples = []; // {t: ms, rate: bytes/s}
  function renderDetail(t) {
    const d = document.getElementById("detail");
    setBar(d.querySelector(".bar"), t);
    const f = (name, text) => { d.querySelector('[data-field="' + name + '"]').textContent = text; };
    f("state", t.state); f("type", t.type || "—"); f("source", t.source || "—"); f("dest", t.dest || "—");
    f("bytes", bytesText(t) + " (" + pct(t) + ")");
    f("rate", terminal(t.state) ? "—" : rate(t.rate)); f("eta", eta(t.eta_seconds)); f("parts", partsText(t));
    f("resumed", t.resumed_from ? bytes(t.resumed_from) : "—");
    f("started", when(t.started_at)); f("updated", when(t.updated_at)); f("error", t.error || "—");
    const counters = document.getElementById("counters");
    counters.hidden = !t.counters;
    if (t.counters) {
      const dl = counters.querySelector("dl");
      dl.replaceChildren(...Object.entries(t.counters).flatMap(([k, v]) => [el("dt", "", k), el("dd", "", String(v))]));
    }
    // Parts map: one cell per part, the first parts_done filled.
    const parts = document.getElementById("parts");
    const n = Math.min(t.parts_total || 0, 10000);
    if (parts.childElementCount !== n) {
      parts.replaceChildren(...Array.from({ length: n }, () => el("span", "part")));
    }
    [...parts.children].forEach((c, i) => c.classList.toggle("done", i < t.parts_done));
    const button = document.getElementById("cancel");
    button.hidden = terminal(t.state);
    if (!terminal(t.state)) {
      samples.push({ t: Date.now(), rate: t.rate || 0 });
      if (samples.length > 300) samples.shift();
      drawSparkline();
    }
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
    transfers.set(t.task_id, t);
    if (detailID) { if (t.task_id === detailID) renderDetail(t); } else renderList();
  }

  async function load() {
    try {
      if (detailID) {
        const r = await fetch("/api/transfers/" + encodeURIComponent(detailID));
        if (r.status === 404) {
          document.getElementById("detail").hidden = true;
          document.getElementById("missing").hidden = false;
          return;
        }
        if (r.ok) apply(await r.json());
      } else {
        const r = await fetch("/api/transfers");
        if (r.ok) (await r.json()).transfers.forEach(apply);
        renderList();
      }
    } catch (e) {
      live.textContent = "error: " + e;
    }
  }

  // The stream is opened first and the snapshot loaded once it is open, so
  // no update falls between the two; EventSource reconnects by itself.
  function connect() {
    const url = "/api/events" + (detailID ? "?task=" + encodeURIComponent(detailID) : "");
    const es = new EventSource(url);
    es.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); load(); });
    es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
    es.addEventListener("progress", (ev) => { try { apply(JSON.parse(ev.data)); } catch (e) { /* ignore */ } });
  }

  if (detailID) {
    const button = document.getElementById("cancel");
    button.addEventListener("click", () => cancel(detailID, button, document.getElementById("msg")));
  }
  connect();
})();
