"""Chapter 02's experiment, `<reports>/enhancement.json` (`cxr enhancement`): does contrast
enhancement (CLAHE, gamma) help a classifier here?

Frozen ImageNet EfficientNet-Lite0 features and a class-weighted logistic regression, trained on a
fixed sample of the training split and scored on the whole validation split, once per
enhancement; each enhancement against none, by a paired bootstrap. The test split is not touched:
this is a design decision. The record is reused while it names the same data, the same
preprocessing settings and the same record version; no model is trained beyond the linear heads.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.core import metrics, records
from cxr.core.book import NBSP, interval
from cxr.core.config import CLASSES, Config
from cxr.data.images import read_gray
from cxr.data.preprocess import clahe, gamma_correct, load_pixels
from cxr.data.splits import load_table, stratified_sample
from cxr.model import features
from cxr.model.registry import data_ref
from cxr.train.linear import fit_linear_head, proba_all_classes

GAMMA = 0.8  # < 1 brightens dark regions (lung fields)
TRAIN_SAMPLE = 3000  # training images for the probe (a linear head needs no more)
COMMAND = "cxr enhancement (make comparisons)"


def enhancements() -> dict[str, dict]:
    """The variants tried, as changes to the config (none: the images as the report trains on them)."""
    return {"none": {}, "CLAHE (clip 2, 8x8)": {"clahe": True}, f"gamma {GAMMA}": {"gamma": GAMMA},
            "CLAHE (clip 1, 8x8)": {"clahe": True, "clahe_clip": 1.0}}


def _ref(config: Config) -> dict:
    return data_ref(config) | {"pixels": config.key("image_size", "clahe", "clahe_clip", "gamma", "seed")}


def enhancement_record(config: Config, remake: bool = False, progress: bool = False) -> dict:
    """The record of the profile: the stored one while it names this data and these settings, else measured."""
    path = config.reports_dir / "enhancement.json"
    ref = _ref(config)
    if not remake and (record := records.fresh(path, ref)) is not None:
        return record
    return records.write(ref | measure(config, progress) | {"command": COMMAND}, path)


def measure(config: Config, progress: bool = False) -> dict:
    root, table = load_table(config)
    probe = pd.concat([stratified_sample(table[table.split == "train"], TRAIN_SAMPLE, seed=config.seed),
                       table[table.split == "val"]]).reset_index(drop=True)
    y = probe.label.map(CLASSES.index).to_numpy()
    tr, va = (probe.split == "train").to_numpy(), (probe.split == "val").to_numpy()
    probas = {}
    for name, change in enhancements().items():
        variant = config.replace(**change)
        feats = features.embed(load_pixels(root, probe, variant, progress=progress), variant, size=224,
                               progress=progress)
        probas[name] = proba_all_classes(fit_linear_head(feats[tr], y[tr], seed=config.seed), feats[va])
    base, rows = probas["none"], {}
    for name, p in probas.items():
        s = metrics.summary(y[va], p, n_boot=500, seed=config.seed)
        d_acc = metrics.paired_difference(metrics.accuracy_from_proba, y[va], p, base, seed=config.seed)
        d_auc = metrics.paired_difference(metrics.macro_auc, y[va], p, base, seed=config.seed)
        covid = s["per_class"]["COVID"]
        rows[name] = {"change": enhancements()[name], "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                      "macro_auc": s["macro_auc"], "macro_auc_ci": s["macro_auc_ci"],
                      "covid_sensitivity": covid["sensitivity"], "covid_sensitivity_ci": covid["sensitivity_ci"],
                      "accuracy_vs_none": [d_acc[0], list(d_acc[1])], "macro_auc_vs_none": [d_auc[0], list(d_auc[1])]}
    verdicts = [metrics.difference_verdict(name, r["accuracy_vs_none"][0], tuple(r["accuracy_vs_none"][1]))
                for name, r in rows.items() if name != "none"]
    adopted = [name for name, r in rows.items() if name != "none" and r["accuracy_vs_none"][1][0] > 0]
    return {"train_images": int(tr.sum()), "val_images": int(va.sum()), "enhancements": rows,
            "verdicts": verdicts, "adopted": adopted}


def table(record: dict):
    """The record as the chapter's table."""
    def diff(d, scale, digits):
        if d[0] == 0 and d[1][0] == 0 and d[1][1] == 0:  # every resample the same: the same films right
            return f"{0:.{digits}f} (the same films right)"
        return (f"{scale * d[0]:+.{digits}f} [{scale * d[1][0]:+.{digits}f},{NBSP}{scale * d[1][1]:+.{digits}f}]")

    return pd.DataFrame([{"enhancement": name,
                          "accuracy %": interval(r["accuracy"], r["accuracy_ci"]),
                          "macro AUC": interval(r["macro_auc"], r["macro_auc_ci"], 1, 4),
                          "COVID-19 sensitivity %": interval(r["covid_sensitivity"], r["covid_sensitivity_ci"]),
                          # the reference row is compared with nothing: a dash, not "+0.00 [+0.00, +0.00]"
                          "accuracy vs none (points)": diff(r["accuracy_vs_none"], 100, 2) if name != "none" else "(reference)",
                          "macro AUC vs none": diff(r["macro_auc_vs_none"], 1, 4) if name != "none" else "(reference)"}
                         for name, r in record["enhancements"].items()]).set_index("enhancement")


def variants() -> dict:
    """The enhancements chapter 02 shows side by side, by name: none, CLAHE (clip 2, 8x8 tiles), gamma."""
    return {"original": lambda g: g, "CLAHE clip 2, 8x8": lambda g: clahe(g, 2.0, 8),
            f"gamma {GAMMA}": lambda g: gamma_correct(g, GAMMA)}


def examples(root, table: pd.DataFrame, seed: int = 0) -> dict[str, np.ndarray]:
    """One film per class, drawn with `seed`, as read from the dataset (before any preprocessing)."""
    rng = np.random.default_rng(seed)
    return {c: read_gray(root / table.file[rng.choice(np.flatnonzero(table.label == c))]) for c in CLASSES}
