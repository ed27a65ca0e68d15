"""Chapter 01's age probe: the number in a database file name, a cross-fitted "looks like a
child" score, and the change point of a sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Trend:
    """The child-likeness of the Normal films in database-number order, and where it changes."""
    numbers: np.ndarray  # database numbers (Normal-<n>.png), sorted
    scores: np.ndarray  # their paediatric scores, in the same order
    k: int  # the change point: scores[:k] and scores[k:] differ most

    @property
    def found(self) -> bool:
        return 0 < self.k < len(self.numbers)


def normal_trend(images: pd.DataFrame, thumbs: np.ndarray, seed: int = 0) -> Trend:
    """Chapter 01's age probe: every Normal film with a database number, its paediatric score, in
    number order, and the change point of that sequence."""
    normal = images.label.eq("Normal").to_numpy()
    num = database_number(images.database_name)
    score = paediatric_score(images, thumbs, seed=seed)
    scored = normal & ~np.isnan(score)
    order = np.argsort(num[scored])
    numbers, scores = num[scored][order], score[scored][order]
    return Trend(numbers, scores, change_point(scores))


def trend_words(t: Trend) -> str:
    """Where the change point falls and how the two sides differ, as chapter 01 says it."""
    if not t.found:
        return "not found in this sample (too few Normal images with a database number)"
    lo, hi, k = t.scores[:t.k], t.scores[t.k:], t.k
    return (f"between Normal-{t.numbers[k - 1]} and Normal-{t.numbers[k]}. Below it, {k:,} images score "
            f"{lo.mean():.2f} on average and {(lo > 0.5).mean():.0%} score above 0.5; above it, {len(hi):,} images "
            f"score {hi.mean():.2f} and {(hi > 0.5).mean():.0%} above 0.5")
