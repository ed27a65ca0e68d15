"""Chapter 04's statements, from an evaluation record and test probabilities (`cxr.assess.clinical`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.assess import clinical
from cxr.core import metrics, targets
from cxr.core.config import CLASSES


def record(accuracy=0.95, ece=0.01, auc=0.99) -> dict:
    per = {c: {"sensitivity": 0.9, "sensitivity_ci": [0.85, 0.93], "specificity": 0.97, "specificity_ci": [0.96, 0.98],
               "ppv": 0.9, "ppv_ci": [0.86, 0.93], "auc": auc, "auc_ci": [auc - 0.01, min(1, auc + 0.01)]}
           for c in CLASSES}
    return {"accuracy": accuracy, "accuracy_ci": [accuracy - 0.01, accuracy + 0.01], "macro_auc": auc,
            "macro_auc_ci": [auc - 0.005, min(1, auc + 0.005)], "ece": ece, "per_class": per}


def test_the_calibration_verdict_follows_the_number():
    assert clinical.ece_verdict(record(ece=targets.ECE_AFTER_SCALING / 2)) == "met"
    assert clinical.ece_verdict(record(ece=targets.ECE_AFTER_SCALING * 2)) == "missed"


def test_the_original_projects_intervals_come_from_its_rates_and_the_kaggle_class_sizes():
    n = clinical.original_counts()
    assert n == {"COVID": 542, "Lung_Opacity": 902, "Normal": 1529, "Viral Pneumonia": 202}
    assert metrics.ORIGINAL_PROJECT["covid_sensitivity_counts"] == (round(0.670 * n["COVID"]), n["COVID"])
    ci = clinical.original_intervals()
    lo, hi = ci["accuracy"]
    assert lo < metrics.ORIGINAL_PROJECT["accuracy"] < hi and hi - lo < 0.04


def test_the_comparison_says_whether_intervals_overlap():
    far = clinical.original_comparison(record(accuracy=0.95))
    assert far.loc[("all", "accuracy"), "intervals overlap"] == "no"
    near = clinical.original_comparison(record(accuracy=0.69))
    assert near.loc[("all", "accuracy"), "intervals overlap"] == "yes"
    assert near.loc[("all", "macro ROC-AUC"), "intervals overlap"] == "no interval to compare"
    assert ("Lung Opacity", "PPV") in near.index
    assert near.loc[("all", "macro ROC-AUC"), "original ~95% CI"] == "not reported"
    assert set(far.index.get_level_values("metric")) >= {"sensitivity", "specificity", "PPV", "ROC-AUC"}


def test_the_decision_curve_range_is_none_for_a_useless_model_and_wide_for_a_perfect_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(CLASSES), 400)
    perfect = np.eye(len(CLASSES))[y] * 0.97 + 0.01
    _, text = clinical.decision_curve(y, perfect)
    assert text.startswith("for every threshold from") and text.endswith("to 0.60")
    useless = np.full((len(y), len(CLASSES)), 1 / len(CLASSES))
    assert clinical.decision_curve(y, useless)[1] == "at no threshold"


def test_the_error_breakdown_counts_each_mistake_once():
    test = pd.DataFrame({"label": ["COVID", "COVID", "Normal", "Normal"], "chain": ["a", "a", "b", "b"],
                         "source": ["s", "s", "t", "t"]})
    p = np.eye(len(CLASSES))[[0, 2, 2, 0]]
    pairs, by_source = clinical.error_breakdown(test, p)
    assert pairs.mistakes.sum() == 2 and by_source.mistakes.sum() == 2
    assert list(by_source["error rate %"]) == [50.0, 50.0]


def test_the_covid_operating_points_come_from_the_record():
    m = {k: {"value": 0.9, "ci": [0.8, 0.95], "k": 9, "n": 10} for k in ("sensitivity", "specificity", "ppv", "npv")}
    rec = {"operating_points": {"covid@95": {"task": "covid", "target_sensitivity": 0.95, "threshold": 0.3, "measured": m},
                                "abnormal@95": {"task": "abnormal", "target_sensitivity": 0.95, "threshold": 0.5,
                                                "measured": m}}}
    ops, by_prev = clinical.covid_operating_points(rec)
    assert list(ops.index) == ["95%"] and ops.threshold.iloc[0] == 0.3
    assert len(by_prev) == len(clinical.PREVALENCES)
