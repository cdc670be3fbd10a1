// The storefront, for the `customer` role: sign-in, a profile on the first visit, the catalog
// with its live stock, a basket kept in this tab, orders placed with one Idempotency-Key per
// attempt and followed to their outcome by long-polls, the order history and cancellation.
// It talks to the gateway's /api like any client. Nothing polls on a timer: an order is watched
// with `GET /api/orders/{id}?wait=N`, and the catalog is read again when one settles.
import { api, send, signedIn, signIn, signOut } from "/ui/auth.js";
import { $, el, keepingFocus, money, renderKeyed } from "/ui/dom.js";

const BASKET = "shop.basket"; // sessionStorage: [{ product_id, quantity }]
const ATTEMPT = "shop.order-attempt"; // sessionStorage: { key, body } of an order not known to be placed
const PROFILE = "shop.customer:"; // localStorage, + the user's subject: the profile they registered here
// How often the catalog's stock is read again, and how long after an order settles.
const CATALOG_EVERY_MS = 10_000;
const CATALOG_SETTLE_MS = 1500;
const WAIT_S = 20; // each long-poll's wait (the API allows up to 25 s)
const MAX_QUANTITY = 999;
const RESUMED_WATCHES = 3; // long-polls hold a connection each: the browser has six per host
const FINAL = new Set(["CONFIRMED", "REJECTED", "CANCELLED"]);
const CANCELLABLE = new Set(["PENDING", "CONFIRMED"]);
// Payment accounts are kept in euros (the payment service's one currency); answers don't say it.
const CREDIT_CURRENCY = "EUR";

const state = {
  user: null,
  customer: null,
  /** The catalog by id, sorted by name. */
  products: new Map(),
  basket: readBasket(),
  /** The customer's orders, newest first (ids are UUIDv7, so newer ids sort higher). */
  orders: [],
  sending: false,
  /** Order id → the promise of the long-poll loop watching it. */
  watching: new Map(),
  /** Orders whose cancellation was asked for and has not landed yet. */
  cancelling: new Set(),
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const short = (id) => `…${id.slice(-8)}`;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

/** The token was refused (the realm forgot the session, say): offer to sign in again. */
function sessionEnded() {
  $("store").hidden = true;
  $("register").hidden = true;
  $("signin").hidden = false;
  showError("Your session has ended: sign in again.");
}

/** Say something about the order under way; screen readers hear it (role=status). */
function announce(message, { order = null, refused = false } = {}) {
  const status = $("order-status");
  status.textContent = message;
  status.classList.toggle("refused", refused);
  if (order) status.dataset.order = order;
  else delete status.dataset.order;
}

/** Re-render `container` and give the focus back to the control that had it (same data-focus). */
function replaceKeepingFocus(container, children) {
  keepingFocus(container, () => container.replaceChildren(...children));
}

// --- calls that wait and try again ---------------------------------------------------------------

/** How long to wait before trying `e` again, or null when trying again would not help. */
function retryDelay(e, networkFailures) {
  if (e.status === undefined) return networkFailures < 4 ? 1000 * 2 ** networkFailures : null; // no answer
  if ((e.status === 503 || e.status === 429) && e.retryAfter !== null) return Math.max(e.retryAfter * 1000, 500);
  return null;
}

/**
 * `call()` until it answers: a 503 or 429 with Retry-After is tried again after that delay, a
 * network failure after 1, 2, 4 and 8 s; `also(e)` may name a delay for other errors. Throws the
 * last error when it would not help or would end after `patienceMs`.
 */
async function persist(call, { also = () => null, onWait = () => {}, patienceMs = 120_000 } = {}) {
  const deadline = Date.now() + patienceMs;
  let networkFailures = 0;
  for (;;) {
    try {
      return await call();
    } catch (e) {
      const delay = retryDelay(e, networkFailures) ?? also(e);
      if (delay === null || Date.now() + delay > deadline) throw e;
      if (e.status === undefined) networkFailures += 1;
      onWait(e, delay);
      await sleep(delay);
    }
  }
}

// --- profile --------------------------------------------------------------------------------------

/**
 * This user's customer profile, or null when they have none yet. `GET /api/customers` is for
 * admins, so the profile is the one this browser registered, else the one of the user's latest
 * order.
 */
async function findProfile(user) {
  const key = PROFILE + user.id;
  const remembered = localStorage.getItem(key);
  if (remembered) {
    try {
      return await api(`/api/customers/${encodeURIComponent(remembered)}`);
    } catch (e) {
      if (e.status !== 404) throw e;
      localStorage.removeItem(key);
    }
  }
  const orders = await api("/api/orders");
  if (!orders.length) return null;
  const customer = await api(`/api/customers/${encodeURIComponent(orders[0].customer_id)}`);
  localStorage.setItem(key, customer.id);
  return customer;
}

function showRegister(user) {
  $("register").hidden = false;
  $("store").hidden = true;
  const form = $("register-form");
  if (!form.elements.name.value) form.elements.name.value = user.fullName;
  if (!form.elements.email.value) form.elements.email.value = user.email;
  form.elements.name.focus();
}

async function register(e) {
  e.preventDefault();
  const form = e.target;
  const button = form.querySelector("button[type=submit]");
  const problem = $("register-error");
  problem.hidden = true;
  button.disabled = true;
  try {
    const body = { name: form.elements.name.value.trim(), email: form.elements.email.value.trim() };
    const created = await persist(() => send("POST", "/api/customers", body));
    // The answer's consistency token makes the read wait until the profile can be read.
    const token = created.headers.get("X-Consistency-Token");
    const customer = await persist(() =>
      api(`/api/customers/${encodeURIComponent(created.body.id)}`, token ? { "X-Consistency-Token": token } : {}));
    localStorage.setItem(PROFILE + state.user.id, customer.id);
    await enterStore(customer);
    $("catalog-title").focus();
  } catch (err) {
    problem.textContent = `Your profile could not be created: ${err.message}`;
    problem.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function renderProfile() {
  const c = state.customer;
  const credit = c.credit_limit_cents > 0
    ? `credit left ${money(c.credit_available_cents, CREDIT_CURRENCY)}`
    : "your account is being opened";
  $("profile").replaceChildren(`Shopping as ${c.name} (${c.email}) · ${credit}`);
}

async function loadProfile() {
  state.customer = await api(`/api/customers/${encodeURIComponent(state.customer.id)}`);
  renderProfile();
}

// --- catalog ----------------------------------------------------------------------------------

async function loadCatalog() {
  const products = await api("/api/products");
  products.sort((a, b) => a.name.localeCompare(b.name));
  state.products = new Map(products.map((p) => [p.id, p]));
  renderCatalog();
  renderBasket();
}

function inBasket(id) {
  return state.basket.find((l) => l.product_id === id)?.quantity ?? 0;
}

function renderCatalog() {
  const items = [...state.products.values()].map((p) => el("li", { class: "product", "data-id": p.id },
    el("span", { class: "name" }, p.name),
    el("span", { class: "price" }, money(p.price_cents, p.currency)),
    el("span", { class: `stock${p.available > 0 ? "" : " out"}` }, p.available > 0 ? `${p.available} in stock` : "sold out"),
    el("button", {
      type: "button", "data-focus": `add:${p.id}`, "aria-label": `Add to basket: ${p.name}`,
      disabled: inBasket(p.id) >= Math.min(p.available, MAX_QUANTITY), onclick: () => add(p.id),
    }, "Add to basket")));
  // Kept in place: the stock is read again every few seconds, under the shopper's pointer.
  renderKeyed($("products"), items.length ? items : [el("li", { class: "muted" }, "Nothing for sale yet.")]);
}

// --- basket -----------------------------------------------------------------------------------

function readBasket() {
  try {
    const lines = JSON.parse(sessionStorage.getItem(BASKET) || "[]");
    return Array.isArray(lines) ? lines.filter((l) => typeof l.product_id === "string" && l.quantity > 0) : [];
  } catch {
    return [];
  }
}

function saveBasket() {
  sessionStorage.setItem(BASKET, JSON.stringify(state.basket));
  renderBasket();
  renderCatalog();
}

function add(id) {
  const line = state.basket.find((l) => l.product_id === id);
  if (line) line.quantity = Math.min(line.quantity + 1, MAX_QUANTITY);
  else state.basket.push({ product_id: id, quantity: 1 });
  saveBasket();
  $("basket-note").textContent = `${state.products.get(id)?.name ?? "The product"}: ${inBasket(id)} in the basket.`;
}

function setQuantity(id, raw) {
  const line = state.basket.find((l) => l.product_id === id);
  if (!line) return;
  const wanted = Math.trunc(Number(raw));
  const most = Math.min(state.products.get(id)?.available || MAX_QUANTITY, MAX_QUANTITY);
  if (Number.isFinite(wanted) && wanted >= 1) line.quantity = Math.min(wanted, most);
  saveBasket();
}

function remove(id) {
  state.basket = state.basket.filter((l) => l.product_id !== id);
  saveBasket();
  $("basket-title").focus();
}

/** The basket's total per currency ("12.90 EUR", or "12.90 EUR + 3.00 USD"). */
function total() {
  const sums = new Map();
  for (const l of state.basket) {
    const p = state.products.get(l.product_id);
    if (p) sums.set(p.currency, (sums.get(p.currency) ?? 0) + p.price_cents * l.quantity);
  }
  return sums.size ? [...sums].map(([currency, cents]) => money(cents, currency)).join(" + ") : "0.00";
}

function renderBasket() {
  const lines = state.basket.map((l) => {
    const p = state.products.get(l.product_id);
    const name = p?.name ?? "a product no longer for sale";
    return el("li", { class: "line", "data-id": l.product_id },
      el("span", { class: "name" }, name),
      el("label", { class: "qty" }, el("span", { class: "sr-only" }, `Quantity of ${name}`),
        el("input", {
          type: "number", min: "1", max: String(Math.min(p?.available || MAX_QUANTITY, MAX_QUANTITY)),
          step: "1", inputmode: "numeric", value: String(l.quantity), "data-focus": `qty:${l.product_id}`,
          onchange: (e) => setQuantity(l.product_id, e.target.value),
        })),
      el("span", { class: "num" }, p ? money(p.price_cents * l.quantity, p.currency) : ""),
      el("button", { type: "button", "aria-label": `Remove ${name}`, onclick: () => remove(l.product_id) }, "Remove"));
  });
  replaceKeepingFocus($("basket-lines"), lines.length ? lines : [el("li", { class: "muted" }, "Your basket is empty.")]);
  $("basket-total").textContent = total();
  $("place").disabled = state.sending || !state.customer || !state.basket.length;
  $("place").textContent = state.sending ? "Placing order…" : "Place order";
}

// --- placing an order -------------------------------------------------------------------------

/**
 * The attempt this order belongs to: the one kept from before (a click that got no answer, a
 * reload) when the basket is still the same, so it is sent with the same Idempotency-Key and
 * places one order; else a new one with a new key.
 */
function attemptFor(body) {
  try {
    const kept = JSON.parse(sessionStorage.getItem(ATTEMPT) || "null");
    if (kept && JSON.stringify(kept.body) === JSON.stringify(body)) return kept;
  } catch {
    // a damaged entry: start a new attempt
  }
  const attempt = { key: crypto.randomUUID(), body };
  sessionStorage.setItem(ATTEMPT, JSON.stringify(attempt));
  return attempt;
}

async function placeOrder() {
  if (state.sending || !state.customer || !state.basket.length) return;
  const body = {
    customer_id: state.customer.id,
    items: state.basket.map((l) => ({ product_id: l.product_id, quantity: l.quantity })),
  };
  // Everything up to the first await runs before a second click can: it finds the button
  // disabled, and would find the same attempt anyway.
  const attempt = attemptFor(body);
  state.sending = true;
  renderBasket();
  announce("Placing your order…");
  try {
    const placed = await persist(() => send("POST", "/api/orders", body, { "Idempotency-Key": attempt.key }), {
      // 409: the first request with this key is still being answered.
      also: (e) => (e.status === 409 ? 1000 : null),
      onWait: (e, ms) => announce(e.status === undefined
        ? `The shop cannot be reached; trying again in ${Math.ceil(ms / 1000)} s…`
        : `The shop is busy; trying again in ${Math.ceil(ms / 1000)} s…`),
    });
    sessionStorage.removeItem(ATTEMPT);
    const id = placed.body.order_id;
    upsertOrder(placeholder(id, body));
    state.basket = [];
    sessionStorage.setItem(BASKET, "[]");
    announce(`Order ${short(id)} is PENDING: stock and payment are being checked.`, { order: id });
    watch(id);
  } catch (e) {
    if (e.status >= 400 && e.status < 500 && ![408, 409, 429].includes(e.status)) {
      // Refused: nothing was placed, so the next try is a new attempt with a new key.
      sessionStorage.removeItem(ATTEMPT);
      announce(`The order was refused: ${e.message}`, { refused: true });
    } else {
      announce(`The order could not be sent (${e.message}). Press "Place order" again: `
        + "it will not be placed twice.", { refused: true });
    }
  } finally {
    state.sending = false;
    renderBasket();
    renderCatalog();
    // The button lost the focus when it was disabled: keep the keyboard user in the basket.
    if (document.activeElement === document.body) ($("place").disabled ? $("basket-title") : $("place")).focus();
  }
}

/** What the history shows of an order just placed, until the API answers about it. */
function placeholder(id, body) {
  let cents = 0;
  let currency = "EUR";
  for (const i of body.items) {
    const p = state.products.get(i.product_id);
    if (p) {
      cents += p.price_cents * i.quantity;
      currency = p.currency;
    }
  }
  const items = body.items.map((i) => ({ ...i, unit_price_cents: state.products.get(i.product_id)?.price_cents ?? 0 }));
  return { id, customer_id: body.customer_id, status: "PENDING", items, total_cents: cents, currency,
    history: [{ status: "PENDING", at: new Date().toISOString() }] };
}

// --- following orders -------------------------------------------------------------------------

/** Whether the watch of `order` is over: its outcome, or the outcome of its cancellation. */
function settled(order) {
  if (state.cancelling.has(order.id)) return order.status === "CANCELLED" || order.status === "REJECTED";
  return FINAL.has(order.status);
}

function outcome(order) {
  const what = `Order ${short(order.id)} ${order.status}`;
  return order.reason ? `${what}: ${order.reason}` : `${what}: ${money(order.total_cents, order.currency)}.`;
}

/**
 * Follow one order with long-polls until it is settled (or its cancellation has landed), showing
 * each answer; then read the catalog, the credit and the history again. One loop per order.
 */
function watch(id) {
  if (state.watching.has(id)) return state.watching.get(id);
  const loop = (async () => {
    for (;;) {
      const asked = Date.now();
      let order;
      try {
        order = await persist(() => api(`/api/orders/${encodeURIComponent(id)}?wait=${WAIT_S}`), { patienceMs: 600_000 });
      } catch (e) {
        if (e.status === 401) return sessionEnded();
        announce(`Lost track of order ${short(id)}: ${e.message}. Reload the page to see where it is.`, { order: id });
        return;
      }
      upsertOrder(order);
      if (settled(order)) {
        state.cancelling.delete(id);
        announce(outcome(order), { order: id });
        return;
      }
      // The API answers at once only about an order that is settled; don't spin if it did not.
      if (Date.now() - asked < 1000) await sleep(1000);
    }
  })().finally(() => {
    state.watching.delete(id);
    renderOrders();
    refresh();
    // The catalog is projected from other topics than the order: a stock change that came before
    // the order settled may show a moment later, so the catalog is read once more.
    setTimeout(liveStock, CATALOG_SETTLE_MS);
  });
  state.watching.set(id, loop);
  return loop;
}

async function cancel(id) {
  state.cancelling.add(id);
  renderOrders();
  try {
    await persist(() => send("POST", `/api/orders/${encodeURIComponent(id)}/cancel`));
  } catch (e) {
    state.cancelling.delete(id);
    renderOrders();
    announce(`Order ${short(id)} could not be cancelled: ${e.message}`, { order: id, refused: true });
    if (e.status === 409) watch(id);
    return;
  }
  announce(`Cancelling order ${short(id)}: stock and payment are being given back.`, { order: id });
  // A loop already watching the order sees the cancellation itself; one that ended meanwhile
  // did so on the order's own outcome.
  await state.watching.get(id);
  if (state.cancelling.has(id)) watch(id);
}

// --- history ----------------------------------------------------------------------------------

function upsertOrder(order) {
  const i = state.orders.findIndex((o) => o.id === order.id);
  if (i >= 0) state.orders[i] = order;
  else state.orders.push(order);
  state.orders.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  renderOrders();
}

async function loadOrders() {
  const listed = await api(`/api/orders?customer_id=${encodeURIComponent(state.customer.id)}`);
  const known = new Map(state.orders.map((o) => [o.id, o]));
  // The list may lag behind what a long-poll already said: a final answer wins over PENDING,
  // and an order just placed stays until the list shows it.
  const merged = listed.map((o) => {
    const mine = known.get(o.id);
    return mine && FINAL.has(mine.status) && !FINAL.has(o.status) ? mine : o;
  });
  const listedIds = new Set(listed.map((o) => o.id));
  for (const o of state.orders) if (!listedIds.has(o.id) && state.watching.has(o.id)) merged.push(o);
  state.orders = merged.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  renderOrders();
}

function productName(id) {
  return state.products.get(id)?.name ?? "a product no longer for sale";
}

function renderOrders() {
  const items = state.orders.map((o) => {
    const placed = o.history?.[0]?.at;
    const title = `order-${o.id}`;
    const cancelling = state.cancelling.has(o.id);
    return el("li", { class: "order", "data-id": o.id, "data-status": o.status },
      el("div", { class: "order-head" },
        el("span", { class: `badge ${o.status}` }, o.status),
        el("strong", { class: "num" }, money(o.total_cents, o.currency)),
        placed ? el("time", { class: "muted", datetime: placed }, new Date(placed).toLocaleString()) : null),
      el("p", { class: "order-id", id: title }, "Order ", el("code", {}, o.id)),
      el("ul", { class: "items" }, o.items.map((i) => el("li", {}, `${i.quantity} × ${productName(i.product_id)}`))),
      o.reason ? el("p", { class: "reason" }, o.reason) : null,
      cancelling && !FINAL.has(o.status) ? el("p", { class: "muted" }, "Cancellation under way…") : null,
      CANCELLABLE.has(o.status)
        ? el("button", {
          type: "button", "data-focus": `cancel:${o.id}`, "aria-describedby": title, disabled: cancelling,
          onclick: () => cancel(o.id),
        }, cancelling ? "Cancelling…" : "Cancel order")
        : null);
  });
  renderKeyed($("orders"), items.length ? items : [el("li", { class: "muted" }, "No orders yet.")]);
}

// --- the page ---------------------------------------------------------------------------------

let refreshing = null;
let again = false;

/** Read the catalog, the credit and the history again; calls during a refresh make one more. */
function refresh() {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = Promise.all([loadCatalog(), loadProfile(), loadOrders()])
    .then(() => showError(""))
    .catch((e) => (e.status === 401 ? sessionEnded() : showError(`Could not refresh the shop: ${e.message}`)))
    .finally(() => {
      refreshing = null;
      if (again) {
        again = false;
        refresh();
      }
    });
  return refreshing;
}

/** The catalog read again, quietly: stock moves with everyone's orders. */
function liveStock() {
  if (state.customer && !document.hidden) loadCatalog().catch(() => {});
}

async function enterStore(customer) {
  if (!state.customer) setInterval(liveStock, CATALOG_EVERY_MS);
  state.customer = customer;
  $("register").hidden = true;
  $("store").hidden = false;
  renderProfile();
  renderBasket();
  await refresh();
  // Orders still under way when the page was left are followed again.
  for (const o of state.orders.filter((o) => !FINAL.has(o.status)).slice(0, RESUMED_WATCHES)) watch(o.id);
}

async function start() {
  $("store").hidden = true;
  $("register").hidden = true;
  const user = await signedIn("customer", "the shop", showError, leave);
  state.user = user;
  if (!user) return;
  let customer;
  try {
    customer = await persist(() => findProfile(user));
  } catch (e) {
    if (e.status === 401) return sessionEnded();
    showError(`Could not load your profile: ${e.message}`);
    return;
  }
  if (customer) await enterStore(customer);
  else showRegister(user);
}

function leave() {
  sessionStorage.removeItem(BASKET);
  sessionStorage.removeItem(ATTEMPT);
  signOut().catch((e) => showError(e.message));
}

$("signin-button").addEventListener("click", () => signIn().catch((e) => showError(e.message)));
$("register-form").addEventListener("submit", register);
$("place").addEventListener("click", placeOrder);
// Coming back to the tab shows the stock as it is now (the timer skips hidden tabs).
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.customer && !$("store").hidden) refresh();
});
start();
