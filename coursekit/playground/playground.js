// coursekit Playground front end (anywidget ES module, no dependencies, no network).
// The kernel sends compact frames (heat maps as small uint8 grids, weights and loss curves as float32
// arrays); this module upscales and draws them on <canvas>, and edits the network's shape (features,
// hidden layers, neurons) through the synced traits `features` and `hidden`.

const ORANGE = [245, 147, 34], WHITE = [232, 234, 235], BLUE = [8, 119, 189];
const LUT = (() => {  // 0 -> orange (negative / class 0), 128 -> near white, 255 -> blue (positive / class 1)
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255, [a, b, u] = t < 0.5 ? [ORANGE, WHITE, t * 2] : [WHITE, BLUE, (t - 0.5) * 2];
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = a[c] + (b[c] - a[c]) * u;
  }
  return lut;
})();
const NODE = 30, GAP = 8, TOP = 24, LEFT = 70, COL = 92;

function bytes(view) {
  if (!view) return new Uint8Array(0);
  if (view instanceof Uint8Array) return view;
  if (view.buffer) return new Uint8Array(view.buffer, view.byteOffset || 0, view.byteLength);
  return new Uint8Array(view);
}
function floats(view) {  // copy: a buffer's offset need not be a multiple of 4
  const b = bytes(view);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

// A size x size uint8 grid as a canvas of that size, ready to be drawn scaled.
function gridCanvas(grid, size, scratch) {
  const c = scratch || document.createElement("canvas");
  c.width = size; c.height = size;
  const ctx = c.getContext("2d"), img = ctx.createImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    const v = grid[i] * 3;
    img.data[i * 4] = LUT[v]; img.data[i * 4 + 1] = LUT[v + 1]; img.data[i * 4 + 2] = LUT[v + 2];
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, title, onclick) {
  const b = el("button", "cpg-btn", label);
  b.title = title;
  b.addEventListener("click", onclick);
  return b;
}

function render({ model, el: root }) {
  root.classList.add("cpg");
  root.dataset.frames = "0";
  const net = el("div", "cpg-net");
  const netHead = el("div", "cpg-nethead");
  const netButtons = el("div", "cpg-layerbtns");
  const netCanvas = el("canvas", "cpg-netcanvas");
  net.append(netHead, netButtons, netCanvas);
  const side = el("div", "cpg-side");
  const outCanvas = el("canvas", "cpg-output");
  outCanvas.width = outCanvas.height = 300;
  const lossCanvas = el("canvas", "cpg-loss");
  lossCanvas.width = 300; lossCanvas.height = 80;
  const stats = el("div", "cpg-stats");
  const epoch = el("span", "cpg-epoch", "0");
  const trainLoss = el("span", "cpg-train-loss", "");
  const testLoss = el("span", "cpg-test-loss", "");
  const line1 = el("div", "cpg-line");
  line1.append("epoch ", epoch);
  const line2 = el("div", "cpg-line");
  line2.append("train loss ", trainLoss, "  test loss ", testLoss);
  const gradLine = el("div", "cpg-line cpg-grad");
  const deadLine = el("div", "cpg-line cpg-dead");
  const fpsLine = el("div", "cpg-line cpg-fps");
  stats.append(line1, line2, gradLine, deadLine, fpsLine);
  side.append(el("div", "cpg-title", "output"), outCanvas, lossCanvas, stats);
  root.append(net, side);

  const scratch = document.createElement("canvas");
  const boundaryCanvas = document.createElement("canvas");  // this frame's output grid, drawn twice
  let featureCanvases = null;  // the features' pictures never change: drawn once
  let pending = false, frames = 0, fpsT0 = performance.now(), fpsN = 0;
  let featureBoxes = [];  // [name, x, y] for clicks

  function setHidden(hidden) { model.set("hidden", hidden); model.save_changes(); }
  function toggleFeature(name) {
    const on = model.get("features").slice(), i = on.indexOf(name);
    if (i >= 0) { if (on.length === 1) return; on.splice(i, 1); } else on.push(name);
    const order = model.get("all_features");
    model.set("features", order.filter(f => on.includes(f)));
    model.save_changes();
  }

  function drawButtons() {
    const hidden = model.get("hidden");
    netHead.replaceChildren(
      button("+", "add a hidden layer", () => hidden.length < 6 && setHidden([...hidden, 2])),
      button("\u2212", "remove the last hidden layer", () => hidden.length > 0 && setHidden(hidden.slice(0, -1))),
      el("span", "cpg-layercount", `${hidden.length} hidden layer${hidden.length === 1 ? "" : "s"}`));
    netHead.querySelectorAll("button")[0].classList.add("cpg-add-layer");
    netHead.querySelectorAll("button")[1].classList.add("cpg-remove-layer");
    netButtons.replaceChildren();
    hidden.forEach((n, i) => {
      const box = el("div", "cpg-layerbox");
      box.style.left = `${LEFT + (i + 1) * COL - 14}px`;
      const plus = button("+", `add a neuron to layer ${i + 1}`, () => {
        if (n < 8) setHidden(hidden.map((m, j) => j === i ? m + 1 : m)); });
      const minus = button("\u2212", `remove a neuron from layer ${i + 1}`, () => {
        if (n > 1) setHidden(hidden.map((m, j) => j === i ? m - 1 : m)); });
      plus.classList.add("cpg-add-neuron"); minus.classList.add("cpg-remove-neuron");
      box.append(plus, minus, el("div", "cpg-neuroncount", `${n} neuron${n === 1 ? "" : "s"}`));
      netButtons.append(box);
    });
  }

  netCanvas.addEventListener("click", (e) => {
    const r = netCanvas.getBoundingClientRect();
    const x = e.clientX - r.left, y = e.clientY - r.top;
    for (const [name, fx, fy] of featureBoxes)
      if (x >= fx && x <= fx + NODE && y >= fy && y <= fy + NODE) toggleFeature(name);
  });

  function drawNetwork(f) {
    const all = model.get("all_features"), on = f.features, hidden = f.hidden;
    const cols = hidden.length + 2;
    const rows = Math.max(all.length, ...hidden, 1);
    const W = LEFT + (cols - 1) * COL + NODE + 20, H = TOP + rows * (NODE + GAP) + 10;
    if (netCanvas.width !== W || netCanvas.height !== H) { netCanvas.width = W; netCanvas.height = H; }
    const ctx = netCanvas.getContext("2d");
    ctx.clearRect(0, 0, W, H);
    ctx.imageSmoothingEnabled = true;
    const g = f.neuron_grid, gsize = g * g;
    const neuronMaps = bytes(f.neuron_maps);
    if (!featureCanvases || featureCanvases.length !== all.length) {
      const featureMaps = bytes(f.feature_maps);
      featureCanvases = all.map((_, i) => gridCanvas(featureMaps.subarray(i * gsize, (i + 1) * gsize), g));
    }
    // Node positions, column by column: features (only those on), hidden layers, output.
    const pos = [];
    featureBoxes = [];
    ctx.font = "11px sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const featurePos = [];
    all.forEach((name, i) => {
      const x = LEFT, y = TOP + i * (NODE + GAP);
      featureBoxes.push([name, x, y]);
      const k = on.indexOf(name);
      ctx.globalAlpha = k >= 0 ? 1 : 0.25;
      ctx.drawImage(featureCanvases[i], x, y, NODE, NODE);
      ctx.fillStyle = "#333"; ctx.fillText(name.replace("^2", "\u00b2").replace("*", "\u00b7"), x - 6, y + NODE / 2);
      ctx.globalAlpha = 1;
      if (k >= 0) featurePos[k] = [x, y];
    });
    pos.push(featurePos);
    let offset = 0;
    hidden.forEach((n, l) => {
      const col = [];
      for (let j = 0; j < n; j++) col.push([LEFT + (l + 1) * COL, TOP + j * (NODE + GAP)]);
      pos.push(col);
    });
    pos.push([[LEFT + (hidden.length + 1) * COL, TOP]]);
    // Weights: one line per weight, blue positive, orange negative, width by size.
    const weights = (f.weights || []).map(floats);
    weights.forEach((w, l) => {
      const src = pos[l], dst = pos[l + 1];
      if (!src || !dst || w.length !== src.length * dst.length) return;
      for (let j = 0; j < dst.length; j++) for (let i = 0; i < src.length; i++) {
        const v = w[j * src.length + i];
        ctx.strokeStyle = v >= 0 ? "rgba(8,119,189,0.8)" : "rgba(245,147,34,0.8)";
        ctx.lineWidth = Math.min(6, 0.3 + 1.5 * Math.abs(v));
        ctx.beginPath();
        ctx.moveTo(src[i][0] + NODE, src[i][1] + NODE / 2);
        ctx.lineTo(dst[j][0], dst[j][1] + NODE / 2);
        ctx.stroke();
      }
    });
    for (let l = 0; l < hidden.length; l++) for (let j = 0; j < hidden[l]; j++) {
      const [x, y] = pos[l + 1][j];
      if (neuronMaps.length >= (offset + 1) * gsize)
        ctx.drawImage(gridCanvas(neuronMaps.subarray(offset * gsize, (offset + 1) * gsize), g, scratch), x, y, NODE, NODE);
      else { ctx.fillStyle = "#ddd"; ctx.fillRect(x, y, NODE, NODE); }
      ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.strokeRect(x, y, NODE, NODE);
      offset++;
    }
    const [ox, oy] = pos[pos.length - 1][0];
    ctx.drawImage(boundaryCanvas, ox, oy, NODE, NODE);
    ctx.strokeStyle = "#333"; ctx.strokeRect(ox, oy, NODE, NODE);
    ctx.textAlign = "center"; ctx.fillStyle = "#555";
    ctx.fillText("features", LEFT + NODE / 2, TOP - 10);
    ctx.fillText("output", ox + NODE / 2, TOP - 10);
  }

  // The points change only with the data (or the test-points box): drawn once into their own layer.
  const pointsCanvas = document.createElement("canvas");
  let pointsKey = null;
  function pointsLayer(S) {
    const p = model.get("points"), key = [p, model.get("show_test")];
    if (pointsKey && pointsKey[0] === key[0] && pointsKey[1] === key[1]) return pointsCanvas;
    pointsKey = key;
    pointsCanvas.width = pointsCanvas.height = S;
    const ctx = pointsCanvas.getContext("2d");
    ctx.clearRect(0, 0, S, S);
    if (!p || !p.radius) return pointsCanvas;
    const toPx = v => (v / p.radius + 1) / 2 * S;
    const draw = (xy, y, stroke) => {
      const X = floats(xy), Y = floats(y);
      for (let i = 0; i < Y.length; i++) {
        const t = p.problem === "classification" ? Y[i] : (Math.max(-1, Math.min(1, Y[i])) + 1) / 2;
        const c = Math.round(t * 255) * 3;
        ctx.fillStyle = `rgb(${LUT[c]},${LUT[c + 1]},${LUT[c + 2]})`;
        ctx.strokeStyle = stroke;
        ctx.beginPath();
        ctx.arc(toPx(X[2 * i]), S - toPx(X[2 * i + 1]), 3, 0, 2 * Math.PI);
        ctx.fill(); ctx.stroke();
      }
    };
    ctx.lineWidth = 1;
    draw(p.train_x, p.train_y, "#fff");
    if (model.get("show_test")) draw(p.test_x, p.test_y, "#000");
    return pointsCanvas;
  }

  function drawOutput(f) {
    const ctx = outCanvas.getContext("2d"), S = outCanvas.width;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(boundaryCanvas, 0, 0, S, S);
    ctx.drawImage(pointsLayer(S), 0, 0);
  }

  function drawLoss(f) {
    const ctx = lossCanvas.getContext("2d"), W = lossCanvas.width, H = lossCanvas.height;
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fafafa"; ctx.fillRect(0, 0, W, H);
    const train = floats(f.train_curve), test = floats(f.test_curve);
    let top = 0;
    for (const v of [...train, ...test]) if (isFinite(v)) top = Math.max(top, v);
    if (!(top > 0) || train.length < 2) return;
    const line = (ys, color) => {
      ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
      ys.forEach((v, i) => {
        const x = i / (ys.length - 1) * (W - 4) + 2, y = H - 3 - (isFinite(v) ? v / top : 1) * (H - 8);
        i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
      });
      ctx.stroke();
    };
    line(train, "#888"); line(test, "#000");
    ctx.fillStyle = "#555"; ctx.font = "10px sans-serif"; ctx.textAlign = "right";
    ctx.fillText("test (black), train (grey)", W - 4, 10);
  }

  function fmt(v) { return isFinite(v) ? v.toFixed(3) : "diverged"; }

  function draw() {
    pending = false;
    const f = model.get("frame");
    if (!f || !f.boundary) return;
    gridCanvas(bytes(f.boundary), f.boundary_grid, boundaryCanvas);
    drawNetwork(f);
    drawOutput(f);
    drawLoss(f);
    epoch.textContent = String(f.epoch).padStart(6, "0");
    trainLoss.textContent = fmt(f.train_loss);
    testLoss.textContent = fmt(f.test_loss);
    gradLine.textContent = f.grad_norm.length
      ? "|grad W| per layer: " + f.grad_norm.map(v => v.toExponential(1)).join("  ") : "";
    deadLine.textContent = f.dead_share.length
      ? "dead ReLU units per layer: " + f.dead_share.map(v => `${Math.round(v * 100)}%`).join("  ") : "";
    frames++; fpsN++;
    root.dataset.frames = String(frames);
    root.dataset.epoch = String(f.epoch);
    root.dataset.testLoss = String(f.test_loss);
    root.dataset.features = f.features.join(",");
    root.dataset.hidden = f.hidden.join(",");
    const now = performance.now();
    if (now - fpsT0 > 1000) {
      fpsLine.textContent = model.get("playing") ? `${(fpsN * 1000 / (now - fpsT0)).toFixed(0)} frames/s` : "";
      fpsT0 = now; fpsN = 0;
    }
  }
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(draw);
  }

  model.on("change:frame", schedule);
  model.on("change:points", schedule);
  model.on("change:show_test", schedule);
  model.on("change:hidden", drawButtons);
  drawButtons();
  draw();
  return () => {
    model.off("change:frame", schedule);
    model.off("change:points", schedule);
    model.off("change:show_test", schedule);
    model.off("change:hidden", drawButtons);
  };
}

export default { render };
