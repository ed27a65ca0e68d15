"""The model that ships: it loads with weights_only, fits the size limit, and its card says what the
committed records of the shipped file itself say."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from conftest import synthetic_xray

from cxr.cli import main
from cxr.core.config import repo_root
from cxr.model import checkpoints, registry

REPORTS = repo_root() / "reports"


def test_shipped_model_loads_weights_only_and_is_small():
    state = torch.load(registry.SHIPPED, map_location="cpu", weights_only=True)
    assert state["format"] == checkpoints.CHECKPOINT_FORMAT and state["precision"] == "float16"
    # at most 10 MB for each network it holds (the whole film and its lungs hold two)
    assert registry.SHIPPED.stat().st_size <= 10_000_000 * (2 if registry.two_in_one(registry.SHIPPED) else 1)
    model, meta = checkpoints.load_model(registry.SHIPPED)
    assert meta["input_size"] == 224 and "threshold" in meta["ood"]


def test_card_matches_the_records():
    state = torch.load(registry.SHIPPED, map_location="cpu", weights_only=True)
    evaluation = json.loads((REPORTS / "evaluation.json").read_text())
    # the records describe the shipped file itself (its weights), the file names the run it came from
    assert evaluation["model_sha256"] == registry.state_digest(state["model"])
    card = state["card"]["test_split"]
    assert card["accuracy"] == evaluation["accuracy"] and card["macro_auc"] == evaluation["macro_auc"]
    for c, m in evaluation["per_class"].items():
        assert card["sensitivity"][c] == m["sensitivity"] and card["specificity"][c] == m["specificity"]
    for name, op in evaluation["operating_points"].items():
        assert state["operating_points"][name]["threshold"] == op["threshold"]
    external = json.loads((REPORTS / "external.json").read_text())
    assert state["card"]["external_radiographs"]["accuracy"] == external["accuracy"]
    shipped = json.loads((REPORTS / "shipped.json").read_text())
    assert shipped["run"] == state["source_run"] and shipped["model_sha256"] == evaluation["model_sha256"]
    assert shipped["largest_difference_points"] <= shipped["allowed_points"]


def test_predict_on_a_fresh_install_uses_the_shipped_model(tmp_path: Path, monkeypatch, capsys):
    import cv2

    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "no-runs"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    cv2.imwrite(str(tmp_path / "film.png"), synthetic_xray(11, 300))
    assert main.main(["predict", str(tmp_path / "film.png"), "--threshold", "abnormal@99",
                     "--out", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["status"] in ("ok", "warning: out of distribution")
    assert rows[0]["decision"] in ("abnormal", "normal")
    assert np.isclose(sum(rows[0][c] for c in ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")), 1, atol=1e-5)
