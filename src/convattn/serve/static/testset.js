// The "Test set" view: every test image with its five references and each model's caption
// and per-image scores, sortable to find the worst captions; "Caption" sends an image to the
// first view, where its attention maps can be seen.

import {api, el, fmt, showError} from "./common.js";

const THUMB = 160;
const $ = (id) => document.getElementById(id);
let data = null;

function sortOptions() {
  const options = [["file", "file order", null]];
  for (const m of data.models) {
    options.push([`bleu4:${m.name}`, `bleu4, ${m.label} (worst first)`, (r) => r.captions[m.name].bleu4]);
    options.push([`cider:${m.name}`, `CIDEr-D, ${m.label} (worst first)`, (r) => r.captions[m.name].cider]);
  }
  const names = data.models.map((m) => m.name);
  if (names.includes("attention") && names.includes("no_attention")) {
    options.push(["gain", "bleu4, attention minus no attention (attention's losses first)",
      (r) => r.captions.attention.bleu4 - r.captions.no_attention.bleu4]);
  }
  return options;
}

function render(options) {
  const [, , key] = options.find(([value]) => value === $("sort").value) || options[0];
  const rows = data.rows.map((r, i) => ({r, i}));
  if (key) rows.sort((a, b) => key(a.r) - key(b.r) || a.i - b.i);
  if ($("reverse").checked) rows.reverse();
  $("testset").tBodies[0].replaceChildren(...rows.map(({r}) => row(r)));
}

function row(r) {
  const image = `/api/testset/${encodeURIComponent(r.name)}/image`;
  return el("tr", {"data-name": r.name},
    el("td", {class: "image"},
      el("img", {src: `${image}?size=${THUMB}`, alt: `test image ${r.name}`, loading: "lazy", width: THUMB, height: THUMB}),
      el("div", {}, el("strong", {}, r.name), " ",
        el("button", {type: "button", class: "small", onclick: () => openInCaption(r, image)}, "Caption it"))),
    el("td", {}, el("ol", {class: "refs"}, r.references.map((s) => el("li", {}, s)))),
    data.models.map((m) => {
      const c = r.captions[m.name];
      return el("td", {class: c.bleu4 === 0 ? "caption-cell zero" : "caption-cell"},
        el("p", {}, c.text || "(empty)"),
        el("p", {class: "scores"}, `bleu4 ${fmt(c.bleu4)} · CIDEr-D ${fmt(c.cider)}`));
    }));
}

let onCaption = null;

async function openInCaption(r, url) {
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error((await response.json()).detail || `HTTP ${response.status}`);
    const file = new File([await response.blob()], `${r.name}.png`, {type: "image/png"});
    onCaption(file, {name: r.name, references: r.references});
  } catch (err) {
    showError($("testset-error"), err.message);
  }
}

export async function initTestset(captionFile) {
  onCaption = captionFile;
  try {
    data = await api("/api/testset");
  } catch (err) {
    return showError($("testset-error"), err.message);
  }
  const options = sortOptions();
  $("sort").replaceChildren(...options.map(([value, label]) => el("option", {value}, label)));
  $("testset").tHead.replaceChildren(el("tr", {}, el("th", {}, "image"), el("th", {}, "references"),
    data.models.map((m) => el("th", {}, m.label))));
  $("testset-summary").textContent = `${data.images} test images of ${data.dataset || "the dataset"}; mean ` +
    data.models.map((m) => `${m.label}: bleu4 ${fmt(m.mean.bleu4)}, CIDEr-D ${fmt(m.mean.cider)}`).join("; ");
  $("sort").addEventListener("change", () => render(options));
  $("reverse").addEventListener("change", () => render(options));
  render(options);
}
