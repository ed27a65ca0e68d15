"""Chapter 08's "Try it on your own radiograph": the book's model in the reader's browser.

The panel (`html`) carries its script (`cxr/static/try.js`) inline; what it runs is put beside the
built site by the book's Sphinx extension (`write_assets`, called from book/_ext/cxr_book.py):

* ONNX Runtime Web's WebAssembly build, installed from the npm registry at build time with the
  versions locked in book/web/package-lock.json (`npm ci`), and served from the site (no CDN);
* the book's model as ONNX (`cxr.model.backends.onnx_file`) and ``model.json``, that file's own
  metadata (`onnx_file.read_metadata`: classes, preprocessing, operating points, OOD statistics)
  with the smallest side `cxr predict` reads and the operating point the panel shows.

In print (the PDF) the panel is replaced by a still: the same card for one test film, computed
by `cxr predict`'s code in Python (`still`).
"""
from __future__ import annotations

import base64
import html as html_text
import shutil
import subprocess
from pathlib import Path

import numpy as np

from cxr.assess import predict
from cxr.core import labels
from cxr.core.config import CLASSES, Config, repo_root
from cxr.core.files import ensure_dir, write_json
from cxr.data.images import MIN_SIDE
from cxr.data.reading import OK, Read
from cxr.model import backends, registry
from cxr.model.onnx_file import read_metadata

#: the operating point the panel shows beside the most probable class
OPERATING_POINT = "covid@95"
#: the folder under the site's _static/ that holds the runtime and the model
ASSETS = "cxr-try"
#: where the npm package is locked and installed (book/web/package.json, package-lock.json)
WEB = repo_root() / "book" / "web"
#: the files of onnxruntime-web the page loads: the WebAssembly-only build
RUNTIME = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
SCRIPT = Path(__file__).parents[1] / "static" / "try.js"
#: the card's headline when the out-of-distribution score is above its threshold
OOD_WARNING = ("Out of distribution: this film does not look like the radiographs the model was trained on, so the "
               "probabilities below are not to be trusted.")


def runtime_dir(web: Path = WEB) -> Path:
    """onnxruntime-web's dist folder, installed with `npm ci` from the lock file when it is not there."""
    dist = web / "node_modules" / "onnxruntime-web" / "dist"
    if not all((dist / f).is_file() for f in RUNTIME):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("The book's browser panel needs onnxruntime-web from the npm registry, and npm is not "
                               "installed: apt-get install npm (or Node.js from nodejs.org), then build again.")
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=web,
                              capture_output=True, text=True)
        if done.returncode or not all((dist / f).is_file() for f in RUNTIME):
            raise RuntimeError(f"npm ci in {web} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return dist


def model_json(onnx: Path) -> dict:
    """What the page needs of the model: the ONNX file's metadata, the smallest side `cxr predict`
    reads, the operating point the panel shows, and its words (the classes as it writes them, the
    out-of-distribution warning), the same as the still's."""
    return read_metadata(onnx) | {"min_side": MIN_SIDE, "book_operating_point": OPERATING_POINT,
                                  "labels": [labels.label(c) for c in CLASSES], "ood_warning": OOD_WARNING}


def write_assets(dest: Path, config: Config) -> list[Path]:
    """The runtime, the book's model as ONNX and its model.json, in `dest` (the site's _static/cxr-try)."""
    dest = ensure_dir(dest)
    dist = runtime_dir()
    for f in RUNTIME:
        shutil.copyfile(dist / f, dest / f)
    onnx = backends.onnx_file(registry.final_model(config).checkpoint, config)
    shutil.copyfile(onnx, dest / "model.onnx")
    write_json(model_json(onnx), dest / "model.json")
    return [dest / f for f in (*RUNTIME, "model.onnx", "model.json")]


def still(pred: predict.Predictor, film: np.ndarray, name: str) -> dict:
    """The panel's card for one grey film, computed in Python as `cxr predict` computes it."""
    row = predict.predict_images(pred, [Read(name, film, OK, [])])[0]
    proba = np.array([[row[c] for c in CLASSES]])
    has_point = OPERATING_POINT in (pred.points or {})
    return {"name": name, "film": film, "proba": proba[0].tolist(), "call": row["decision"],
            "operating_point": predict.decide(proba, OPERATING_POINT, pred.points)[0] if has_point else None,
            "ood_score": row["ood_score"], "ood_threshold": pred.ood["threshold"] if pred.ood else None,
            "target": pred.points[OPERATING_POINT]["target_sensitivity"] if has_point else None}


def _png(film: np.ndarray, side: int = 160) -> str:
    import cv2

    small = cv2.resize(film, (side, side), interpolation=cv2.INTER_AREA)
    return base64.b64encode(cv2.imencode(".png", small)[1].tobytes()).decode()


def _still_html(s: dict) -> str:
    flagged = s["ood_threshold"] is not None and s["ood_score"] > s["ood_threshold"]
    head = (f'<span class="cxr-try-ood">{OOD_WARNING}</span>' if flagged
            else f"The model calls it <strong>{labels.label(s['call'])}</strong>.")
    score = "–" if s["ood_score"] != s["ood_score"] else f"{s['ood_score']:.2f}"  # NaN: a model without OOD statistics
    rows = "".join(f'<tr><td>{labels.label(c)}</td><td class="cxr-try-num">{100 * p:.1f}%</td></tr>'
                   for c, p in zip(CLASSES, s["proba"]))
    point = (f'<tr><td>at {OPERATING_POINT} (COVID-19 sensitivity {100 * s["target"]:.0f}% on validation)</td>'
             f'<td class="cxr-try-num">{s["operating_point"]}</td></tr>' if s["operating_point"] else "")
    return (f'<div class="cxr-try-still"><p>In the web version of this report, this panel runs the model in the '
            f"reader's browser on films of their own. Here, a still of its answer for the test film "
            f"{html_text.escape(s['name'])}, as <code>cxr predict</code> gives it:</p>"
            f'<div class="cxr-try-card"><img alt="the test film" src="data:image/png;base64,{_png(s["film"])}">'
            f"<p><strong>{html_text.escape(s['name'])}</strong>: {head}</p>"
            f'<table class="cxr-try-table"><tbody>{rows}'
            f"{point}"
            f'<tr><td>out-of-distribution score</td><td class="cxr-try-num">{score}</td></tr>'
            f"</tbody></table></div></div>")


def html(example: dict | None = None) -> str:
    """The panel: a file picker and drop zone, a status line, one card per film; and, for print,
    the still of `example` (`still`)."""
    return (f'<div id="cxr-try" class="cxr-try"><div class="cxr-try-live">'
            f'<div id="cxr-try-drop" class="cxr-try-drop"><label for="cxr-try-file">Choose films</label> '
            f'<input id="cxr-try-file" type="file" accept="image/png,image/jpeg" multiple> or drop them here.</div>'
            f'<p id="cxr-try-status" class="cxr-try-status" role="status" aria-live="polite"></p>'
            f'<div id="cxr-try-results"></div></div>'
            f"{_still_html(example) if example else ''}"
            f"<script>{SCRIPT.read_text()}</script></div>")
