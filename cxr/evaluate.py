"""Diagnostic-test metrics with confidence intervals.

Proportions (sensitivity, specificity, PPV, NPV, accuracy) get Wilson score intervals; AUCs
get percentile bootstrap intervals (stratified by class, seeded). Every proportion is
reported with the counts behind it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from .models import CLASSES

Z95 = float(norm.ppf(0.975))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (nan, nan when n == 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"value": k / n if n else math.nan, "k": int(k), "n": int(n), "ci": [lo, hi]}


def safe_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC, or nan when only one class is present."""
    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else math.nan


def safe_ap(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y)
    return float(average_precision_score(y, score)) if y.sum() > 0 else math.nan


def macro_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over the classes present (nan if fewer than two)."""
    aucs = [safe_auc(y == c, proba[:, c]) for c in range(proba.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def bootstrap_ci(stat, y: np.ndarray, *arrays: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of stat(y, *arrays), resampling within each class of y."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        v = stat(y[idx], *(a[idx] for a in arrays))
        if not (isinstance(v, float) and math.isnan(v)):
            vals.append(v)
    if not vals:
        return (math.nan, math.nan)
    a = (1 - level) / 2
    return (float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)))


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(pred)))


def summary(y: np.ndarray, proba: np.ndarray, classes=CLASSES, n_boot: int = 1000, seed: int = 0) -> dict:
    """Headline metrics: accuracy and macro AUC with intervals, and per-class test statistics."""
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(1)
    n = len(y)
    correct = int((pred == y).sum())
    out = {
        "n": n,
        "accuracy": correct / n if n else math.nan,
        "accuracy_ci": list(wilson(correct, n)),
        "correct": correct,
        "macro_auc": macro_auc(y, proba),
        "macro_auc_ci": list(bootstrap_ci(macro_auc, y, proba, n_boot=n_boot, seed=seed)),
        "per_class": {},
    }
    for c, name in enumerate(classes):
        pos, hit = y == c, pred == c
        tp, fn = int((pos & hit).sum()), int((pos & ~hit).sum())
        fp, tn = int((~pos & hit).sum()), int((~pos & ~hit).sum())
        sens, spec, ppv, npv = proportion(tp, tp + fn), proportion(tn, tn + fp), proportion(tp, tp + fp), proportion(tn, tn + fn)
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
        score = proba[:, c]
        out["per_class"][name] = {
            "n": int(pos.sum()), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "sensitivity": sens["value"], "sensitivity_ci": sens["ci"],
            "specificity": spec["value"], "specificity_ci": spec["ci"],
            "ppv": ppv["value"], "ppv_ci": ppv["ci"],
            "npv": npv["value"], "npv_ci": npv["ci"],
            "f1": f1,
            "f1_ci": list(bootstrap_ci(_f1_stat(c), y, pred, n_boot=n_boot, seed=seed)),
            "auc": safe_auc(pos, score),
            "auc_ci": list(bootstrap_ci(lambda yy, s: safe_auc(yy == c, s), y, score, n_boot=n_boot, seed=seed)),
            "pr_auc": safe_ap(pos, score),
            "pr_auc_ci": list(bootstrap_ci(lambda yy, s: safe_ap(yy == c, s), y, score, n_boot=n_boot, seed=seed)),
        }
    return out


def _f1_stat(c: int):
    def f1(yy, pp):
        tp = np.sum((yy == c) & (pp == c))
        d = np.sum(yy == c) + np.sum(pp == c)
        return 2 * tp / d if d else math.nan
    return f1


def per_class_table(s: dict, pct: bool = True) -> pd.DataFrame:
    """The per-class part of a summary as a table with counts and intervals, for display."""
    rows = []
    k = 100 if pct else 1
    for name, m in s["per_class"].items():
        def fmt(key, num=None, den=None):
            v, (lo, hi) = m[key], m[key + "_ci"]
            counts = f" ({num}/{den})" if num is not None else ""
            return f"{k * v:.1f} [{k * lo:.1f}, {k * hi:.1f}]{counts}" if not math.isnan(v) else "n/a"
        rows.append({
            "class": name, "n": m["n"],
            "sensitivity": fmt("sensitivity", m["tp"], m["tp"] + m["fn"]),
            "specificity": fmt("specificity", m["tn"], m["tn"] + m["fp"]),
            "PPV": fmt("ppv", m["tp"], m["tp"] + m["fp"]),
            "NPV": fmt("npv", m["tn"], m["tn"] + m["fn"]),
            "ROC-AUC": f"{m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]",
        })
    return pd.DataFrame(rows).set_index("class")


def accuracy_from_proba(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(np.asarray(proba).argmax(1) == np.asarray(y)))


def paired_difference(stat, y: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, n_boot: int = 1000,
                      seed: int = 0) -> tuple[float, tuple[float, float]]:
    """stat(a) - stat(b) on the same cases, with a class-stratified paired bootstrap 95% interval."""
    y, a, b = np.asarray(y), np.asarray(proba_a), np.asarray(proba_b)
    diff = stat(y, a) - stat(y, b)
    ci = bootstrap_ci(lambda yy, aa, bb: stat(yy, aa) - stat(yy, bb), y, a, b, n_boot=n_boot, seed=seed)
    return float(diff), ci
