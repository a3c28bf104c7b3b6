// How the demo pages reach the API, as a shop's website and tools would: a signed-in customer's
// routes with their bearer token; the shop's backend routes through the local stack's
// /dev/trusted/ stand-in for a server that signs its requests. /dev/ opens with the HttpOnly cookie
// the stack set when it served this page (sent by fetch to its own origin only, never readable here).
// Every failure is shown on the page.

export class ApiError extends Error {
  constructor(method, url, status, body) {
    const error = body && body.error;
    const detail = error ? `${error.code}: ${error.message}` : (body && body.message) || String(body || "");
    const fields = ((error && error.fields) || []).filter((f) => f.message !== error.message)
      .map((f) => `; ${f.field}: ${f.message}`).join("");
    super(`${method} ${url} answered ${status} ${detail}${fields}`);
    this.status = status;
    this.body = body; // the answer as sent, for a page that shows its fields where they belong
  }
}

async function call(method, url, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text for the message */ }
  if (!response.ok) throw new ApiError(method, url, response.status, data);
  return data;
}

/** The shop's backend: the request is signed as a trusted caller (on AWS, with SigV4). */
export const trusted = (method, path, body) => call(method, `/dev/trusted${path}`, { body });

/** The local stack's event bus (GET /dev/bus): its newest entries, newest last. */
export const devBus = (query = "") => call("GET", `/dev/bus${query ? `?${query}` : ""}`);

/** "Sign in as" a customer, as the shop's identity provider would; returns their session, with the
 * bearer token (for the web kit) and when it expires. */
export async function signIn(userId) {
  const { token, expires_in: expiresIn } = await call("POST", "/dev/token", { body: { user_id: userId } });
  return { userId, token, expiresIn, expiresAt: Date.now() + expiresIn * 1000, get: (path) => call("GET", path, { token }) };
}

/** One path segment: ":" and "@" stay as they are (RFC 3986 allows them), so "rfm:champions" reads as sent. */
export const enc = (segment) => encodeURIComponent(segment).replace(/%3A/gi, ":").replace(/%40/g, "@");

/** A DOM element: el("li", {class: "card", onclick: f}, "text", child, ...). Text is never parsed as HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null && c !== false));
  return node;
}

export function money(price, currency) {
  if (price === null || price === undefined) return "";
  return `${Number(price).toFixed(2)} ${currency || ""}`.trim();
}

export function showError(error) {
  const box = document.getElementById("errors");
  const message = error instanceof Error ? error.message : String(error);
  box.append(el("p", { class: "error" }, message, " ",
    el("button", { class: "link", onclick: (e) => e.target.parentElement.remove() }, "dismiss")));
  console.error(error);
}

/** An event handler whose failure is shown on the page rather than lost. */
export const guarded = (handler) => (...args) => Promise.resolve().then(() => handler(...args)).catch(showError);

window.addEventListener("unhandledrejection", (event) => showError(event.reason));
