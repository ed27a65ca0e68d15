"""Chapter 01's age probe: the number in a database file name, a cross-fitted "looks like a
child" score, and the change point of a sequence.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def database_number(names: pd.Series) -> np.ndarray:
    """The number in a database file name ('Normal-123.png' -> 123); -1 where there is none."""
    return names.str.extract(r"-(\d+)\.\w+$")[0].fillna(-1).astype(int).to_numpy()


def paediatric_score(images: pd.DataFrame, thumbs: np.ndarray, adult_from: int = 3000, seed: int = 0) -> np.ndarray:
    """Cross-fitted 'looks like a child' score for every image (nan where not scored).

    A logistic regression on thumbnails separates Viral Pneumonia (all paediatric) from Normal
    images numbered above `adult_from` (assumed adult); every image is scored by a model fitted on
    the other folds, so no image is scored by a model that saw it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    num = database_number(images.database_name)
    vp = images.label.eq("Viral Pneumonia").to_numpy()
    normal = images.label.eq("Normal").to_numpy()
    ref = vp | (normal & (num > adult_from))
    score = np.full(len(images), np.nan)
    target = vp.astype(int)
    if ref.sum() < 10 or target[ref].min() == target[ref].max():
        return score
    folds = StratifiedKFold(n_splits=min(5, int(np.bincount(target[ref]).min())), shuffle=True, random_state=seed)
    fold_of = np.full(len(images), -1)
    for k, (_, test) in enumerate(folds.split(np.flatnonzero(ref), target[ref])):
        fold_of[np.flatnonzero(ref)[test]] = k
    rest = ~ref  # images outside the reference set get a fold at random, so every score is out-of-fold
    fold_of[rest] = np.random.default_rng(seed).integers(0, folds.n_splits, rest.sum())
    for k in range(folds.n_splits):
        fit = ref & (fold_of != k)
        model = LogisticRegression(C=1.0, max_iter=2000).fit(thumbs[fit], target[fit])
        score[fold_of == k] = model.predict_proba(thumbs[fold_of == k])[:, 1]
    return score


def change_point(values: np.ndarray) -> int:
    """Index k that best splits a sequence into two constant segments values[:k], values[k:] (least squares)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n < 2:
        return 0
    c1, c2 = np.cumsum(v), np.cumsum(v * v)
    k = np.arange(1, n)
    left = c2[k - 1] - c1[k - 1] ** 2 / k
    right = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (n - k)
    return int(k[np.argmin(left + right)])
