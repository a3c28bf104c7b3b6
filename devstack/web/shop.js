// The storefront: a customer signs in, sees their history, recommendations and segment tags,
// opens a product and buys it; the recommendations are asked again and change at once.
import { el, enc, guarded, money, signIn, trusted } from "./api.js";

const RFM_CELL = /^R\dF\dM\d$/;
const HISTORY_ROWS = 20;
const $ = (id) => document.getElementById(id);
let session = null; // the signed-in customer: {userId, get(path)}
let product = null; // the item on the product page
const titles = new Map();

async function listCustomers() {
  const { segments } = await trusted("GET", "/segments");
  const groups = segments.filter((s) => s.family === "rfm" && !RFM_CELL.test(s.name));
  if (!groups.length) {
    $("who").textContent = "No segments yet: load a shop and train a model first (./dev demo).";
    return;
  }
  const pages = await Promise.all(groups.map((s) => trusted("GET", `/segments/${enc(s.segment_id)}/members?limit=5`)));
  groups.forEach((group, i) => $("customer").append(el("optgroup", { label: `${group.name} (${group.members})` },
    pages[i].members.map((m) => el("option", { value: m.user_id }, m.user_id)))));
  const wanted = new URLSearchParams(location.search).get("customer");
  if (wanted) {
    if (![...$("customer").options].some((o) => o.value === wanted)) $("customer").append(el("option", {}, wanted));
    $("customer").value = wanted;
    await pick(wanted);
  }
}

async function pick(userId) {
  product = null;
  $("product").hidden = true;
  if (!userId) return;
  const me = await signIn(userId);
  session = me;
  history.replaceState(null, "", `?customer=${enc(userId)}`);
  $("who").textContent = `Signed in as ${userId}; the page now calls the API with their bearer token ` +
    `(valid ${Math.round(me.expiresIn / 60)} min), which opens only their own data.`;
  await Promise.all([showRecommendations(me), showTags(me), showHistory(me)]);
}

async function showRecommendations(me, before = null, bought = null) {
  const answer = await me.get(`/users/${enc(me.userId)}/recommendations?limit=8`);
  if (me !== session) return;
  const earlier = new Set(before || []);
  const fresh = answer.items.filter((i) => before && !earlier.has(i.item_id)).length;
  $("recs-meta").textContent = (bought ? `Updated after buying ${bought}: ${fresh} new. ` : "") +
    `Model ${answer.model_version || "none"}, ${answer.personalized ? "personalized" : "not personalized"} (${answer.strategy}).`;
  $("recommendations").replaceChildren(...answer.items.map((item) => el("li",
    { class: before && !earlier.has(item.item_id) ? "card new" : "card", "data-item": item.item_id },
    el("button", { class: "link title", onclick: guarded(() => openProduct(item.item_id)) }, item.title),
    el("span", { class: "muted" }, `${item.category} · ${money(item.price, item.currency)}`),
    el("span", { class: "reason" }, item.reason.text))));
}

async function showTags(me) {
  const answer = await me.get(`/users/${enc(me.userId)}/segments`);
  if (me !== session) return;
  $("tags").replaceChildren(...answer.tags.map((tag) => el("li", { title: tag.reason, "data-segment": tag.segment_id },
    el("span", { class: "family" }, tag.family), " ", tag.name)));
  if (!answer.tags.length) $("tags").append(el("li", { class: "muted" }, "no tags"));
}

async function showHistory(me) {
  const data = await me.get(`/users/${enc(me.userId)}/export`);
  if (me !== session) return;
  const purchases = data.events.filter((e) => e.event_type === "purchase").sort((a, b) => b.ts.localeCompare(a.ts));
  const shown = purchases.slice(0, HISTORY_ROWS);
  await Promise.all([...new Set(shown.map((e) => e.item_id))].filter((id) => !titles.has(id)).map(async (id) => {
    try {
      titles.set(id, (await me.get(`/items/${enc(id)}`)).title);
    } catch (error) {
      if (error.status !== 404) throw error;
      titles.set(id, `${id} (no longer in the catalog)`);
    }
  }));
  $("history-meta").textContent = `${purchases.length} purchases among ${data.events.length} events held` +
    (purchases.length > shown.length ? `; the newest ${shown.length}:` : ":");
  $("history").tBodies[0].replaceChildren(...shown.map((e) => el("tr", { "data-item": e.item_id },
    el("td", {}, e.ts.slice(0, 10)),
    el("td", {}, el("button", { class: "link", onclick: guarded(() => openProduct(e.item_id)) }, titles.get(e.item_id))),
    el("td", { class: "num" }, String(e.quantity)),
    el("td", { class: "num" }, money(e.price, e.currency)),
    el("td", {}, e.channel || ""))));
}

async function openProduct(itemId) {
  const me = session;
  const [item, similar] = await Promise.all([me.get(`/items/${enc(itemId)}`),
    me.get(`/items/${enc(itemId)}/similar?limit=6`)]);
  product = item;
  titles.set(item.item_id, item.title);
  $("product").hidden = false;
  $("product-title").textContent = item.title;
  $("product-meta").textContent = `${item.item_id} · ${item.category} · ${money(item.price, item.currency)} · ` +
    (item.retired ? "retired" : item.in_stock ? "in stock" : "out of stock");
  $("product-attributes").replaceChildren(...Object.entries(item.attributes || {}).flatMap(([name, value]) =>
    [el("dt", {}, name), el("dd", {}, Array.isArray(value) ? value.join(", ") : String(value))]));
  $("buy").disabled = !item.in_stock || item.retired;
  $("buy-status").textContent = "";
  $("similar").replaceChildren(...similar.items.map((other) => el("li", { class: "card", "data-item": other.item_id },
    el("button", { class: "link title", onclick: guarded(() => openProduct(other.item_id)) }, other.title),
    el("span", { class: "muted" }, `${other.category} · ${money(other.price, other.currency)}`),
    el("span", { class: "reason" }, other.reason.text))));
  if (!similar.items.length) $("similar").append(el("li", { class: "muted" }, "nothing similar yet"));
  $("product").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

async function buy() {
  const me = session;
  const item = product;
  $("buy").disabled = true;
  try {
    const before = [...$("recommendations").children].map((li) => li.dataset.item);
    // The shop's backend records the order, not the customer's browser: a trusted call.
    const result = await trusted("POST", "/events", { events: [{
      event_id: `web-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`, user_id: me.userId,
      item_id: item.item_id, event_type: "purchase", timestamp: new Date().toISOString(), quantity: 1,
      price: Number(item.price || 0), currency: item.currency || "EUR", channel: "web",
    }] });
    if (result.accepted !== 1) throw new Error(`the purchase was not recorded: ${JSON.stringify(result.rejected)}`);
    $("buy-status").textContent = `Bought ${item.title}; recommendations updated without retraining.`;
    await Promise.all([showRecommendations(me, before, item.title), showHistory(me), showTags(me)]);
  } finally {
    $("buy").disabled = false;
  }
}

$("customer").addEventListener("change", guarded((e) => pick(e.target.value)));
$("buy").addEventListener("click", guarded(buy));
guarded(listCustomers)();
