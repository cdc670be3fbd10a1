// The saga dashboard: the CreateOrder saga as the orchestrator declares it, sagas searched and
// paged on the server (counts over all of them), one saga's progress and history, and the
// operator's actions on it. Text from the API only ever reaches the page as text nodes.
import { api, loadConfig, readEvents, send, signedIn, signIn } from "/ui/auth.js";
import { $, el, money } from "/ui/dom.js";

const STATUSES = ["RUNNING", "COMPENSATING", "CONFIRMED", "REJECTED", "CANCELLED"];
const FAILED = new Set(["COMPENSATING", "REJECTED", "CANCELLED"]);
// Events within this window refresh the list once; a dropped stream is reopened after the pause.
const DEBOUNCE_MS = 300;
const RECONNECT_MS = 2000;
const PAGE_SIZE = 50;
const duration = (ms) => (ms === null || ms === undefined ? "" : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);

const short = (fullName) => fullName.split(".").pop();

const state = { definition: null, sagas: [], counts: {}, filter: null, search: {}, pages: [], next: null,
  selected: null, previewed: null, stream: 0, abort: null, pending: null, moved: 0, actions: null };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// --- the saga's shape ---------------------------------------------------------------------------

/** Each declared step's progress in one saga: done, active or failed, and whether it was undone. */
function progress(saga) {
  const reached = new Set((saga?.history ?? []).map((h) => h.step));
  const steps = state.definition.steps;
  const current = steps.findIndex((s) => s.name === saga?.step);
  let last = -1;
  steps.forEach((s, i) => { if (reached.has(s.name) || i === current) last = i; });
  return steps.map((s, i) => {
    if (!saga) return { cls: "", undone: false };
    if (saga.status === "CONFIRMED") return { cls: "done", undone: false };
    if (saga.status === "RUNNING") return { cls: i < current ? "done" : i === current ? "active" : "", undone: false };
    // Failed: the steps before the one that failed were done, and those with a compensation
    // were undone, in reverse. Cancelled: every step reached was done and is undone.
    const cancelled = saga.status === "CANCELLED";
    const cls = i > last ? "" : i === last && !cancelled ? "failed" : "done";
    const completed = i < last || (cancelled && i <= last);
    return { cls, undone: completed && s.compensation !== null };
  });
}

function flow(saga) {
  const d = state.definition;
  const marks = progress(saga);
  const end = saga?.status === "CONFIRMED" ? "done" : saga && FAILED.has(saga.status) ? "failed" : "";
  const nodes = [el("div", { class: "node end" }, el("span", { class: "name" }, "OrderPlaced"))];
  d.steps.forEach((s, i) => {
    nodes.push(el("span", { class: "arrow", "aria-hidden": "true" }, "→"));
    nodes.push(el("div", { class: `node ${marks[i].cls}`, "data-step": s.name },
      el("span", { class: "name" }, s.name),
      el("small", {}, short(s.command), s.timeout === "configured" ? " · times out" : ""),
      el("small", {}, "replies: ", s.replies.map(short).join(" / ")),
      el("div", { class: `undo ${marks[i].undone ? "ran" : ""}` },
        s.compensation ? `↺ ${short(s.compensation)}` : "no compensation needed")));
  });
  nodes.push(el("span", { class: "arrow", "aria-hidden": "true" }, "→"));
  nodes.push(el("div", { class: `node end ${end}` },
    el("span", { class: "name" }, saga && FAILED.has(saga.status) ? saga.status : "CONFIRMED"),
    el("small", {}, saga && FAILED.has(saga.status) ? short(d.on_failure) : d.on_success.map(short).join(" + "))));
  return nodes;
}

// --- the list -----------------------------------------------------------------------------------

function renderCounts() {
  const total = STATUSES.reduce((n, s) => n + (state.counts[s] ?? 0), 0);
  $("counts").replaceChildren(
    el("button", { type: "button", "aria-pressed": String(state.filter === null), onclick: () => setFilter(null) },
      `all ${total}`),
    ...STATUSES.map((s) => el("button", {
      type: "button", "data-status": s, "aria-pressed": String(state.filter === s), onclick: () => setFilter(s),
    }, el("span", { class: `badge ${s}` }, s), ` ${state.counts[s] ?? 0}`)));
}

function setFilter(status) {
  state.filter = status;
  resetBulk();
  state.pages = [];
  // At once with what is shown; the server's page (over all sagas) follows.
  if (status) state.sagas = state.sagas.filter((s) => s.status === status);
  render();
  refresh();
}

function renderTable() {
  const rows = state.sagas.map((s) => el("tr", {
    "data-id": s.id, "aria-selected": String(s.id === state.selected), onclick: () => select(s.id),
  },
  el("td", { class: "id" }, el("code", {}, s.id)),
  el("td", {}, el("time", { datetime: s.started_at }, new Date(s.started_at).toLocaleString())),
  el("td", { class: "num" }, duration(s.duration_ms)),
  el("td", {}, el("span", { class: `badge ${s.status}` }, s.status)),
  el("td", {}, s.step),
  el("td", {}, s.payment),
  el("td", { class: "num" }, money(s.total_cents, s.currency)),
  el("td", { class: "reason" }, s.reason ?? "")));
  const empty = el("tr", {}, el("td", { colspan: "8", class: "muted" },
    state.filter || Object.keys(state.search).length ? "No saga matches." : "No sagas yet: place an order."));
  $("sagas").tBodies[0].replaceChildren(...(rows.length ? rows : [empty]));
  $("older").disabled = !state.next;
  $("newer").disabled = state.pages.length === 0;
}

function render() {
  renderCounts();
  renderTable();
}

// --- one saga -----------------------------------------------------------------------------------

async function select(id) {
  state.selected = id;
  renderTable();
  await showDetail();
}

async function showDetail() {
  const id = state.selected;
  if (!id) return;
  let saga;
  try {
    saga = await api(`/api/sagas/${encodeURIComponent(id)}`);
  } catch (e) {
    $("detail").replaceChildren(el("p", { class: "error" }, e.message));
    $("detail").hidden = false;
    return;
  }
  if (state.selected !== id) return;
  const traceId = state.sagas.find((s) => s.id === id)?.trace_id;
  const traceUrl = traceId ? (await loadConfig()).trace_url?.replace("{trace_id}", encodeURIComponent(traceId)) : null;
  $("detail").replaceChildren(
    el("h2", {}, "Order ", el("span", { class: "id" }, saga.id)),
    ...(traceUrl ? [el("p", {}, el("a", { class: "trace", href: traceUrl, target: "_blank", rel: "noopener" },
      "Its trace in Zipkin"))] : []),
    el("div", { class: "flow compact" }, flow(saga)),
    el("dl", { class: "facts" },
      el("dt", {}, "status"), el("dd", {}, el("span", { class: `badge ${saga.status}` }, saga.status)),
      el("dt", {}, "step"), el("dd", {}, saga.step),
      el("dt", {}, "payment"), el("dd", {}, saga.payment),
      el("dt", {}, "total"), el("dd", {}, money(saga.total_cents, saga.currency)),
      el("dt", {}, "customer"), el("dd", { class: "id" }, saga.customer_id),
      saga.reason ? [el("dt", {}, "reason"), el("dd", {}, saga.reason)] : null),
    actionsFor(saga),
    el("h3", {}, "History"),
    el("ol", { class: "timeline" }, saga.history.map((h, i) => el("li", {},
      el("time", { datetime: h.at }, new Date(h.at).toLocaleTimeString()),
      el("span", { class: "took", title: "since the entry before" },
        i ? `+${duration(Date.parse(h.at) - Date.parse(saga.history[i - 1].at))}` : ""),
      el("span", { class: "step" }, h.step),
      h.what))));
  $("detail").hidden = false;
}

/** The actions form of the saga shown: kept across refreshes of its panel, so a reason being
 * typed and the outcome of the last action stay while the saga moves. */
function actionsFor(saga) {
  if (state.actions?.id !== saga.id) state.actions = { id: saga.id, form: actions(saga) };
  return state.actions.form;
}

/** Retry or compensate this saga, with a reason the saga's history keeps. */
function actions(saga) {
  const reason = el("input", { name: "reason", required: true, maxlength: "500", placeholder: "why (kept in the history)" });
  const outcome = el("p", { class: "muted", role: "status" });
  const act = (what) => async (e) => {
    e.preventDefault();
    if (!reason.value.trim()) { reason.reportValidity(); return; }
    try {
      await send("POST", `/api/sagas/${encodeURIComponent(saga.id)}/${what}`, { reason: reason.value });
      outcome.textContent = what === "retry" ? "Sent again." : "Compensating.";
      reason.value = "";
      await refresh();
    } catch (err) {
      outcome.textContent = err.message;
    }
  };
  return el("form", { class: "actions", "aria-label": "Act on this saga", onsubmit: (e) => e.preventDefault() },
    el("label", {}, "Reason ", reason),
    el("button", { type: "button", onclick: act("retry") }, "Retry"),
    el("button", { type: "button", onclick: act("compensate") }, "Compensate now"),
    outcome);
}

// --- bulk actions -------------------------------------------------------------------------------

/** The search and status filter shown, as the bulk API's filter. */
function bulkFilter() {
  const filter = {};
  for (const [k, v] of Object.entries(state.search)) if (v) filter[k] = v;
  if (state.filter) filter.status = state.filter;
  return filter;
}

/** What was previewed no longer matches what is shown: preview again before applying. */
function resetBulk() {
  state.previewed = null;
  $("bulk-apply").disabled = true;
  $("bulk-apply").textContent = "Apply";
}

/** Preview (count and list) or apply one action to every saga the filter matches. */
async function bulk(preview) {
  const form = $("bulk");
  const reason = form.elements.reason;
  if (!reason.value.trim()) { reason.reportValidity(); return; }
  const request = { action: form.elements.action.value, filter: bulkFilter() };
  const key = JSON.stringify(request);
  if (!preview && state.previewed !== key) { resetBulk(); return; }
  const outcome = $("bulk-outcome");
  try {
    const { body } = await send("POST", "/api/sagas/actions", { ...request, reason: reason.value, preview });
    if (preview) {
      state.previewed = key;
      $("bulk-apply").disabled = body.matched === 0;
      $("bulk-apply").textContent = `Apply to ${body.matched}`;
      outcome.textContent = `${body.matched} saga(s) match${body.more ? " (one call acts on the oldest 1000)" : ""}.`;
    } else {
      resetBulk();
      const refused = body.refused.length ? `; refused ${body.refused.length}: ${body.refused.slice(0, 3)
        .map((r) => `${r.id.slice(-12)} (${r.error})`).join(", ")}` : "";
      outcome.textContent = `Applied to ${body.applied}${refused}.`;
      reason.value = "";
      await refresh();
    }
  } catch (err) {
    outcome.textContent = err.message;
  }
}

// --- refresh ------------------------------------------------------------------------------------

/** The query of the page shown: the search, the status filter, and where the page starts. */
function query() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [k, v] of Object.entries(state.search)) if (v) q.set(k, v);
  if (state.filter) q.set("status", state.filter);
  const after = state.pages[state.pages.length - 1];
  if (after) q.set("after", after);
  return q;
}

async function refresh() {
  try {
    const page = await api(`/api/sagas?${query()}`);
    state.sagas = page.items;
    state.counts = page.counts;
    state.next = page.next;
    render();
    if (state.selected) await showDetail();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError("");
  } catch (e) {
    if (e.status === 401) return start();
    showError(`Could not load the sagas: ${e.message}`);
  }
}

// --- live updates ---------------------------------------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One refresh for the events of a short window; the open saga's panel once more a moment later
 * (it is read from the read model, which follows the saga table closely but not at once). */
function soon() {
  if (state.pending) return;
  state.pending = setTimeout(() => {
    state.pending = null;
    refresh();
    if (state.selected) setTimeout(showDetail, 1000);
  }, DEBOUNCE_MS);
}

function liveStatus(text) {
  $("live-status").textContent = text;
}

/**
 * Follow `GET /api/sagas/live`, the orchestrator's server-sent events, read with fetch so the
 * token goes along (EventSource cannot send it): each saga that moved refreshes the list, nothing
 * else does. The stream ends every few minutes or when the network drops; it is reopened, and the
 * list read again to catch up on what moved meanwhile.
 */
async function follow(stream) {
  while (state.stream === stream) {
    const abort = new AbortController();
    state.abort = abort;
    try {
      await readEvents("/api/sagas/live", {
        signal: abort.signal,
        onOpen: async () => {
          liveStatus(`live: ${state.moved} changes`);
          await refresh();
        },
        onEvent: (name) => {
          if (name !== "saga" && name !== "lagged") return;
          state.moved += 1;
          liveStatus(`live: ${state.moved} changes`);
          soon();
        },
      });
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e.status === 401) return start();
      liveStatus(`reconnecting (${e.message})`);
    }
    if (state.stream === stream) await sleep(RECONNECT_MS);
  }
}

function live(on) {
  state.abort?.abort();
  state.stream += 1;
  liveStatus(on ? "connecting" : "paused");
  if (on) follow(state.stream);
}

async function start() {
  live(false);
  $("board").hidden = true;
  if (!(await signedIn("admin", "the dashboard", showError))) return;
  try {
    state.definition = await api("/api/sagas/definition");
  } catch (e) {
    showError(`Could not load the saga's definition: ${e.message}`);
    return;
  }
  $("definition").replaceChildren(...flow(null));
  $("board").hidden = false;
  await refresh();
  live($("live").checked);
}

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const time = (v) => (v ? new Date(v).toISOString() : "");
  state.search = {
    order_id: form.get("order_id").trim(), customer_id: form.get("customer_id").trim(),
    from: time(form.get("from")), to: time(form.get("to")),
  };
  state.pages = [];
  resetBulk();
  refresh();
});
$("bulk").addEventListener("submit", (e) => e.preventDefault());
$("bulk").elements.action.addEventListener("change", resetBulk);
$("bulk-preview").addEventListener("click", () => bulk(true));
$("bulk-apply").addEventListener("click", () => bulk(false));
$("older").addEventListener("click", () => { if (state.next) { state.pages.push(state.next); refresh(); } });
$("newer").addEventListener("click", () => { state.pages.pop(); refresh(); });
$("signin-button").addEventListener("click", () => signIn().catch((e) => showError(e.message)));
$("live").addEventListener("change", (e) => live(e.target.checked));
start();
