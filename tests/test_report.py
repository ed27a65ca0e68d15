"""The executive summary's text from its record, and the record freshness rule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxr.core.config import VERSIONS
from cxr.report import export, prose, records


def summary_record(external: bool = True) -> dict:
    r = {"accuracy": 0.979, "accuracy_ci": [0.972, 0.984], "macro_auc": 0.99671, "macro_auc_ci": [0.9936, 0.9987],
         "covid_sensitivity": 0.9836, "covid_sensitivity_ci": [0.968, 0.9917], "covid_sensitivity_counts": [480, 488],
         "test_images": 2197, "twin_agreement": 0.943, "twins": 600, "inference_ms_per_image": 10.53,
         "inference": {"images_per_second": 95.0, "batch": 64, "size": 224, "threads": 2},
         "model_kind": "a partly fine-tuned EfficientNet-Lite0",
         "roi": {"site": "default", "operating_point": "abnormal@95",
                 "use_cases": 5, "money_claims": 4,
                 "database": {"net_annual_value": -104000.0, "median": -105000.0, "interval90": [-190000.0, -56000.0],
                              "p_positive": 0.0, "staff_cost_saved": -5000.0, "ai_cost": 110000.0,
                              "driver": {"input": "AI price per study", "low": 1.0, "high": 4.0,
                                         "net_at_low": -54000.0, "net_at_high": -204000.0}}}}
    if external:
        r["roi"]["external"] = {"net_annual_value": -2.4e6, "median": -2.5e6, "interval90": [-3e6, -1e6], "p_positive": 0.01}
        r["external"] = {"images": 122, "accuracy": 0.27, "accuracy_ci": [0.2, 0.35], "normals": 32,
                         "normals_called_covid": 22, "called_covid": 88}
    return r


def test_summary_text():
    t = prose.summary_text(summary_record())
    assert t["accuracy"] == "97.9% [97.2,\u00a098.4]"
    assert t["macro_auc"] == "0.997 [0.994,\u00a00.999]"
    assert t["covid_counts"] == "480 of 488" and t["test_images"] == "2,197"
    assert t["speed_batched"] == "10.5 ms (95 films/s)" and t["model_kind"] == "a partly fine-tuned EfficientNet-Lite0"
    # the net value at the site's inputs, as the calculator and chapter 07 show it; the PSA gives its interval
    assert t["roi_database"] == "-$104K a year (90% interval of the uncertainty analysis -$190K to -$56K)"
    assert t["roi_database_p"] == "0%" and t["roi_external"].startswith("-$2.40M a year")
    assert t["roi_reason"] == ("The value is negative because the AI costs $110K a year and adds $5K of reading time; "
                               "the input that moves it most is AI price per study (over its range, the net value runs "
                               "from -$204K to -$54K, which leaves its sign as it is).")
    assert t["roi_claims"] == "claims for its 5 use cases (4 of them in money)"
    assert t["external_normals_covid"] == "22 of 32"


def test_summary_text_without_an_external_set():
    t = prose.summary_text(summary_record(external=False))
    assert "not measured" in t["external_accuracy"] and "not measured" in t["roi_external"]


def test_a_record_is_reused_only_for_its_own_model_data_and_version(tmp_path: Path):
    ref = {"model_sha256": "ab" * 32, "data_sha256": "d1" * 32, "records_version": 1}

    class Model:
        digest = ref["model_sha256"]

    Model.ref = ref
    path = tmp_path / "evaluation.json"
    assert records._fresh(path, Model) is None
    path.write_text(json.dumps(ref | {"n": 3}))
    assert records._fresh(path, Model)["n"] == 3
    for change in ({"model_sha256": "cd" * 32}, {"data_sha256": "d2" * 32}, {"records_version": 0}):
        path.write_text(json.dumps(ref | change | {"n": 3}))
        assert records._fresh(path, Model) is None, change
    path.write_text(json.dumps({"model_sha256": "ab" * 32, "checkpoint": "runs/finetune-full-abc/checkpoint.pt"}))
    assert records._fresh(path, Model) is None  # a record from before records named their data


def test_a_record_function_with_no_model_stops_with_the_command_and_does_not_train(home: Path, tmp_path: Path,
                                                                                     monkeypatch):
    from conftest import write_dataset

    from cxr.core.config import get_config
    from cxr.model import registry
    from cxr.train import run

    monkeypatch.setenv("CXR_DATA_DIR", str(write_dataset(tmp_path / "ds", per_class=4)))
    monkeypatch.setenv(registry.MODEL_ENV, "retrained")
    cfg = get_config("full", cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    monkeypatch.setattr(run, "fit", lambda *a, **k: pytest.fail("a record function trained a model"))
    for record in (records.evaluation_record, records.executive_summary, records.twin_audit):
        with pytest.raises(registry.MissingModel, match="`cxr train`"):
            record(cfg)
    monkeypatch.setenv(registry.MODEL_ENV, "shipped")
    monkeypatch.setattr(type(cfg), "reports_dir", property(lambda self: tmp_path / "reports"))
    # the shipped final model is there; the comparison record of this data and its runs are not
    with pytest.raises(registry.MissingModel, match=r"make comparisons.*|.*`cxr train --no-harmonise`"):
        records.audit_record(cfg)
    assert not (tmp_path / "runs").exists()

def test_metric_differences_in_points():
    full = {"accuracy": 0.9, "per_class": {"COVID": {"sensitivity": 0.8, "specificity": 0.95}}}
    shipped = {"accuracy": 0.899, "per_class": {"COVID": {"sensitivity": 0.81, "specificity": 0.95}}}
    d = records.metric_differences(full, shipped)
    assert abs(d["accuracy"] + 0.1) < 1e-9 and abs(d["COVID sensitivity"] - 1.0) < 1e-9 and d["COVID specificity"] == 0


def test_intervals_stay_on_one_line_and_say_when_missing():
    from cxr.core import book

    assert book.pct(0.979, [0.972, 0.984]) == "97.9% [97.2,\u00a098.4]"
    assert book.interval(0.99671, [0.9936, 0.9987], 1, 4) == "0.9967 [0.9936,\u00a00.9987]"
    assert book.pct(0.5) == "50.0%" and book.pct(0.05, digits=0) == "5%"
    assert book.interval(float("nan")) == "n/a" and book.interval(None) == "n/a"
    assert book.interval(0.5, [float("nan"), float("nan")]) == "50.0"  # no interval rather than "[nan, nan]"


def test_records_and_pages_show_project_paths_not_machine_paths(tmp_path, monkeypatch):
    from cxr.core.config import display_path

    root = tmp_path / "checkout"
    (root / "runs" / "r").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.setenv("CXR_HOME", str(root))
    assert display_path(root / "runs" / "r" / "checkpoint.pt") == "runs/r/checkpoint.pt"
    assert display_path(tmp_path / "shared" / "data") == "../shared/data"
    assert display_path("/somewhere/else/folder") == "folder"
    # a data folder reached through a link beside the checkout (as CI links ../shared)
    (root.parent / "link").symlink_to(tmp_path / "shared")
    assert display_path(root.parent / "link" / "data") == "../link/data"


def test_export_measures_the_runs_own_numbers_and_carries_its_history(tmp_path: Path, monkeypatch):
    """The shipped model's card, operating points, twins and OOD statistics are measured on the
    half-precision weights it ships (what every record describes), not on the full-precision run;
    the run's history rides along."""
    import pandas as pd

    from cxr.core.config import get_config
    from cxr.model import checkpoints, registry

    monkeypatch.setenv("CXR_HOME", str(tmp_path))
    cfg = get_config("full")
    run_path = tmp_path / "runs" / "finetune-full-abc"
    run_path.mkdir(parents=True)
    (run_path / "done.json").write_text(json.dumps({"best_epoch": 2}))
    (run_path / "config.json").write_text("{}")
    pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.5, 0.6]}).to_csv(run_path / "history.csv", index=False)
    evaluated, measured, exported = [], [], []
    monkeypatch.setattr(export, "external_dir", lambda: None)
    monkeypatch.setattr(export, "evaluate_folder", lambda data, model, **k: evaluated.append(model.checkpoint) or {"n": 1})
    loads = []
    monkeypatch.setattr(registry, "load_model", lambda path, on="auto": loads.append(path) or (None, {"input_size": 64}))
    monkeypatch.setattr(registry, "weights_digest", lambda path: "d1")
    monkeypatch.setattr(export, "fit_on_split", lambda model, meta, config: {})
    monkeypatch.setattr(export.shortcuts, "figures", lambda model, config: {"covid_vs_normal_auc": 0.6})
    monkeypatch.setattr(checkpoints, "export", lambda ckpt, out, ev=None, ext=None, audit=None, stats=None, training=None,
                        shortcut_figures=None: exported.append((ckpt, out, ev, ext, audit, training, shortcut_figures)) or Path(out))
    monkeypatch.setattr(export, "twin_audit", lambda config, model: measured.append(model.checkpoint) or {"agreement": 0.95, "n": 40})
    monkeypatch.setattr(export, "find_dataset", lambda: tmp_path)
    attached = []
    monkeypatch.setattr(export, "attach", lambda path, config=None: attached.append(Path(path)) or Path(path))
    export.export_model(run_path, tmp_path / "shipped.pt", cfg)
    assert attached == [tmp_path / "shipped.pt"]  # the site check's reference, fitted on the exported file
    (_, half, *_), (ckpt, out, ev, ext, audit, training, hidden) = exported
    assert ckpt == run_path / "checkpoint.pt" and out == tmp_path / "shipped.pt"
    assert evaluated == [half] and measured == [half] and half != ckpt  # measured on the half-precision file
    assert loads == [half]  # loaded once for every measure
    assert ev == {"n": 1} and ext is None and audit["agreement"] == 0.95 and audit["twins"] == 40
    assert training["summary"] == {"best_epoch": 2} and [r["epoch"] for r in training["history"]] == [1, 2]
    assert hidden == {"covid_vs_normal_auc": 0.6}  # the shortcut figures ride on the card
    monkeypatch.setattr(export, "twin_audit", lambda config, model: {"agreement": float("nan"), "n": 0})
    export.export_model(run_path, tmp_path / "shipped.pt", cfg)  # a dataset without audit twins: nothing to state
    assert exported[-1][4] is None



def _small_full_profile(home: Path, tmp_path: Path, monkeypatch, per_class: int = 4):
    """The full profile on a small synthetic dataset, with its records in a folder of its own."""
    from conftest import write_dataset

    from cxr.core.config import get_config

    monkeypatch.setenv("CXR_DATA_DIR", str(write_dataset(tmp_path / "ds", per_class=per_class)))
    cfg = get_config("full", cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    monkeypatch.setattr(type(cfg), "reports_dir", property(lambda self: tmp_path / "reports"))
    (tmp_path / "reports").mkdir()
    return cfg


def test_the_chapter_05_view_is_read_from_a_fresh_audit_record_and_nothing_is_audited_again(home, tmp_path, monkeypatch):
    from cxr.assess import audit
    from cxr.core.config import CLASSES
    from cxr.data.splits import load_table
    from cxr.model import registry

    cfg = _small_full_profile(home, tmp_path, monkeypatch)
    _, table = load_table(cfg)
    test_files = table.file[table.split == "test"].tolist()[:3]
    record = registry.shipped(cfg).ref | {
        "map_images": {"files": test_files, "predicted": ["Normal", "COVID", "Normal"][:len(test_files)]},
        "randomisation_similarity_per_image": [0.1, 0.2, 0.3][:len(test_files)],
        "audit_version": VERSIONS["audit"], "lung_field": "segmenter", "lung_sources": {"segmenter": 3, "mean of the passing masks": 0},
        "lung_area_fraction": 0.3,
        "energy_by_class": {c: {"lung": 0.4, "border": 0.2, "corners": 0.1} for c in CLASSES},
        "occlusion_by_class": {"as is": {"accuracy": 0.9, "balanced accuracy": 0.8},
                               "lungs hidden": {"accuracy": 0.5, "balanced accuracy": 0.3}},
        "twins_total": 7, "runs": {"after: final model": {"test_accuracy": 0.9}}}
    (tmp_path / "reports" / "explain.json").write_text(json.dumps(record))
    monkeypatch.setattr(audit, "shortcut_audit", lambda *a, **k: pytest.fail("a fresh record was audited again"))
    result = records.audit_record(cfg)
    d = result.details
    assert table.file[d["sample"]].tolist() == test_files
    assert [CLASSES[k] for k in d["pred"]] == record["map_images"]["predicted"]
    assert d["occlusion"].loc["lungs hidden", "balanced accuracy"] == 0.3 and d["n_twins"] == 7
    assert list(d["energy_by_class"].columns) == ["lung", "border", "corners"]
    assert d["gradcam"].shape[0] == len(test_files) and d["random_maps"].shape == d["gradcam"].shape

    # a record of another model, or one made before the view's keys existed, is audited again
    (tmp_path / "reports" / "explain.json").write_text(json.dumps({k: v for k, v in record.items() if k != "runs"}))
    monkeypatch.setattr(audit, "shortcut_audit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("audited")))
    monkeypatch.setattr("cxr.report.comparisons.comparison_record", lambda config: {"models": {"before": {"numbers": {}}}})
    with pytest.raises(RuntimeError, match="audited"):
        records.audit_record(cfg)


def test_the_ood_record_is_read_while_it_names_the_model_and_data(home, tmp_path, monkeypatch):
    import numpy as np

    from cxr.assess import predict
    from cxr.model import registry

    cfg = _small_full_profile(home, tmp_path, monkeypatch)
    ship = registry.shipped(cfg)
    record = ship.ref | {"threshold": 3.0, "groups": {}, "scores": {"database test split": [1.0, 2.5]}}
    (tmp_path / "reports" / "ood.json").write_text(json.dumps(record))
    monkeypatch.setattr(predict, "load", lambda *a, **k: pytest.fail("a fresh record was measured again"))
    got = records.ood_record(cfg)
    assert isinstance(got["scores"]["database test split"], np.ndarray) and got["threshold"] == 3.0
    (tmp_path / "reports" / "ood.json").write_text(json.dumps(record | {"data_sha256": "0" * 64}))
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        records.ood_record(cfg)


def test_the_summary_answers_does_it_read_the_lungs_with_the_occlusion_pair():
    hidden = {"COVID": 0.527, "Lung_Opacity": 0.671, "Normal": 0.964, "Viral Pneumonia": 0.862}
    r = summary_record() | {"occlusion": {"lungs_hidden_balanced_accuracy": 0.756, "lungs_only_balanced_accuracy": 0.502,
                                          "as_is_balanced_accuracy": 0.956, "lungs_hidden_sensitivity": hidden,
                                          "lungs_hidden_covid_vs_normal_auc": 0.9612}}
    t = prose.summary_text(r)
    assert t["lungs_hidden_covid"] == "52.7%" and t["lungs_hidden_lung_opacity"] == "67.1%"
    assert t["lungs_hidden_auc"] == "0.961" and t["lungs_only"] == "50.2%" and t["lungs_as_is"] == "95.6%"
    assert t["lungs_reading"].startswith("it does not need the lungs") and t["lungs_hidden_target"] == "20%"
    assert prose.summary_text(summary_record())["lungs_hidden_covid"] == "not measured"


def test_the_final_model_is_found_once_per_configuration(monkeypatch):
    """A chapter's records ask for the final model many times: it is read, hashed and its data
    digested once per configuration (and model file), and a changed file is found again."""
    from cxr.core.config import get_config
    from cxr.model import registry

    monkeypatch.delenv(registry.MODEL_ENV, raising=False)
    cfg = get_config("smoke")
    first = registry.final_model(cfg)
    assert registry.final_model(cfg) is first and records.final_model(cfg) is first
    assert registry.final_model(cfg.replace(seed=1)) is not first  # another configuration: found for itself
    monkeypatch.setattr(registry, "SHIPPED", registry.SHIPPED.with_name("elsewhere.pt"))
    with pytest.raises(registry.MissingModel):
        registry.final_model(cfg)  # the file it names is looked at every time
