// kneuron explore: the page only draws what the server's library calls return (/api/..., see api.py).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = JSON.parse(sessionStorage.getItem("kneuron-explore") || "{}");
state.changes = state.changes || [];
const save = () => sessionStorage.setItem("kneuron-explore",
  JSON.stringify({ ...state, attribution: undefined }));   // the scores stay in memory only

// ---------------------------------------------------------------- helpers
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}
const fmt = (x) => (x === null || x === undefined ? "—" : Number(x).toPrecision(4));
const num = (x) => el("span", { class: "num", "data-value": x, text: fmt(x) });
const tok = (t) => el("code", { class: "token", "data-token": t, text: JSON.stringify(t) });
const neuronLink = (n) => el("a", { href: `#/neuron/${n}`, class: "neuron", text: n });
// The DKN rules are named on the page only when a run has one besides the pairs rule (dkn.jsonl); a run
// with the pairs rule alone is shown as before the clusters rule existed.
const namesRules = (rules) => rules.some((r) => r !== "pairs");
const badge = (rule) => el("span", { class: `badge dkn-${rule}`, title: `in a DKN group of the ${rule} rule`, text: rule });

function message(text) {
  const m = $("#message");
  m.hidden = !text;
  m.textContent = text || "";
}

async function api(path, body) {
  const opts = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const out = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(out.error || `${r.status} ${r.statusText}`);
  return out;
}

// Run fn, showing its error (one readable line) in the page instead of throwing.
async function guarded(fn) {
  message("");
  $("#busy").textContent = "working…";
  try { return await fn(); } catch (e) { message(e.message); } finally { $("#busy").textContent = ""; }
}

// Poll a background job until it ends; onProgress(fraction) as it runs.
async function poll(job, onProgress) {
  for (;;) {
    if (job.state === "done") return job.result;
    if (job.state === "error") throw new Error(job.error);
    if (job.state === "cancelled") throw new Error(`${job.title}: cancelled`);
    onProgress(job.total ? Math.min(1, job.done / job.total) : 0);
    await new Promise((r) => setTimeout(r, 300));
    job = await api(`/api/jobs/${job.id}`);
  }
}

function tokenTable(table, rows, key = "p") {
  table.replaceChildren(...rows.map((r) => el("tr", {}, el("td", {}, tok(r.token)), el("td", {}, num(r[key])))));
}

const context = () => ({ model: state.model, prompt: $("#prompt").value, answer: $("#answer").value });

// ---------------------------------------------------------------- the method lists (from the library's registries)
async function loadMeta() {
  const { attribution, editing } = await api("/api/meta");
  $("#method").replaceChildren(...attribution.map((m) => el("option", { value: m.name, text: m.name })));
  $("#edit-method").replaceChildren(...editing.map((m) => el("option", { value: m.name, text: m.name,
    title: m.help + (m.causal_only ? " (causal models only)" : "") })));
}

// ---------------------------------------------------------------- models
async function loadModels() {
  const { models, edits } = await api("/api/models");
  const sel = $("#model");
  sel.replaceChildren(...models.map((m) => el("option", { value: m.name, text: m.name })));
  if (!models.some((m) => m.name === state.model)) state.model = models[0] && models[0].name;
  sel.value = state.model;
  const m = models.find((x) => x.name === state.model);
  $("#model-status").textContent = m && m.loaded ? `${m.kind}, ${m.n_layers} layers × ${m.n_neurons} neurons` :
    "(loaded on first use)";
  state.edit = edits[state.model] || null;
  $("#edited").hidden = !state.edit;
  $("#edited").textContent = state.edit ? `edited: ${state.edit.label} (all views use it)` : "";
  $("#edit-undo").hidden = !state.edit;
  $("#prompt").placeholder = m && m.kind === "masked" ? "The capital of France is [Y] ." : "The capital of France is";
}

// ---------------------------------------------------------------- prompt view
function drawLens(table, lens, n = 3) {
  const head = el("tr", {}, el("th", { text: "layer" }), el("th", { text: "before the MLP" }), el("th", { text: "after the MLP" }));
  const cell = (ts) => el("td", {}, ...(ts || []).slice(0, n).map((t) => el("span", { class: "lens-token", title: fmt(t.p) },
    tok(t.token), el("small", { text: ` ${(100 * t.p).toFixed(0)}%` }))));
  table.replaceChildren(head, ...lens.map((l) => el("tr", {}, el("td", { text: l.layer }), cell(l.before), cell(l.after))));
}

async function submitPrompt() {
  state.prompt = $("#prompt").value; state.answer = $("#answer").value; save();
  if (currentView() === "neuron") return state.neuron && openNeuron(state.neuron);
  const t0 = performance.now();
  const out = await api("/api/predict", context());
  tokenTable($("#top"), out.top);
  $("#answer-p").replaceChildren(...(out.answer ?
    ["p(", tok(out.answer.text), ") = ", el("span", { id: "answer-prob", "data-value": out.answer.p, text: fmt(out.answer.p) })] : []));
  $("#updates").replaceChildren(...out.updates.map((u) =>
    el("li", {}, neuronLink(u.neuron), ` activation `, num(u.activation), `, |a|·‖v‖ `, num(u.size))));
  drawLens($("#lens"), out.lens);
  $("#busy").dataset.ms = Math.round(performance.now() - t0);
  await loadModels();
}

async function runAttribution() {
  const bar = $("#attr-progress"), cancel = $("#attr-cancel"), status = $("#attr-status");
  const body = { ...context(), method: $("#method").value, steps: Number($("#steps").value) };
  delete $("#heatmap").dataset.drawnMs;
  let job = await api("/api/attribute", body);
  bar.hidden = cancel.hidden = false;
  cancel.onclick = () => api(`/api/jobs/${job.id}/cancel`, {});
  try {
    const res = await poll(job, (f) => { bar.value = f; status.textContent = `${job.title}: ${(100 * f).toFixed(0)}%`; });
    state.attribution = res;
    status.textContent = `${res.method}, ${res.steps} steps, answer "${res.answer}", p = ${fmt(res.prob)}`;
    drawHeatmap(res);
  } finally {
    bar.hidden = cancel.hidden = true;
  }
}

// A layer x neuron heatmap of an attribution's scores in div, with marks: [{name, neurons, symbol, size}]
// drawn over it (each neuron {layer, index}); a click opens the neuron.
function heatmap(div, res, marks = [], height = 320) {
  const t0 = performance.now();
  const traces = [{
    type: "heatmap", z: res.scores, zmid: 0, colorscale: [[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]],
    hovertemplate: "layer %{y}, neuron %{x}<br>score %{z}<extra></extra>", showscale: !marks.length,
  }, ...marks.filter((m) => m.neurons.length).map((m) => ({
    type: "scatter", mode: "markers", name: m.name, x: m.neurons.map((n) => n.index), y: m.neurons.map((n) => n.layer),
    marker: { symbol: m.symbol, size: m.size, color: "#111", line: { width: m.size > 8 ? 2 : 1 } },
    hovertemplate: `L%{y}N%{x}: ${m.name}<extra></extra>`,
  }))];
  delete div.dataset.drawnMs;
  Plotly.newPlot(div, traces, {
    title: { text: `${res.method} scores: ${res.prompt} → ${res.answer}`, font: { size: 13 } },
    xaxis: { title: { text: "neuron" }, zeroline: false },
    yaxis: { title: { text: "layer" }, dtick: res.scores.length <= 12 ? 1 : undefined, zeroline: false },
    margin: { t: 40, r: 10, b: 45, l: 50 }, height, showlegend: marks.length > 0, legend: { orientation: "h", y: -0.25 },
  }, { responsive: true, displaylogo: false }).then(() => { div.dataset.drawnMs = Math.round(performance.now() - t0); });
  div.on("plotly_click", (ev) => { location.hash = `#/neuron/L${ev.points[0].y}N${ev.points[0].x}`; });
}

function drawHeatmap(res) {
  heatmap($("#heatmap"), res);
  $("#top-neurons").replaceChildren(...res.top.map((n) => el("li", {}, neuronLink(n.neuron), " ", num(n.score))));
}

// ---------------------------------------------------------------- neuron view
async function openNeuron(name) {
  $("#neuron-name").value = name;
  const out = await api("/api/neuron", { model: state.model, neuron: name, prompt: $("#prompt").value });
  state.neuron = out.neuron; save();
  $("#neuron-info").hidden = false;
  $("#neuron-title").textContent = `${out.neuron} of ${out.model}`;
  const a = state.attribution;
  const score = a && a.model === out.model && a.prompt === $("#prompt").value ? a.scores[out.layer][out.index] : null;
  $("#neuron-stats").replaceChildren("activation at the answer position ",
    el("span", { id: "neuron-activation", "data-value": out.activation, text: fmt(out.activation) }),
    score === null ? "" : " · attribution score ", score === null ? "" : num(score));
  tokenTable($("#promoted"), out.promoted);
  tokenTable($("#suppressed"), out.suppressed);
  $("#neuron-facts").replaceChildren(...(out.facts.length ? out.facts.map((f) => el("li", {},
    el("a", { href: `#/run/${f.run}/${f.i}`, text: `${f.id} (${f.lang}, ${f.relation})` }),
    ` rank ${f.rank}, score `, num(f.score), f.likn ? " · language-independent" : "", ...inGroup(f)))
    : [el("li", { class: "muted", text: "none in the open runs" })]));
}

function inGroup(f) {
  const rules = Object.keys(f.dkn_rules || {});
  if (!namesRules(rules)) return [f.dkn ? " · in a DKN group" : ""];
  const ins = rules.filter((r) => f.dkn_rules[r]);
  return ins.length ? [" · in a DKN group ", ...ins.map(badge)] : [];
}

function setChange(neuron, factor) {
  const c = state.changes.find((x) => x.neuron === neuron);
  if (c) c.factor = factor; else state.changes.push({ neuron, factor });
  save(); drawChanges();
}

function drawChanges() {
  $("#changes").replaceChildren(...state.changes.map((c, i) => el("li", {}, neuronLink(c.neuron),
    c.factor === 0 ? " off" : ` ×${c.factor}`, " ",
    el("button", { type: "button", text: "remove", onclick: () => { state.changes.splice(i, 1); save(); drawChanges(); } }))));
}

async function runChanges() {
  const out = await api("/api/intervene", { ...context(), changes: state.changes });
  $("#iv-result").hidden = false;
  const p = (s) => (s.answer ? s.answer.p : null);
  $("#iv-answer-before").replaceChildren(num(p(out.before)));
  $("#iv-answer-after").replaceChildren(num(p(out.after)));
  $("#iv-answer-delta").replaceChildren(out.before.answer ? num(p(out.after) - p(out.before)) : "give an answer to score it");
  const tops = (s) => s.top.map((t) => el("span", { class: "lens-token" }, tok(t.token), el("small", { text: ` ${fmt(t.p)}` })));
  $("#iv-top-before").replaceChildren(...tops(out.before));
  $("#iv-top-after").replaceChildren(...tops(out.after));
  $("#iv-cont-before").textContent = out.before.continuation ?? "— (masked model)";
  $("#iv-cont-after").textContent = out.after.continuation ?? "— (masked model)";
}

// ---------------------------------------------------------------- run view
async function openRun(path) {
  const { runs } = await api("/api/runs/open", { path });
  await listRuns(runs[0].id);
  await loadModels();
}

async function listRuns(select) {
  const { runs } = await api("/api/runs");
  const sel = $("#run-select");
  sel.replaceChildren(...runs.map((r) => el("option", { value: r.id, text: `${r.path} (${r.model}, ${r.n_facts} facts)` })));
  if (select) { sel.value = select; await showRun(select); }
}

async function showRun(id, factIndex) {
  const run = await api(`/api/runs/${id}`);
  state.run = run;
  $("#run-info").hidden = false;
  $("#run-select").value = id;
  $("#run-title").textContent = `${run.path}: ${run.model}, ${run.method}, ${run.facts.length} facts`;
  const report = $("#run-report");
  report.hidden = !run.report;
  if (run.report) report.href = run.report;
  $("#facts tbody").replaceChildren(...run.facts.map((f) => el("tr", {
    "data-i": f.i, "data-search": [f.id, f.relation, f.lang, f.subject, f.prompt, f.target, f.prediction].join(" ").toLowerCase(),
    onclick: () => { location.hash = `#/run/${id}/${f.i}`; },
  }, el("td", { text: f.id }), el("td", { text: f.relation }), el("td", { text: f.lang }), el("td", { text: f.prompt }),
  el("td", { text: f.target }), el("td", {}, num(f.p)), el("td", {}, tok(f.prediction ?? ""), " ", num(f.p_prediction)),
  el("td", { text: f.n_neurons }))));
  filterFacts();
  const h = run.histogram, layers = h.kn.map((_, i) => i);
  const rules = run.dkn_rules || [];
  const dkn = namesRules(rules) ? rules.map((r) => [h.dkn_rules[r], `in DKN groups (${r})`]) : [[h.dkn, "in DKN groups"]];
  Plotly.newPlot($("#hist"), [[h.kn, "knowledge neurons"], [h.likn, "language-independent"], ...dkn]
    .filter(([y]) => y.some((x) => x > 0))
    .map(([y, label]) => ({ type: "bar", name: label, x: layers, y })),
  { title: { text: "neurons per layer", font: { size: 13 } }, barmode: "group", height: 260,
    xaxis: { title: { text: "layer" }, dtick: 1 }, margin: { t: 40, r: 10, b: 45, l: 45 } },
  { responsive: true, displaylogo: false });
  if (factIndex !== undefined) await showFact(id, factIndex);
}

function filterFacts() {
  const q = $("#fact-filter").value.trim().toLowerCase();
  let n = 0;
  for (const tr of $("#facts tbody").children) {
    tr.hidden = q && !tr.dataset.search.includes(q);
    n += !tr.hidden;
  }
  $("#fact-count").textContent = `${n} of ${$("#facts tbody").children.length}`;
}

async function showFact(id, i) {
  const f = await api(`/api/runs/${id}/facts/${i}`);
  const d = $("#fact-detail");
  const list = (ns) => ns.length ? ns.map((n, k) => [k ? ", " : "", neuronLink(`L${n[0]}N${n[1]}`)]).flat() : ["none"];
  const effects = el("div", { id: "effects" });
  const rules = Object.keys(f.dkn_rules || {}), named = namesRules(rules);
  const groups = (gs) => gs.length ? gs.map((g) => ["{", ...list(g), "} "]).flat() : ["none"];
  // with a rule besides pairs: a DKN column, one badge per rule whose groups hold the neuron, and one line per rule
  const inRules = (n) => rules.filter((r) => f.dkn_rules[r].some((g) => g.some(([l, j]) => l === n.layer && j === n.index)));
  d.replaceChildren(el("h3", { text: `${f.id} (${f.lang})` }),
    el("div", { class: "scroll" }, el("table", { class: "tokens" }, el("tr", {}, el("th", { text: "neuron" }), el("th", { text: "score" }),
      ...(named ? [el("th", { text: "DKN" })] : [])),
      ...f.neurons.map((n) => el("tr", {}, el("td", {}, neuronLink(`L${n.layer}N${n.index}`)), el("td", {}, num(n.score)),
        ...(named ? [el("td", { class: "dkn" }, ...inRules(n).map(badge))] : []))))),
    el("p", {}, "language-independent (LIKN): ", ...list(f.likn)),
    ...(named ? rules.map((r) => el("p", { class: `dkn-groups`, "data-rule": r }, "degenerate groups (DKN, ", badge(r), " rule): ",
      ...groups(f.dkn_rules[r])))
      : [el("p", {}, "degenerate groups (DKN): ", ...groups(f.dkn))]),
    effects);
  drawEffects(effects, f.effects, id, i);
}

function drawEffects(box, e, id, i) {
  if (!e) {
    box.replaceChildren("Table 1 effects: not saved in the run ",
      el("button", { type: "button", text: "Measure now", onclick: () => guarded(async () => drawEffects(box, await api(`/api/runs/${id}/facts/${i}/measure`, {}), id, i)) }));
    return;
  }
  const row = (label, k) => el("tr", {}, el("th", { text: label }), el("td", {}, num(e[`p_${k}`])), el("td", {}, num(e[`p_${k}_unrelated`])));
  box.replaceChildren(el("h4", { text: "Table 1 effects (p of the answer)" }),
    el("table", {}, el("tr", {}, el("th"), el("th", { text: "this fact" }), el("th", { text: `unrelated (${e.unrelated_id})` })),
      row("before", "before"), row("neurons ×0", "suppress"), row("neurons ×2", "enhance")));
}

// ---------------------------------------------------------------- value search
async function search() {
  const bar = $("#search-progress"), status = $("#search-status");
  const body = { model: state.model, token: $("#search-token").value };
  let out = await api("/api/values/search", body);
  if (out.building) {
    bar.hidden = false;
    try {
      await poll(out.building, (f) => { bar.value = f; status.textContent = `building the value index of ${state.model}: ${(100 * f).toFixed(0)}%`; });
    } finally { bar.hidden = true; }
    out = await api("/api/values/search", body);
  }
  status.textContent = `${out.neurons.length} neurons rank ${JSON.stringify(out.token)} among their top tokens`;
  $("#search-results").replaceChildren(el("tr", {}, el("th", { text: "neuron" }), el("th", { text: "rank" }), el("th", { text: "logit" })),
    ...out.neurons.map((n) => el("tr", {}, el("td", {}, neuronLink(n.neuron)), el("td", { text: n.rank + 1 }), el("td", {}, num(n.logit)))));
}

// ---------------------------------------------------------------- edit view
async function showEdit() {
  const { ids } = await api(`/api/edit/facts?model=${encodeURIComponent(state.model)}`);
  $("#edit-ids").replaceChildren(...ids.map((id) => el("option", { value: id })));
  drawEdit(state.edit && state.edit.report);
}

function drawEdit(r) {
  $("#edit-result").hidden = !r;
  if (!r) return;
  const names = (ns) => (ns || []).map((n) => `L${n[0]}N${n[1]}`).join(" ");
  $("#edit-title").textContent = `${r.model}: ${r.method} edit of ${r.fact_id} (${r.lang}), ${JSON.stringify(r.old)} → ` +
    `${JSON.stringify(r.new)}: ${r.params_changed.toLocaleString()} weights changed in ${r.seconds.toFixed(2)} s` +
    (r.neurons ? `; neurons ${names(r.neurons) || "none"}` : "") + (r.filtered && r.filtered.length ? ` (dropped as common: ${names(r.filtered)})` : "") +
    (r.layer !== null && r.layer !== undefined ? `; layer ${r.layer}` : "") + (r.note ? ` (${r.note})` : "");
  $("#edit-table tbody").replaceChildren(...r.lines.map((l) => el("tr", { "data-what": l.what },
    el("td", {}, el("b", { text: `${l.what} [${l.lang}] ` }), l.prompt), el("td", {}, tok(l.want), " vs ", tok(l.rival)),
    el("td", {}, num(l.before.p_want)), el("td", { class: "after-want" }, num(l.after.p_want)),
    el("td", {}, num(l.before.p_rival)), el("td", {}, num(l.after.p_rival)),
    el("td", {}, tok(l.before.top1)), el("td", {}, tok(l.after.top1)))));
}

async function applyEdit() {
  const r = await api("/api/edit", { model: state.model, fact: $("#edit-fact").value, new: $("#edit-new").value,
    method: $("#edit-method").value, lang: $("#edit-lang").value });
  await loadModels();
  drawEdit(r);
}

async function undoEdit() {
  await api("/api/edit/undo", { model: state.model });
  await loadModels();
  drawEdit(null);
}

// ---------------------------------------------------------------- views and routing
// One entry per view: #/name/args... shows section#view-name and calls its function with the args.
const VIEWS = {
  prompt: () => {},
  neuron: (name) => (name ? openNeuron(name) : null),
  run: (id, i) => (id ? showRun(id, i) : listRuns()),
  search: () => {},
  edit: () => showEdit(),
};
const currentView = () => (location.hash.split("/")[1] || "prompt");

async function route() {
  const [, view = "prompt", ...args] = location.hash.split("/");
  const name = VIEWS[view] ? view : "prompt";
  for (const v of Object.keys(VIEWS)) $(`#view-${v}`).hidden = v !== name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  $("#context").hidden = !["prompt", "neuron"].includes(name);
  $("#predict").textContent = name === "neuron" ? "Use this prompt" : "Predict";
  await guarded(() => VIEWS[name](...args.map(decodeURIComponent)));
}

function bind() {
  $("#prompt").value = state.prompt || "";
  $("#answer").value = state.answer || "";
  $("#model").onchange = () => { state.model = $("#model").value; save(); guarded(async () => { await loadModels(); if (currentView() === "edit") await showEdit(); }); };
  $("#context").onsubmit = (e) => { e.preventDefault(); guarded(submitPrompt); };
  $("#attribute").onclick = () => guarded(runAttribution);
  $("#neuron-form").onsubmit = (e) => { e.preventDefault(); location.hash = `#/neuron/${$("#neuron-name").value.trim()}`; };
  $("#iv-off").onclick = () => setChange(state.neuron, 0);
  $("#iv-double").onclick = () => setChange(state.neuron, 2);
  $("#iv-scale").onclick = () => setChange(state.neuron, Number($("#iv-factor").value));
  $("#iv-add").onclick = () => setChange($("#iv-add-name").value.trim(), 0);
  $("#iv-clear").onclick = () => { state.changes = []; save(); drawChanges(); };
  $("#iv-run").onclick = () => guarded(runChanges);
  $("#run-form").onsubmit = (e) => { e.preventDefault(); guarded(() => openRun($("#run-path").value)); };
  $("#run-select").onchange = () => { location.hash = `#/run/${$("#run-select").value}`; };
  $("#fact-filter").oninput = filterFacts;
  $("#search-form").onsubmit = (e) => { e.preventDefault(); guarded(search); };
  $("#edit-form").onsubmit = (e) => { e.preventDefault(); guarded(applyEdit); };
  $("#edit-undo").onclick = () => guarded(undoEdit);
  window.addEventListener("hashchange", route);
}

bind();
drawChanges();
guarded(async () => { await loadMeta(); await loadModels(); }).then(route);
