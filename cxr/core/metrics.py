"""Diagnostic-test metrics with confidence intervals, calibration and operating points (plain
functions of labels and probabilities; running a model on a folder is `cxr.assess.evaluate`).

Proportions (sensitivity, specificity, PPV, NPV, accuracy) get Wilson score intervals; AUCs
get percentile bootstrap intervals (stratified by class, seeded). Every proportion is
reported with the counts behind it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from cxr.core.book import interval
from cxr.core.config import CLASSES

Z95 = float(norm.ppf(0.975))

# What the original portfolio project reported (ResNet50, ImageNet weights, full Kaggle database):
# sensitivity / specificity / PPV / ROC-AUC per class, accuracy and macro AUC. Quoted, not computed.
ORIGINAL_PROJECT = {
    "accuracy": 0.687, "macro_auc": 0.921, "covid_sensitivity_counts": (363, 542),
    "per_class": {
        "COVID": {"sensitivity": 0.670, "specificity": 0.837, "ppv": 0.458, "auc": 0.850},
        "Lung_Opacity": {"sensitivity": 0.895, "specificity": 0.815, "ppv": 0.657, "auc": 0.933},
        "Normal": {"sensitivity": 0.542, "specificity": 0.953, "ppv": 0.914, "auc": 0.910},
        "Viral Pneumonia": {"sensitivity": 0.911, "specificity": 0.978, "ppv": 0.742, "auc": 0.994},
    },
}


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
    """ROC-AUC, or nan when only one class is present.

    The Mann-Whitney form (ties share their mean rank): the area sklearn's `roc_auc_score` gives,
    about 15 times faster, which the bootstrap intervals (thousands of AUCs each) need."""
    y = np.asarray(y, bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if not (n_pos and n_neg):
        return math.nan
    ranks = rankdata(np.asarray(score, np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def safe_ap(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (sklearn's `average_precision_score`: precision at each distinct score,
    weighted by the recall it adds), or nan without positives."""
    y = np.asarray(y, bool)
    n_pos = int(y.sum())
    if not n_pos:
        return math.nan
    score = np.asarray(score, np.float64)
    order = np.argsort(-score, kind="mergesort")
    s, hits = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last case of each distinct score
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_step * precision))


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


def clustered_proportion(hits: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """A proportion whose images come in clusters (patients), with a Wilson interval on the
    effective sample size n / deff. The design effect deff is the cluster-bootstrap variance over
    the binomial one (at least 1); where either is zero (all hits or none) it takes its largest
    value, images per patient, so an interval never shrinks to a point."""
    hits, clusters = np.asarray(hits, dtype=float), np.asarray(clusters)
    n = len(hits)
    if n == 0:
        return {"value": math.nan, "n": 0, "patients": 0, "ci": [math.nan, math.nan], "design_effect": math.nan}
    p, patients = float(hits.mean()), len(np.unique(clusters))
    ids, inverse = np.unique(clusters, return_inverse=True)
    k_c, n_c = np.bincount(inverse, weights=hits), np.bincount(inverse).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), (n_boot, len(ids)))
    boot = k_c[draws].sum(1) / n_c[draws].sum(1)
    v_c, v_b = float(boot.var()), p * (1 - p) / n
    deff = max(1.0, v_c / v_b) if v_c > 0 and v_b > 0 else n / patients
    n_eff = n / deff
    return {"value": p, "n": int(n), "patients": int(patients), "ci": list(wilson(p * n_eff, n_eff)),
            "design_effect": float(deff)}


def patient_level(y: np.ndarray, pred: np.ndarray, patients: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy and per-class sensitivity with patient-level intervals (`clustered_proportion`).
    Images without a patient id count as patients of their own."""
    y, pred = np.asarray(y), np.asarray(pred)
    pid = np.array([p if isinstance(p, str) and p else f"image-{i}" for i, p in enumerate(np.asarray(patients, dtype=object))])
    acc = clustered_proportion(y == pred, pid, n_boot=n_boot, seed=seed)
    out = {"patients": acc["patients"], "images": int(len(y)),
           "method": f"Wilson interval on the effective sample size (design effect from a {n_boot}-draw "
                     "cluster bootstrap over patients)",
           "accuracy": acc["value"], "accuracy_ci": acc["ci"], "design_effect": acc["design_effect"], "per_class": {}}
    for c, name in enumerate(CLASSES):
        m = y == c
        if not m.any():
            continue
        s = clustered_proportion(pred[m] == c, pid[m], n_boot=n_boot, seed=seed)
        out["per_class"][name] = {"n": s["n"], "patients": s["patients"], "sensitivity": s["value"],
                                  "sensitivity_ci": s["ci"], "design_effect": s["design_effect"]}
    return out


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
            v = m[key]
            counts = f" ({num}/{den})" if num is not None else ""
            return interval(v, m[key + "_ci"], k) + counts if not math.isnan(v) else "n/a"
        rows.append({
            "class": name, "n": m["n"],
            "sensitivity": fmt("sensitivity", m["tp"], m["tp"] + m["fn"]),
            "specificity": fmt("specificity", m["tn"], m["tn"] + m["fp"]),
            "PPV": fmt("ppv", m["tp"], m["tp"] + m["fp"]),
            "NPV": fmt("npv", m["tn"], m["tn"] + m["fn"]),
            "ROC-AUC": interval(m["auc"], m["auc_ci"], 1, 3),
        })
    return pd.DataFrame(rows).set_index("class")


def accuracy_from_proba(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(np.asarray(proba).argmax(1) == np.asarray(y)))


def class_sensitivity(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Each class's sensitivity (recall) at the argmax decision; nan for a class the labels do not
    have (nothing was measured: the one rule for a missing class, everywhere)."""
    y, pred = np.asarray(y), np.asarray(proba).argmax(1)
    return {c: float(np.mean(pred[y == k] == k)) if np.any(y == k) else math.nan for k, c in enumerate(CLASSES)}


def covid_vs_normal_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """ROC-AUC of P(COVID-19) among the COVID-19 and Normal films (nan without both)."""
    y, p = np.asarray(y), np.asarray(proba)
    covid, normal = CLASSES.index("COVID"), CLASSES.index("Normal")
    pair = np.isin(y, (covid, normal))
    return safe_auc((y[pair] == covid).astype(int), p[pair, covid])


def balanced_accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean sensitivity over the classes present."""
    y, pred = np.asarray(y), np.asarray(proba).argmax(1)
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)])) if len(y) else math.nan


def paired_difference(stat, y: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, n_boot: int = 1000,
                      seed: int = 0) -> tuple[float, tuple[float, float]]:
    """stat(a) - stat(b) on the same cases, with a class-stratified paired bootstrap 95% interval."""
    y, a, b = np.asarray(y), np.asarray(proba_a), np.asarray(proba_b)
    diff = stat(y, a) - stat(y, b)
    ci = bootstrap_ci(lambda yy, aa, bb: stat(yy, aa) - stat(yy, bb), y, a, b, n_boot=n_boot, seed=seed)
    return float(diff), ci


def difference_verdict(name: str, diff: float, ci: tuple[float, float], scale: float = 100,
                       unit: str = "points") -> str:
    """The verdict on a paired difference against a baseline: better or worse only when the whole
    95% interval lies on one side of zero, else 'no difference we can detect'."""
    lo, hi = ci
    shown = f"{scale * diff:+.2f} {unit}, interval [{scale * lo:+.2f}, {scale * hi:+.2f}]"
    if lo > 0:
        return f"{name}: better than the baseline ({shown})"
    if hi < 0:
        return f"{name}: worse than the baseline ({shown})"
    return f"{name}: no difference we can detect ({shown} spans 0)"


# --------------------------------------------------------------------------- calibration
def ece(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence, `bins` equal-width bins on [0, 1]."""
    y, proba = np.asarray(y), np.asarray(proba)
    if len(y) == 0:
        return math.nan
    conf, pred = proba.max(1), proba.argmax(1)
    correct = (pred == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Per-bin confidence, accuracy and count, for a reliability diagram."""
    conf, pred = proba.max(1), proba.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        rows.append({"lo": edges[b], "hi": edges[b + 1], "n": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else math.nan,
                     "accuracy": float((pred[m] == y[m]).mean()) if m.any() else math.nan})
    return pd.DataFrame(rows)


def temper(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softened (T > 1) or sharpened (T < 1): softmax(log p / T)."""
    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1)) / temperature
    logp -= logp.max(1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(1, keepdims=True)


def fit_temperature(y: np.ndarray, proba: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `proba` (fit it on validation)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y)
    if len(y) == 0:
        return 1.0

    def nll(log_t):
        p = temper(proba, math.exp(log_t))
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)))

    return float(math.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def by_group(groups: np.ndarray, y: np.ndarray, proba: np.ndarray, patients=None) -> dict:
    """Accuracy and per-class sensitivity within each group (a collection), with image and patient counts."""
    pred = np.asarray(proba).argmax(1)
    out = {}
    for g in sorted(set(groups)):
        m = groups == g
        k, n = int((pred[m] == y[m]).sum()), int(m.sum())
        row = {"n": n, "accuracy": proportion(k, n),
               "predicted": {c: int((pred[m] == i).sum()) for i, c in enumerate(CLASSES)},
               "per_class": {c: proportion(int(((pred == i) & (y == i) & m).sum()), int(((y == i) & m).sum()))
                             for i, c in enumerate(CLASSES) if ((y == i) & m).any()}}
        if patients is not None:
            pid = pd.Series(np.asarray(patients)[m]).replace("", np.nan)
            row["patients"] = int(pid.nunique()) if pid.notna().any() else None
            if row["patients"]:
                row["patient_level"] = patient_level(y[m], pred[m], np.asarray(patients)[m], n_boot=1000)
        out[str(g)] = row
    return out


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n, n), dtype=int)
    np.add.at(cm, (np.asarray(y), np.asarray(pred)), 1)
    return cm


def comparison_row(name: str, y: np.ndarray, proba: np.ndarray, train_seconds: float, images_per_second: float) -> dict:
    """One row of the model comparison table."""
    s = summary(y, proba, n_boot=200)
    covid = s["per_class"]["COVID"]
    return {"approach": name, "accuracy": round(s["accuracy"], 4), "macro AUC": round(s["macro_auc"], 4),
            "COVID sensitivity": round(covid["sensitivity"], 4), "COVID specificity": round(covid["specificity"], 4),
            "min class sensitivity": round(min(m["sensitivity"] for m in s["per_class"].values()), 4),
            "training wall time (min)": round(train_seconds / 60, 1),
            "inference (images/s)": round(images_per_second, 1)}


# --------------------------------------------------------------------------- operating points and decisions
def threshold_for_sensitivity(y_bin: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold t such that predicting `score >= t` reaches sensitivity >= target."""
    pos = np.sort(np.asarray(score)[np.asarray(y_bin).astype(bool)])[::-1]
    if len(pos) == 0:
        return math.nan
    k = max(1, math.ceil(target * len(pos)))  # this many positives must be at or above t
    return float(pos[k - 1])


def at_threshold(y_bin: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV and NPV (with counts and Wilson intervals) of `score >= threshold`."""
    y_bin = np.asarray(y_bin).astype(bool)
    hit = np.asarray(score) >= threshold
    tp, fn = int((y_bin & hit).sum()), int((y_bin & ~hit).sum())
    fp, tn = int((~y_bin & hit).sum()), int((~y_bin & ~hit).sum())
    return {"threshold": float(threshold), "tp": tp, "fn": fn, "fp": fp, "tn": tn,
            "sensitivity": proportion(tp, tp + fn), "specificity": proportion(tn, tn + fp),
            "ppv": proportion(tp, tp + fp), "npv": proportion(tn, tn + fn)}


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """PPV and NPV at a given prevalence (Bayes' rule)."""
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return (tp / (tp + fp) if tp + fp else math.nan, tn / (tn + fn) if tn + fn else math.nan)


# The operating points a deployment would use: (name, task, sensitivity target). Each threshold is
# chosen on the validation split and then measured, unchanged, on the test split (and on any
# other folder, such as an external set). "abnormal" = COVID-19, Lung Opacity or Viral Pneumonia
# against Normal, scored by 1 - P(Normal); "covid" = COVID-19 against the rest, scored by P(COVID).
OPERATING_POINTS = (
    ("abnormal@95", "abnormal", 0.95),
    ("abnormal@98", "abnormal", 0.98),
    ("abnormal@99", "abnormal", 0.99),
    ("covid@95", "covid", 0.95),
    ("covid@98", "covid", 0.98),
)
TASKS = {"abnormal": "abnormal (COVID-19, Lung Opacity or Viral Pneumonia) vs Normal",
         "covid": "COVID-19 vs the rest"}


def task_scores(task: str, y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(binary truth, score) of a two-class task derived from the four-class output."""
    y, proba = np.asarray(y), np.asarray(proba, dtype=np.float64)
    if task == "abnormal":
        normal = CLASSES.index("Normal")
        return y != normal, 1.0 - proba[:, normal]
    if task == "covid":
        covid = CLASSES.index("COVID")
        return y == covid, proba[:, covid]
    raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")


def operating_point_rules(points: dict) -> dict:
    """Operating points trimmed to what decides them (task, target sensitivity, threshold): what a
    checkpoint carries and another evaluation reuses, without the numbers measured at them."""
    return {k: {kk: op[kk] for kk in ("task", "target_sensitivity", "threshold")} for k, op in points.items()}


def choose_operating_points(y_val: np.ndarray, proba_val: np.ndarray, points=OPERATING_POINTS) -> dict:
    """Thresholds for each named operating point, chosen on validation (labels, calibrated probabilities)."""
    out = {}
    for name, task, target in points:
        truth, score = task_scores(task, y_val, proba_val)
        t = threshold_for_sensitivity(truth, score, target)
        out[name] = {"task": task, "target_sensitivity": target, "threshold": t,
                     "validation": at_threshold(truth, score, t)}
    return out


def measure_operating_points(points: dict, y: np.ndarray, proba: np.ndarray, label: str = "test") -> dict:
    """The chosen operating points (from `choose_operating_points`) measured on other data, unchanged."""
    out = {}
    for name, op in points.items():
        truth, score = task_scores(op["task"], y, proba)
        out[name] = {**op, label: at_threshold(truth, score, op["threshold"])}
    return out


def operating_point_table(points: dict, where: str = "test") -> pd.DataFrame:
    """The operating points as a table for the page: threshold, sensitivity and specificity with intervals."""
    rows = []
    for name, op in points.items():
        m = op[where]

        def fmt(key):
            v = m[key]
            return (f"{100 * v['value']:.1f} [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}] ({v['k']}/{v['n']})"
                    if v["n"] else "n/a")
        rows.append({"operating point": name, "task": op["task"], "target (val)": f"{op['target_sensitivity']:.0%}",
                     "threshold": round(op["threshold"], 4), "sensitivity %": fmt("sensitivity"),
                     "specificity %": fmt("specificity")})
    return pd.DataFrame(rows).set_index("operating point")


def net_benefit(y_bin: np.ndarray, score: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Decision curve: net benefit of the model, treat-all and treat-none at each threshold probability."""
    y_bin = np.asarray(y_bin).astype(bool)
    n, prev = len(y_bin), y_bin.mean()
    rows = []
    for t in thresholds:
        hit = np.asarray(score) >= t
        odds = t / (1 - t)
        rows.append({"threshold": t, "model": (y_bin & hit).sum() / n - (~y_bin & hit).sum() / n * odds,
                     "treat all": prev - (1 - prev) * odds, "treat none": 0.0})
    return pd.DataFrame(rows)


def one_vs_rest_curves(y: np.ndarray, p: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Each class's ROC (fpr, tpr, and the probability threshold of each point) and precision-recall
    (precision, recall) curves, one-vs-rest."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    out = {}
    for c, name in enumerate(CLASSES):
        fpr, tpr, thresholds = roc_curve(np.asarray(y) == c, p[:, c])
        precision, recall, _ = precision_recall_curve(np.asarray(y) == c, p[:, c])
        out[name] = {"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0), "precision": precision,
                     "recall": recall}
    return out
