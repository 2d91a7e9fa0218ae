// The edgetune page: plain JavaScript, no build step, no network assets.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "edgetune_token";
let selected = null;

function token() { return localStorage.getItem(TOKEN_KEY); }

function setToken(value) {
  localStorage.setItem(TOKEN_KEY, value);
  // an earlier page kept the token in a script-readable cookie sent to every port: drop it
  document.cookie = `${TOKEN_KEY}=; path=/; max-age=0; SameSite=Strict`;
}

// optuna-dashboard (on its own port) cannot send a header: its login sets an HttpOnly cookie,
// limited to the dashboard's paths. The token goes there in a form post, never in a URL.
function openDashboard(event) {
  event.preventDefault();
  if (!info || !info.dashboard_port) return;
  const form = el("form", { method: "POST", target: "_blank", action: `${location.protocol}//${location.hostname}:${info.dashboard_port}/edgetune/login` },
    el("input", { type: "hidden", name: "token", value: token() }));
  document.body.append(form); form.submit(); form.remove();
}

function askToken(message) {
  $("#main").hidden = true;
  $("#token-form").hidden = false;
  $("#status").textContent = message || "enter the service token";
}

async function api(method, path, body, contentType) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (contentType) headers["Content-Type"] = contentType;
  const res = await fetch(path, { method, headers, body });
  if (res.status === 401 || res.status === 403) {
    localStorage.removeItem(TOKEN_KEY);
    askToken("the token was refused; enter it again");
    throw new Error("unauthorized");
  }
  return res;
}

async function detailOf(res) {
  try {
    const d = (await res.json()).detail;
    return typeof d === "string" ? d : JSON.stringify(d);
  } catch { return `HTTP ${res.status}`; }
}

const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function action(name, verb) {
  $("#action-error").textContent = "";
  const res = await api("POST", `/api/studies/${encodeURIComponent(name)}/${verb}`);
  if (!res.ok) $("#action-error").textContent = `${verb} ${name}: ${await detailOf(res)}`;
  refresh();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An export is a background job: POST starts it (or joins the one running), its URL answers
// 202 while it runs, then the zip.
async function download(name, button) {
  $("#action-error").textContent = "";
  button.disabled = true;
  button.textContent = "Exporting…";
  try {
    let res = await api("POST", `/api/studies/${encodeURIComponent(name)}/export`);
    if (!res.ok) { $("#action-error").textContent = `download ${name}: ${await detailOf(res)}`; return; }
    const job = await res.json();
    for (;;) {
      res = await api("GET", job.url);
      if (res.status !== 202) break;
      await sleep(2000);
    }
    if (!res.ok) { $("#action-error").textContent = `download ${name}: ${await detailOf(res)}`; return; }
    const blob = await res.blob();
    const cd = res.headers.get("Content-Disposition") || "";
    const file = (cd.match(/filename="([^"]+)"/) || [null, `${name}.zip`])[1];
    const a = el("a", { href: URL.createObjectURL(blob), download: file });
    document.body.append(a); a.click(); a.remove();
    await showFigures(name, job.url);
  } finally { button.disabled = false; button.textContent = "Download"; }
}

// The export's figures, fetched with the token (an <img src> could not send it).
async function showFigures(name, url) {
  for (const figure of ["front", "policy"]) {
    const res = await api("GET", `${url}/${figure}.png`);
    if (!res.ok) return;
    $(`#${figure}-figure`).src = URL.createObjectURL(await res.blob());
  }
  $("#figures-name").textContent = name;
  $("#figures").hidden = false;
}

function row(s) {
  const running = s.state === "running" || s.state === "stopping" || s.state === "queued";
  const best = s.best || {};
  const req = s.requested_trials || 0;
  const tr = el("tr", { "data-study": s.study, "data-state": s.state, class: s.study === selected ? "selected" : "", onclick: () => { selected = s.study; refresh(); } },
    el("td", {}, s.study),
    el("td", { class: `state state-${s.state}`, title: s.reason || "" },
      s.state === "queued" && s.queue_position ? `queued (#${s.queue_position})` : s.state),
    el("td", {}, el("progress", { max: String(req || 1), value: String(s.done) }), " ",
      el("span", { class: "done" }, String(s.done)), ` / ${req || "?"}`),
    el("td", { class: "feasible" }, String(s.feasible)),
    el("td", { class: "best-accuracy" }, fmt(best.accuracy, 4)),
    el("td", {}, fmt(best.latency_ms, 4)),
    el("td", {}, fmt(best.size_kb, 1)));
  const buttons = el("td", {});
  const stop = el("button", { type: "button", class: "stop", onclick: (e) => { e.stopPropagation(); action(s.study, "stop"); } }, "Stop");
  const resume = el("button", { type: "button", class: "resume", onclick: (e) => { e.stopPropagation(); action(s.study, "resume"); } }, "Resume");
  const dl = el("button", { type: "button", class: "download", onclick: (e) => { e.stopPropagation(); download(s.study, dl); } }, "Download");
  stop.disabled = !running;
  resume.disabled = running || (s.state === "finished" && s.done >= req);
  dl.disabled = !s.best;
  buttons.append(stop, resume, dl);
  tr.append(buttons);
  return tr;
}

function table(obj) {
  if (!obj || !Object.keys(obj).length) return "–";
  return Object.entries(obj).map(([k, v]) => `${k} ${typeof v === "number" ? Number(v.toPrecision(4)) : v}`).join(", ");
}

function plot(svg, points, teacher, budgets) {
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text) e.textContent = text; svg.append(e); return e; };
  const pts = points.filter((p) => p.accuracy !== null && p.latency_ms !== null);
  const all = pts.concat(teacher && teacher.accuracy !== undefined ? [{ accuracy: teacher.accuracy, latency_ms: teacher.latency_ms }] : []);
  const W = 520, H = 320, L = 56, B = 40, T = 12, R = 12;
  mk("text", { x: W / 2, y: H - 6, "text-anchor": "middle" }, "latency (ms)");
  mk("text", { x: 14, y: H / 2, transform: `rotate(-90 14 ${H / 2})`, "text-anchor": "middle" }, "accuracy");
  if (!all.length) { mk("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#888" }, "no trained candidates yet"); return; }
  const xs = all.map((p) => p.latency_ms), ys = all.map((p) => p.accuracy);
  if (budgets && budgets.latency_ms) xs.push(budgets.latency_ms);
  const x0 = 0, x1 = Math.max(...xs) * 1.1, y0 = Math.max(0, Math.min(...ys) - 0.05), y1 = Math.min(1, Math.max(...ys) + 0.02);
  const X = (v) => L + (v - x0) / (x1 - x0 || 1) * (W - L - R), Y = (v) => H - B - (v - y0) / (y1 - y0 || 1) * (H - B - T);
  mk("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888" });
  mk("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888" });
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    mk("text", { x: X(xv), y: H - B + 14, "text-anchor": "middle", "font-size": 10 }, xv.toFixed(3));
    mk("text", { x: L - 4, y: Y(yv) + 3, "text-anchor": "end", "font-size": 10 }, yv.toFixed(3));
  }
  if (budgets && budgets.latency_ms) {
    mk("line", { x1: X(budgets.latency_ms), y1: T, x2: X(budgets.latency_ms), y2: H - B, stroke: "#c22", "stroke-dasharray": "4 3" });
    mk("text", { x: X(budgets.latency_ms) + 3, y: T + 10, fill: "#c22", "font-size": 10 }, "budget");
  }
  for (const p of pts) {
    const c = mk("circle", { cx: X(p.latency_ms), cy: Y(p.accuracy), r: 4, class: "point", fill: p.feasible ? "#27c" : "none", stroke: p.feasible ? "#27c" : "#999" });
    const t = document.createElementNS(ns, "title"); t.textContent = `trial ${p.trial}: ${p.status}, accuracy ${p.accuracy.toFixed(4)}, ${p.latency_ms.toFixed(4)} ms`; c.append(t);
  }
  if (teacher && teacher.accuracy !== undefined) {
    mk("rect", { x: X(teacher.latency_ms) - 4, y: Y(teacher.accuracy) - 4, width: 8, height: 8, fill: "#e80" });
    mk("text", { x: X(teacher.latency_ms) - 6, y: Y(teacher.accuracy) - 8, "text-anchor": "end", "font-size": 10 }, "teacher");
  }
}

async function showDetail(name) {
  const res = await api("GET", `/api/studies/${encodeURIComponent(name)}`);
  if (!res.ok) { $("#detail").hidden = true; return; }
  const d = await res.json();
  const s = d.summary || {};
  $("#detail").hidden = false;
  $("#detail-name").textContent = `${d.study} (${d.state}${d.reason ? ": " + d.reason : ""})`;
  $("#teacher").textContent = table(s.teacher);
  $("#budgets").textContent = table(s.budgets);
  const best = $("#best"); best.replaceChildren();
  for (const b of s.best || []) best.append(el("div", {}, `trial ${b.trial}: accuracy ${fmt(b.accuracy, 4)}, ${fmt(b.latency_ms, 4)} ms, ${fmt(b.size_kb, 1)} KiB`));
  if (!(s.best || []).length) best.textContent = "none feasible yet";
  plot($("#plot"), d.points || [], s.teacher, s.budgets);
  $("#log").textContent = (d.run && d.run.log_tail) || "";
}

let info = null;

async function loadInfo() {
  const res = await api("GET", "/api/info");
  if (!res.ok) return;
  info = await res.json();
  if (info.dashboard_port) $("#dashboard-link").addEventListener("click", openDashboard);
  else $("#dashboard-link").hidden = true;
}

async function refresh() {
  if (!token()) return;
  if (!info) { try { await loadInfo(); } catch { return; } }
  let res;
  try { res = await api("GET", "/api/studies"); } catch { return; }
  if (!res.ok) { $("#status").textContent = `cannot list studies: ${await detailOf(res)}`; return; }
  const studies = (await res.json()).studies;
  $("#token-form").hidden = true;
  $("#main").hidden = false;
  const count = (state) => studies.filter((s) => s.state === state).length;
  $("#status").textContent = `${studies.length} studies, ${count("running")} running, ${count("queued")} queued; updated ${new Date().toLocaleTimeString()}`;
  $("#studies tbody").replaceChildren(...studies.map(row));
  if (!selected && studies.length) selected = studies[studies.length - 1].study;
  if (selected) await showDetail(selected);
}

async function submit(event) {
  event.preventDefault();
  $("#upload-error").textContent = "";
  const file = $("#spec-file").files[0];
  const text = file ? await file.text() : $("#spec-text").value;
  if (!text.trim()) { $("#upload-error").textContent = "choose a spec file or paste one"; return; }
  const json = file ? file.name.endsWith(".json") : text.trim().startsWith("{");
  const name = $("#study-name").value.trim();
  const url = "/api/studies" + (name ? `?study=${encodeURIComponent(name)}` : "");
  const res = await api("POST", url, text, json ? "application/json" : "application/yaml");
  if (!res.ok) { $("#upload-error").textContent = await detailOf(res); return; }
  const out = await res.json();
  selected = out.study;
  $("#upload").reset();
  refresh();
}

async function init() {
  $("#token-form").addEventListener("submit", (e) => { e.preventDefault(); setToken($("#token").value.trim()); $("#token").value = ""; refresh(); });
  $("#forget-token").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); askToken(); });
  $("#upload").addEventListener("submit", submit);
  if (!token()) askToken(); else { setToken(token()); refresh(); }
  setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", init);
