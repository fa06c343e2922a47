// Attention maps drawn in the browser from the weights the server returns.
//
// As in the report's figures (caption/plots.py): a word's region weights (a grid of
// gh x gw numbers) are upsampled bilinearly to the picture (torch's align_corners=False
// rule), divided by their maximum so the most attended region is 1, and drawn over the
// image as a glow whose colour runs from yellow (low) to red (high) and whose opacity is
// 0.7 x the weight (matplotlib's autumn_r colour map).

// One axis of bilinear upsampling: for each output index, the two source indices and the
// weight of the second one.
function axis(outSize, inSize) {
  const lo = new Int32Array(outSize), hi = new Int32Array(outSize), t = new Float32Array(outSize);
  const scale = inSize / outSize;
  for (let i = 0; i < outSize; i++) {
    const src = Math.max(0, (i + 0.5) * scale - 0.5);
    lo[i] = Math.min(Math.floor(src), inSize - 1);
    hi[i] = Math.min(lo[i] + 1, inSize - 1);
    t[i] = src - lo[i];
  }
  return {lo, hi, t};
}

// weights: R = gh * gw numbers, row-major; -> ImageData (width x height) of the glow
export function glow(weights, grid, width, height) {
  const [gh, gw] = grid;
  const ys = axis(height, gh), xs = axis(width, gw);
  const heat = new Float32Array(width * height);
  let max = 0;
  for (let y = 0; y < height; y++) {
    const r0 = ys.lo[y] * gw, r1 = ys.hi[y] * gw, ty = ys.t[y];
    for (let x = 0; x < width; x++) {
      const a = weights[r0 + xs.lo[x]], b = weights[r0 + xs.hi[x]];
      const c = weights[r1 + xs.lo[x]], d = weights[r1 + xs.hi[x]];
      const top = a + (b - a) * xs.t[x], bottom = c + (d - c) * xs.t[x];
      const v = top + (bottom - top) * ty;
      heat[y * width + x] = v;
      if (v > max) max = v;
    }
  }
  const image = new ImageData(width, height);
  const px = image.data;
  for (let i = 0; i < heat.length; i++) {
    const h = max > 0 ? heat[i] / max : 0;
    px[4 * i] = 255;
    px[4 * i + 1] = Math.round(255 * (1 - h));
    px[4 * i + 2] = 0;
    px[4 * i + 3] = Math.round(255 * 0.7 * h);
  }
  return image;
}

// Draw `img` scaled to the canvas and, when weights are given, its attention glow on top.
export function drawLit(canvas, img, weights, grid) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  if (!weights) return;
  const layer = document.createElement("canvas");
  layer.width = canvas.width;
  layer.height = canvas.height;
  layer.getContext("2d").putImageData(glow(weights, grid, canvas.width, canvas.height), 0, 0);
  ctx.drawImage(layer, 0, 0);  // drawImage blends by alpha; putImageData would replace
}
