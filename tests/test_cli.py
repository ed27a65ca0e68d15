"""The command line: clear errors, and the happy path on a tiny dataset."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import write_dataset

from cxr.cli import main


def test_data_where_and_scan(home: Path, tmp_path: Path, monkeypatch, capsys):
    ds = write_dataset(tmp_path / "ds", per_class=2)
    (ds / "COVID" / "images" / "bad.png").write_bytes(b"")
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    assert main.main(["data", "where"]) == 0
    assert capsys.readouterr().out.strip() == str(ds)
    assert main.main(["data", "scan"]) == 0
    out = capsys.readouterr().out
    assert "8 images" in out and "bad.png" in out and "empty file" in out


def test_missing_data_is_a_clear_error(home: Path, capsys):
    assert main.main(["data", "scan"]) == 2
    assert "No chest X-ray dataset was found" in capsys.readouterr().err


def test_evaluate_missing_folder(home: Path, tmp_path: Path, capsys):
    assert main.main(["evaluate", "--data", str(tmp_path / "nope"), "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_train_then_evaluate(home: Path, tmp_path: Path, monkeypatch, capsys):
    ds = write_dataset(tmp_path / "ds", per_class=8)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    report = tmp_path / "training.json"
    assert main.main(["--profile", "smoke", "train", "--approach", "linear", "--report", str(report)]) == 0
    rec = json.loads(report.read_text())
    assert rec["profile"] == "smoke" and set(rec["test"]["per_class"]) == {"COVID", "Lung_Opacity", "Normal",
                                                                           "Viral Pneumonia"}
    assert rec["inference_images_per_second"] > 0 and rec["command"].startswith("cxr ")
    ckpt = next((tmp_path / "runs").glob("linear-*/checkpoint.pt"))
    out = tmp_path / "eval.json"
    assert main.main(["evaluate", "--data", str(ds), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 32
