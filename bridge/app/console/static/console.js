/* cvat-bridge console: hash routes over the bridge's JSON API, polling for live progress.
   Plain ES2020, no dependencies. Text from the server is only ever set with textContent. */
"use strict";

const TOKEN_KEY = "cvat-bridge-token";
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const STATUSES = ["queued", "waiting", "running", "succeeded", "failed", "cancelled"];
const PAGE = 50;

const state = { config: null, session: null, timer: null, view: 0, thumbUrls: [] };

// --- small helpers ---------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel, root = document) => root.querySelector(sel);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

class ApiError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; this.detail = detail; }
}

async function api(path, { method = "GET", useToken = token() } = {}) {
  const headers = { Accept: "application/json" };
  if (useToken) headers.Authorization = `Bearer ${useToken}`;
  const resp = await fetch(path, { method, headers, cache: "no-store" });
  if (!resp.ok) {
    let detail = resp.statusText;
    try { const body = await resp.json(); detail = body.detail || JSON.stringify(body); } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, detail);
  }
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.blob();
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const rel = s < 0 ? `in ${fmtSeconds(-s)}` : `${fmtSeconds(s)} ago`;
  return `${d.toLocaleString()} (${rel})`;
}
function fmtSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 90) return `${Math.round(s * 10) / 10} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 360) / 10} h`;
  return `${Math.round(s / 8640) / 10} days`;
}
function statusOf(job) { return job.waiting ? "waiting" : job.status; }
function badge(status, title) { return h("span", { class: `badge s-${status}`, title }, status); }
function progressBar(p, status) {
  const pct = p.total ? Math.min(100, Math.round((100 * p.done) / p.total)) : (status === "succeeded" ? 100 : 0);
  const cls = status === "succeeded" ? "progress done" : status === "failed" ? "progress bad" : "progress";
  const bar = h("span", { class: cls, role: "progressbar", "aria-valuenow": p.done, "aria-valuemax": p.total },
    h("span", { style: `width:${pct}%` }));
  return h("span", { class: "progress-cell" }, bar, h("span", { class: "progress-text" }, `${p.done}/${p.total}`));
}
function cvatUrl(path) { return state.session ? `${state.session.cvat_ui_url}${path}` : null; }
function cvatLink(label, path) {
  const url = cvatUrl(path);
  return url ? h("a", { href: url, target: "_blank", rel: "noopener", title: "open in CVAT" }, label) : label;
}
function errorBox(err) { return h("div", { class: "alert error", role: "alert" }, err.message || String(err)); }
function setUpdated() { $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`; }

function poll(fn, ms) {
  const view = state.view;
  const tick = async () => {
    if (view !== state.view) return;
    try { await fn(); } catch (err) { console.warn(err); }
    if (view === state.view) state.timer = setTimeout(tick, interval());
  };
  const interval = () => (typeof ms === "function" ? ms() : ms) * (document.hidden ? 4 : 1);
  state.timer = setTimeout(tick, interval());
}

// --- routing -----------------------------------------------------------------------------------------
function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

async function route() {
  state.view += 1;
  clearTimeout(state.timer);
  state.thumbUrls.forEach((u) => URL.revokeObjectURL(u));
  state.thumbUrls = [];
  const { parts, params } = parseHash();
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  const view = $("#view");
  view.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    if (!state.session) await loadSession();
    if (parts[0] === "jobs" && parts[1]) await jobView(view, Number(parts[1]));
    else if (parts[0] === "projects" && parts[1]) await projectView(view, Number(parts[1]));
    else if (parts[0] === "projects") await projectsView(view);
    else if (parts[0] === "health") await healthView(view);
    else await jobsView(view, params);
  } catch (err) {
    view.replaceChildren(errorBox(err));
    if (err.status === 401) view.append(h("p", {}, "Enter the API token (BRIDGE_API_TOKEN) at the top right."));
  }
}

async function loadSession() {
  state.config = await api("/console/api/config");
  $("#version").textContent = `cvat-bridge ${state.config.version}`;
  $("#token-state").textContent = state.config.token_required
    ? (token() ? "token set" : "token required") : "reads open";
  state.session = await api("/console/api/session");
}

// --- jobs list ----------------------------------------------------------------------------------------
async function jobsView(view, params) {
  const filters = {};
  for (const k of ["status", "pipeline", "project_id", "task_id", "job_id"]) if (params.get(k)) filters[k] = params.get(k);
  const offset = Number(params.get("offset") || 0);
  const field = (name, label) => h("label", {}, label,
    h("input", { name, type: "number", min: 1, value: filters[name] || "", placeholder: "any" }));
  const select = (name, label, options) => h("label", {}, label,
    h("select", { name }, h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: filters[name] === o }, o))));
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = `#/jobs?${q}`;
  } },
  select("status", "Status", STATUSES), select("pipeline", "Pipeline", state.session.pipelines),
  field("project_id", "CVAT project"), field("task_id", "CVAT task"), field("job_id", "CVAT job"),
  h("button", { type: "submit", class: "primary" }, "Filter"),
  h("a", { href: "#/jobs" }, "clear"));
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  view.replaceChildren(h("h1", {}, "Jobs"), h("div", { class: "card" }, form),
    h("div", { class: "card" }, h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, ["#", "Status", "Pipeline", "Project", "Task", "CVAT job", "Progress", "Frame errors",
        "Created", "Took", "Result"].map((c) => h("th", {}, c)))), body), pager));

  const load = async () => {
    const q = new URLSearchParams({ ...filters, limit: PAGE, offset });
    const page = await api(`/jobs?${q}`);
    body.replaceChildren(...page.items.map(jobRow));
    if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No jobs match.")));
    const nav = (o) => { const q2 = new URLSearchParams({ ...filters, offset: o }); return `#/jobs?${q2}`; };
    pager.replaceChildren(...[
      h("span", { class: "muted" }, `${page.total ? offset + 1 : 0}–${offset + page.items.length} of ${page.total}`),
      offset > 0 ? h("a", { href: nav(Math.max(0, offset - PAGE)) }, "‹ newer") : null,
      offset + PAGE < page.total ? h("a", { href: nav(offset + PAGE) }, "older ›") : null].filter(Boolean));
    setUpdated();
  };
  await load();
  poll(load, 2000);
}

function jobRow(job) {
  const t = job.trigger || {};
  const st = statusOf(job);
  const result = job.error || job.summary || "";
  return h("tr", { "data-job": job.id, "data-status": st },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, `#${job.id}`)),
    h("td", {}, badge(st, job.waiting ? `next attempt ${when(job.next_attempt_at)}` : null),
      job.partial ? [" ", badge("partial")] : null),
    h("td", {}, job.pipeline),
    h("td", {}, t.project_id ? h("a", { href: `#/projects/${t.project_id}` }, String(t.project_id)) : "—"),
    h("td", {}, t.task_id ? cvatLink(String(t.task_id), `/tasks/${t.task_id}`) : "—"),
    h("td", {}, t.job_id && t.task_id ? cvatLink(String(t.job_id), `/tasks/${t.task_id}/jobs/${t.job_id}`) : "—"),
    h("td", {}, progressBar(job.progress, st)),
    h("td", { class: "num" }, job.frame_errors.length ? h("span", { class: "reason" }, String(job.frame_errors.length)) : "0"),
    h("td", { title: job.created_at }, new Date(job.created_at).toLocaleString()),
    h("td", { class: "num" }, fmtSeconds(job.duration_s)),
    h("td", { class: job.error ? "reason" : "" }, result.length > 140 ? `${result.slice(0, 140)}…` : result));
}

// --- job detail ------------------------------------------------------------------------------------------
async function jobView(view, id) {
  let job = await api(`/jobs/${id}`);
  const head = h("div"); const timeline = h("div", { class: "card" });
  const trigger = h("div", { class: "card" }); const created = h("div", { class: "card" });
  const errors = h("div", { class: "card", id: "frame-errors" }); const frames = h("div", { class: "card", id: "frames" });
  const notes = h("div", { class: "card" }); const actions = h("div", { class: "card" });
  view.replaceChildren(head, actions, h("div", { class: "grid2" }, timeline, trigger), h("div", { style: "height:16px" }),
    errors, frames, created, notes);
  let framesKey = null;
  const bar = actionBar(() => job, (fresh) => { job = fresh; render(); });
  actions.replaceChildren(...bar.el);

  const render = async () => {
    const st = statusOf(job);
    head.replaceChildren(h("h1", {}, `Job #${job.id}`, h("span", { class: "muted" }, job.pipeline), badge(st),
      job.partial ? badge("partial", "succeeded with failed frames") : null,
      h("span", { id: "job-progress" }, progressBar(job.progress, st))));
    bar.update(job);
    timeline.replaceChildren(h("h2", {}, "Timeline"), timelineList(job));
    trigger.replaceChildren(h("h2", {}, "Trigger"), triggerInfo(job));
    created.replaceChildren(h("h2", {}, "Created in CVAT"), createdInfo(job));
    notes.replaceChildren(h("h2", {}, "Parameters and notes"), ...paramsInfo(job));
    const key = JSON.stringify([job.frame_errors, job.created_objects, job.progress.total, job.status]);
    if (key !== framesKey) {
      framesKey = key;
      const list = await api(`/console/api/jobs/${id}/frames`);
      renderErrors(errors, job, list);
      renderFrames(frames, list);
    }
    setUpdated();
  };
  await render();
  const refresh = async () => {
    job = await api(`/jobs/${id}`);
    await render();
  };
  poll(refresh, () => (FINAL.has(job.status) ? 5000 : 1000));
}

function timelineList(job) {
  const items = [];
  const t = job.trigger || {};
  items.push(["", job.created_at, `Webhook received${t.webhook_id ? ` (CVAT webhook #${t.webhook_id})` : ""}: `
    + `${t.event || t.kind || "event"}${t.sender ? ` by ${t.sender}` : ""} — job stored`]);
  if (job.started_at) items.push(["run", job.started_at, `Attempt ${job.attempts} of ${job.max_attempts} started`]);
  if (job.failures) items.push(["warn", null, `${job.failures} attempt(s) ended unexpectedly (error or a worker that died)`]);
  if (job.waiting) {
    items.push(["warn", job.next_attempt_at, `Waiting: ${job.error || "transient error"} — next attempt ${when(job.next_attempt_at)}`
      + (job.retry_until ? `; retried until ${new Date(job.retry_until).toLocaleString()}` : "")]);
  } else if (job.status === "queued") items.push(["", null, "Queued: waiting for a worker"]);
  if (job.status === "running") items.push(["run", job.updated_at, `Running: ${job.progress.done} of ${job.progress.total} frames`]);
  if (job.cancel_requested && !FINAL.has(job.status)) items.push(["warn", job.updated_at, "Cancel requested"]);
  if (FINAL.has(job.status)) {
    const cls = job.status === "succeeded" ? "ok" : job.status === "failed" ? "bad" : "";
    const text = job.status === "succeeded" ? job.summary : job.error || job.summary;
    items.push([cls, job.finished_at, `${job.status[0].toUpperCase()}${job.status.slice(1)}`
      + (job.duration_s !== null ? ` after ${fmtSeconds(job.duration_s)}` : "") + (text ? `: ${text}` : "")]);
  }
  return h("ol", { class: "timeline" }, items.map(([cls, at, text]) =>
    h("li", { class: cls }, h("div", {}, text), at ? h("div", { class: "when" }, when(at)) : null)));
}

function triggerInfo(job) {
  const t = job.trigger || {};
  const rows = [
    ["Event", t.event || "—"], ["Transition", t.kind || "—"],
    ["Webhook", t.webhook_id ? (t.project_id ? cvatLink(`#${t.webhook_id}`, `/projects/${t.project_id}/webhooks`) : `#${t.webhook_id}`) : "—"],
    ["Sender", t.sender || "—"],
    ["Project", t.project_id ? h("span", {}, cvatLink(`#${t.project_id}`, `/projects/${t.project_id}`), " · ",
      h("a", { href: `#/projects/${t.project_id}` }, "pipeline view")) : "—"],
    ["Task", t.task_id ? cvatLink(`#${t.task_id}`, `/tasks/${t.task_id}`) : "—"],
    ["CVAT job", t.job_id && t.task_id ? cvatLink(`#${t.job_id}`, `/tasks/${t.task_id}/jobs/${t.job_id}`) : "—"],
  ];
  return h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function createdInfo(job) {
  if (!job.created_objects.length) return h("p", { class: "muted" }, "Nothing yet.");
  return h("ul", {}, job.created_objects.map((o) => {
    if (o.kind === "task") return h("li", {}, "Task ", cvatLink(`#${o.id}`, `/tasks/${o.id}`));
    if (o.kind === "shapes") return h("li", {}, `${o.count} shapes written`);
    return h("li", {}, `${o.kind} ${o.id !== undefined ? `#${o.id}` : ""}`);
  }));
}

function paramsInfo(job) {
  const params = Object.entries(job.params || {});
  const out = [params.length
    ? h("dl", { class: "kv" }, params.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, JSON.stringify(v))]))
    : h("p", { class: "muted" }, "No parameters.")];
  const notes = job.notes || {};
  if (notes.report_dir) {
    out.push(h("p", {}, "Report files in ", h("code", {}, notes.report_dir), ": ", (notes.report_files || []).join(", ")));
  }
  if (Object.keys(notes).length) out.push(h("details", {}, h("summary", {}, "notes"), h("pre", {}, JSON.stringify(notes, null, 2))));
  return out;
}

function actionBar(current, onChange) {
  // Built once per page: polling updates the buttons, never the open confirmation form.
  const msg = h("div", { id: "action-message" });
  const box = h("div");
  const ask = (action) => {
    const job = current();
    const input = h("input", { type: "password", id: "action-token", value: token(), placeholder: "BRIDGE_API_TOKEN",
      "aria-label": "API token" });
    const go = async (e) => {
      e.preventDefault();
      const given = input.value.trim();
      try {
        const fresh = await api(`/jobs/${job.id}/${action}`, { method: "POST", useToken: given });
        if (given) sessionStorage.setItem(TOKEN_KEY, given);
        box.replaceChildren();
        msg.replaceChildren(h("div", { class: "alert ok" },
          action === "retry" ? `Job #${job.id} queued again.` : `Cancel sent to job #${job.id}.`));
        onChange(fresh);
      } catch (err) {
        msg.replaceChildren(h("div", { class: "alert error", role: "alert" }, `${action} refused — ${err.message}`));
      }
    };
    msg.replaceChildren();
    box.replaceChildren(h("form", { class: "confirm", onsubmit: go },
      h("span", {}, action === "retry" ? "Run this job again?" : "Cancel this job?"), input,
      h("button", { type: "submit", class: "primary", id: "confirm-action" }, action === "retry" ? "Retry job" : "Cancel job"),
      h("button", { type: "button", onclick: () => box.replaceChildren() }, "Close")));
    input.focus();
  };
  const retry = h("button", { id: "retry", onclick: () => ask("retry") }, "Retry…");
  const cancel = h("button", { id: "cancel", class: "danger", onclick: () => ask("cancel") }, "Cancel…");
  const note = state.config && !state.config.changes_enabled
    ? h("span", { class: "muted" }, "Retry and cancel need BRIDGE_API_TOKEN on the bridge.") : null;
  const update = (job) => {
    retry.disabled = !FINAL.has(job.status);
    cancel.disabled = FINAL.has(job.status);
  };
  return { el: [h("div", { class: "actions" }, retry, cancel, note), box, msg], update };
}

function thumb(url, alt) {
  if (!url) return h("div", { class: "thumb-missing" }, "no image");
  const holder = h("div", { class: "thumb-missing" }, "loading…");
  api(url).then((blob) => {
    const src = URL.createObjectURL(blob);
    state.thumbUrls.push(src);
    holder.replaceWith(h("img", { class: "thumb", src, alt, title: alt }));
  }).catch((err) => { holder.textContent = `thumbnail unavailable: ${err.detail || err.message}`; });
  return holder;
}

function renderErrors(card, job, frames) {
  const byFrame = new Map(frames.map((f) => [f.frame, f]));
  if (!job.frame_errors.length) {
    card.replaceChildren(h("h2", {}, "Frame errors"), h("p", { class: "muted" }, "None."));
    return;
  }
  card.replaceChildren(h("h2", {}, `Frame errors (${job.frame_errors.length})`),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Frame"), h("th", {}, "Image"), h("th", {}, "Reason"))),
      h("tbody", {}, job.frame_errors.map((e) => h("tr", { "data-frame": e.frame },
        h("td", { class: "num" }, String(e.frame)),
        h("td", {}, thumb(byFrame.get(e.frame)?.before_url, `frame ${e.frame}`)),
        h("td", { class: "reason" }, e.reason))))));
}

function renderFrames(card, frames) {
  const pairs = frames.filter((f) => f.after_url);
  if (!pairs.length) { card.replaceChildren(); card.hidden = true; return; }
  card.hidden = false;
  card.replaceChildren(h("h2", {}, "Before / after"), h("div", { class: "thumbs" }, pairs.map((f) =>
    h("div", { class: "pair", "data-frame": f.frame },
      h("div", { class: "imgs" },
        h("figure", {}, thumb(f.before_url, `frame ${f.frame} before`), h("figcaption", {}, `task ${f.before[0]} · frame ${f.before[1]}`)),
        h("figure", {}, thumb(f.after_url, `frame ${f.frame} after`), h("figcaption", {}, `task ${f.after[0]} · frame ${f.after[1]}`)))))));
}

// --- pipelines -----------------------------------------------------------------------------------------
function counts(c) {
  return h("span", { class: "counts" }, STATUSES.filter((s) => c[s]).map((s) => h("span", { class: `badge s-${s}` }, `${s} ${c[s]}`)));
}

async function projectsView(view) {
  const body = h("tbody");
  view.replaceChildren(h("h1", {}, "Pipelines"),
    h("p", { class: "muted" }, "CVAT projects whose webhooks started jobs (most recent 1000 jobs)."),
    h("div", { class: "card" }, h("table", {}, h("thead", {}, h("tr", {},
      ["Project", "Stages", "Jobs", "By status", "Creates tasks in"].map((c) => h("th", {}, c)))), body)));
  const load = async () => {
    const rows = await api("/console/api/projects");
    body.replaceChildren(...rows.map((p) => h("tr", {},
      h("td", {}, h("a", { href: `#/projects/${p.project_id}` }, `Project #${p.project_id}`), " ",
        h("span", { class: "muted" }, "(", cvatLink("CVAT", `/projects/${p.project_id}`), ")")),
      h("td", {}, p.stages.join(", ")), h("td", { class: "num" }, String(p.jobs)), h("td", {}, counts(p.counts)),
      h("td", {}, p.targets.map((t) => h("a", { href: `#/projects/${t}` }, `#${t} `))))));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No jobs yet.")));
    setUpdated();
  };
  await load();
  poll(load, 3000);
}

async function projectView(view, id) {
  const holder = h("div");
  view.replaceChildren(h("h1", {}, `Project #${id}`, h("span", { class: "muted" }, cvatLink("open in CVAT", `/projects/${id}`))), holder);
  const load = async () => {
    const p = await api(`/console/api/projects/${id}`);
    const flow = h("div", { class: "flow" },
      p.feeds_from.map((f) => [h("a", { class: "node", href: `#/projects/${f}` }, `Project #${f}`), "→"]),
      h("span", { class: "node here" }, `Project #${id}`),
      [...new Set(p.stages.map((s) => s.target_project).filter(Boolean))].map((t) =>
        ["→", h("a", { class: "node", href: `#/projects/${t}` }, `Project #${t}`)]));
    const stages = p.stages.map((s) => h("div", { class: "card stage", "data-stage": s.key },
      h("div", { class: "stage-head" }, h("h2", {}, s.key), counts(s.counts)),
      h("p", { class: "muted" }, "Routes: ", s.routes.map((r) => h("code", {}, `${r} `)),
        s.target_project ? [" · new tasks go to ", h("a", { href: `#/projects/${s.target_project}` }, `project #${s.target_project}`)] : null),
      h("table", {}, h("thead", {}, h("tr", {}, ["Task", "CVAT jobs", "Jobs", "Running", "Waiting", "Failed", "Latest", "Next task"]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, s.tasks.map((t) => h("tr", {},
        h("td", {}, t.task_id ? cvatLink(`#${t.task_id}`, `/tasks/${t.task_id}`) : "—"),
        h("td", {}, t.cvat_jobs.map((j) => [cvatLink(`#${j}`, `/tasks/${t.task_id}/jobs/${j}`), " "])),
        h("td", { class: "num" }, String(t.jobs)),
        h("td", { class: "num" }, String(t.counts.running || 0)),
        h("td", { class: "num" }, String(t.counts.waiting || 0)),
        h("td", { class: "num" }, t.counts.failed ? h("span", { class: "reason" }, String(t.counts.failed)) : "0"),
        h("td", {}, h("a", { href: `#/jobs/${t.latest_job}` }, `#${t.latest_job}`), " ", badge(t.latest_status), " ",
          h("span", { class: "muted" }, `${t.latest_progress[0]}/${t.latest_progress[1]}`)),
        h("td", {}, t.next_task ? cvatLink(`#${t.next_task}`, `/tasks/${t.next_task}`) : "—")))))));
    holder.replaceChildren(flow, h("p", {}, `${p.jobs_seen} jobs `, counts(p.counts),
      p.truncated ? h("span", { class: "muted" }, " (most recent only)") : null),
    ...(stages.length ? stages : [h("p", { class: "muted" }, "No jobs for this project yet.")]));
    setUpdated();
  };
  await load();
  poll(load, 3000);
}

// --- health --------------------------------------------------------------------------------------------
function okText(ok) { return h("span", { class: ok ? "ok-text" : "bad-text" }, ok ? "ok" : "not ok"); }

async function healthView(view) {
  const holder = h("div");
  view.replaceChildren(h("h1", {}, "Health", h("button", { onclick: () => load() }, "Check now")), holder);
  const load = async () => {
    const resp = await fetch("/health", { cache: "no-store" });
    const body = await resp.json();
    const c = body.components || {};
    const card = (title, ok, rows) => h("div", { class: "card", "data-component": title.toLowerCase() },
      h("h2", {}, title, " ", ok === undefined ? "" : okText(ok)),
      h("dl", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
    const cards = [card("Bridge", body.status === "healthy", [["Status", body.status], ["Version", body.version],
      ["Workers", `${body.workers?.alive ?? 0} alive of ${body.workers?.in_process ?? 0} in this process`]])];
    if (c.database) cards.push(card("Database", c.database.ok, [["Backend", c.database.backend || "—"], c.database.error && ["Error", c.database.error]]));
    if (c.cvat) {
      cards.push(card("CVAT", c.cvat.ok, [["URL", cvatLink(state.session?.cvat_ui_url || "", "")],
        c.cvat.server_version && ["Server", c.cvat.server_version], c.cvat.username && ["User", c.cvat.username],
        c.cvat.error && ["Error", h("span", { class: "reason" }, c.cvat.error)]]));
    }
    if (c.nuclio) {
      const n = c.nuclio;
      const dash = n.dashboard || {};
      const fns = Object.entries(n.functions || {});
      cards.push(card("Nuclio", n.ok, [
        ["Dashboard", dash.configured === false ? "not configured (direct invocation)"
          : h("span", {}, dash.url || "—", " ", okText(!!dash.reachable))],
        ["Functions", fns.length ? h("table", {}, h("tbody", {}, fns.map(([name, ok]) =>
          h("tr", { "data-function": name }, h("td", {}, name), h("td", {}, okText(ok)))))) : "none in use yet"],
        n.error && ["Error", h("span", { class: "reason" }, n.error)]]));
    }
    holder.replaceChildren(h("div", { class: "grid2" }, cards));
    setUpdated();
  };
  await load();
  poll(load, 10000);
}

// --- start -------------------------------------------------------------------------------------------------
$("#token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("#token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  $("#token").value = "";
  state.session = null;
  route();
});
window.addEventListener("hashchange", route);
route();
