"""Judging and measuring lung masks: whether a mask is plausible (a status, never a silent crop),
its shape statistics, Dice, and how well mask shape alone tells the classes apart.

The segmenter saw only adult COVID-19 films (`cxr-lung-masks`). If its masks of other classes
were systematically different (smaller, lopsided, failing more often), a classifier that reads
masked or cropped lungs could learn the mask instead of the lungs; `shape_probe` measures that.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

OK = "ok"
#: the plausible share of the image the two lungs cover; the hand-drawn masks span 0.09-0.62
#: (1st-99th percentile 0.20-0.57), so a mask outside this range is more likely wrong than unusual
AREA_RANGE = (0.10, 0.65)
#: a lung piece is a connected part covering at least this share of the image
PIECE = 0.01
#: the smaller lung's area over the larger's below which the pair is lopsided (hand-drawn: >= 0.57)
BALANCE_MIN = 0.35
#: the two largest pieces' share of the mask below which it is in fragments (hand-drawn: >= 0.97)
TWO_PIECES_MIN = 0.85
STATUSES = (OK, "empty", "too small", "too large", "one piece", "lopsided", "fragmented")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def pieces(mask: np.ndarray) -> list[dict]:
    """The mask's connected parts of at least `PIECE` of the image, largest first: area (share of
    the image), centre and box (x0, y0, x1, y1, shares of the width and height)."""
    m = np.asarray(mask, bool)
    h, w = m.shape
    n, _, stats, centroids = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        x, y, bw, bh, area = stats[k]
        if area >= PIECE * m.size:
            out.append({"area": area / m.size, "cx": centroids[k][0] / w, "cy": centroids[k][1] / h,
                        "box": (x / w, y / h, (x + bw) / w, (y + bh) / h)})
    return sorted(out, key=lambda p: -p["area"])


def status(mask: np.ndarray, parts: list[dict] | None = None) -> str:
    """`OK`, or what is wrong with the mask: "empty", "too small", "too large", "one piece" (the
    lungs merged, or one is missing), "lopsided" (one lung far smaller) or "fragmented". `parts`:
    the mask's `pieces`, when already found."""
    m = np.asarray(mask, bool)
    area = m.mean()
    parts = pieces(m) if parts is None else parts
    if not m.any():
        return "empty"
    if not parts:  # only crumbs
        return "fragmented"
    if area < AREA_RANGE[0]:
        return "too small"
    if area > AREA_RANGE[1]:
        return "too large"
    if len(parts) == 1:
        return "one piece"
    if (parts[0]["area"] + parts[1]["area"]) < TWO_PIECES_MIN * area:
        return "fragmented"
    if parts[1]["area"] / parts[0]["area"] < BALANCE_MIN:
        return "lopsided"
    return OK


def statistics(mask: np.ndarray) -> dict:
    """The shape of one mask, as numbers: area, the two lungs' balance, how many pieces, the box
    around both lungs (shares of the image), the vertical centre, and the status."""
    m = np.asarray(mask, bool)
    parts = pieces(m)
    ys, xs = np.nonzero(m)
    h, w = m.shape
    box = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h) if len(xs) else (0, 0, 0, 0)
    return {"area": float(m.mean()), "pieces": len(parts),
            "balance": float(parts[1]["area"] / parts[0]["area"]) if len(parts) >= 2 else 0.0,
            "box_width": float(box[2] - box[0]), "box_height": float(box[3] - box[1]),
            "box_top": float(box[1]), "centre_y": float(ys.mean() / h) if len(ys) else 0.0,
            "status": status(m, parts)}


SHAPE_FEATURES = ("area", "pieces", "balance", "box_width", "box_height", "box_top", "centre_y")


def by_class(stats: pd.DataFrame) -> pd.DataFrame:
    """Per class (the `label` column): how many masks, the mean and spread of area and balance,
    and the failure rate (any status but ok)."""
    g = stats.groupby("label")
    return pd.DataFrame({"masks": g.size(), "area mean": g.area.mean(), "area sd": g.area.std(),
                         "balance mean": g.balance.mean(), "failure rate": g.status.apply(lambda s: float((s != OK).mean()))})


def shape_probe(stats: pd.DataFrame, seed: int = 0, folds: int = 5) -> dict:
    """How well the mask's shape alone tells the classes apart: a cross-validated logistic
    regression on `SHAPE_FEATURES`, its balanced accuracy (chance: 1 / classes) and macro one-vs-rest
    ROC-AUC (chance 0.5), with each class's AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = stats[list(SHAPE_FEATURES)].to_numpy(float)
    labels = sorted(stats.label.unique())
    y = stats.label.map(labels.index).to_numpy()
    cv = StratifiedKFold(n_splits=min(folds, int(np.bincount(y).min())), shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced"))
    p = cross_val_predict(clf, X, y, cv=cv, method="predict_proba")
    per = {c: float(roc_auc_score(y == k, p[:, k])) for k, c in enumerate(labels)}
    return {"balanced_accuracy": float(balanced_accuracy_score(y, p.argmax(1))), "chance": 1 / len(labels),
            "macro_auc": float(np.mean(list(per.values()))), "auc_by_class": per, "images": int(len(y)),
            "features": list(SHAPE_FEATURES), "folds": cv.get_n_splits()}
