// Sign-in with the Keycloak realm: the authorization code flow with PKCE (S256) for the public
// client `shop-web`. Tokens live in sessionStorage (this tab only) and are refreshed before they
// expire. Everything here uses browser APIs only: no library, no CDN.

import { el } from "/ui/dom.js";

const TOKENS = "shop.tokens";
const PENDING = "shop.pkce";
let config;

export async function loadConfig() {
  if (!config) {
    const res = await fetch("/ui/config.json");
    if (!res.ok) throw new Error(`the gateway's UI config answered ${res.status}`);
    config = await res.json();
  }
  return config;
}

function base64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(bytes) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return base64url(a);
}

function redirectUri() {
  return location.origin + location.pathname;
}

export async function signIn() {
  const c = await loadConfig();
  const verifier = randomString(48);
  const state = randomString(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const url = new URL(c.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: c.client_id,
    response_type: "code",
    scope: "openid",
    redirect_uri: redirectUri(),
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

export async function signOut() {
  const c = await loadConfig();
  const tokens = stored();
  sessionStorage.removeItem(TOKENS);
  const url = new URL(c.end_session_endpoint);
  url.search = new URLSearchParams({
    client_id: c.client_id,
    post_logout_redirect_uri: redirectUri(),
    ...(tokens?.id_token ? { id_token_hint: tokens.id_token } : {}),
  }).toString();
  location.assign(url.toString());
}

function stored() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKENS) || "null");
  } catch {
    return null;
  }
}

function keep(answer) {
  const now = Date.now();
  const tokens = {
    access_token: answer.access_token,
    id_token: answer.id_token,
    refresh_token: answer.refresh_token,
    expires_at: now + (answer.expires_in ?? 60) * 1000,
    refresh_expires_at: now + (answer.refresh_expires_in ?? 0) * 1000,
  };
  sessionStorage.setItem(TOKENS, JSON.stringify(tokens));
  return tokens;
}

async function tokenRequest(fields) {
  const c = await loadConfig();
  const res = await fetch(c.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: c.client_id, ...fields }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error_description || body.error || `token endpoint answered ${res.status}`);
  return keep(body);
}

/** Finish a sign-in when Keycloak has sent the browser back with a code. */
export async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return;
  history.replaceState(null, "", location.pathname);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (params.has("error")) throw new Error(params.get("error_description") || params.get("error"));
  if (!pending || pending.state !== params.get("state")) throw new Error("the sign-in answer does not match this tab's request; sign in again");
  await tokenRequest({
    grant_type: "authorization_code",
    code: params.get("code"),
    redirect_uri: redirectUri(),
    code_verifier: pending.verifier,
  });
}

/** A valid access token, refreshed when it is about to expire; null when signed out. */
export async function accessToken() {
  let tokens = stored();
  if (!tokens) return null;
  if (tokens.expires_at - Date.now() < 15_000) {
    if (!tokens.refresh_token || tokens.refresh_expires_at < Date.now()) {
      sessionStorage.removeItem(TOKENS);
      return null;
    }
    try {
      tokens = await tokenRequest({ grant_type: "refresh_token", refresh_token: tokens.refresh_token });
    } catch {
      sessionStorage.removeItem(TOKENS);
      return null;
    }
  }
  return tokens.access_token;
}

/** The signed-in user as the access token says (subject, names, e-mail, realm roles); null when signed out. */
export async function who() {
  const token = await accessToken();
  if (!token) return null;
  const bytes = Uint8Array.from(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const payload = JSON.parse(new TextDecoder().decode(bytes));
  return {
    id: payload.sub,
    name: payload.preferred_username || payload.sub,
    fullName: payload.name || "",
    email: payload.email || "",
    roles: payload.realm_access?.roles || [],
  };
}

/** `Retry-After` in seconds (a number of seconds or an HTTP date); null when absent or unreadable. */
function retryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * One call to the API with the bearer token: `{ status, body, headers }`. A refusal throws an
 * Error carrying the API's own message, `status` and `retryAfter` (seconds, or null); a network
 * failure throws fetch's TypeError (no `status`).
 */
async function request(method, path, body, headers) {
  const token = await accessToken();
  const res = await fetch(path, {
    method,
    headers: {
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(answer?.error || `${method} ${path} answered ${res.status}`);
    err.status = res.status;
    err.retryAfter = retryAfter(res.headers.get("Retry-After"));
    throw err;
  }
  return { status: res.status, body: answer, headers: res.headers };
}

/** GET an API path with the bearer token: the answer's body; throws as `request` does. */
export async function api(path, headers = {}) {
  return (await request("GET", path, undefined, headers)).body;
}

/**
 * Send a command (POST, …) with an optional JSON body and extra headers (`Idempotency-Key`,
 * `X-Consistency-Token`): `{ status, body, headers }`; throws as `request` does.
 */
export async function send(method, path, body = undefined, headers = {}) {
  return request(method, path, body, headers);
}

/**
 * How every page starts: complete a sign-in that came back, show who is signed in in `#user`
 * (with a Sign out button calling `onSignOut`) and the `#signin` panel when nobody is. The user
 * when signed in with `role`; otherwise null, having said why through `showError`.
 */
export async function signedIn(role, page, showError, onSignOut = signOut) {
  try {
    await completeSignIn();
  } catch (e) {
    showError(`Sign-in failed: ${e.message}`);
  }
  const user = await who();
  document.getElementById("signin").hidden = !!user;
  document.getElementById("user").replaceChildren(...(user
    ? [el("span", {}, user.name), el("button", { type: "button", onclick: onSignOut }, "Sign out")]
    : []));
  if (!user) return null;
  if (!user.roles.includes(role)) {
    showError(`Signed in as ${user.name}, who lacks the ${role} role ${page} needs.`);
    return null;
  }
  return user;
}

/**
 * Server-sent events of an API path, read with fetch so the token goes along (EventSource cannot
 * send one): calls `onOpen()` once connected, then `onEvent(name, data)` for each event (comments
 * and keep-alives are skipped). Resolves when the stream ends; throws on a failed connection (the
 * error's `status` says which), or an `AbortError` when `signal` aborts.
 */
export async function readEvents(path, { signal, onOpen, onEvent }) {
  const res = await fetch(path, {
    headers: { Authorization: `Bearer ${await accessToken()}`, Accept: "text/event-stream" }, signal,
  });
  if (!res.ok) {
    const error = new Error(`${path} answered ${res.status}`);
    error.status = res.status;
    throw error;
  }
  await onOpen?.();
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const name = /^event: ?(.*)$/m.exec(block)?.[1];
      const data = [...block.matchAll(/^data: ?(.*)$/gm)].map((m) => m[1]).join("\n");
      if (name) onEvent(name, data);
    }
  }
}
