"""Training. Three approaches, one run folder format.

* ``linear``: frozen ImageNet EfficientNet-Lite0 features and a logistic-regression head.
* ``finetune`` (the final model): EfficientNet-Lite0 with its first `train_from_block` blocks
  frozen. Their output is computed once per augmented view of each training image and cached
  on disk, so each epoch trains only the last stages and the head: on two CPU cores this is
  several times faster than a full forward and backward pass, with the same model at the end.
* ``resnet50``: the original project's recipe (torchvision ResNet50, full fine-tuning,
  class-weighted loss, online augmentation) under a fixed wall-time budget.

A run folder (``runs/<approach>-<key>``) holds config.json, history.csv (one row per
validation), checkpoint.pt (the best weights; loads with ``torch.load(weights_only=True)``),
last.pt (to resume), predictions_val.csv, predictions_test.csv and done.json. The key
(`run_key`) is the approach, the config fields it reads, the data and the recipe's explicit version,
so an identical run is reused, not repeated, and an edit that changes no recipe renames no run.
"""
from __future__ import annotations

import logging
import shutil
import time

import pandas as pd
import torch

from cxr.core import metrics
from cxr.core.config import CLASSES, VERSIONS, Config, get_config, source_hash
from cxr.core.files import ensure, save_state, write_json
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model.registry import APPROACHES, Run, load_run, run_path
from cxr.train import finetune, linear, resnet50

# Progress and cache messages go to the log (the CLI shows it on stderr), not into the book's pages.
log = logging.getLogger(__name__)
TRAINERS = {"linear": linear.fit_run, "finetune": finetune.fit_run, "resnet50": resnet50.fit_run}


def fit(approach: str, config: Config, progress: bool = True,
        retrain: bool = False, eval_every_s: float | None = None, reuse: bool = True) -> Run:
    """Train `approach` on the split of the current profile; reuse an identical finished run.

    A run that was interrupted resumes from its last epoch (finetune, resnet50).
    `eval_every_s` adds validations on a fixed validation subset during training (for
    time-to-accuracy curves in the benchmark).
    """
    if approach not in APPROACHES:
        raise ValueError(f"approach must be one of {APPROACHES}")
    root, table = load_table(config)
    path = run_path(approach, config, table)
    key = path.name.rsplit("-", 1)[1]
    if (path / "done.json").exists() and reuse and not retrain:
        log.info("reusing finished run %s (same recipe, config and data)", path.name)
        return load_run(path)
    if retrain and path.exists():
        shutil.rmtree(path)
    ensure(path)
    final = approach == "finetune" and config.key() == get_config(config.profile).key()
    write_json(config.to_dict() | {
        "approach": approach, "key": key, "final": final, "recipe_version": VERSIONS[approach],
        "source_hash": source_hash()}, path / "config.json")  # the source hash: provenance, not identity
    pixels = load_pixels(root, table, config, progress=progress)
    y = table.label.map(CLASSES.index).to_numpy()
    start = time.perf_counter()
    model_info = TRAINERS[approach](path, config, table, pixels, y, progress, eval_every_s, root)
    model_info.setdefault("train_wall_seconds", time.perf_counter() - start)
    # temperature scaling, fitted on validation only; stored with the weights
    val = pd.read_csv(path / "predictions_val.csv", keep_default_na=False)
    temperature = metrics.fit_temperature(val.label.map(CLASSES.index).to_numpy(), val[list(CLASSES)].to_numpy())
    state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
    state["temperature"] = temperature
    save_state(path / "checkpoint.pt", state)
    summary = {"approach": approach, "profile": config.profile, "final": final, "temperature": temperature,
               **model_info}
    for split in ("val", "test"):
        p = pd.read_csv(path / f"predictions_{split}.csv", keep_default_na=False)
        s = metrics.summary(p.label.map(CLASSES.index).to_numpy(), p[list(CLASSES)].to_numpy(), n_boot=200,
                             seed=config.seed)
        summary[split] = {"n": s["n"], "accuracy": s["accuracy"], "macro_auc": s["macro_auc"],
                          "per_class": {c: {k: s["per_class"][c][k] for k in ("sensitivity", "specificity")}
                                        for c in CLASSES}}
    write_json(summary, path / "done.json")
    return load_run(path)
