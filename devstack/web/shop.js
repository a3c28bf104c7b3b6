// The storefront, built on the web kit (clients/js/shop-recs.js) as a shop's website would be.
// Logged out, a visitor sees popular items, "bought together" on product pages, and their own
// recommendations, which follow the products they view and add to their cart. Signing in switches
// the kit to the customer: their recommendations, history and segment tags; they can buy, and the
// recommendations change at once.
import { createClient } from "/clients/js/shop-recs.js";
import { el, enc, guarded, money, signIn, trusted } from "./api.js";

const RFM_CELL = /^R\dF\dM\d$/;
const HISTORY_ROWS = 20;
const LIST = 8;
const $ = (id) => document.getElementById(id);
const kit = createClient({ baseUrl: location.origin });
let mode = {}; // who the page shows: {userId: null} for a visitor, {userId, get(path)} for a customer
let product = null; // the item on the product page
let asked = 0; // recommendation answers older than the last one asked are not shown
const titles = new Map();

async function listCustomers() {
  const { segments } = await trusted("GET", "/segments?family=rfm");
  const groups = segments.filter((s) => !RFM_CELL.test(s.name));
  if (!groups.length) {
    $("who").textContent = "No segments yet: load a shop and train a model first (./dev demo).";
    return;
  }
  const pages = await Promise.all(groups.map((s) => trusted("GET", `/segments/${enc(s.segment_id)}/members?limit=5`)));
  groups.forEach((group, i) => $("customer").append(el("optgroup", { label: `${group.name} (${group.members})` },
    pages[i].members.map((m) => el("option", { value: m.user_id }, m.user_id)))));
}

async function start() {
  guarded(showPopular)();
  const listed = guarded(listCustomers)(); // a failure is shown; browsing goes on
  const wanted = new URLSearchParams(location.search).get("customer") || "";
  if (wanted) {
    await listed;
    if (![...$("customer").options].some((o) => o.value === wanted)) $("customer").append(el("option", {}, wanted));
    $("customer").value = wanted;
  }
  await pick(wanted);
}

/** A customer's token for the kit, minted again (as the shop's identity provider would) near its expiry. */
function tokenOf(first) {
  let current = first;
  return async ({ refresh } = {}) => {
    if (refresh || Date.now() > current.expiresAt - 60_000) current = await signIn(current.userId);
    return current.token;
  };
}

async function pick(userId) {
  const me = { userId: userId || null };
  mode = me;
  product = null;
  $("product").hidden = true;
  for (const id of ["tags-panel", "history-panel", "buy"]) $(id).hidden = !userId;
  // Another person on this computer: the last one signs out first, so no trail passes between them.
  if (kit.userId() && kit.userId() !== userId) await kit.signOut();
  if (!userId) {
    history.replaceState(null, "", location.pathname);
    const visitor = await kit.visitorId();
    if (me !== mode) return;
    $("who").textContent = `Not signed in: you browse as visitor ${visitor}, an anonymous id this browser keeps. ` +
      "The products you view and put in your cart are sent as its events, and its recommendations follow them.";
    await showRecommendations(me);
    return;
  }
  const session = await signIn(userId);
  me.get = session.get;
  await kit.signIn(userId, tokenOf(session));
  if (me !== mode) return;
  history.replaceState(null, "", `?customer=${enc(userId)}`);
  $("who").textContent = `Signed in as ${userId}; the page now calls the API with their bearer token ` +
    `(valid ${Math.round(session.expiresIn / 60)} min), which opens only their own data. ` +
    "What this browser did as a visitor is linked to them.";
  await Promise.all([showRecommendations(me), showTags(me), showHistory(me)]);
}

/** A card clicked in any list: its product page here, rather than the item's page on the shop's site. */
function onClick(item, event) {
  event.preventDefault();
  guarded(() => openProduct(item.item_id))();
}

async function showPopular() {
  const answer = await kit.renderRecommendations($("popular"), kit.popular({ limit: 6 }), { onClick });
  if (!answer.items.length) $("popular").append(el("li", { class: "muted" }, "nothing sold yet"));
}

async function showRecommendations(me, before = null, bought = null) {
  const turn = ++asked;
  const answer = await kit.recommendations({ limit: LIST });
  if (me !== mode || turn !== asked) return;
  await kit.renderRecommendations($("recommendations"), answer, { onClick });
  const earlier = new Set(before || []);
  let fresh = 0;
  for (const li of $("recommendations").children) {
    const isNew = Boolean(before) && !earlier.has(li.dataset.item);
    li.classList.toggle("new", isNew);
    fresh += isNew;
  }
  $("recs-meta").textContent = (bought ? `Updated after buying ${bought}: ${fresh} new. ` : "") +
    `Model ${answer.model_version || "none"}, ${answer.personalized ? "personalized" : "not personalized"} ` +
    `(${answer.strategy}), for ${me.userId ? `customer ${me.userId}` : "this visitor"}.`;
}

async function showTags(me) {
  const answer = await me.get(`/users/${enc(me.userId)}/segments`);
  if (me !== mode) return;
  $("tags").replaceChildren(...answer.tags.map((tag) => el("li", { title: tag.reason, "data-segment": tag.segment_id },
    el("span", { class: "family" }, tag.family), " ", tag.name)));
  if (!answer.tags.length) $("tags").append(el("li", { class: "muted" }, "no tags"));
}

async function showHistory(me) {
  const data = await me.get(`/users/${enc(me.userId)}/export`);
  if (me !== mode) return;
  const purchases = data.events.filter((e) => e.event_type === "purchase").sort((a, b) => b.ts.localeCompare(a.ts));
  const shown = purchases.slice(0, HISTORY_ROWS);
  await Promise.all([...new Set(shown.map((e) => e.item_id))].filter((id) => !titles.has(id)).map(async (id) => {
    try {
      titles.set(id, (await kit.item(id)).title);
    } catch (error) {
      if (error.status !== 404) throw error;
      titles.set(id, `${id} (no longer in the catalog)`);
    }
  }));
  if (me !== mode) return;
  $("history-meta").textContent = `${purchases.length} purchases among ${data.events.length} events held` +
    (purchases.length > shown.length ? `; the newest ${shown.length}:` : ":");
  $("history").tBodies[0].replaceChildren(...shown.map((e) => el("tr", { "data-item": e.item_id },
    el("td", {}, e.ts.slice(0, 10)),
    el("td", {}, el("button", { class: "link", onclick: guarded(() => openProduct(e.item_id)) }, titles.get(e.item_id))),
    el("td", { class: "num" }, String(e.quantity)),
    el("td", { class: "num" }, money(e.price, e.currency)),
    el("td", {}, e.channel || ""))));
}

async function showList(id, answer, empty) {
  await kit.renderRecommendations($(id), answer, { onClick });
  if (!answer.items.length) $(id).append(el("li", { class: "muted" }, empty));
}

async function openProduct(itemId) {
  const me = mode;
  kit.track("view", itemId);
  const [item, together, similar] = await Promise.all([kit.item(itemId),
    kit.boughtTogether(itemId, { limit: 6 }), kit.similar(itemId, { limit: 6 })]);
  if (me !== mode) return;
  product = item;
  titles.set(item.item_id, item.title);
  $("product").hidden = false;
  $("product-title").textContent = item.title;
  $("product-meta").textContent = `${item.item_id} · ${item.category} · ${money(item.price, item.currency)} · ` +
    (item.retired ? "retired" : item.in_stock ? "in stock" : "out of stock");
  $("product-attributes").replaceChildren(...Object.entries(item.attributes || {}).flatMap(([name, value]) =>
    [el("dt", {}, name), el("dd", {}, Array.isArray(value) ? value.join(", ") : String(value))]));
  $("buy").disabled = $("add-to-cart").disabled = !item.in_stock || item.retired;
  $("buy-status").textContent = "";
  await Promise.all([showList("bought-together", together, "nothing bought with it yet"),
    showList("similar", similar, "nothing similar yet")]);
  $("product").scrollIntoView({ behavior: "smooth", block: "nearest" });
  await showRecommendations(me); // the view counts at once
}

async function addToCart() {
  const me = mode;
  kit.track("add_to_cart", product.item_id);
  $("buy-status").textContent = `${product.title} is in your cart.`;
  await showRecommendations(me);
}

async function buy() {
  const me = mode;
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
$("add-to-cart").addEventListener("click", guarded(addToCart));
$("buy").addEventListener("click", guarded(buy));
guarded(start)();
