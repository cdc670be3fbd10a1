// The dead-letter topics: each DLQ's parked messages (newest first), decoded where the schema
// registry knows them, with the error they were parked with; an operator redrives one to where it
// came from or discards it, with a reason kept next to it (who, when, why). Text from the API
// only ever reaches the page as text nodes.
import { api, send, signedIn, signIn } from "/ui/auth.js";
import { $, el } from "/ui/dom.js";

const state = { queues: [] };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

/** Redrive or discard one message, with a reason. */
function actions(m) {
  const reason = el("input", { name: "reason", required: true, maxlength: "500", placeholder: "why (kept with the message)",
    "aria-label": `Reason for offset ${m.offset}` });
  const outcome = el("span", { class: "muted", role: "status" });
  const act = (what) => async () => {
    if (!reason.value.trim()) { reason.reportValidity(); return; }
    try {
      const done = await send("POST", `/api/dlq/${encodeURIComponent(m.dlq)}/${m.partition}/${m.offset}/${what}`,
        { reason: reason.value });
      outcome.textContent = what === "redrive" ? `Redriven to ${done.body.to}.` : "Discarded.";
      await refresh();
    } catch (err) {
      outcome.textContent = err.message;
    }
  };
  return el("form", { class: "actions", "aria-label": `Act on offset ${m.offset}`, onsubmit: (e) => e.preventDefault() },
    reason,
    el("button", { type: "button", class: "redrive", onclick: act("redrive") }, "Redrive"),
    el("button", { type: "button", class: "discard", onclick: act("discard") }, "Discard"),
    outcome);
}

function handled(m) {
  const h = m.handled;
  if (!h) return "";
  const what = h.action === "redrive" ? `redriven to ${h.to ?? "?"}` : "discarded";
  return `${what} ${when(h.at)} by ${h.by ?? "?"}: ${h.reason ?? ""}`;
}

function message(m) {
  const payload = m.payload ? JSON.stringify(m.payload, null, 2) : `(${m.size} bytes, not decodable: ${m.undecodable})`;
  return el("li", { class: "dead-letter", "data-state": m.state, "data-offset": String(m.offset), "data-message-id": m.message_id ?? "" },
    el("div", { class: "order-head" },
      el("span", { class: `badge ${m.state === "open" ? "REJECTED" : m.state === "redriven" ? "CONFIRMED" : "CANCELLED"}` }, m.state),
      el("code", {}, `${m.dlq} @ ${m.partition}:${m.offset}`),
      el("span", { class: "muted" }, `parked ${when(m.parked_at)} after ${m.attempts ?? "?"} attempt(s)`)),
    el("dl", { class: "facts" },
      el("dt", {}, "error"), el("dd", { class: "error-text" }, m.error),
      el("dt", {}, "from"), el("dd", {}, el("code", {}, m.origin)),
      el("dt", {}, "record"), el("dd", {}, m.record ?? "—"),
      el("dt", {}, "key"), el("dd", {}, el("code", {}, m.key ?? "—")),
      el("dt", {}, "message id"), el("dd", {}, el("code", {}, m.message_id ?? "—")),
      ...(m.handled ? [el("dt", {}, "handled"), el("dd", { class: "handled" }, handled(m))] : [])),
    el("details", {}, el("summary", {}, "payload"), el("pre", { class: "payload" }, payload)),
    m.state === "open" ? actions(m) : null);
}

function render() {
  const openOnly = $("open-only").checked;
  $("queues").replaceChildren(...state.queues.map((q) => {
    const shown = q.messages.filter((m) => !openOnly || m.state === "open");
    return el("section", { class: "panel queue", "data-dlq": q.dlq, "aria-label": q.dlq },
      el("h2", {}, q.dlq, " ", el("span", { class: "muted" }, `${q.open} open of ${q.parked} parked (from ${q.topic})`)),
      shown.length ? el("ul", { class: "orders" }, ...shown.map(message)) : el("p", { class: "muted" }, "Nothing to show."));
  }));
}

async function refresh() {
  try {
    const all = await api("/api/dlq");
    state.queues = all.queues;
    render();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    showError("");
  } catch (e) {
    if (e.status === 401) return start();
    showError(`Could not load the dead letters: ${e.message}`);
  }
}

async function start() {
  $("board").hidden = true;
  if (!(await signedIn("admin", "this page", showError))) return;
  $("board").hidden = false;
  await refresh();
}

$("reload").addEventListener("click", refresh);
$("open-only").addEventListener("change", render);
$("signin-button").addEventListener("click", () => signIn().catch((e) => showError(e.message)));
start();
