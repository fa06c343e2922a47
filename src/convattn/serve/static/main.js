// The page: three views behind tabs (the URL's #hash remembers which one is shown).

import {initCaption, setFile} from "./caption.js";
import {initTestset} from "./testset.js";

window.CONVATTN = JSON.parse(document.getElementById("config").textContent);
const VIEWS = ["caption", "testset", "report"];
let testsetLoaded = false;

function show(view) {
  if (!VIEWS.includes(view)) view = "caption";
  for (const name of VIEWS) {
    document.getElementById(`tab-${name}`).setAttribute("aria-selected", String(name === view));
    document.getElementById(`view-${name}`).hidden = name !== view;
  }
  if (view === "testset" && window.CONVATTN.has_testset && !testsetLoaded) {
    testsetLoaded = true;
    initTestset((file, refs) => { location.hash = "caption"; setFile(file, refs); });
  }
  const frame = document.getElementById("report-frame");
  if (view === "report" && frame && !frame.src) frame.src = frame.dataset.src;  // load on first view
}

for (const name of VIEWS) {
  document.getElementById(`tab-${name}`).addEventListener("click", () => { location.hash = name; });
}
window.addEventListener("hashchange", () => show(location.hash.slice(1)));
initCaption();
show(location.hash.slice(1));
