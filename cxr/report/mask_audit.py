"""The lung segmenter on the database, per class (`reports/lung_masks.json`, `cxr lung-masks`):
does it draw the same kind of mask on every class, or could the mask itself tell the classes apart?

The segmenter was trained on adult COVID-19 films only. Its masks of the test split are measured
(`lung_masks.statistics`) and compared across classes, and a classifier on mask shape alone
(`lung_masks.shape_probe`) says how much class information the masks carry by themselves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core import records
from cxr.core.config import CLASSES, VERSIONS, Config
from cxr.core.files import write_json
from cxr.data import lung_masks, segmenter
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model.registry import data_ref
from cxr.train.segmenter import digest


def database_masks(config: Config, split: str = "test", model=None, progress: bool = False):
    """The split's rows of the table, their classifier pixels and the segmenter's mask of each."""
    root, table = load_table(config)
    pixels = load_pixels(root, table, config, progress=progress)
    rows = table.index[table.split == split].to_numpy()
    model = model or segmenter.load()[0]
    masks = segmenter.segment(model, np.asarray(pixels[rows]))
    return table.loc[rows].reset_index(drop=True), np.asarray(pixels[rows]), masks


def measure(table: pd.DataFrame, masks: list[np.ndarray], seed: int = 0) -> dict:
    """The record's numbers from the masks of the rows of `table`: per class statistics and
    statuses, and the shape probe."""
    stats = pd.DataFrame([lung_masks.statistics(m) for m in masks]).assign(label=table.label.to_numpy())
    per_class = lung_masks.by_class(stats)
    statuses = stats.groupby("label").status.value_counts().unstack(fill_value=0)
    return {"images": int(len(stats)), "by_class": per_class.to_dict(orient="index"),
            "statuses": statuses.to_dict(orient="index"), "shape_probe": lung_masks.shape_probe(stats, seed=seed),
            "failure_rate": float((stats.status != lung_masks.OK).mean())}


def _ref(config: Config, path: Path) -> dict:
    return {"segmenter_sha256": digest(path), "segmenter_version": VERSIONS["segmenter"]} | data_ref(config)


def mask_record(config: Config, weights: str | Path | None = None) -> dict:
    """The record for the profile's test split and the segmenter (default: the shipped one): read
    from `<reports>/lung_masks.json` while it names the same segmenter, data and version, else
    measured and written."""
    weights = Path(weights) if weights else segmenter.SHIPPED
    ref = _ref(config, weights)
    path = config.reports_dir / "lung_masks.json"
    if (old := records.fresh(path, ref)) is not None:
        return old
    table, _, masks = database_masks(config, model=segmenter.load(weights)[0])
    record = {"split": "test", **measure(table, masks, seed=config.seed), **ref,
              "command": "cxr lung-masks"}
    write_json(record, path)
    return record


#: above this macro AUC, mask shape alone carries a class cue worth guarding against (0.5: none)
CUE_AUC = 0.70


def verdict(record: dict) -> dict:
    """What the record means for a classifier that reads the lungs, in words chosen from its
    numbers: whether mask shape alone carries a class cue, which class's masks fail most, and which
    classes' lungs the masks find largest and smallest."""
    probe = record["shape_probe"]
    by = record["by_class"]
    fails = max(by, key=lambda c: by[c]["failure rate"])
    big, small = max(by, key=lambda c: by[c]["area mean"]), min(by, key=lambda c: by[c]["area mean"])
    cue = probe["macro_auc"] >= CUE_AUC
    head = (f"Mask shape alone tells the classes apart with macro AUC {probe['macro_auc']:.2f} and balanced "
            f"accuracy {100 * probe['balanced_accuracy']:.0f}% (chance {100 * probe['chance']:.0f}%)")
    if cue:
        meaning = ("so the masks carry class information of their own: a classifier that sees the mask's outline "
                   "(everything outside the lungs blanked) can learn the outline instead of the lungs. Cropping to "
                   "the lungs' box with a margin shows less of the outline; either way the occlusion pair and the "
                   "twins have to be measured on the lung model itself")
    else:
        meaning = ("so the masks carry little class information of their own, and a lung-only input adds little "
                   "cue of its own; the occlusion pair and the twins still have to be measured on the lung model")
    return {"cue": cue, "threshold": CUE_AUC, "most_failures": fails, "largest": big, "smallest": small,
            "text": f"{head}, {meaning}. The masks fail the check most often on {fails} "
                    f"({100 * by[fails]['failure rate']:.1f}%); they are largest on {big} "
                    f"({100 * by[big]['area mean']:.0f}% of the image) and smallest on {small} "
                    f"({100 * by[small]['area mean']:.0f}%)."}


def gallery_rows(table: pd.DataFrame, per_class: int = 6, seed: int = 0, split: str = "test") -> np.ndarray:
    """Table rows to show the segmenter on: `per_class` images of each class from `split`, drawn by the seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in CLASSES:
        pool = table.index[(table.split == split) & (table.label == c)].to_numpy()
        rows += sorted(rng.permutation(pool)[:per_class].tolist())
    return np.array(rows, int)
