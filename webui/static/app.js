// dataslayer web UI: live progress, curves, the sweep preview and small conveniences. No dependencies.
"use strict";

const CSRF = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#e5534b", "#1a7f37", "#b7791f"];

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (res.status === 401) { window.location.reload(); throw new Error("logged out"); }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

// -- small conveniences ----------------------------------------------------------------------
function localizeTimes(root) {
  root.querySelectorAll("time[datetime]").forEach((t) => {
    const d = new Date(t.getAttribute("datetime"));
    if (isNaN(d)) return;
    t.title = d.toISOString();
    t.textContent = d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  });
}

function setupForms() {
  document.addEventListener("submit", (e) => {
    const form = e.target;
    // Forms are read through getAttribute: `form.dataset` is the form's own <select name="dataset">.
    const question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { e.preventDefault(); return; }
    if (form.hasAttribute("data-once")) {
      // The server queues one job per form token anyway; this only spares the user a second click.
      setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
    }
  });
  document.querySelectorAll("select#in-dataset").forEach((select) => select.addEventListener("change", () => {
    document.querySelectorAll(".subject-counts").forEach((box) => { box.hidden = box.dataset.dataset !== select.value; });
  }));
  document.querySelectorAll("form[data-autosubmit] select").forEach((s) => s.addEventListener("change", () => s.form.submit()));
  document.querySelectorAll("[data-copy]").forEach((btn) => btn.addEventListener("click", async () => {
    const input = document.querySelector(btn.dataset.copy);
    input.select();
    try { await navigator.clipboard.writeText(input.value); } catch (err) { document.execCommand("copy"); }
    btn.textContent = "Copied";
  }));
}

// -- job rows and progress bars --------------------------------------------------------------
function updateProgress(root, job) {
  const bar = root.querySelector("progress");
  if (!bar) return;
  bar.value = job.percent;
  bar.className = `bar bar-${job.status.toLowerCase()}`;
  const label = root.querySelector('[data-role="label"]');
  const detail = root.querySelector('[data-role="detail"]');
  if (label) label.textContent = job.label;
  if (detail) detail.textContent = job.detail;
}

function updateBadge(badge, job) {
  if (!badge) return;
  badge.textContent = job.status_label;
  badge.className = `badge badge-${job.status.toLowerCase()}`;
}

function updateRow(tr, job) {
  updateProgress(tr, job);
  updateBadge(tr.querySelector('[data-role="status"]'), job);
  const f1 = tr.querySelector('[data-role="f1"]');
  if (f1 && job.val_f1 != null) f1.textContent = Number(job.val_f1).toFixed(3);
  const elapsed = tr.querySelector('[data-role="elapsed"]');
  if (elapsed) elapsed.textContent = job.elapsed;
}

async function refreshBody(table) {
  // Rows appeared, vanished or ended: take the server-rendered rows (buttons, links, downloads).
  const res = await fetch(window.location.href, { credentials: "same-origin" });
  if (!res.ok) return;
  const doc = new DOMParser().parseFromString(await res.text(), "text/html");
  const fresh = doc.querySelector(`table[data-poll="${CSS.escape(table.dataset.poll)}"] tbody`);
  if (fresh) {
    table.tBodies[0].replaceWith(document.importNode(fresh, true));
    localizeTimes(table);
  }
}

function pollTable(table) {
  const note = document.querySelector('[data-role="live-note"]');
  const banner = document.querySelector('[data-role="queue-banner"]');
  async function tick() {
    let busy = true;
    if (!document.hidden) {
      try {
        const data = await getJSON(table.dataset.poll);
        if (banner) banner.hidden = data.queue_ok !== false;
        const rows = new Map([...table.querySelectorAll("tbody tr[data-run-id]")].map((tr) => [tr.dataset.runId, tr]));
        const ids = data.jobs.map((j) => j.run_id);
        const changed = ids.length !== rows.size || ids.some((id) => !rows.has(id)) ||
          data.jobs.some((j) => rows.get(j.run_id)?.dataset.status !== j.status);
        if (changed) await refreshBody(table);
        else data.jobs.forEach((j) => updateRow(rows.get(j.run_id), j));
        busy = data.jobs.some((j) => !j.done);
        if (note) note.classList.remove("stale");
      } catch (err) {
        if (note) note.classList.add("stale");
      }
    }
    setTimeout(tick, busy ? 2500 : 10000);
  }
  setTimeout(tick, 1500);
}

// -- charts ----------------------------------------------------------------------------------
function el(name, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, name);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text != null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function drawChart(box, curves) {
  const names = box.dataset.series.split(",");
  const series = names.map((n, i) => ({ name: n, color: COLORS[i % COLORS.length], points: curves[n] || [] }))
    .filter((s) => s.points.length);
  if (!series.length) return;
  const W = 560, H = 250, L = 46, R = 14, T = 28, B = 30;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  // Epochs run from 1 to the job's `epochs`: the axis shows the whole run from the first point on.
  let x0 = Math.min(1, ...xs), x1 = Math.max(Number(box.dataset.xMax) || 0, ...xs);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let y0 = box.dataset.yMin != null ? Number(box.dataset.yMin) : Math.min(...ys);
  let y1 = box.dataset.yMax != null ? Number(box.dataset.yMax) : Math.max(...ys);
  if (box.dataset.yMin == null || box.dataset.yMax == null) {
    const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.1 || 1;
    if (box.dataset.yMin == null) y0 = Math.max(0, y0 - pad);
    if (box.dataset.yMax == null) y1 += pad;
  }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${box.dataset.yLabel} per epoch` });
  niceTicks(y0, y1, 5).forEach((v) => {
    el("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }, svg);
    el("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end", class: "tick" }, svg, Math.abs(v) < 1e-12 ? "0" : String(Number(v.toPrecision(3))));
  });
  const every = Math.max(1, Math.ceil((x1 - x0) / 8));
  const xt = [];
  for (let v = Math.ceil(x0); v <= x1; v += every) xt.push(v);
  xt.forEach((v) => el("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle", class: "tick" }, svg, String(v)));
  el("text", { x: W - R, y: H - 2, "text-anchor": "end", class: "tick" }, svg, "epoch");
  el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }, svg);
  el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }, svg);
  let lx = L;
  series.forEach((s) => {
    el("path", { d: s.points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(""),
      class: "line", stroke: s.color }, svg);
    s.points.forEach((p) => {
      const dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3.2, fill: s.color }, svg);
      el("title", {}, dot, `${s.name} epoch ${p[0]}: ${Number(p[1]).toFixed(4)}`);
    });
    el("line", { x1: lx, x2: lx + 16, y1: 10, y2: 10, stroke: s.color, "stroke-width": 3 }, svg);
    const label = el("text", { x: lx + 21, y: 14, class: "legend" }, svg, s.name);
    lx += 30 + s.name.length * 7;
    return label;
  });
  box.replaceChildren(svg);
}

// -- the job page ----------------------------------------------------------------------------
function pollJob(page) {
  const logBox = page.querySelector('[data-role="log"]');
  const card = page.querySelector(".progress-card");
  const badge = page.querySelector('h1 [data-role="status"]');
  let reloaded = false;
  async function tick() {
    let again = page.dataset.done !== "1";
    if (!document.hidden || !again) {
      try {
        const data = await getJSON(page.dataset.live);
        if (data.curves) page.querySelectorAll("[data-chart]").forEach((box) => drawChart(box, data.curves));
        if (card) updateProgress(card, data.job);
        updateBadge(badge, data.job);
        if (logBox && data.log.length) {
          const atBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 30;
          const text = data.log.join("\n") + "\n";
          if (logBox.textContent !== text) {
            logBox.textContent = text;
            if (atBottom) logBox.scrollTop = logBox.scrollHeight;
          }
        }
        (data.children || []).forEach((c) => {
          const tr = page.querySelector(`tr[data-run-id="${c.run_id}"]`);
          if (tr) updateRow(tr, c);
        });
        if (data.job.done && page.dataset.done !== "1" && !reloaded) {
          reloaded = true;  // the ended job's page has plots, reports and downloads: render it once more
          window.location.reload();
          return;
        }
        again = !data.job.done;
      } catch (err) { /* keep polling: the server or a service may be restarting */ }
    }
    if (again) setTimeout(tick, 2000);
  }
  if (logBox) logBox.scrollTop = logBox.scrollHeight;
  tick();
}

// -- the sweep preview -----------------------------------------------------------------------
function setupPreview(form) {
  const count = document.querySelector('[data-role="preview-count"]');
  const msg = document.querySelector('[data-role="preview-msg"]');
  const box = document.querySelector('[data-role="preview"]');
  const button = form.querySelector('[data-role="preview-button"]');
  let timer = null, seq = 0;
  async function update() {
    const mine = ++seq;
    const strategy = form.querySelector('[name="sweep.strategy"]');
    if (strategy) form.setAttribute("data-strategy", strategy.value);
    try {
      const res = await fetch(form.getAttribute("data-preview"), { method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": CSRF() } });
      const data = await res.json();
      if (mine !== seq) return;
      box.classList.toggle("bad", !data.ok);
      if (button) button.textContent = data.ok ? `Queue sweep of ${data.runs} run${data.runs === 1 ? "" : "s"}` : "Queue sweep";
      count.textContent = data.ok ? String(data.runs) : "⚠";
      msg.textContent = data.ok ? (data.runs === 1 ? "run" : "runs") : `${data.field ? data.field.replace(/^(row|sweep)\./, "") + ": " : ""}${data.error}`;
    } catch (err) {
      if (mine === seq) { count.textContent = "?"; msg.textContent = "preview unavailable"; }
    }
  }
  const later = () => { clearTimeout(timer); timer = setTimeout(update, 350); };
  form.addEventListener("input", later);
  form.addEventListener("change", later);
  update();
}

function setupMenu() {
  const toggle = document.querySelector('[data-role="menu-toggle"]');
  if (!toggle) return;
  toggle.addEventListener("click", () => {
    const open = toggle.closest(".topbar").classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(open));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupMenu();
  localizeTimes(document);
  setupForms();
  document.querySelectorAll("table[data-poll]").forEach(pollTable);
  document.querySelectorAll("[data-live]").forEach(pollJob);
  document.querySelectorAll("form[data-preview]").forEach(setupPreview);
});
