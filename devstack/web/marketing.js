// The marketer's view: segment sizes, the RFM grid as a heat map, a segment's members page by
// page, a custom segment's rule editor, campaign previews and exports, the trigger events on the
// local bus, experiments' results with their intervals, and each model version's quality against
// the popularity baseline. All calls are the
// shop's own tools calling as a trusted backend (the bus: the local stack's /dev/bus).
import { ApiError, devBus, el, enc, guarded, trusted } from "./api.js";

const RFM_CELL = /^R(\d)F(\d)M(\d)$/;
const MEMBERS_PAGE = 20;
// A family's largest segments shown: a shop whose customers live in thousands of cities has a
// segment for each. RFM has at most 125 score cells and its named groups: all of them.
const FAMILY_ROWS = 50;
const RFM_SEGMENTS = 1000;
const CHART_VERSIONS = 8;
const METRIC_NAMES = { ndcg: "NDCG@10", precision: "precision@10", map: "MAP@10", coverage: "coverage" };
// The named RFM groups of the R x F grid (docs/segments.md), row R5 first, columns F1..F5.
const RFM_GROUPS = {
  5: ["New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"],
  4: ["Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Loyal"],
  3: ["About To Sleep", "About To Sleep", "Need Attention", "Loyal", "Loyal"],
  2: ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"],
  1: ["Lost", "Lost", "At Risk", "At Risk", "Can't Lose Them"],
};
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let models = null;
let paging = null; // {segment, cursor, page}

async function showSegments() {
  // The run, how many segments each family has, and the custom definitions; then each family's
  // largest segments, a page each (all of RFM's: its grid sums every cell).
  const listing = await trusted("GET", "/segments?limit=1");
  $("run").textContent = listing.run ? `Nightly run ${listing.run}, materialized ${when(listing.materialized_at)}; ` +
    "the RFM score cells (R5F4M3, ...) are summed up in the grid." : "No segments yet: they are materialized after a model is trained.";
  const pages = await Promise.all(Object.keys(listing.families).map((family) =>
    trusted("GET", `/segments?family=${enc(family)}&limit=${family === "rfm" ? RFM_SEGMENTS : FAMILY_ROWS}`)));
  listing.segments = pages.flatMap((page) => page.segments);
  // From the family pages themselves: a run may have ended between the first call and them.
  const counts = Object.assign({}, ...pages.map((page) => page.families));
  listing.unshown = Object.fromEntries(Object.entries(counts).map(([family, count]) =>
    [family, count - listing.segments.filter((s) => s.family === family).length]));
  const families = new Map();
  for (const s of listing.segments.filter((s) => !(s.family === "rfm" && RFM_CELL.test(s.name)))) {
    families.set(s.family, [...(families.get(s.family) || []), s]);
  }
  $("segments").querySelectorAll("tbody").forEach((body) => body.remove());
  for (const [family, segments] of families) {
    const largest = Math.max(...segments.map((s) => s.members));
    const unshown = family === "rfm" ? 0 : listing.unshown[family] || 0;
    $("segments").append(el("tbody", { "data-family": family },
      el("tr", { class: "family-row" }, el("th", { colspan: 3 }, family)),
      segments.map((s) => el("tr", { "data-segment": s.segment_id },
        el("td", {}, el("button", { class: "link", onclick: guarded(() => showMembers(s)) }, s.name)),
        el("td", { class: "num" }, String(s.members)),
        el("td", { class: "bar-cell" }, el("span", { class: "bar", style: `width:${(100 * s.members) / largest}%` })))),
      unshown > 0 ? el("tr", { class: "more" }, el("td", { colspan: 3, class: "muted" },
        `and ${unshown} smaller ${family} segments (GET /segments?family=${family} pages through them all)`)) : []));
  }
  showRfmGrid(listing.segments);
  showCustomSegments(listing);
  fillAudiences(listing);
}

function showRfmGrid(segments) {
  const cells = {};
  for (const s of segments) {
    const score = s.family === "rfm" && RFM_CELL.exec(s.name);
    if (!score) continue;
    const key = `${score[1]}${score[2]}`;
    cells[key] = cells[key] || { count: 0, byM: [] };
    cells[key].count += s.members;
    cells[key].byM.push(`M${score[3]} ${s.members}`);
  }
  const largest = Math.max(1, ...Object.values(cells).map((c) => c.count));
  const total = Object.values(cells).reduce((sum, c) => sum + c.count, 0);
  const header = el("tr", {}, el("th", {}, "R \\ F"), [1, 2, 3, 4, 5].map((f) => el("th", { scope: "col" }, `F${f}`)));
  const rows = [5, 4, 3, 2, 1].map((r) => el("tr", {}, el("th", { scope: "row" }, `R${r}`),
    [1, 2, 3, 4, 5].map((f) => {
      const cell = cells[`${r}${f}`] || { count: 0, byM: [] };
      const share = cell.count / largest;
      return el("td", {
        class: share > 0.55 ? "cell dark" : "cell", "data-r": r, "data-f": f, "data-count": cell.count,
        style: `background: hsl(212 70% ${97 - 55 * share}%)`,
        title: `R${r} F${f}, ${RFM_GROUPS[r][f - 1]}: ${cell.count} customers${cell.byM.length ? ` (${cell.byM.sort().join(", ")})` : ""}`,
      }, el("strong", {}, String(cell.count)), el("small", {}, RFM_GROUPS[r][f - 1]));
    })));
  $("rfm-grid").replaceChildren(el("thead", {}, header), el("tbody", {}, rows));
  $("rfm-total").textContent = `${total} customers with RFM tags.`;
}

async function showMembers(segment, cursor = null) {
  const query = `limit=${MEMBERS_PAGE}` + (cursor ? `&cursor=${enc(cursor)}` : "");
  const page = await trusted("GET", `/segments/${enc(segment.segment_id)}/members?${query}`);
  paging = { segment, cursor: page.next_cursor, page: cursor && paging ? paging.page + 1 : 1 };
  const first = (paging.page - 1) * MEMBERS_PAGE + 1;
  $("members-title").textContent = `Members of ${segment.name}`;
  $("members-meta").textContent = `${segment.segment_id}: page ${paging.page}, members ${first} to ` +
    `${first + page.members.length - 1} of ${segment.members} (run ${page.run}).`;
  $("members").start = first;
  $("members").replaceChildren(...page.members.map((m) => el("li", { "data-user": m.user_id },
    el("a", { href: `/shop?customer=${enc(m.user_id)}` }, m.user_id), " ", el("span", { class: "muted" }, m.reason))));
  $("next-page").hidden = !page.next_cursor;
}

let modelsRefresh = null;

async function showModels() {
  models = await trusted("GET", "/models");
  $("models").tBodies[0].replaceChildren(...models.versions.map((v) => {
    const model = v.metrics.model || {};
    const baseline = v.metrics.popularity || {};
    return el("tr", { "data-version": v.version, class: v.active ? "active" : "" },
      el("td", {}, v.version, v.active ? " (active)" : ""), el("td", {}, v.status),
      el("td", { class: "num" }, fixed(model.ndcg)), el("td", { class: "num" }, fixed(baseline.ndcg)),
      el("td", { class: "num" }, baseline.ndcg ? `${(model.ndcg / baseline.ndcg).toFixed(2)}x` : ""),
      el("td", { class: "muted" }, v.reason));
  }));
  drawChart();
  // POST /models/train answers at once and the run goes on: follow it here until it has an outcome.
  clearTimeout(modelsRefresh);
  if (models.versions.some((v) => v.status === "training")) modelsRefresh = setTimeout(showModels, 5000);
}

const when = (iso) => `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
const fixed = (value) => (typeof value === "number" ? value.toFixed(3) : "");

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

/** Grouped bars, oldest version on the left: the model's value beside the popularity baseline's. */
function drawChart() {
  const metric = $("metric").value;
  const versions = models.versions.slice(0, CHART_VERSIONS).reverse();
  if (!versions.length) {
    $("model-chart").replaceChildren(el("p", { class: "muted" }, "No model trained yet (POST /models/train)."));
    return;
  }
  const width = 720, height = 260, left = 48, bottom = 44, top = 36;
  const plot = height - bottom - top;
  const values = versions.flatMap((v) => [v.metrics.model?.[metric], v.metrics.popularity?.[metric]]).filter((x) => typeof x === "number");
  const ceiling = niceCeiling(Math.max(0.001, ...values));
  const y = (value) => top + plot - (plot * value) / ceiling;
  const slot = (width - left) / versions.length;
  const bar = Math.min(48, slot / 3);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${METRIC_NAMES[metric]} of each model version against the popularity baseline` });
  for (let i = 0; i <= 4; i++) {
    const value = (ceiling * i) / 4;
    chart.append(svg("line", { x1: left, x2: width, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" }, value.toFixed(3)));
  }
  versions.forEach((v, i) => {
    const middle = left + slot * (i + 0.5);
    const group = svg("g", { "data-version": v.version });
    [["model", v.metrics.model, -bar], ["popularity", v.metrics.popularity, 0]].forEach(([series, metrics, offset]) => {
      const value = metrics?.[metric];
      if (typeof value !== "number") return;
      group.append(svg("rect", { x: middle + offset, y: y(value), width: bar - 2, height: top + plot - y(value),
        class: `bar-${series}`, "data-series": series, "data-value": value }),
      svg("text", { x: middle + offset + bar / 2 - 1, y: y(value) - 4, class: "value", "text-anchor": "middle",
        "data-series": series }, value.toFixed(3)));
    });
    group.append(svg("text", { x: middle, y: height - bottom + 18, class: "axis", "text-anchor": "middle" },
      shortVersion(v.version) + (v.active ? " ★" : "")),
    svg("text", { x: middle, y: height - bottom + 34, class: `axis status-${v.status}`, "text-anchor": "middle" }, v.status));
    group.append(svg("title", {}, `${v.version} (${v.status}): ${metric} model ${fixed(v.metrics.model?.[metric])}, ` +
      `popularity ${fixed(v.metrics.popularity?.[metric])}`));
    chart.append(group);
  });
  const legend = svg("g", { transform: `translate(${left}, 12)` });
  legend.append(svg("rect", { x: 0, y: -10, width: 12, height: 12, class: "bar-model" }), svg("text", { x: 18, y: 0, class: "axis" }, "model"),
    svg("rect", { x: 80, y: -10, width: 12, height: 12, class: "bar-popularity" }), svg("text", { x: 98, y: 0, class: "axis" }, "popularity baseline"));
  chart.append(legend);
  $("model-chart").replaceChildren(chart);
}

/** v20261123-111026-c00e -> "11-23 11:10 c00e": short enough to sit under its bars. */
function shortVersion(version) {
  const parts = /^v\d{4}(\d\d)(\d\d)-(\d\d)(\d\d)\d\d-?(.*)$/.exec(version);
  return parts ? `${parts[1]}-${parts[2]} ${parts[3]}:${parts[4]} ${parts[5]}`.trim() : version.slice(0, 16);
}

function niceCeiling(value) {
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((c) => c >= value);
}

// ---- Experiments (docs/experiments.md): each variant's value with its interval, against the control ----
let experiments = [];
const MEASURES = { conversion: "conversion", click_through: "click-through", revenue_per_exposed: "revenue per exposed customer" };

async function showExperiments() {
  experiments = (await trusted("GET", "/experiments?limit=100")).experiments;
  const chosen = $("experiment").value;
  $("experiment").replaceChildren(...experiments.map((e) =>
    el("option", { value: e.experiment_id }, `${e.spec.name} (${e.spec.surface}, ${e.status})`)));
  if (experiments.some((e) => e.experiment_id === chosen)) $("experiment").value = chosen;
  drawExperiment();
}

function drawExperiment() {
  const experiment = experiments.find((e) => e.experiment_id === $("experiment").value);
  const rows = $("experiment-results").tBodies[0];
  if (!experiment) {
    $("experiment-chart").replaceChildren(el("p", { class: "muted" }, "No experiment yet (POST /experiments)."));
    rows.replaceChildren();
    return;
  }
  const results = experiment.results;
  if (!results) {
    $("experiment-chart").replaceChildren(el("p", { class: "muted" }, "No results yet: the nightly run writes them."));
    rows.replaceChildren();
    return;
  }
  const measure = $("experiment-measure").value;
  const variants = experiment.spec.variants.map((v) => ({ ...v, result: results.variants[v.name] }));
  const width = 720, height = 240, left = 64, bottom = 40, top = 24;
  const plot = height - bottom - top;
  const highs = variants.map((v) => v.result?.[measure]?.interval.high ?? 0);
  const ceiling = niceCeiling(Math.max(1e-6, ...highs));
  const y = (value) => top + plot - (plot * Math.max(0, value)) / ceiling;
  const slot = (width - left) / variants.length;
  const bar = Math.min(64, slot / 2);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${MEASURES[measure]} of each variant of ${experiment.spec.name}, with 95% intervals` });
  for (let i = 0; i <= 4; i++) {
    const value = (ceiling * i) / 4;
    chart.append(svg("line", { x1: left, x2: width, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" }, value.toPrecision(2)));
  }
  variants.forEach((v, i) => {
    const value = v.result?.[measure];
    if (!value) return;
    const middle = left + slot * (i + 0.5);
    const control = v.name === results.control;
    const group = svg("g", { "data-variant": v.name });
    group.append(svg("rect", { x: middle - bar / 2, y: y(value.value), width: bar, height: top + plot - y(value.value),
      class: control ? "bar-popularity" : "bar-model", "data-value": value.value }),
    svg("line", { x1: middle, x2: middle, y1: y(value.interval.high), y2: y(value.interval.low), class: "whisker",
      "data-low": value.interval.low, "data-high": value.interval.high }),
    svg("text", { x: middle, y: height - bottom + 16, class: "axis", "text-anchor": "middle" },
      `${v.name}${control ? " (control)" : ""}`),
    svg("text", { x: middle, y: height - bottom + 32, class: "axis", "text-anchor": "middle" }, `${v.result.exposed} exposed`),
    svg("title", {}, `${v.name}: ${MEASURES[measure]} ${value.value} (95% ${value.interval.low} to ${value.interval.high})`));
    chart.append(group);
  });
  $("experiment-chart").replaceChildren(chart);
  rows.replaceChildren(...variants.map((v) => {
    const r = v.result || { exposed: 0 };
    const against = r.against_control?.[measure];
    const verdict = !against ? "control" : against.significant ? (against.difference > 0 ? "better" : "worse") : "no difference yet";
    const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(2)}%` : "");
    return el("tr", { "data-variant": v.name },
      el("td", {}, v.name), el("td", {}, v.serves), el("td", { class: "num" }, String(r.exposed)),
      el("td", { class: "num" }, pct(r.click_through?.value)), el("td", { class: "num" }, pct(r.conversion?.value)),
      el("td", { class: "num" }, r.revenue_per_exposed ? r.revenue_per_exposed.value.toFixed(2) : ""),
      el("td", { class: "num" }, against && against.lift != null ? `${against.lift >= 0 ? "+" : ""}${(100 * against.lift).toFixed(1)}%` : ""),
      el("td", { class: "num" }, against ? against.p_value.toFixed(3) : ""), el("td", { class: "verdict" }, verdict));
  }));
}

// ---- Custom segments: the rule editor (docs/segments.md, "Custom segments") ----

// The fields of the rule grammar: how each is compared, and what else it needs.
const FIELDS = {
  country: { label: "country", kind: "text", hint: "e.g. DE" },
  region: { label: "region", kind: "text" },
  city: { label: "city", kind: "text" },
  preferred_channel: { label: "preferred channel (device)", kind: "text", hint: "web, ios, android or store" },
  tag: { label: "tag or segment id", kind: "tag", hint: "e.g. Champions or rfm:champions" },
  attribute: { label: "declared attribute", kind: "attribute", needs: ["attribute"], hint: "text, true or false" },
  recency_days: { label: "days since the last purchase", kind: "number" },
  orders_total: { label: "orders, all time", kind: "number" },
  monetary: { label: "net spend, all time", kind: "number" },
  purchases_in_category: { label: "purchases in a category", kind: "number", needs: ["category", "days"] },
  spend_in_days: { label: "spend in the last days", kind: "number", needs: ["days"] },
  events_in_days: { label: "events in the last days", kind: "number", needs: ["days"] },
};
const OPERATORS = {
  number: [">=", ">", "<=", "<", "==", "!="],
  text: ["==", "!=", "in"],
  tag: ["==", "!=", "in"],
  attribute: ["==", "!=", "in", "contains"],
};
const EXTRA_INPUTS = {
  category: { label: "Category", type: "text", placeholder: "e.g. kitchen" },
  days: { label: "In the last (days)", type: "number", placeholder: "e.g. 30" },
  attribute: { label: "Attribute name", type: "text", placeholder: "e.g. interests" },
};

function addCondition(field = "country") {
  const select = (cls, label, options) => el("select", { class: cls, "data-label": label },
    options.map(([value, text]) => el("option", { value }, text)));
  const row = el("li", { class: "condition" },
    el("label", {}, "Field ", select("field", "field", Object.entries(FIELDS).map(([name, f]) => [name, f.label]))),
    el("label", {}, "Operator ", select("op", "operator", [])),
    Object.entries(EXTRA_INPUTS).map(([name, input]) => el("label", { class: `extra extra-${name}`, hidden: true },
      `${input.label} `, el("input", { class: name, type: input.type, placeholder: input.placeholder,
        min: input.type === "number" ? 1 : null, "data-label": input.label.toLowerCase() }))),
    el("label", {}, "Value ", el("input", { class: "value", autocomplete: "off", "data-label": "value" })),
    el("button", { type: "button", class: "link remove", onclick: () => { row.remove(); numberConditions(); } }, "Remove"));
  row.querySelector(".field").value = field;
  row.querySelector(".field").addEventListener("change", () => fitCondition(row));
  row.querySelector(".op").addEventListener("change", () => fitCondition(row));
  $("conditions").append(row);
  fitCondition(row);
  numberConditions();
  return row;
}

/** The operators, extra inputs and value hint the chosen field and operator take. */
function fitCondition(row) {
  const field = FIELDS[row.querySelector(".field").value];
  const op = row.querySelector(".op");
  const kept = op.value;
  op.replaceChildren(...OPERATORS[field.kind].map((o) => el("option", { value: o }, o)));
  op.value = OPERATORS[field.kind].includes(kept) ? kept : OPERATORS[field.kind][0];
  for (const name of Object.keys(EXTRA_INPUTS)) {
    row.querySelector(`.extra-${name}`).hidden = !(field.needs || []).includes(name);
  }
  row.querySelector(".value").placeholder = op.value === "in" ? "values, separated by commas"
    : field.kind === "number" ? "a number" : field.hint || "text";
}

function numberConditions() {
  const rows = [...$("conditions").children];
  rows.forEach((row, i) => {
    row.dataset.index = i;
    row.querySelector(".remove").setAttribute("aria-label", `Remove condition ${i + 1}`);
    // Every condition has a Field, an Operator, a Value: the names say which condition's.
    row.querySelectorAll("[data-label]").forEach((control) =>
      control.setAttribute("aria-label", `Condition ${i + 1} ${control.dataset.label}`));
    row.querySelector(".remove").hidden = rows.length === 1;
  });
}

/** A condition as the rule grammar takes it. Values the grammar refuses (an empty number) are sent as
 * typed: the API's 422 names the part at fault, and the page shows it beside the condition. */
function readCondition(row) {
  const name = row.querySelector(".field").value;
  const field = FIELDS[name];
  const op = row.querySelector(".op").value;
  const raw = row.querySelector(".value").value;
  const condition = { field: name, op, value: raw };
  if (op === "in") condition.value = raw.split(",").map((v) => v.trim()).filter(Boolean);
  else if (field.kind === "number") condition.value = numberOr(raw);
  else if (field.kind === "attribute" && (raw === "true" || raw === "false")) condition.value = raw === "true";
  for (const extra of field.needs || []) {
    const typed = row.querySelector(`input.${extra}`).value;
    condition[extra] = extra === "days" ? numberOr(typed) : typed;
  }
  return condition;
}

const numberOr = (text) => (text.trim() !== "" && Number.isFinite(Number(text)) ? Number(text) : text);

async function saveSegment() {
  const rows = [...$("conditions").children];
  for (const row of rows) {
    row.classList.remove("invalid");
    row.querySelectorAll("input").forEach((input) => input.removeAttribute("aria-invalid"));
  }
  const definition = { name: $("segment-name").value, description: $("segment-description").value,
    rule: { [$("rule-combine").value]: rows.map(readCondition) } };
  $("save-segment").disabled = true;
  status("segment-status", "Saving…");
  try {
    const saved = await trusted("POST", "/segments", definition);
    status("segment-status", `Saved ${saved.segment_id} ("${saved.name}"), ${describe(saved.rule)}. Campaigns use it at once; ` +
      "its member count comes with the next nightly run.", "ok", { "data-segment": saved.segment_id });
    await showSegments();
    $("campaign-segment").value = saved.segment_id;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    for (const field of answerFields(error)) {
      // rule.all[1][.days]: the condition's row, and its input at fault (the value unless named).
      const at = /^rule\.(all|any)\[(\d+)\](?:\.(days|category|attribute)\b)?/.exec(field.field);
      const row = at && rows[Number(at[2])];
      if (row) {
        row.classList.add("invalid");
        row.querySelector(`input.${at[3] || "value"}`).setAttribute("aria-invalid", "true");
      }
    }
    status("segment-status", `Not saved (${error.status}): ${explain(error)}`, "error");
  } finally {
    $("save-segment").disabled = false;
  }
}

/** The fields an error answer names, each once. */
function answerFields(error) {
  const fields = error.body?.error?.fields || [];
  return [...new Map(fields.map((f) => [f.field, f])).values()];
}

/** An error answer in words: each field at fault (a rule's condition by its number), and why. */
function explain(error) {
  const fields = answerFields(error);
  if (!fields.length) return error.body?.error?.message || error.body?.message || error.message;
  return fields.map((f) => {
    const at = /^rule\.(all|any)\[(\d+)\](.*)$/.exec(f.field);
    const where = at ? `condition ${Number(at[2]) + 1} (rule.${at[1]}[${at[2]}]${at[3]})` : f.field;
    return `${where}: ${f.message.replace(/^Value error, /, "")}`;
  }).join("; ");
}

/** A rule in words, e.g. country == "DE" and purchases_in_category[kitchen] in 30 days >= 2. */
function describe(rule) {
  if (rule.all || rule.any) {
    const parts = (rule.all || rule.any).map(describe);
    return parts.length > 1 ? `(${parts.join(rule.all ? " and " : " or ")})` : parts[0];
  }
  const subject = rule.field + (rule.category ? `[${rule.category}]` : "") + (rule.attribute ? `[${rule.attribute}]` : "") +
    (rule.days ? ` in ${rule.days} days` : "");
  return `${subject} ${rule.op} ${JSON.stringify(rule.value)}`;
}

function showCustomSegments(listing) {
  const custom = listing.custom || [];
  $("custom-segments").replaceChildren(...(custom.length ? custom.map((c) => el("li", { "data-segment": c.segment_id },
    el("strong", {}, c.name), " ", el("code", {}, c.segment_id), el("br"),
    el("span", { class: "muted" }, describe(c.rule)), " ",
    el("button", { type: "button", class: "link", "aria-label": `Delete ${c.name}`, onclick: guarded(() => deleteSegment(c)) }, "Delete")))
    : [el("li", { class: "muted" }, "None yet.")]),
  ...(listing.unreadable || []).map((id) => namedOnly(id, "cannot be read: delete it and define it again")),
  ...(listing.unlisted || []).map((id) =>
    namedOnly(id, "too large to list (still applied): delete it and define it again, smaller")));
}

/** A stored definition the listing gives by its id alone: why, and a button that deletes it. */
function namedOnly(id, why) {
  return el("li", { "data-segment": id }, el("code", {}, id), " ", el("span", { class: "muted" }, why), " ",
    el("button", { type: "button", class: "link", "aria-label": `Delete ${id}`,
      onclick: guarded(() => deleteSegment({ segment_id: id, name: id })) }, "Delete"));
}

async function deleteSegment(segment) {
  if (!window.confirm(`Delete the custom segment "${segment.name}"?`)) return;
  await trusted("DELETE", `/segments/${enc(segment.segment_id)}`);
  status("segment-status", `Deleted ${segment.segment_id}.`, "ok");
  await showSegments();
}

/** The audiences a campaign can take: everyone, the custom segments, the nightly run's segments. */
function fillAudiences(listing) {
  const select = $("campaign-segment");
  const chosen = select.value;
  const groups = new Map([["custom", (listing.custom || []).map((c) => [c.segment_id, c.name])]]);
  for (const s of listing.segments.filter((s) => !(s.family === "rfm" && RFM_CELL.test(s.name)))) {
    groups.set(s.family, [...(groups.get(s.family) || []), [s.segment_id, `${s.name} (${s.members})`]]);
  }
  // A family cut to its largest says so: a smaller segment is taken by its id through POST /campaigns.
  const label = (family, options) => (listing.unshown?.[family] > 0 && family !== "rfm"
    ? `${family} (the ${options.length} largest of ${options.length + listing.unshown[family]})` : family);
  select.replaceChildren(el("option", { value: "" }, "everyone"),
    ...[...groups].filter(([, options]) => options.length).map(([family, options]) =>
      el("optgroup", { label: label(family, options) }, options.map(([value, text]) => el("option", { value }, text)))));
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

/** A status line: its text, a kind (ok, error, busy) and data attributes for whoever reads it. */
function status(id, text, kind = "", data = {}) {
  const node = $(id);
  node.textContent = text;
  node.className = `status ${kind}`.trim();
  for (const name of Object.keys(node.dataset)) delete node.dataset[name];
  for (const [name, value] of Object.entries(data)) node.setAttribute(name, value);
}

// ---- Campaigns: preview (a dry run) and export (docs/campaigns.md) ----

const POLL_MS = 500;
const POLL_TIMEOUT_MS = 120_000;
const DONE = new Set(["ACTIVE", "CREATE FAILED"]);
let campaignRunning = false;

async function startCampaign(dryRun) {
  if (campaignRunning) return;
  const segment = $("campaign-segment");
  const audience = segment.value ? segment.selectedOptions[0].textContent : "everyone";
  const channel = $("campaign-channel").value;
  const named = $("campaign-name").value;
  const request = { name: dryRun ? (named.trim() || `Preview: ${audience}`).slice(0, 128) : named, channel,
    segment_id: segment.value || null, dry_run: dryRun };
  if (!dryRun) request.num_results = numberOr($("campaign-results").value);
  const what = dryRun ? `Preview of ${audience} on ${channel}` : `Export "${named}" (${audience} on ${channel})`;
  campaignRunning = true;
  $("preview").disabled = $("export").disabled = true;
  try {
    let campaign;
    try {
      campaign = await trusted("POST", "/campaigns", request);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      status("campaign-status", `${what} not started (${error.status}): ${explain(error)}`, "error");
      return;
    }
    status("campaign-status", `${what}: started as ${campaign.campaign_id}.`, "busy");
    showCampaign(campaign);
    const deadline = Date.now() + POLL_TIMEOUT_MS;
    while (!DONE.has(campaign.status)) {
      if (Date.now() > deadline) {
        status("campaign-status", `${what}: still ${campaign.status} after ${POLL_TIMEOUT_MS / 1000} s; stopped ` +
          `following it. GET /campaigns/${campaign.campaign_id} tells how it ends.`, "error");
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      campaign = await trusted("GET", `/campaigns/${enc(campaign.campaign_id)}`);
      showCampaign(campaign);
      const { customers_total: total, customers_done: done } = campaign.progress;
      if (!DONE.has(campaign.status)) {
        status("campaign-status", `${what}: ${campaign.status}` + (total ? `, ${done} of ${total} customers.` : ", counting the audience."), "busy");
      }
    }
    status("campaign-status", campaign.status === "ACTIVE"
      ? `${what}: done, ${campaign.counts.reachable} reachable of ${campaign.counts.in_segment} in the audience` +
        (dryRun ? " (nothing written)." : `, ${campaign.counts.written} lines written.`)
      : `${what}: failed: ${campaign.failure_reason || "no reason given"}`, campaign.status === "ACTIVE" ? "ok" : "error");
  } finally {
    campaignRunning = false;
    $("preview").disabled = $("export").disabled = false;
  }
}

function showCampaign(c) {
  const { customers_total: total, customers_done: done } = c.progress;
  const bar = $("campaign-progress");
  bar.hidden = DONE.has(c.status) || !total;
  bar.max = Math.max(1, total);
  bar.value = done;
  const row = (key, label, value) => [el("dt", {}, label), el("dd", { "data-key": key }, value)];
  const reasons = Object.entries(c.counts.left_out || {});
  $("campaign-result").replaceChildren(el("dl", { class: "campaign", "data-campaign": c.campaign_id, "data-status": c.status },
    row("campaign", "campaign", `${c.name} (${c.campaign_id})${c.request.dry_run ? ", a preview" : ""}`),
    row("status", "status", c.status),
    total ? row("progress", "progress", `${done} of ${total} customers (${Math.round((100 * done) / total)}%)`) : [],
    row("considered", "customers with a profile", String(c.counts.considered)),
    row("in_segment", "in the audience", String(c.counts.in_segment)),
    row("reachable", "reachable", String(c.counts.reachable)),
    row("left_out", "left out", reasons.length ? el("ul", { class: "reasons" }, reasons.map(([reason, n]) =>
      el("li", { "data-reason": reason }, `${reason}: `, el("span", { class: "num" }, String(n))))) : "none"),
    c.request.dry_run ? [] : row("written", "lines written", String(c.counts.written)),
    c.output?.jsonl ? row("jsonl", "JSON Lines", el("code", {}, c.output.jsonl)) : [],
    c.output?.csv ? row("csv", "CSV", el("code", {}, c.output.csv)) : [],
    c.failure_reason ? row("failure", "failure", c.failure_reason) : []));
}

// ---- Triggers: the newest events on the local bus (docs/triggers.md) ----

const DETAIL_TYPES = ["Segment Entered", "Segment Left", "Item Back In Stock", "Item Price Dropped",
  "Viewed Item Back In Stock", "Viewed Item Price Dropped", "Item Matches Interests"];
const TRIGGERS_SHOWN = 50;
let triggersAsked = 0; // the newest request's number: an older answer that arrives later is dropped

async function showTriggers() {
  const asked = ++triggersAsked;
  const query = new URLSearchParams({ limit: String(TRIGGERS_SHOWN) });
  if ($("triggers-type").value) query.set("detail_type", $("triggers-type").value);
  $("triggers-refresh").disabled = true;
  try {
    const { entries } = await devBus(query.toString());
    // A marketer who picks another type before the page's first answer came must not see it.
    if (asked !== triggersAsked) return;
    $("triggers").tBodies[0].replaceChildren(...entries.slice().reverse().map((entry) => {
      let detail = {};
      try { detail = JSON.parse(entry.Detail); } catch { detail = { reason: String(entry.Detail) }; }
      return el("tr", { "data-detail-type": entry.DetailType, "data-id": entry.id },
        el("td", { class: "nowrap" }, `${entry.Time.slice(0, 10)} ${entry.Time.slice(11, 19)}`),
        el("td", {}, entry.DetailType), el("td", {}, about(detail)), el("td", { class: "reason" }, detail.reason || ""));
    }));
    const clock = new Date().toISOString().slice(11, 19);
    status("triggers-status", entries.length ? `${entries.length === 1 ? "1 event" : `${entries.length} newest events`}, the newest first (refreshed ${clock} UTC).`
      : `No events on the local bus yet (refreshed ${clock} UTC): an upsert that restocks an item or lowers its ` +
        "price publishes one at once, the nightly run the others.", "", { "data-count": entries.length });
  } finally {
    if (asked === triggersAsked) $("triggers-refresh").disabled = false;
  }
}

/** Who or what an event is about: ids only, as the events carry no personal data. */
function about(detail) {
  return [detail.user_id && `customer ${detail.user_id}`, detail.segment_name,
    detail.item_id && `item ${detail.item_id}`,
    Array.isArray(detail.items) && `items ${detail.items.map((i) => i.item_id).join(", ")}`].filter(Boolean).join(", ");
}

$("triggers-type").append(...DETAIL_TYPES.map((t) => el("option", { value: t }, t)));
$("add-condition").addEventListener("click", () => addCondition().querySelector(".field").focus());
// The forms never navigate: preventDefault before anything asynchronous.
$("segment-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(saveSegment)(); });
$("campaign-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(startCampaign)(false); });
$("preview").addEventListener("click", guarded(() => startCampaign(true)));
$("triggers-refresh").addEventListener("click", guarded(showTriggers));
$("triggers-type").addEventListener("change", guarded(showTriggers));
addCondition();
guarded(showTriggers)();

$("metric").addEventListener("change", () => models && drawChart());
$("next-page").addEventListener("click", guarded(() => showMembers(paging.segment, paging.cursor)));
guarded(showSegments)();
guarded(showModels)();
$("experiment").addEventListener("change", drawExperiment);
$("experiment-measure").addEventListener("change", drawExperiment);
guarded(showExperiments)();
