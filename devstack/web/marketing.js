// The marketer's view: segment sizes, the RFM grid as a heat map, a segment's members page by
// page, and each model version's quality against the popularity baseline. All calls are the
// shop's own tools calling as a trusted backend.
import { el, enc, guarded, trusted } from "./api.js";

const RFM_CELL = /^R(\d)F(\d)M(\d)$/;
const MEMBERS_PAGE = 20;
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
  const listing = await trusted("GET", "/segments");
  $("run").textContent = listing.run ? `Nightly run ${listing.run}, materialized ${when(listing.materialized_at)}; ` +
    "the RFM score cells (R5F4M3, ...) are summed up in the grid." : "No segments yet: they are materialized after a model is trained.";
  const families = new Map();
  for (const s of listing.segments.filter((s) => !(s.family === "rfm" && RFM_CELL.test(s.name)))) {
    families.set(s.family, [...(families.get(s.family) || []), s]);
  }
  $("segments").querySelectorAll("tbody").forEach((body) => body.remove());
  for (const [family, segments] of families) {
    const largest = Math.max(...segments.map((s) => s.members));
    $("segments").append(el("tbody", { "data-family": family },
      el("tr", { class: "family-row" }, el("th", { colspan: 3 }, family)),
      segments.map((s) => el("tr", { "data-segment": s.segment_id },
        el("td", {}, el("button", { class: "link", onclick: guarded(() => showMembers(s)) }, s.name)),
        el("td", { class: "num" }, String(s.members)),
        el("td", { class: "bar-cell" }, el("span", { class: "bar", style: `width:${(100 * s.members) / largest}%` }))))));
  }
  showRfmGrid(listing.segments);
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

$("metric").addEventListener("change", () => models && drawChart());
$("next-page").addEventListener("click", guarded(() => showMembers(paging.segment, paging.cursor)));
guarded(showSegments)();
guarded(showModels)();
