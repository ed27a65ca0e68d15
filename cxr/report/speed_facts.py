"""Every speed the book quotes, each one value of one record under a name that says what it
measures. Four different things are timed, and a page that quotes one names it:

* `batched`: the model alone on batches of 64 preprocessed films (the executive summary's record,
  measured when that record was made);
* `predict_one`, `predict_one_cam`, `predict_folder`: `cxr predict` end to end, reading files
  (`benchmarks/predict_speed.py`);
* `model_alone`: the model alone on batches of 32, on each runtime (`benchmarks/backends.py`);
* `training`: the final recipe's training run, from the run's own clock (the model file).

`facts` gives {name: {"label", "text", "source"}}; the summary and chapter 08 glue the
texts (`glue_names`), and chapter 08 shows them side by side (`table`).
"""
from __future__ import annotations

import pandas as pd

from cxr.core import records

LABELS = {
    "batched": "the model alone, batches of 64 preprocessed films, per film",
    "model_alone": "the model alone, batches of 32 preprocessed films, PyTorch as trained",
    "predict_one": "cxr predict, one image end to end (read, preprocess, predict, score)",
    "predict_one_cam": "cxr predict, one image with its Grad-CAM overlay",
    "predict_folder": "cxr predict, a folder of test images",
    "training": "training the final recipe (cxr train)",
}


def facts(summary: dict | None, training_seconds: float | None = None) -> dict[str, dict]:
    """The speeds that have a record here: `summary` is the executive summary's record (its
    `inference`), `training_seconds` the final run's wall time when the model file carries it."""
    out = {}

    def add(name: str, text: str, source: str):
        out[name] = {"label": LABELS[name], "text": text, "source": source}

    if summary and summary.get("inference"):
        s = summary["inference"]
        add("batched", f"{1000 / s['images_per_second']:.1f} ms ({s['images_per_second']:.0f} films/s)",
            f"the executive summary's record, {s['threads']} threads, batch {s['batch']}, {s['size']} px")
    p = records.read("predict_speed.json")
    if p is not None:
        made = f"{p['command']}, {p['created'][:10]}, {p['threads']} threads"
        add("predict_one", f"{p['single_image_ms']['median']:.0f} ms", made)
        add("predict_one_cam", f"{p['single_image_with_gradcam_ms']['median']:.0f} ms", made)
        add("predict_folder", f"{p['folder']['images_per_second']:.0f} images/s", made)
    b = records.read("backends.json")
    if b is not None:
        eager = next((r for r in b["model_alone"] if r["backend"] == "torch eager" and "images_per_second" in r), None)
        if eager is not None:
            add("model_alone", f"{eager['images_per_second']:.0f} films/s",
                f"{b['command']}, {b['created'][:10]}, {b['cores']} cores")
    if training_seconds:
        add("training", f"{training_seconds / 60:.0f} min", "the final run's own clock, in the model file")
    return out


def glue_names(found: dict[str, dict]) -> dict[str, str]:
    """What a page glues, for every speed of `LABELS`: `speed_<name>` is the figure and
    `speed_<name>_said` the figure with its name ("not measured here" when it has no record)."""
    out = {}
    for name, label in LABELS.items():
        text = found[name]["text"] if name in found else "not measured here"
        out[f"speed_{name}"] = text
        out[f"speed_{name}_said"] = f"{text} ({label})"
    return out


def table(found: dict[str, dict]) -> pd.DataFrame:
    """The speeds side by side: what is timed, the figure, and where it was measured."""
    return pd.DataFrame([{"what is timed": f["label"], "median": f["text"], "measured by": f["source"]}
                         for f in found.values()]).set_index("what is timed")


def for_book(config) -> dict[str, dict]:
    """The speeds as the profile's book quotes them: the summary's from the profile's
    `summary.json` (chapter 00 writes it), the benchmarks' from `reports/`."""
    return facts(records.read("summary.json", config))
