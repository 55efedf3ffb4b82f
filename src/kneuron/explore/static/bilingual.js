// kneuron explore, the Prompt view's languages side by side: one fact in each language (/api/bilingual,
// api.py / bilingual.py) and the fact list with the model's known marks (/api/facts). Loaded after app.js,
// whose helpers (el, api, poll, guarded, tokenTable, drawLens, heatmap) it uses.
"use strict";

const bi = { out: null, key: null };
const biLangs = () => $("#bi-langs").value.split(",").map((x) => x.trim()).filter(Boolean);

// The fact list (the first facts of each relation) with which of them the model knows (/api/facts;
// the marks are computed once per model, as a job), fetched when the fact box is first used.
async function loadFactList() {
  const model = state.model, facts = $("#bi-facts").value.trim(), key = `${model}|${facts}`;
  if (bi.key === key) return drawFactList();
  const q = `/api/facts?model=${encodeURIComponent(model)}&facts=${encodeURIComponent(facts)}`;
  bi.key = key;
  let out = await api(q);
  bi.out = out; drawFactList();
  if (out.building) {
    await poll(out.building, () => { $("#bi-list-status").textContent = `finding which facts of ${out.facts} ${model} knows…`; });
    out = await api(q);
    if (bi.key === key) { bi.out = out; drawFactList(); }
  }
}

function drawFactList() {
  const out = bi.out, langs = biLangs(), only = $("#bi-known").checked;
  if (!out) return;
  $("#bi-facts").placeholder = out.facts;
  const mark = (m) => (m.known === null ? "" : m.known ? " ✓" : " ✗ (not known)");
  const shown = out.list.filter((e) => !only || langs.every((l) => e.langs[l] && e.langs[l].known));
  $("#bi-ids").replaceChildren(...shown.map((e) => el("option", { value: e.id, "data-known": langs.map((l) => (e.langs[l] || {}).known).join(","),
    label: `${e.relation}: ` + langs.map((l) => (e.langs[l] ? `${l} ${e.langs[l].subject} → ${e.langs[l].object}${mark(e.langs[l])}` : `${l} none`)).join(" · ") })));
  const known = langs.map((l) => `${out.list.filter((e) => e.langs[l] && e.langs[l].known).length} in ${l}`);
  $("#bi-list-status").textContent = `${out.facts}: ${shown.length} of ${out.list.length} facts listed` +
    (out.known_computed ? `; ${state.model} knows ${known.join(", ")} (✓, kneuron.organisms.known)` : "");
}

async function runCompare() {
  const bar = $("#bi-progress"), cancel = $("#bi-cancel"), status = $("#bi-status"), prompts = $("#bi-prompts").value;
  const body = { model: state.model, fact: $("#bi-fact").value, facts: $("#bi-facts").value, langs: biLangs(),
    method: $("#method").value, steps: Number($("#steps").value), prompts: prompts === "" ? null : Number(prompts) };
  const job = await api("/api/bilingual", body);
  bar.hidden = cancel.hidden = false;
  cancel.onclick = () => api(`/api/jobs/${job.id}/cancel`, {});
  try {
    const res = await poll(job, (f) => { bar.value = f; status.textContent = `${job.title}: ${(100 * f).toFixed(0)}%`; });
    status.textContent = `${res.fact} (${res.relation}) of ${res.facts}: ${res.method}, ${res.steps} steps, ` +
      `${res.prompts ? res.prompts : "all"} prompts per language`;
    drawCompare(res);
  } finally {
    bar.hidden = cancel.hidden = true;
  }
}

function drawCompare(res) {
  $("#bi-result").hidden = false;
  const likn = res.likn, links = (ns) => ns.map((n, k) => [k ? ", " : "", neuronLink(n.neuron)]).flat();
  $("#bi-likn").replaceChildren(...(likn ? [el("b", { text: "Language-independent neurons (LIKN, □): " }),
    el("span", { id: "bi-likn-count", "data-value": likn.count, text: likn.count }),
    ` found in ${res.langs.join(" and ")}`,
    likn.count ? `, in layer${Object.keys(likn.layers).length > 1 ? "s" : ""} ${Object.entries(likn.layers).map(([l, n]) => `${l} (${n})`).join(", ")}: ` : "",
    el("span", { id: "bi-likn-list" }, ...links(likn.neurons))] : [el("span", { class: "note", text: res.note })]));
  const shared = likn ? likn.neurons : [];
  const boxes = res.sides.map((s) => drawSide(s, links));
  $("#bi-sides").replaceChildren(...boxes);
  res.sides.forEach((s, k) => {
    if (s.missing) return;
    heatmap(boxes[k].querySelector(".bi-heatmap"), s.attribution, [
      { name: `${s.lang} knowledge neurons`, neurons: s.neurons, symbol: "circle-open", size: 7 },
      { name: "in every language (LIKN)", neurons: shared, symbol: "square-open", size: 12 }], 300);
  });
}

function drawSide(s, links) {
  const box = el("div", { class: "bi-side", "data-lang": s.lang });
  if (s.missing) {
    box.append(el("h3", { text: s.lang }), el("p", { class: "note", text: s.note }));
    return box;
  }
  const top = el("table", { class: "tokens bi-top" }), lens = el("table", { class: "bi-lens" });
  tokenTable(top, s.prediction.top.slice(0, 5));
  drawLens(lens, s.prediction.lens, 2);
  const use = () => { $("#prompt").value = s.prompt; $("#answer").value = s.answer; guarded(submitPrompt); };
  box.append(el("h3", {}, `${s.lang}: `, el("span", { class: "bi-prompt", text: s.prompt }), " → ", tok(s.answer)),
    el("p", { class: "muted" }, s.known ? "the model knows it" : "the model does not know it", " (kneuron.organisms.known) · p(answer) = ",
      el("span", { class: "bi-p", "data-value": s.prediction.answer.p, text: fmt(s.prediction.answer.p) }), " ",
      el("button", { type: "button", class: "bi-use", text: "Use this prompt", onclick: use })),
    el("div", { class: "columns" }, el("div", {}, el("h4", { text: "Top predictions" }), top),
      el("div", { class: "wide" }, el("h4", { text: "Logit lens" }), lens)),
    el("div", { class: "bi-heatmap" }),
    el("p", { class: "bi-neurons" }, el("b", { text: `${s.neurons.length} knowledge neurons` }),
      ` (○, ${s.n_prompts} prompt${s.n_prompts > 1 ? "s" : ""}): `, ...links(s.neurons.slice(0, 40)),
      s.neurons.length > 40 ? ` … and ${s.neurons.length - 40} more` : ""));
  return box;
}

$("#bi-form").onsubmit = (e) => { e.preventDefault(); guarded(runCompare); };
$("#bi-fact").onfocus = () => guarded(loadFactList);
$("#bi-facts").onchange = () => guarded(loadFactList);
$("#bi-known").onchange = () => guarded(loadFactList);
$("#bi-langs").onchange = drawFactList;
$("#model").addEventListener("change", () => {           // another model: its own list and marks
  bi.key = bi.out = null;
  $("#bi-ids").replaceChildren();
  $("#bi-list-status").textContent = "";
});
