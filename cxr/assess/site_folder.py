"""`cxr site-check FOLDER`: a hospital's folder of films through the model and the site check.

An unlabelled folder (any tree of images and DICOM) gets the verdict, the films it used and what
share of them the model calls each class. A folder in the database layout (`<class>/images/*`)
is labelled: it also gets the site's sensitivity and specificity with 95% intervals, at the
model's most probable class and at its operating points (chosen on the database's validation
split). Nothing here keeps a file name: what leaves this module is counts and rates.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.assess import predict
from cxr.core import metrics
from cxr.core.book import pct
from cxr.core.config import CLASSES
from cxr.data.dataset import canonical_label
from cxr.model import site_check


@dataclass
class Site:
    """A folder as the site check sees it."""
    verdict: site_check.Verdict
    proba: np.ndarray  # calibrated probabilities of the films the model read (N, 4)
    labels: np.ndarray | None  # class indices where the folder is labelled, else None
    unread: int  # files that could not be read or were not radiographs

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def label_of(shown: str) -> str | None:
    """The class of a film in the database layout from its shown path (`.../<class>/images/<file>`)."""
    parts = Path(shown).parts
    return canonical_label(parts[-3]) if len(parts) >= 3 and parts[-2] == "images" else None


def check_folder(folder: str | Path, pred: predict.Predictor, workers: int | None = None, progress: bool = True) -> Site:
    """Every film of `folder` through the model (`pred`, `predict.load`), and the verdict on all of them."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    rows = []
    for batch in predict.stream([folder], pred, workers=workers, progress=progress):
        rows.extend(batch)
    got = [r for r in rows if predict.SITE_KEY in r]
    proba = np.array([[r[c] for c in CLASSES] for r in got]).reshape(-1, len(CLASSES))
    verdict = predict.judge_rows(pred, got)
    labels = [label_of(r["file"]) for r in got]
    labelled = bool(got) and all(lab is not None for lab in labels)
    y = np.array([CLASSES.index(lab) for lab in labels]) if labelled else None
    return Site(verdict, proba, y, len(rows) - len(got))


def metrics_at(site: Site, points: dict | None, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """The labelled site's numbers: accuracy and per-class sensitivity and specificity with 95%
    intervals, and each operating point's sensitivity and specificity (None when unlabelled)."""
    if not site.labelled or not len(site.labels):
        return None
    s = metrics.summary(site.labels, site.proba, n_boot=n_boot, seed=seed)
    present = sorted(set(site.labels.tolist()))
    out = {"films": int(len(site.labels)), "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
           "classes_present": [CLASSES[c] for c in present], "per_class": {}}
    for c, m in s["per_class"].items():
        out["per_class"][c] = {k: m.get(k) for k in ("n", "sensitivity", "sensitivity_ci", "specificity",
                                                     "specificity_ci")}
    if points:
        out["operating_points"] = metrics.measure_operating_points(points, site.labels, site.proba, label="site")
    return out


def metrics_table(found: dict) -> pd.DataFrame:
    """The labelled site's sensitivity and specificity per class, with intervals, for the terminal."""
    rows = [{"class": c, "films": m["n"], "sensitivity": pct(m["sensitivity"], m["sensitivity_ci"]) if m["n"] else "no films",
             "specificity": pct(m["specificity"], m["specificity_ci"])} for c, m in found["per_class"].items()]
    rows.append({"class": "all (accuracy)", "films": found["films"], "sensitivity": pct(found["accuracy"],
                 found["accuracy_ci"]), "specificity": ""})
    return pd.DataFrame(rows).set_index("class")


def sample_folder(site: Path, n: int, dest: Path) -> Path:
    """A folder `dest` holding the first `n` normal films of a site folder (its `Normal/images`, by
    name), as a hospital would hand over one study list to check."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((Path(site) / "Normal" / "images").glob("*.jpg"))[:n]:
        shutil.copy(f, dest / f.name)
    return dest
