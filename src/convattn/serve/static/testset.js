// The "Test set" view: a dataset's test images, a page at a time, with their references and
// each recipe's decoders' captions and per-image scores, sorted by the server (worst first)
// to find the worst captions; "Caption it" sends an image to the first view, where its
// attention maps can be seen. One dataset at a time (Sydney-Captions, RSICD: whichever ran).

import {api, el, fmt, showError} from "./common.js";

const THUMB = 160;
const LIMIT = 50;
const $ = (id) => document.getElementById(id);
const state = {dataset: null, sort: "file", reverse: false, offset: 0, request: 0};
let onCaption = null;

function query() {
  const q = new URLSearchParams({sort: state.sort, reverse: String(state.reverse),
    offset: String(state.offset), limit: String(LIMIT)});
  if (state.dataset) q.set("dataset", state.dataset);
  return `/api/testset?${q}`;
}

async function load() {
  const id = ++state.request;
  let data;
  try {
    data = await api(query());
  } catch (err) {
    if (id === state.request) showError($("testset-error"), err.message);
    return;
  }
  if (id !== state.request) return;  // a newer page was asked for meanwhile
  showError($("testset-error"), "");
  state.dataset = data.dataset;
  render(data);
}

function render(data) {
  const datasets = $("dataset");
  if (datasets.options.length !== data.datasets.length) {
    datasets.replaceChildren(...data.datasets.map((d) => el("option", {value: d}, d)));
  }
  datasets.value = data.dataset;
  $("dataset-field").hidden = data.datasets.length < 2;
  $("sort").replaceChildren(...data.sorts.map((s) => el("option", {value: s.value}, s.label)));
  $("sort").value = data.sort;
  $("testset").tHead.replaceChildren(el("tr", {}, el("th", {}, "image"), el("th", {}, "references"),
    data.models.map((m) => el("th", {}, m.label))));
  $("testset").tBodies[0].replaceChildren(...data.rows.map((r) => row(r, data)));
  $("testset-summary").textContent = `${data.images} test images of ${data.dataset}; mean ` +
    data.models.map((m) => `${m.label}: bleu4 ${fmt(m.mean.bleu4)}, CIDEr-D ${fmt(m.mean.cider)}`).join("; ");
  const last = Math.min(data.offset + data.rows.length, data.images);
  $("page-note").textContent = `images ${data.images ? data.offset + 1 : 0}-${last} of ${data.images}`;
  $("prev").disabled = data.offset === 0;
  $("next").disabled = last >= data.images;
}

function row(r, data) {
  const image = `/api/testset/${encodeURIComponent(r.name)}/image?dataset=${encodeURIComponent(data.dataset)}`;
  return el("tr", {"data-name": r.name},
    el("td", {class: "image"},
      el("img", {src: `${image}&size=${THUMB}`, alt: `test image ${r.name}`, loading: "lazy", width: THUMB, height: THUMB}),
      el("div", {}, el("strong", {}, r.name), " ",
        el("button", {type: "button", class: "small", onclick: () => openInCaption(r, image, data.dataset)}, "Caption it"))),
    el("td", {}, el("ol", {class: "refs"}, r.references.map((s) => el("li", {}, s)))),
    data.models.map((m) => {
      const c = r.captions[m.name];
      return el("td", {class: c.bleu4 === 0 ? "caption-cell zero" : "caption-cell"},
        el("p", {}, c.text || "(empty)"),
        el("p", {class: "scores"}, `bleu4 ${fmt(c.bleu4)} · CIDEr-D ${fmt(c.cider)}`));
    }));
}

async function openInCaption(r, url, dataset) {
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error((await response.json()).detail || `HTTP ${response.status}`);
    const file = new File([await response.blob()], `${r.name}.png`, {type: "image/png"});
    onCaption(file, {name: r.name, references: r.references, dataset});
  } catch (err) {
    showError($("testset-error"), err.message);
  }
}

export function initTestset(captionFile) {
  onCaption = captionFile;
  $("dataset").addEventListener("change", () => {
    Object.assign(state, {dataset: $("dataset").value, sort: "file", offset: 0});
    load();
  });
  $("sort").addEventListener("change", () => { Object.assign(state, {sort: $("sort").value, offset: 0}); load(); });
  $("reverse").addEventListener("change", () => { Object.assign(state, {reverse: $("reverse").checked, offset: 0}); load(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - LIMIT); load(); });
  $("next").addEventListener("click", () => { state.offset += LIMIT; load(); });
  return load();
}
