// The "Caption an image" view: pick or drop an image, caption it with the chosen model and
// decoding, show the caption, the top beams, the timing and, for attention models, the
// image lit by each word's attention (click a word, or its thumbnail, to see its map).

import {api, el, fmt, seconds, showError} from "./common.js";
import {drawLit} from "./attention.js";

const VIEW = 512;    // the large canvas fits in VIEW x VIEW pixels
const THUMB = 96;    // the per-word thumbnails

const $ = (id) => document.getElementById(id);
const state = {file: null, image: null, result: null, word: 0, request: 0, refs: null};

// A model's default decoding is its run's: the beam size it decoded its test captions with
// (reranked by the server when the model.pt carries the reranker). Choosing a model sets it;
// the user may then pick another.
function useRunDecoding() {
  const option = $("model").selectedOptions[0];
  if (!option) return;
  const beam = Number(option.dataset.beam) || 1;
  document.querySelector(`input[name=decoding][value=${beam > 1 ? "beam" : "greedy"}]`).checked = true;
  if (beam > 1) $("beam").value = String(Math.min(beam, Number($("beam").max)));
  $("run-decoding").textContent = `(its run's: ${option.dataset.decoding})`;
}

function decodingBeam() {
  const beam = document.querySelector("input[name=decoding]:checked").value === "beam";
  return beam ? Math.max(2, Math.min(Number($("beam").max), Number($("beam").value) || 3)) : 1;
}

// A picture the browser can draw: the file itself, or (TIFF and other formats browsers do
// not show) the server's PNG of it, which also runs the upload checks.
async function loadPicture(file) {
  const url = URL.createObjectURL(file);
  try {
    return await imageFrom(url);
  } catch (err) {
    URL.revokeObjectURL(url);
    const form = new FormData();
    form.append("image", file, file.name || "image");
    const response = await fetch("/api/preview", {method: "POST", body: form});
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return imageFrom(URL.createObjectURL(await response.blob()));
  }
}

function imageFrom(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = url;
  });
}

// A test image of `dataset` is captioned by a model trained on that dataset: the chosen one
// if it is, else the dataset's best (the first of its group).
function useModelOf(dataset) {
  const options = [...$("model").options];
  if (!dataset || $("model").selectedOptions[0]?.dataset.dataset === dataset) return;
  const first = options.find((o) => o.dataset.dataset === dataset);
  if (!first) return;
  $("model").value = first.value;
  useRunDecoding();
}

export async function setFile(file, refs = null) {
  const error = $("caption-error");
  if (refs) useModelOf(refs.dataset);
  showError(error, "");
  if (!file) return;
  const limit = window.CONVATTN.max_bytes;
  if (file.size === 0) return showError(error, `'${file.name}' is empty (0 bytes); choose an image file`);
  if (file.size > limit) {
    return showError(error, `'${file.name}' is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${window.CONVATTN.max_mb}`);
  }
  state.file = file;
  state.refs = refs;
  $("file-name").textContent = file.name || "";
  try {
    state.image = await loadPicture(file);
  } catch (err) {
    state.file = null;
    $("run").disabled = true;
    return showError(error, err.message);
  }
  $("run").disabled = false;
  await caption();
}

async function caption() {
  if (!state.file) return;
  const error = $("caption-error");
  const id = ++state.request;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image");
  form.append("model", $("model").value);
  form.append("beam", String(decodingBeam()));
  $("run").disabled = true;
  $("run").textContent = "Captioning...";
  document.body.classList.add("busy");
  const started = performance.now();
  try {
    const result = await api("/api/caption", {method: "POST", body: form});
    if (id !== state.request) return;  // a newer request was sent meanwhile
    result.roundTrip = (performance.now() - started) / 1000;
    showError(error, "");
    state.result = result;
    state.word = 0;
    render();
  } catch (err) {
    if (id === state.request) showError(error, err.message);
  } finally {
    if (id === state.request) {
      $("run").disabled = false;
      $("run").textContent = "Caption";
      document.body.classList.remove("busy");
    }
  }
}

function fitted(img, box) {
  const scale = Math.min(box / img.naturalWidth, box / img.naturalHeight);
  return [Math.max(1, Math.round(img.naturalWidth * scale)), Math.max(1, Math.round(img.naturalHeight * scale))];
}

function render() {
  const r = state.result;
  $("result").hidden = false;
  $("result-model").textContent = `(${r.label}, ${r.decoding})`;
  const t = r.seconds;
  $("timing").textContent = `${seconds(t.total)} on the server: features ${seconds(t.features)}, ` +
    `decoding ${seconds(t.decoding)}, image checks and resizing ${seconds(t.preprocessing)}` +
    (t.waiting > 0.005 ? `, queued ${seconds(t.waiting)}` : "") + `; ${seconds(r.roundTrip)} round trip.`;
  const box = $("caption");
  box.replaceChildren();
  if (r.attention) {
    r.words.forEach((word, i) => box.append(el("button", {
      type: "button", class: "word", "data-index": i, "aria-pressed": String(i === state.word),
      onclick: () => selectWord(i)}, word)));
    $("word-hint").textContent = "Click a word to see where the model looked when it wrote it.";
  } else {
    box.append(r.caption || "(empty caption)");
    $("word-hint").textContent = "This model has no attention: it sees the image only through the mean of its region features.";
  }
  renderNovelty(r.novelty);
  renderBeams(r.beams);
  renderRefs();
  renderStrip();
  selectWord(state.word);
}

// The out-of-domain check beside the caption (the server's sentence): a warning when the
// image is less similar to its nearest training image than (nearly) every validation image
// is; otherwise a quiet note with the numbers, or why this model has no check.
function renderNovelty(n) {
  const node = $("novelty");
  node.hidden = !n;
  if (!n) return;
  node.classList.toggle("warning", n.unlike_training === true);
  node.classList.toggle("muted", n.unlike_training !== true);
  node.textContent = n.message;
}

function renderBeams(beams) {
  $("beams-box").hidden = !beams.length;
  $("beams").tBodies[0].replaceChildren(...beams.map((b, i) => el("tr", {},
    el("td", {}, String(i + 1)),
    el("td", {}, b.caption || "(empty)", b.ended ? null : el("span", {class: "muted"}, " (cut at the length limit)"),
      // a model trained with --rerank: each beam's mean CIDEr-D against the nearest training images' captions
      b.consensus === null || b.consensus === undefined ? null :
        el("span", {class: "muted"}, ` (consensus ${fmt(b.consensus)}${b.chosen ? ", chosen" : ""})`)),
    el("td", {class: "num"}, fmt(b.score)))));
}

function renderRefs() {
  const refs = state.refs;
  $("refs-box").hidden = !refs;
  if (!refs) return;
  $("refs-name").textContent = refs.name;
  $("refs").replaceChildren(...refs.references.map((s) => el("li", {}, s)));
}

function renderStrip() {
  const r = state.result;
  const strip = $("strip");
  strip.replaceChildren();
  $("strip-box").hidden = !r.attention;
  if (!r.attention) return;
  const [w, h] = fitted(state.image, THUMB);
  r.words.forEach((word, i) => {
    const canvas = el("canvas", {width: w, height: h});
    drawLit(canvas, state.image, r.attention.weights[i], r.attention.grid);
    strip.append(el("button", {type: "button", class: "thumb", "data-index": i, onclick: () => selectWord(i)},
      canvas, el("span", {}, word), el("span", {class: "muted"}, `max ${fmt(Math.max(...r.attention.weights[i]), 2)}`)));
  });
}

function selectWord(i) {
  const r = state.result;
  state.word = i;
  const canvas = $("canvas");
  [canvas.width, canvas.height] = fitted(state.image, VIEW);
  const weights = r.attention ? r.attention.weights[i] : null;
  drawLit(canvas, state.image, weights, r.attention ? r.attention.grid : null);
  for (const node of document.querySelectorAll("#caption .word, #strip .thumb")) {
    const on = Number(node.dataset.index) === i;
    node.setAttribute("aria-pressed", String(on));
    node.classList.toggle("selected", on);
  }
  const [gh, gw] = r.attention ? r.attention.grid : [0, 0];
  $("map-note").textContent = r.attention
    ? `Attention for "${r.words[i]}": max weight ${fmt(Math.max(...weights))} over ${gh}x${gw} regions ` +
      `(uniform would be ${fmt(r.attention.uniform, 4)}); the glow is scaled so the max is opaque red.`
    : `${r.image.width}x${r.image.height} image, read by the model at ${r.image.model_input.join("x")}.`;
}

export function initCaption() {
  const input = $("file"), drop = $("drop");
  input.addEventListener("change", () => setFile(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  });
  $("caption-form").addEventListener("submit", (e) => { e.preventDefault(); caption(); });
  // a new model (with its run's decoding) or decoding re-captions the image at once
  useRunDecoding();
  $("model").addEventListener("change", () => { useRunDecoding(); caption(); });
  for (const node of document.querySelectorAll("input[name=decoding], #beam")) {
    node.addEventListener("change", () => caption());
  }
}
