// "Try it on your own radiograph": the shipped model in the reader's browser (chapter 08).
// ONNX Runtime Web (from the npm registry, served by the book itself) runs the model's ONNX file
// (`cxr export --onnx`); model.json beside it is that file's own metadata. The film is decoded,
// turned grey and resized here as cxr.data.images / cxr.data.preprocess do it in Python, and never
// leaves the page: after the model and the runtime are loaded, a film costs no network request.
(function () {
  "use strict";
  const root = document.getElementById("cxr-try");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  const $ = (id) => document.getElementById(id);
  const status = $("cxr-try-status"), out = $("cxr-try-results"), input = $("cxr-try-file"), drop = $("cxr-try-drop");
  const contentRoot = document.documentElement.dataset.content_root;
  if (contentRoot === undefined) {  // JupyterLab, or a page that is not the built book
    status.textContent = "This panel runs in the published book (its model files are served by the site); " +
      "in JupyterLab, use the explorer above.";
    input.disabled = true;
    return;
  }
  const base = new URL(contentRoot + "_static/cxr-try/", window.location.href).href;
  let loading = null;

  function say(text) { status.textContent = text; }

  function script(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src; s.onload = resolve; s.onerror = () => reject(new Error("could not load " + src));
      document.head.appendChild(s);
    });
  }

  // the runtime, the model and its metadata: fetched once, from this site
  function load() {
    if (!loading) {
      loading = (async () => {
        say("Loading the model and the runtime from this site (about 30 MB, once)…");
        await script(base + "ort.wasm.min.js");
        const ort = window.ort;
        ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page, which a static site is not
        ort.env.wasm.wasmPaths = base;
        const [meta, session] = await Promise.all([
          fetch(base + "model.json").then((r) => { if (!r.ok) throw new Error("model.json: " + r.status); return r.json(); }),
          ort.InferenceSession.create(base + "model.onnx", {executionProviders: ["wasm"]}),
        ]);
        return {ort, meta, session};
      })();
      loading.catch(() => { loading = null; });
    }
    return loading;
  }

  // bytes of a PNG or JPEG -> 8-bit grey pixels, as OpenCV's decoder and cvtColor give them
  async function decodeGray(file) {
    // a 16-bit PNG: the browser would keep its high byte, where cxr predict rescales min to max
    const head = new Uint8Array(await file.slice(0, 26).arrayBuffer());
    if (head.length >= 26 && head[0] === 0x89 && head[1] === 0x50 && head[24] === 16) {
      throw new Error("a 16-bit PNG: the browser reads it as 8-bit, not as cxr predict does; use cxr predict");
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, {colorSpaceConversion: "none", premultiplyAlpha: "none"});
    } catch (e) {
      throw new Error("not a decodable image (PNG or JPEG; for DICOM, TIFF or 16-bit files use cxr predict)");
    }
    const w = bitmap.width, h = bitmap.height;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, w, h).data;
    const gray = new Uint8Array(w * h);
    for (let i = 0, j = 0; i < gray.length; i++, j += 4) {
      const r = rgba[j], g = rgba[j + 1], b = rgba[j + 2];
      // cv2.COLOR_RGB2GRAY in fixed point (14 bits); a grey pixel stays itself
      gray[i] = (r === g && g === b) ? r : (r * 4899 + g * 9617 + b * 1868 + 8192) >> 14;
    }
    return {gray, w, h};
  }

  // OpenCV's INTER_AREA: each output pixel the mean of the input area it covers (partial pixels weighted)
  function areaWeights(src, dst) {
    const scale = src / dst, out = [];
    for (let d = 0; d < dst; d++) {
      const x0 = d * scale, x1 = Math.min(src, (d + 1) * scale), taps = [];
      for (let s = Math.floor(x0); s < Math.ceil(x1 - 1e-9); s++) {
        const wgt = Math.min(x1, s + 1) - Math.max(x0, s);
        if (wgt > 1e-9) taps.push([s, wgt / (x1 - x0)]);
      }
      out.push(taps);
    }
    return out;
  }

  // OpenCV's INTER_CUBIC (a = -0.75, pixel centres aligned, edges replicated)
  function cubicWeights(src, dst) {
    const scale = src / dst, a = -0.75, out = [];
    const k = (x) => {
      x = Math.abs(x);
      return x <= 1 ? ((a + 2) * x - (a + 3)) * x * x + 1 : x < 2 ? ((a * x - 5 * a) * x + 8 * a) * x - 4 * a : 0;
    };
    for (let d = 0; d < dst; d++) {
      const f = (d + 0.5) * scale - 0.5, i = Math.floor(f), t = f - i, taps = [];
      for (let m = -1; m <= 2; m++) taps.push([Math.min(src - 1, Math.max(0, i + m)), k(t - m)]);
      out.push(taps);
    }
    return out;
  }

  // cxr.data.preprocess.resize: a square of `size`, INTER_AREA when shrinking, INTER_CUBIC when enlarging
  function resize(img, size) {
    if (img.w === size && img.h === size) return img.gray;
    const weights = Math.min(img.w, img.h) >= size ? areaWeights : cubicWeights;
    const wx = weights(img.w, size), wy = weights(img.h, size);
    const rows = new Float64Array(img.h * size);
    for (let y = 0; y < img.h; y++) {
      for (let x = 0; x < size; x++) {
        let s = 0;
        for (const [i, wgt] of wx[x]) s += img.gray[y * img.w + i] * wgt;
        rows[y * size + x] = s;
      }
    }
    const out = new Uint8Array(size * size);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        let s = 0;
        for (const [i, wgt] of wy[y]) s += rows[i * size + x] * wgt;
        out[y * size + x] = Math.max(0, Math.min(255, Math.round(s)));
      }
    }
    return out;
  }

  // cxr.model.ood.score: a Mahalanobis distance under the training features' probabilistic PCA
  function oodScore(stats, features) {
    const n = features.length, x = new Float64Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) { x[i] = features[i] - stats.mean[i]; total += x[i] * x[i]; }
    let d2 = 0, explained = 0;
    stats.components.forEach((c, k) => {
      let z = 0;
      for (let i = 0; i < n; i++) z += x[i] * c[i];
      explained += z * z;
      d2 += z * z / stats.variances[k];
    });
    d2 += Math.max(total - explained, 0) / stats.rest_variance;
    return Math.sqrt(d2 / n);
  }

  const pct = (p) => (100 * p).toFixed(1) + "%";
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  function card(file, result) {
    const div = document.createElement("div");
    div.className = "cxr-try-card";
    div.dataset.file = file.name;
    if (result.error) {
      div.dataset.error = result.error;
      div.innerHTML = `<p><strong>${esc(file.name)}</strong>: not read (${esc(result.error)}).</p>`;
      return div;
    }
    const {meta, proba, score} = result;
    const top = proba.indexOf(Math.max(...proba)), call = meta.classes[top];
    const op = result.op;
    const flagged = meta.ood && score > meta.ood.threshold;
    Object.assign(div.dataset, {call, probabilities: JSON.stringify(proba), ood: String(score), flagged: String(!!flagged)});
    if (op) div.dataset.opCall = op.call;
    const headline = flagged
      ? `<span class="cxr-try-ood">${esc(meta.ood_warning)}</span>`
      : `The model calls it <strong>${esc(meta.labels[top])}</strong>.`;
    const rows = meta.labels.map((c, i) => `<tr><td>${esc(c)}</td><td class="cxr-try-num">${pct(proba[i])}</td></tr>`).join("");
    div.innerHTML = `<p><strong>${esc(file.name)}</strong>: ${headline}</p>
<table class="cxr-try-table"><tbody>${rows}
${op ? `<tr><td>at ${esc(op.name)} (COVID-19 sensitivity ${pct(op.target)} on validation)</td><td class="cxr-try-num">${esc(op.call)}</td></tr>` : ""}
<tr><td>out-of-distribution score (flag above ${meta.ood ? meta.ood.threshold.toFixed(2) : "–"})</td><td class="cxr-try-num">${score.toFixed(2)}</td></tr>
</tbody></table>`;
    return div;
  }

  async function predictFile(model, file) {
    const {ort, meta, session} = model;
    const img = await decodeGray(file);
    if (Math.min(img.w, img.h) < meta.min_side) throw new Error(`too small (${img.w}x${img.h}; needs at least ${meta.min_side} px a side)`);
    const size = meta.preprocessing.image_size || meta.input_size;
    const pixels = resize(img, size);
    const got = await session.run({pixels: new ort.Tensor("uint8", pixels, [1, size, size])});
    const proba = Array.from(got.probabilities.data);
    const score = meta.ood ? oodScore(meta.ood, got.features.data) : NaN;
    let op = null;
    const point = meta.operating_points && meta.operating_points[meta.book_operating_point];
    if (point && point.task === "covid") {
      const p = proba[meta.classes.indexOf("COVID")];
      op = {name: meta.book_operating_point, target: point.target_sensitivity,
            call: p >= point.threshold ? "COVID-19" : "not COVID-19"};
    }
    return {meta, proba, score, op};
  }

  async function run(files) {
    files = Array.from(files || []);
    if (!files.length) return;
    let model;
    try {
      model = await load();
    } catch (e) {
      say("The model could not be loaded: " + e.message);
      return;
    }
    out.replaceChildren();
    let done = 0;
    for (const file of files) {
      say(`Predicting ${file.name} (${done + 1} of ${files.length}), in this browser…`);
      let result;
      try {
        result = await predictFile(model, file);
      } catch (e) {
        result = {error: e.message};
      }
      out.appendChild(card(file, result));
      done++;
    }
    root.dataset.done = String(done);
    say(`Done: ${done} film${done === 1 ? "" : "s"}, predicted in this browser; nothing was sent anywhere.`);
  }

  input.addEventListener("change", () => run(input.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("cxr-try-over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("cxr-try-over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("cxr-try-over"); run(e.dataTransfer.files); });
  say("Choose or drop PNG or JPEG films: they are read by this page, in your browser, and never uploaded.");
})();
