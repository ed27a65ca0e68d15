"""Metrics and intervals against scikit-learn / statsmodels and hand-computed values, and the tool."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import write_dataset
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from cxr.assess import evaluate
from cxr.core import metrics
from cxr.core.config import CLASSES, get_config
from cxr.train import run as train


@pytest.mark.parametrize("k,n", [(363, 542), (0, 10), (10, 10), (1, 3), (95, 100)])
def test_wilson_matches_statsmodels(k, n):
    lo, hi = metrics.wilson(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert lo == pytest.approx(ref[0], abs=1e-9) and hi == pytest.approx(ref[1], abs=1e-9)


def test_wilson_empty():
    assert all(math.isnan(v) for v in metrics.wilson(0, 0))


def test_summary_by_hand():
    # 3 classes present of 4; rows: true, predicted
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 2, 0])
    proba = np.full((10, 4), 0.01)
    proba[np.arange(10), pred] = 0.97
    s = metrics.summary(y, proba, n_boot=50)
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
    assert metrics.macro_auc(y, proba) == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    lo, hi = metrics.bootstrap_ci(metrics.macro_auc, y, proba, n_boot=200)
    assert lo < metrics.macro_auc(y, proba) < hi


@pytest.mark.parametrize("seed", range(6))
def test_fast_auc_and_average_precision_match_sklearn(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    score = np.round(rng.random(n), int(rng.integers(1, 4)))  # coarse scores: many ties
    if seed == 0:
        score[:] = 0.5  # every case tied
    if 0 < y.sum() < n:
        assert metrics.safe_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    else:
        assert math.isnan(metrics.safe_auc(y, score))
    if y.sum():
        assert metrics.safe_ap(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert math.isnan(metrics.safe_ap(np.zeros(5, bool), np.arange(5.0)))
    assert math.isnan(metrics.safe_auc(np.ones(5, bool), np.arange(5.0)))


def test_all_predictions_one_class():
    y = np.array([0, 1, 2, 3, 2, 2])
    proba = np.tile([0.1, 0.1, 0.7, 0.1], (6, 1))
    s = metrics.summary(y, proba, n_boot=20)
    assert s["per_class"]["Normal"]["sensitivity"] == 1.0
    assert s["per_class"]["Normal"]["specificity"] == 0.0
    assert math.isnan(s["per_class"]["COVID"]["ppv"])  # never predicted
    assert s["per_class"]["COVID"]["auc"] == 0.5  # constant scores


def test_ece_by_hand():
    # two bins used: conf 0.9 (4 cases, 3 right) and conf 0.6 (2 cases, 1 right)
    proba = np.array([[0.9, 0.1, 0, 0]] * 4 + [[0.6, 0.4, 0, 0]] * 2)
    y = np.array([0, 0, 0, 1, 0, 1])
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(0.5 - 0.6)
    assert metrics.ece(y, proba) == pytest.approx(expected)
    assert metrics.ece(np.array([0, 0]), np.array([[1.0, 0, 0, 0]] * 2)) == 0.0


def test_temperature_softens_an_overconfident_model():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), y] += 1.0
    proba = metrics.temper(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1 / 3)  # 3x overconfident
    t = metrics.fit_temperature(y, proba)
    assert t == pytest.approx(3.0, rel=0.15)
    assert metrics.ece(y, metrics.temper(proba, t)) < metrics.ece(y, proba)


def test_paired_difference_of_identical_models_is_zero():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 100)
    p = rng.dirichlet(np.ones(4), 100)
    d, (lo, hi) = metrics.paired_difference(metrics.accuracy_from_proba, y, p, p, n_boot=50)
    assert d == 0 and lo == 0 and hi == 0


def tiny_run(tmp_path: Path, monkeypatch, per_class: int):
    """A one-epoch model on a small synthetic dataset (the dataset, its config and the run)."""
    ds = write_dataset(tmp_path / "train", per_class=per_class)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    cfg = get_config("full", epochs=1, views=1, input_size=64, image_size=64, batch_size=8,
                     cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    return ds, cfg, train.fit("finetune", cfg, progress=False)


def test_evaluate_folder_tool(home: Path, tmp_path: Path, monkeypatch):
    ds, cfg, run = tiny_run(tmp_path, monkeypatch, per_class=8)
    hospital = write_dataset(tmp_path / "hospital", per_class=3, ext=".jpg")
    (hospital / "Normal" / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (hospital / "COVID" / "images" / "scan.dcm").write_bytes(b"DICM")
    cv2.imwrite(str(hospital / "Normal" / "images" / "colour.png"), np.dstack([np.full((80, 80), v, np.uint8)
                                                                            for v in (10, 200, 90)]))
    out = tmp_path / "report" / "eval.json"
    r = evaluate.evaluate_folder(hospital, run.checkpoint, out, progress=False, n_boot=50, config=cfg)
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
    from cxr.model import registry

    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "no-runs"))
    monkeypatch.setattr(registry, "SHIPPED", tmp_path / "not-shipped.pt")
    with pytest.raises(registry.MissingModel, match="cxr train"):
        registry.default_checkpoint(get_config())


def test_without_a_run_the_shipped_model_is_used(home: Path, tmp_path: Path, monkeypatch):
    from cxr.model import registry

    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "no-runs"))
    monkeypatch.delenv(registry.MODEL_ENV, raising=False)
    assert registry.default_checkpoint(get_config()) == registry.SHIPPED


def test_operating_points_chosen_on_validation_reach_their_target():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(0, 1, (400, 4))
    logits[np.arange(400), y] += 1.5
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    chosen = metrics.choose_operating_points(y, proba)
    assert set(chosen) == {name for name, _, _ in metrics.OPERATING_POINTS}
    for name, op in chosen.items():
        assert op["validation"]["sensitivity"]["value"] >= op["target_sensitivity"]
    # a stricter target never has a higher threshold (flags at least as many studies)
    assert chosen["abnormal@99"]["threshold"] <= chosen["abnormal@98"]["threshold"] <= chosen["abnormal@95"]["threshold"]
    # measured unchanged on the same data gives the same counts
    again = metrics.measure_operating_points(chosen, y, proba, label="measured")
    for name in chosen:
        assert again[name]["measured"]["tp"] == chosen[name]["validation"]["tp"]
    truth, score = metrics.task_scores("abnormal", y, proba)
    assert np.array_equal(truth, y != CLASSES.index("Normal"))
    assert np.allclose(score, 1 - proba[:, CLASSES.index("Normal")])
    with pytest.raises(ValueError, match="unknown task"):
        metrics.task_scores("pneumothorax", y, proba)


def test_operating_points_by_hand():
    # validation: 4 positives scored 0.9, 0.8, 0.7, 0.2; 95% sensitivity needs all 4, so t = 0.2
    y_val = np.array([0, 0, 0, 0, 2, 2])
    p_val = np.zeros((6, 4))
    p_val[:, 0] = [0.9, 0.8, 0.7, 0.2, 0.3, 0.1]
    p_val[:, 2] = 1 - p_val[:, 0]
    chosen = metrics.choose_operating_points(y_val, p_val, points=(("covid@95", "covid", 0.95),))
    assert chosen["covid@95"]["threshold"] == pytest.approx(0.2)
    assert chosen["covid@95"]["validation"]["fp"] == 1  # the normal at 0.3
    # on other data: two positives at 0.5 and 0.1, one negative at 0.25
    y = np.array([0, 0, 2])
    p = np.zeros((3, 4))
    p[:, 0] = [0.5, 0.1, 0.25]
    p[:, 2] = 1 - p[:, 0]
    m = metrics.measure_operating_points(chosen, y, p, label="measured")["covid@95"]["measured"]
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (1, 1, 1, 0)


def test_evaluate_applies_validation_thresholds_elsewhere(home: Path, tmp_path: Path, monkeypatch):
    ds, cfg, run = tiny_run(tmp_path, monkeypatch, per_class=12)
    record = evaluate.evaluate_folder(ds, run.checkpoint, tmp_path / "eval.json", progress=False, n_boot=20,
                                      split="test", config=cfg)
    ops = record["operating_points"]
    assert set(ops) == {name for name, _, _ in metrics.OPERATING_POINTS}
    assert all("validation" in op and "measured" in op for op in ops.values())
    assert "operating points" in (tmp_path / "eval.txt").read_text()
    other = write_dataset(tmp_path / "elsewhere", per_class=3, ext=".jpg")
    files = sorted(str(p.relative_to(other)) for p in other.rglob("*.jpg"))
    pd.DataFrame({"file": files, "collection": ["a" if i % 2 else "b" for i in range(len(files))],
                  "patientid": [str(i // 4) for i in range(len(files))]}).to_csv(other / "manifest.csv", index=False)
    ext = evaluate.evaluate_folder(other, run.checkpoint, progress=False, n_boot=20, config=cfg,
                                   thresholds_from=tmp_path / "eval.json")
    for name, op in ext["operating_points"].items():
        assert op["threshold"] == ops[name]["threshold"]
        assert op["measured"]["tp"] + op["measured"]["fn"] + op["measured"]["fp"] + op["measured"]["tn"] == 12
    assert set(ext["by_collection"]) == {"a", "b"}
    assert sum(g["n"] for g in ext["by_collection"].values()) == 12
    assert ext["by_collection"]["a"]["patients"] == 3  # several images per patient are counted once
    # patient ids repeat across collections: patients are told apart by collection too
    assert ext["patient_level"]["patients"] == 6 and ext["patient_level"]["images"] == 12
    assert "patient-level intervals (6 patients" in evaluate.format_summary(ext)
    from cxr.report import prose

    tables = prose.external_tables(ext, record)
    assert list(tables["per_class"].index) == list(metrics.CLASSES) and len(tables["by_collection"]) == 2
    assert tables["confusion"].to_numpy().sum() == 12
    text = prose.external_text(ext, record)
    assert text["ext_images"] == "12" and text["ext_patients"] == "6" and "ext_acc_a" in text
    with pytest.raises(ValueError, match="no operating points"):
        evaluate.evaluate_folder(other, run.checkpoint, progress=False, n_boot=20, config=cfg, thresholds_from=ext)
    with pytest.raises(FileNotFoundError, match="cxr evaluate"):
        evaluate.evaluate_folder(other, run.checkpoint, progress=False, config=cfg,
                                 thresholds_from=tmp_path / "missing.json")


def test_predictive_values_by_bayes():
    ppv, npv = metrics.predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18)) and npv == pytest.approx(0.72 / (0.72 + 0.01))
    assert metrics.predictive_values(1.0, 1.0, 0.3) == (1.0, 1.0)


def test_net_benefit_by_hand():
    y = np.array([1, 1, 0, 0, 0])
    score = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    nb = metrics.net_benefit(y, score, np.array([0.5])).iloc[0]
    # at t = 0.5: TP 1, FP 1 of 5; odds 1 -> 1/5 - 1/5 = 0; treat all: 2/5 - 3/5 = -0.2
    assert nb.model == pytest.approx(0.0) and nb["treat all"] == pytest.approx(-0.2) and nb["treat none"] == 0


def test_at_threshold_counts_and_intervals():
    r = metrics.at_threshold(np.array([1, 1, 1, 0, 0]), np.array([0.9, 0.5, 0.1, 0.5, 0.2]), 0.5)
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (2, 1, 1, 1)
    assert r["sensitivity"]["value"] == pytest.approx(2 / 3) and r["sensitivity"]["ci"][0] < 2 / 3 < r["sensitivity"]["ci"][1]
    assert metrics.threshold_for_sensitivity(np.array([1, 1, 1, 1]), np.array([0.4, 0.3, 0.2, 0.1]), 0.75) == 0.2


def test_patient_level_intervals_widen_when_images_of_one_patient_agree():
    """Ten patients with ten images each, every patient all right or all wrong: 100 images but only
    ten independent pieces of evidence, so the patient-level interval is much wider than Wilson's."""
    from cxr.core import metrics

    y = np.repeat(np.arange(10) % 2 * 2, 10)  # COVID and Normal patients
    right = np.repeat(np.arange(10) < 5, 10)
    pred = np.where(right, y, 3)
    patients = np.repeat([f"p{k}" for k in range(10)], 10)
    pl = metrics.patient_level(y, pred, patients, n_boot=500)
    lo, hi = pl["accuracy_ci"]
    w_lo, w_hi = metrics.wilson(50, 100)
    assert pl["patients"] == 10 and pl["accuracy"] == 0.5
    assert hi - lo > 2 * (w_hi - w_lo)
    assert pl["per_class"]["COVID"]["patients"] == 5
    # without ids every image is its own patient, and the interval is close to the image-level one
    alone = metrics.patient_level(y, pred, np.array([""] * 100, dtype=object), n_boot=500)
    assert alone["patients"] == 100 and alone["accuracy_ci"][1] - alone["accuracy_ci"][0] < 1.5 * (w_hi - w_lo)
    # all right within a class: the interval does not collapse to a point
    perfect = metrics.clustered_proportion(np.ones(20), np.repeat(["a", "b", "c", "d"], 5))
    assert perfect["value"] == 1 and perfect["ci"][0] < 0.75 and perfect["design_effect"] == 5


def test_difference_verdict_needs_the_whole_interval_on_one_side():
    from cxr.core.metrics import difference_verdict

    assert "better" in difference_verdict("x", 0.02, (0.001, 0.04))
    assert "worse" in difference_verdict("x", -0.02, (-0.04, -0.001))
    spans = difference_verdict("x", 0.02, (-0.001, 0.04))
    assert "no difference" in spans and "+2.00 points" in spans


def test_per_class_table_keeps_each_interval_on_one_line():
    import numpy as np

    from cxr.core.metrics import per_class_table, summary

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    p = rng.dirichlet(np.ones(4), 40) + np.eye(4)[y]
    t = per_class_table(summary(y, p / p.sum(1, keepdims=True), n_boot=50))
    cell = t.loc["COVID", "sensitivity"]
    assert cell.endswith("/10)") and ",\u00a0" in cell and cell.count(" [") == 1
