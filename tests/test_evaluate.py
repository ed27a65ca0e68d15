"""Metrics and intervals against scikit-learn / statsmodels and hand-computed values, and the tool."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from cxr import evaluate, train
from cxr.config import get_config
from conftest import write_dataset


@pytest.mark.parametrize("k,n", [(363, 542), (0, 10), (10, 10), (1, 3), (95, 100)])
def test_wilson_matches_statsmodels(k, n):
    lo, hi = evaluate.wilson(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert lo == pytest.approx(ref[0], abs=1e-9) and hi == pytest.approx(ref[1], abs=1e-9)


def test_wilson_empty():
    assert all(math.isnan(v) for v in evaluate.wilson(0, 0))


def test_summary_by_hand():
    # 3 classes present of 4; rows: true, predicted
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 2, 0])
    proba = np.full((10, 4), 0.01)
    proba[np.arange(10), pred] = 0.97
    s = evaluate.summary(y, proba, n_boot=50)
    assert s["accuracy"] == pytest.approx(7 / 10) and s["correct"] == 7
    covid = s["per_class"]["COVID"]
    assert (covid["tp"], covid["fn"], covid["fp"], covid["tn"]) == (2, 1, 1, 6)
    assert covid["sensitivity"] == pytest.approx(2 / 3) and covid["specificity"] == pytest.approx(6 / 7)
    assert covid["ppv"] == pytest.approx(2 / 3) and covid["npv"] == pytest.approx(6 / 7)
    assert covid["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert covid["auc"] == pytest.approx(roc_auc_score(y == 0, proba[:, 0]))
    # Viral Pneumonia has no positives: undefined, not a crash and not a made-up number
    vp = s["per_class"]["Viral Pneumonia"]
    assert vp["n"] == 0 and math.isnan(vp["sensitivity"]) and math.isnan(vp["auc"]) and math.isnan(vp["ppv"])
    assert vp["specificity"] == 1.0
    present = [0, 1, 2]
    ref = np.mean([roc_auc_score(y == c, proba[:, c]) for c in present])
    assert s["macro_auc"] == pytest.approx(ref)


def test_macro_auc_matches_sklearn_ovr():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    proba = rng.dirichlet(np.ones(4), 300)
    proba[np.arange(300), y] += 0.3
    proba /= proba.sum(1, keepdims=True)
    assert evaluate.macro_auc(y, proba) == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    lo, hi = evaluate.bootstrap_ci(evaluate.macro_auc, y, proba, n_boot=200)
    assert lo < evaluate.macro_auc(y, proba) < hi


def test_all_predictions_one_class():
    y = np.array([0, 1, 2, 3, 2, 2])
    proba = np.tile([0.1, 0.1, 0.7, 0.1], (6, 1))
    s = evaluate.summary(y, proba, n_boot=20)
    assert s["per_class"]["Normal"]["sensitivity"] == 1.0
    assert s["per_class"]["Normal"]["specificity"] == 0.0
    assert math.isnan(s["per_class"]["COVID"]["ppv"])  # never predicted
    assert s["per_class"]["COVID"]["auc"] == 0.5  # constant scores


def test_ece_by_hand():
    # two bins used: conf 0.9 (4 cases, 3 right) and conf 0.6 (2 cases, 1 right)
    proba = np.array([[0.9, 0.1, 0, 0]] * 4 + [[0.6, 0.4, 0, 0]] * 2)
    y = np.array([0, 0, 0, 1, 0, 1])
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(0.5 - 0.6)
    assert evaluate.ece(y, proba) == pytest.approx(expected)
    assert evaluate.ece(np.array([0, 0]), np.array([[1.0, 0, 0, 0]] * 2)) == 0.0


def test_temperature_softens_an_overconfident_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), y] += 1.0
    proba = evaluate.temper(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1 / 3)  # 3x overconfident
    t = evaluate.fit_temperature(y, proba)
    assert t == pytest.approx(3.0, rel=0.15)
    assert evaluate.ece(y, evaluate.temper(proba, t)) < evaluate.ece(y, proba)


def test_paired_difference_of_identical_models_is_zero():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 100)
    p = rng.dirichlet(np.ones(4), 100)
    d, (lo, hi) = evaluate.paired_difference(evaluate.accuracy_from_proba, y, p, p, n_boot=50)
    assert d == 0 and lo == 0 and hi == 0


def test_evaluate_folder_tool(home: Path, tmp_path: Path, monkeypatch):
    ds = write_dataset(tmp_path / "train", per_class=8)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    cfg = get_config("full", epochs=1, views=1, input_size=64, image_size=64, batch_size=8,
                     cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    run = train.fit("finetune", cfg, progress=False)
    hospital = write_dataset(tmp_path / "hospital", per_class=3, ext=".jpg")
    (hospital / "Normal" / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (hospital / "COVID" / "images" / "scan.dcm").write_bytes(b"DICM")
    cv2.imwrite(str(hospital / "Normal" / "images" / "colour.png"), np.dstack([np.full((80, 80), v, np.uint8)
                                                                            for v in (10, 200, 90)]))
    out = tmp_path / "report" / "eval.json"
    r = evaluate.evaluate_folder(hospital, run.checkpoint, out, progress=False, n_boot=50)
    saved = json.loads(out.read_text())
    assert saved["n"] == 13 and r["n"] == 13
    for key in ("accuracy", "accuracy_ci", "macro_auc", "macro_auc_ci", "ece", "per_class", "skipped"):
        assert key in saved
    for key in ("n", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "ppv", "npv", "auc", "auc_ci"):
        assert key in saved["per_class"]["COVID"]
    reasons = {Path(s["file"]).name: s["reason"] for s in saved["skipped"]}
    assert "not a decodable image" in reasons["broken.jpg"] and "not an image file name" in reasons["scan.dcm"]
    assert out.with_suffix(".txt").read_text().startswith("cxr evaluate:")
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 14


def test_evaluate_without_model_says_what_to_do(home: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "no-runs"))
    with pytest.raises(FileNotFoundError, match="cxr train"):
        evaluate.default_checkpoint()
