// shop-recs web kit: the service from a shop's website, for visitors and signed-in customers.
// One ES module, no dependencies, no build step; types in shop-recs.d.ts; docs/clients.md.

const KEY = "shop-recs:";
const BATCH = 20; // queued events sent at once; fewer wait WAIT ms
const WAIT = 2000;
const MAX_BATCH = 100; // per request
const MAX_QUEUE = 1000; // kept while offline, oldest dropped first
const EARLY = 120e3; // ms before expiry a visitor token is refreshed

/** An answer other than 2xx: `status`, the service's error `code`, `retryAfter` in seconds. */
export class ApiError extends Error {
  constructor(status, body, what, retryAfter) {
    const e = (body && body.error) || {};
    super(`${what} answered ${status}${e.code ? ` ${e.code}: ${e.message}` : ""}`);
    this.name = "ApiError";
    this.status = status;
    this.code = e.code;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

const enc = encodeURIComponent;
const uuid = () => crypto.randomUUID ? crypto.randomUUID()
  : "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (c) =>
    (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16));
const query = (q) => {
  const s = new URLSearchParams(Object.entries(q || {}).filter(([, v]) => v != null && v !== "")).toString();
  return s ? "?" + s : "";
};
const web = (url) => typeof url == "string" && /^https?:\/\//i.test(url); // never a javascript: link

function browserStorage() {
  try {
    localStorage.setItem(KEY, "1");
    localStorage.removeItem(KEY);
    return localStorage;
  } catch {
    return null; // private mode, no DOM: memory only
  }
}

/**
 * A client of the service for one page.
 * @param {import("./shop-recs").ClientOptions} options
 * @returns {import("./shop-recs").Client}
 */
export function createClient({ baseUrl, storage = browserStorage(), fetch = globalThis.fetch, customerToken } = {}) {
  const base = String(baseUrl || "").replace(/\/+$/, "");
  const mem = {};
  let broken = !storage;
  let customer = null; // {id, token: () => Promise<string|null>}
  let issuing = null; // the visitor token being fetched, shared by concurrent callers
  let flushing = null;
  let hiding = null;
  let timer = 0;
  let due = Infinity;
  let retryAt = 0;
  let failures = 0;

  const get = (k) => {
    try {
      if (!broken) return JSON.parse(storage.getItem(KEY + k));
    } catch { /* unreadable: as if absent */ }
    return mem[k] ?? null;
  };
  const put = (k, v) => {
    mem[k] = v;
    try {
      if (!broken) v == null ? storage.removeItem(KEY + k) : storage.setItem(KEY + k, JSON.stringify(v));
    } catch {
      broken = true; // full: memory from now on
    }
  };
  const queue = () => get("queue") || [];

  async function send(method, path, { body, bearer, keepalive, q } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (bearer) headers.authorization = "Bearer " + bearer;
    const r = await fetch(base + path + query(q), {
      method, headers, keepalive, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch { /* keep the text */ }
    if (!r.ok) {
      const after = r.headers.get("retry-after");
      const seconds = after == null ? undefined : isNaN(after) ? (Date.parse(after) - Date.now()) / 1000 : +after;
      throw new ApiError(r.status, data, `${method} ${path}`, seconds);
    }
    return data;
  }

  // The device's visitor: made on first use, its token refreshed before expiry (or, forced, after
  // a 401); one whose refresh is refused is replaced by a new visitor.
  function visitorToken(force) {
    return issuing ||= (async () => {
      let v = get("visitor");
      if (v && !force && v.expiry - Date.now() > EARLY) return v;
      if (v) {
        try {
          v = await issue(`/visitors/${enc(v.visitor_id)}/token`, v.token);
        } catch (e) {
          const lasting = e instanceof ApiError && e.status < 500 && e.status != 429 && e.status != 408;
          if (!lasting) {
            if (!force && v.expiry > Date.now()) return v;
            throw e;
          }
          v = null;
        }
      }
      v ||= await issue("/visitors");
      put("visitor", v);
      return v;
    })().finally(() => { issuing = null; });
  }

  async function issue(path, bearer) {
    const d = await send("POST", path, { bearer });
    return { visitor_id: d.visitor_id, token: d.token, expiry: Date.now() + d.expires_in * 1000 };
  }

  async function bearerOf(c, fresh) {
    const token = await c.token(fresh ? { refresh: true } : undefined);
    if (!token) throw new ApiError(401, null, "the customer's token", undefined);
    return token;
  }

  // A request as the visitor ("v") or a customer; path(id) for the id in use; a 401 retried once.
  async function as(who, method, path, options = {}) {
    for (let again = 0; ; again++) {
      let id, bearer;
      if (who == "v") ({ visitor_id: id, token: bearer } = await visitorToken(again));
      else [id, bearer] = [who.id, await bearerOf(who, again)];
      try {
        return await send(method, path(enc(id)), { ...options, bearer });
      } catch (e) {
        if (again || !(e instanceof ApiError) || e.status != 401) throw e;
      }
    }
  }

  // Events: a persisted queue of {who: "v" | "u:<user id>", e: event}, sent in batches.
  function schedule(ms) {
    const at = Math.max(Date.now() + ms, retryAt); // never before a backoff ends
    if (at >= due && due >= retryAt) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(() => {
      due = Infinity;
      flush().catch(() => {}); // a failure schedules its retry
    }, at - Date.now());
  }

  function sendable() {
    const mine = customer && "u:" + customer.id;
    return queue().filter((x) => x.who == "v" || x.who == mine);
  }

  function track(type, itemId, extra) {
    const e = { event_id: uuid(), event_type: type, timestamp: new Date().toISOString(), channel: "web", ...extra };
    if (itemId != null) e.item_id = String(itemId);
    put("queue", [...queue(), { who: customer ? "u:" + customer.id : "v", e }].slice(-MAX_QUEUE));
    schedule(sendable().length >= BATCH ? 0 : WAIT);
    return e.event_id;
  }

  function flush() {
    return flushing ||= deliver(false).finally(() => { flushing = null; });
  }

  // Events leave the queue once answered: stored, duplicate or refused (4xx: never sent again).
  // A network error, 401, 408, 429 or 5xx keeps them for a retry, after Retry-After or with
  // exponential backoff; their ids make it idempotent.
  async function deliver(keepalive) {
    let budget = 6e4; // keepalive bodies in flight share 64 KB
    for (let x; (x = sendable()[0]); ) {
      const who = x.who == "v" ? "v" : customer;
      const batch = sendable().filter((y) => y.who == x.who).slice(0, MAX_BATCH);
      const body = { events: batch.map((y) => y.e) };
      if (keepalive && (budget -= JSON.stringify(body).length) < 0) return;
      try {
        const answer = await as(who, "POST", (id) => `/${who == "v" ? "visitors" : "users"}/${id}/events`, { body, keepalive });
        if (answer && answer.rejected && answer.rejected.length) console.warn("shop-recs: events refused:", answer.rejected);
      } catch (e) {
        const s = e instanceof ApiError ? e.status : 0;
        if (!s || s == 401 || s == 408 || s == 429 || s >= 500) {
          const ms = e.retryAfter >= 0 ? e.retryAfter * 1000 : Math.min(60e3, 1000 * 2 ** failures++) * (0.5 + Math.random() / 2);
          retryAt = Date.now() + ms;
          schedule(0);
          throw e;
        }
        console.warn("shop-recs: events refused:", e.message, e.body); // 422: all invalid
      }
      failures = 0;
      retryAt = 0;
      const done = new Set(batch.map((y) => y.e.event_id));
      put("queue", queue().filter((y) => !done.has(y.e.event_id)));
    }
  }

  // A hidden page may never run a timer again: send now. Not navigator.sendBeacon, which cannot
  // carry the Authorization header: fetch with keepalive: true outlives the page and can.
  function hide() {
    hiding ||= deliver(true).catch(() => {}).finally(() => { hiding = null; });
  }

  if (typeof addEventListener == "function" && typeof document == "object") {
    addEventListener("pagehide", hide);
    document.addEventListener("visibilitychange", () => document.visibilityState == "hidden" && hide());
  }
  if (sendable().length) schedule(WAIT); // left by an earlier page

  const linkKey = (v) => customer.id + "\n" + v.visitor_id;

  const client = {
    track,
    flush,
    queued: () => queue().length,

    /** The visitor id of this device (made on first use). */
    visitorId: async () => (await visitorToken()).visitor_id,

    /** The signed-in customer's id, or null for a visitor. */
    userId: () => customer && customer.id,

    async signIn(userId, getToken = customerToken) {
      if (!getToken) throw new TypeError("signIn needs a function that gives the customer's token");
      const me = customer = { id: String(userId), token: getToken };
      const v = get("visitor");
      const linked = get("linked") || [];
      if (v && !linked.includes(linkKey(v))) {
        try {
          await flush(); // the trail is whole before it is linked
        } catch { /* sent later */ }
        try {
          const { token } = await visitorToken();
          await as(me, "POST", (id) => `/users/${id}/visitors`, { body: { visitor_token: token } });
          put("linked", [...linked, linkKey(v)].slice(-20));
        } catch { /* best effort: again at the next sign-in */ }
      }
      if (sendable().length) schedule(0);
    },

    // A shared computer must not keep the customer's anonymous trail: a new visitor id next time.
    async signOut() {
      try {
        await flush();
      } catch { /* dropped with the visitor */ }
      await issuing?.catch(() => {});
      customer = null;
      for (const k of ["queue", "visitor", "linked"]) put(k, null);
    },

    async recommendations({ limit, category, exclude } = {}) {
      const q = { limit, category, exclude: exclude && [].concat(exclude).join(",") };
      if (sendable().length && Date.now() > retryAt) await flush().catch(() => {}); // answers see the latest events
      return customer
        ? as(customer, "GET", (id) => `/users/${id}/recommendations`, { q })
        : as("v", "GET", (id) => `/visitors/${id}/recommendations`, { q });
    },

    // Public, cacheable: no credentials.
    popular: ({ limit, category, country } = {}) => send("GET", "/popular", { q: { limit, category, country } }),
    item: (id) => send("GET", `/items/${enc(id)}`),
    similar: (id, { limit } = {}) => send("GET", `/items/${enc(id)}/similar`, { q: { limit } }),
    boughtTogether: (id, { limit } = {}) => send("GET", `/items/${enc(id)}/bought-together`, { q: { limit } }),

    async basket(itemIds, { limit } = {}) {
      if (!customer) throw new Error("basket() is for a signed-in customer: signIn() first");
      return as(customer, "POST", (id) => `/users/${id}/basket-recommendations`, { body: { item_ids: itemIds }, q: { limit } });
    },

    renderRecommendations(element, answer, { onClick } = {}) {
      element.setAttribute("aria-busy", "true");
      return Promise.resolve(answer).then((a) => {
        const list = /^[OU]L$/.test(element.tagName) ? element : document.createElement("ol");
        list.classList.add("shop-recs");
        list.replaceChildren(...a.items.map((item, i) => card(item, i, a, onClick)));
        if (list != element) element.replaceChildren(list);
        const id = a.recommendation_id; // what was shown, so a purchase can be credited to it
        if (id && a.items.length) track("impression", null, { recommendation_id: id, items: a.items.map((x) => x.item_id) });
        return a;
      }).finally(() => element.removeAttribute("aria-busy"));
    },
  };

  // textContent only: nothing from the service is parsed as HTML.
  function card(item, position, answer, onClick) {
    const make = (tag, name, text) => {
      const n = document.createElement(tag);
      n.className = "shop-recs-" + name;
      if (text != null) n.textContent = text;
      return n;
    };
    const li = make("li", "card");
    li.dataset.item = item.item_id;
    if (web(item.image_url)) {
      const img = make("img", "image");
      img.alt = "";
      img.loading = "lazy";
      img.onerror = () => img.remove();
      img.src = item.image_url;
      li.append(img);
    }
    const title = make(web(item.url) ? "a" : "button", "title", item.title);
    if (web(item.url)) title.href = item.url;
    else title.type = "button";
    li.append(title);
    if (item.price != null) li.append(make("span", "price", money(item.price, item.currency)));
    if (item.reason && item.reason.text) li.append(make("span", "reason", item.reason.text));
    li.addEventListener("click", (event) => {
      track("click", item.item_id, { recommendation_id: answer.recommendation_id, properties: { position, strategy: answer.strategy } });
      if (onClick) onClick(item, event);
    });
    return li;
  }

  return client;
}

function money(price, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(price);
  } catch {
    return `${price} ${currency || ""}`.trim();
  }
}
