"""What chapter 04 states about the final model, computed from the evaluation record
(`cxr.report.records.evaluation_record`: `cxr evaluate --split test`) and, for the curves, the model's test
probabilities at the record's temperature: the calibration verdict, the comparison with the
original project (with intervals from its reported rates), the COVID-19 operating points chosen on
validation, the decision-curve range and the error breakdown."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.core import metrics, targets
from cxr.core.config import CLASSES

# The original project's test split: 15% of each class of the Kaggle database, whose class sizes
# are these (the post reports rates only; its counts are rebuilt from them)
KAGGLE_CLASS_SIZES = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}
ORIGINAL_TEST_SHARE = 0.15
PREVALENCES = (0.01, 0.05, 0.10, 0.20)


def ece_verdict(record: dict) -> str:
    """"met" when the temperature-scaled calibration error is within the target, else "missed"."""
    return "met" if record["ece"] <= targets.ECE_AFTER_SCALING else "missed"


def original_counts() -> dict[str, int]:
    """The original project's test images per class (15% of each Kaggle class)."""
    return {c: round(ORIGINAL_TEST_SHARE * n) for c, n in KAGGLE_CLASS_SIZES.items()}


def original_intervals() -> dict:
    """Approximate 95% Wilson intervals of the original project's reported rates, from the counts
    they imply on its test split: accuracy, and per class sensitivity, specificity and PPV."""
    n = original_counts()
    total = sum(n.values())
    out = {"accuracy": metrics.wilson(round(metrics.ORIGINAL_PROJECT["accuracy"] * total), total), "per_class": {}}
    for c in CLASSES:
        o = metrics.ORIGINAL_PROJECT["per_class"][c]
        pos, neg = n[c], total - n[c]
        tp, tn = round(o["sensitivity"] * pos), round(o["specificity"] * neg)
        out["per_class"][c] = {"sensitivity": metrics.wilson(tp, pos), "specificity": metrics.wilson(tn, neg),
                               "ppv": metrics.wilson(tp, tp + neg - tn)}
    return out


def _overlap(a, b) -> bool:
    return not (a[0] > b[1] or a[1] < b[0])


def original_comparison(record: dict) -> pd.DataFrame:
    """The final model against the original project, metric by metric, with both intervals where
    the original's can be rebuilt and whether they overlap."""
    orig, ci = metrics.ORIGINAL_PROJECT, original_intervals()

    def row(cls, metric, original, ours, ours_ci, original_ci, digits=3):
        return {"class": cls, "metric": metric, "original": round(original, digits), "ours": round(ours, digits),
                "difference": round(ours - original, digits),
                "ours 95% CI": f"[{ours_ci[0]:.{digits}f}, {ours_ci[1]:.{digits}f}]",
                "original ~95% CI": (f"[{original_ci[0]:.{digits}f}, {original_ci[1]:.{digits}f}]"
                                     if original_ci is not None else "not reported"),
                "intervals overlap": ("yes" if _overlap(ours_ci, original_ci) else "no") if original_ci is not None
                else "no interval to compare"}

    rows = [row("all", "accuracy", orig["accuracy"], record["accuracy"], record["accuracy_ci"], ci["accuracy"]),
            row("all", "macro ROC-AUC", orig["macro_auc"], record["macro_auc"], record["macro_auc_ci"], None, 4)]
    for c in CLASSES:
        o, m = orig["per_class"][c], record["per_class"][c]
        for k in ("sensitivity", "specificity", "ppv", "auc"):
            rows.append(row(c.replace("_", " "), METRIC_NAMES[k], o[k], m[k], m[f"{k}_ci"], ci["per_class"][c].get(k)))
    return pd.DataFrame(rows).set_index(["class", "metric"])


#: the table's names for the metrics (the records keep the short keys)
METRIC_NAMES = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV", "auc": "ROC-AUC"}


def covid_operating_points(record: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The record's COVID-19 operating points (chosen on validation, measured on test), and the
    predictive values they would have at other prevalences."""
    ops, prev = [], []
    for name, op in record.get("operating_points", {}).items():
        if op["task"] != "covid":
            continue
        m = op["measured"]
        ops.append({"target sensitivity (val)": f"{op['target_sensitivity']:.0%}", "threshold": round(op["threshold"], 4),
                    **{(f"{k} %" if k in ("sensitivity", "specificity") else f"{k.upper()} %"):
                       f"{100 * m[k]['value']:.1f} [{100 * m[k]['ci'][0]:.1f}, {100 * m[k]['ci'][1]:.1f}] "
                       f"({m[k]['k']}/{m[k]['n']})" for k in ("sensitivity", "specificity", "ppv", "npv")}})
        for p in PREVALENCES:
            ppv, npv = metrics.predictive_values(m["sensitivity"]["value"], m["specificity"]["value"], p)
            prev.append({"operating point": f"sens >= {op['target_sensitivity']:.0%} on val", "prevalence": f"{p:.0%}",
                         "PPV %": round(100 * ppv, 1), "NPV %": round(100 * npv, 2)})
    return (pd.DataFrame(ops).set_index("target sensitivity (val)"),
            pd.DataFrame(prev).set_index(["operating point", "prevalence"]))


def decision_curve(y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | None = None) -> tuple[pd.DataFrame, str]:
    """Net benefit of COVID-19 vs rest against treat-all and treat-none, and the range of
    thresholds where the model beats both (as a phrase for the page)."""
    covid = CLASSES.index("COVID")
    thresholds = np.linspace(0.01, 0.6, 60) if thresholds is None else thresholds
    dca = metrics.net_benefit(np.asarray(y) == covid, np.asarray(proba)[:, covid], thresholds)
    better = dca[(dca.model > dca["treat all"]) & (dca.model > 0)]
    if not len(better):
        return dca, "at no threshold"
    return dca, f"for every threshold from {better.threshold.min():.2f} to {better.threshold.max():.2f}"


def errors(test: pd.DataFrame, proba: np.ndarray) -> pd.DataFrame:
    """The test rows with the prediction, its confidence and whether it is wrong."""
    y = test.label.map(CLASSES.index).to_numpy()
    return test.assign(pred=[CLASSES[i] for i in proba.argmax(1)], confidence=proba.max(1), wrong=proba.argmax(1) != y)


def error_breakdown(test: pd.DataFrame, proba: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mistakes by (true, predicted) pair, and the error rate by class, processing chain and source."""
    t = errors(test, proba)
    pairs = t[t.wrong].groupby(["label", "pred"]).size().rename("mistakes").sort_values(ascending=False).to_frame()
    by_source = t.groupby(["label", "chain", "source"]).agg(images=("wrong", "size"), mistakes=("wrong", "sum"))
    by_source["error rate %"] = (100 * by_source.mistakes / by_source.images).round(2)
    return pairs, by_source
