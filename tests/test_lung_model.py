"""The lung model comparison: the occlusion pair, the real-lung masks, the record's table and the
target check, on synthetic numbers and images where the answer is known."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cxr.core.config import CLASSES
from cxr.report import lung_experiment


def test_the_occlusion_pair_falls_to_chance_for_a_model_that_reads_only_the_lungs():
    rng = np.random.default_rng(0)
    n = 40
    y = np.arange(n) % 4
    lungs = np.zeros((n, 16, 16), bool)
    lungs[:, 4:12, 2:7] = lungs[:, 4:12, 9:14] = True
    px = rng.integers(0, 30, (n, 16, 16)).astype(np.uint8)
    for i in range(n):
        px[i][lungs[i]] = 60 + 40 * y[i]  # the class is written in the lungs only

    def reads_lungs(images):
        level = np.array([im[4:12, 2:7].mean() for im in images])
        k = np.clip(np.round((level - 60) / 40), 0, 3).astype(int)
        return np.eye(4)[k]

    o = lung_experiment.occlusion_pair(reads_lungs, px, y, lungs)
    assert o["as_is_balanced_accuracy"] == 1.0 and o["lungs_only_balanced_accuracy"] == 1.0
    assert o["lungs_hidden_balanced_accuracy"] == pytest.approx(0.25)


def test_a_failed_mask_is_replaced_by_the_mean_of_those_that_passed(monkeypatch):
    from test_lungs import two_lungs

    from cxr.data import segmenter

    good, empty = two_lungs(64), np.zeros((64, 64), bool)
    monkeypatch.setattr(segmenter, "segment", lambda seg, images: [good, empty, good])
    masks, replaced = segmenter.lung_fields(np.zeros((3, 64, 64), np.uint8), model=object())
    assert replaced == 1 and (masks[1] == good).all()


def _row(name, hidden, only=0.9, acc=0.95, ext_normals=5):
    numbers = {"accuracy": acc, "accuracy_ci": [acc - 0.01, acc + 0.01], "balanced_accuracy": acc,
               "macro_auc": 0.99, "macro_auc_ci": [0.98, 0.995], "sensitivity": {c: 0.95 for c in CLASSES},
               "covid_sensitivity_ci": [0.9, 0.97], "twin_agreement": 0.98, "twins": 100,
               "occlusion": {"as_is_balanced_accuracy": 0.95, "lungs_hidden_balanced_accuracy": hidden,
                             "lungs_only_balanced_accuracy": only, "as_is_accuracy": acc,
                             "lungs_hidden_accuracy": hidden, "lungs_only_accuracy": only}}
    return {"name": name, "input": "crop", "val": numbers, "test": numbers,
            "cam_energy": {"lung": 0.6}, "external": {"accuracy": 0.4, "accuracy_ci": [0.3, 0.5], "normals": 32,
                                                       "normals_called_covid": ext_normals},
            "site_before_adaptation": {"false_covid": 0.1, "false_covid_ci": [0.05, 0.15]}}


def test_the_record_chooses_by_validation_and_its_table_names_the_chosen_model():
    rec = lung_experiment.comparison([_row("whole", 0.88), _row("lungs", 0.30)], "full")
    assert rec["chosen"] == "lungs"
    t = lung_experiment.table(rec)
    assert list(t.columns) == ["whole", "lungs (chosen)"] and t.loc["lungs hidden (balanced)", "lungs (chosen)"] == "30.0%"
    assert t.loc["external normals called COVID-19", "whole"] == "5 of 32"


def test_the_target_check_says_by_how_much_a_target_is_missed():
    check = lung_experiment.target_check(_row("lungs", 0.40, only=0.85, ext_normals=14))
    assert check.loc["lungs hidden (balanced accuracy)", "verdict"] == "missed by 5.0 points"
    assert check.loc["lungs only, below as is (points)", "verdict"] == "missed by 5.0 points"
    assert check.loc["external normals called COVID-19", "verdict"] == "missed by 4 films"
    assert check.loc["external accuracy", "verdict"] == "missed by 10.0 points"
    assert check.loc["test accuracy", "verdict"] == "met" and check.loc["macro AUC", "verdict"] == "met"


def test_the_verdict_follows_the_numbers():
    whole, lungs = _row("whole", 0.88, acc=0.968, ext_normals=25), _row("lungs", 0.30, acc=0.94, ext_normals=8)
    whole["input"] = "none"
    text = lung_experiment.verdict(lung_experiment.comparison([whole, lungs], "full"))
    assert "lungs was chosen, so the lung model was the one to ship then" in text
    assert "test accuracy falls by 2.8 points" in text and "calls 8 of 32 normal films COVID-19 (whole film 25)" in text
    better = _row("lungs", 0.30, acc=0.97)
    assert "rises by 0.2 points" in lung_experiment.verdict(lung_experiment.comparison([whole, better], "full"))
    weak = _row("lungs", 0.30) | {"val": _row("lungs", 0.30)["val"] | {"twin_agreement": 0.5}}
    assert "whole-film model kept shipping then" in lung_experiment.verdict(lung_experiment.comparison([whole, weak], "full"))


def test_the_summary_sentence_follows_the_numbers():
    whole = _row("whole", 0.88) | {"input": "none"}
    weak = _row("lung-crop", 0.60) | {"val": _row("lung-crop", 0.60)["val"] | {"twin_agreement": 0.5}}
    text = lung_experiment.summary(lung_experiment.comparison([whole, weak], "full"))
    assert "60.0% (lung-crop), above the 35% target" in text and "did not make it need them" in text
    assert text.endswith("kept the whole-film model.")
    good = lung_experiment.summary(lung_experiment.comparison([whole, _row("lung-crop", 0.30)], "full"))
    assert "within the 35% target" in good and "made it need them" in good and good.endswith("kept lung-crop.")
    assert lung_experiment.summary(None).startswith("No model")


def test_an_earlier_records_shipped_label_is_read_as_a_plain_name(tmp_path):
    """`(shipped)` was true when `cxr lung-compare` wrote it; the record is read with the plain name."""
    whole = _row("whole film (shipped)", 0.88, acc=0.968, ext_normals=25)
    whole["input"] = "none"
    path = tmp_path / "lung_model.json"
    path.write_text(json.dumps(lung_experiment.comparison([whole, _row("lungs", 0.30, acc=0.94, ext_normals=8)], "full")))
    rec = lung_experiment.read(path)
    assert [r["name"] for r in rec["models"]] == ["whole film", "lungs"] and "shipped" not in rec["chosen"]
    assert "(shipped)" not in "".join(lung_experiment.table(rec).columns)
