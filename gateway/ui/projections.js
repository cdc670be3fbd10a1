// The projections: each read model's position, lag and time behind, rebuilds started from here
// with their progress, the rebuilds the projectors service ran lately, and every Kafka consumer
// group's lag per partition. Text from the API
// only ever reaches the page as text nodes.
import { api, readEvents, send, signedIn, signIn } from "/ui/auth.js";
import { $, el } from "/ui/dom.js";

const RECONNECT_MS = 2000;
const state = { models: null, stream: 0 };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

const behind = (ms) => (ms ? (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`) : "");

function renderModels(projections) {
  if (state.models) return;
  state.models = projections.map((p) => p.name);
  $("models").append(...state.models.map((name) =>
    el("label", {}, el("input", { type: "checkbox", name: "read_model", value: name }), ` ${name}`)));
}

function rebuildItem(r, finished) {
  const percent = r.total ? Math.min(100, Math.floor((100 * r.position) / r.total)) : 0;
  const state = finished ? (r.error ? "failed" : "done") : r.phase;
  return el("li", { class: "rebuild", "data-id": r.id, "data-state": state },
    el("div", { class: "order-head" },
      el("span", { class: `badge ${finished ? (r.error ? "REJECTED" : "CONFIRMED") : "RUNNING"}` }, state),
      el("strong", {}, r.id)),
    finished
      ? el("p", {}, `${r.applied} events applied, started by ${r.started_by} at ${new Date(r.started_at).toLocaleTimeString()}, `
        + `finished ${new Date(r.finished_at).toLocaleTimeString()}`, r.error ? el("span", { class: "error-text" }, ` ${r.error}`) : "")
      : el("p", {},
        el("progress", { max: String(r.total || 1), value: String(r.position), "aria-label": `rebuild ${r.id}` }),
        el("span", { class: "progress-text" }, ` ${percent}% read (${r.position} of ${r.total} records), ${r.applied} events applied`),
        el("span", { class: "muted" }, ` into ${r.targets.map(([m, c]) => `${m} → ${c}`).join(", ")}`)));
}

function render(s) {
  renderModels(s.projections);
  $("projections").tBodies[0].replaceChildren(...s.projections.map((p) => el("tr", { "data-name": p.name },
    el("td", {}, p.name),
    el("td", {}, el("code", {}, p.active_collection)),
    el("td", { class: "num" }, String(p.position)),
    el("td", { class: "num" }, String(p.high_watermark)),
    el("td", { class: "num lag" }, String(p.lag)),
    el("td", { class: "num" }, behind(p.behind_ms)))));
  const items = [...s.rebuilds.map((r) => rebuildItem(r, false)), ...s.finished.map((r) => rebuildItem(r, true))];
  $("rebuilds").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No rebuild yet.")]));
}

function renderConsumers(c) {
  const rows = c.groups.flatMap((g) => (g.partitions.length ? g.partitions : [null]).map((p, i) => el("tr", {
    "data-group": g.group, "data-topic": p?.topic ?? "", "data-partition": p ? String(p.partition) : "",
  },
  el("td", {}, i ? "" : g.group),
  el("td", {}, i ? "" : g.state),
  el("td", { class: "num" }, i ? "" : String(g.members)),
  el("td", {}, p?.topic ?? "—"),
  el("td", { class: "num" }, p ? String(p.partition) : ""),
  el("td", { class: "num" }, p ? String(p.committed) : ""),
  el("td", { class: "num" }, p ? String(p.high_watermark) : ""),
  el("td", { class: "num lag" }, p ? String(p.lag) : ""))));
  $("consumers").tBodies[0].replaceChildren(...rows);
}

/** Show a status (from the stream) and the consumer groups read with it. */
async function show(s) {
  render(s);
  try {
    renderConsumers(await api("/api/consumers"));
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError("");
  } catch (e) {
    if (e.status === 401) return start();
    showError(`Could not load the consumer groups: ${e.message}`);
  }
}

/**
 * Follow `GET /api/projections/live`: the projectors send the status at once, whenever a rebuild
 * moves (progress saved, switched, ended) and every few seconds otherwise; the page shows each
 * one. The stream is reopened after it ends.
 */
async function follow(stream) {
  while (state.stream === stream) {
    try {
      await readEvents("/api/projections/live", {
        onEvent: (name, data) => {
          if (name === "status") show(JSON.parse(data));
          else if (name === "error") showError(`Could not load the projections: ${data}`);
        },
      });
    } catch (e) {
      if (e.status === 401) return start();
      showError(`The live status dropped (${e.message}); reconnecting.`);
    }
    if (state.stream === stream) await sleep(RECONNECT_MS);
  }
}

async function rebuild(e) {
  e.preventDefault();
  const chosen = [...$("models").querySelectorAll("input:checked")].map((i) => i.value);
  const outcome = $("rebuild-outcome");
  if (!chosen.length) { outcome.textContent = "Choose at least one read model."; return; }
  try {
    const { body } = await send("POST", "/api/projections/rebuild", { read_models: chosen });
    outcome.textContent = `Rebuild ${body.id} started.`;
  } catch (err) {
    outcome.textContent = err.message;
  }
}

async function start() {
  state.stream += 1;
  $("board").hidden = true;
  if (!(await signedIn("admin", "this page", showError))) return;
  $("board").hidden = false;
  follow(state.stream);
}

$("rebuild").addEventListener("submit", rebuild);
$("signin-button").addEventListener("click", () => signIn().catch((e) => showError(e.message)));
start();
