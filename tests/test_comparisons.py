"""The records made once by commands and shown by the book: the comparison record (`cxr compare`)
and chapter 02's enhancement experiment (`cxr enhancement`)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cxr.core.config import get_config
from cxr.model import registry
from cxr.report import comparisons, enhancement_experiment

REF = {"model_sha256": "ab" * 32, "data_sha256": "d1" * 32, "records_version": 1, "model": "m", "profile": "full"}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cfg = get_config("full")
    monkeypatch.setattr(type(cfg), "reports_dir", property(lambda self: tmp_path))
    monkeypatch.setattr(registry, "final_model", lambda config=None: SimpleNamespace(ref=REF))

    def missing(name, config=None):
        raise registry.MissingModel(f"the {name} run is not here: `cxr train --approach {name}`")
    monkeypatch.setattr(registry, "comparison_run", missing)
    return cfg, tmp_path / "comparisons.json"


def test_the_stored_record_is_shown_without_its_runs_while_it_names_the_model_and_data(setup):
    cfg, path = setup
    with pytest.raises(registry.MissingModel, match="comparisons.json is missing.*make comparisons"):
        comparisons.comparison_record(cfg)
    path.write_text(json.dumps(REF | {"models": {}, "rows": [1]}))
    assert comparisons.comparison_record(cfg)["rows"] == [1]
    path.write_text(json.dumps(REF | {"data_sha256": "d2" * 32, "models": {}}))  # other data: made again
    with pytest.raises(registry.MissingModel, match="was made from other data"):
        comparisons.comparison_record(cfg)


def test_another_final_model_without_the_runs_is_measured_and_the_comparison_models_are_kept(setup, monkeypatch):
    """A new shipped model, on a machine without the comparison runs: its row, TTA and sweep row are
    measured; the linear, ResNet50 and "before" numbers stay as their runs gave them."""
    cfg, path = setup
    y = np.repeat(np.arange(4), 5)
    p = np.eye(4)[y] * 0.9 + 0.025
    new = SimpleNamespace(ref=REF | {"model_sha256": "cd" * 32}, name="new", digest="cd" * 32, checkpoint="x",
                          proba=lambda split: (y, p), training=lambda: None)
    monkeypatch.setattr(registry, "final_model", lambda config=None: new)
    monkeypatch.setattr(comparisons, "load_model", lambda *a: (None, {"input_size": 224}))
    monkeypatch.setattr(comparisons, "inference_speed", lambda *a: {"images_per_second": 30.0})
    monkeypatch.setattr(comparisons, "tta_rows", lambda *a: {"rows": [], "kept": False, "verdict": "not adopted"})
    after = {"run": "new", "name": "after: final model", "val": {"twin_agreement": 0.99, "balanced_accuracy": 0.97,
                                                                  "sensitivity": {"COVID": 0.97}}}
    monkeypatch.setattr(comparisons.audit, "run_row", lambda *a, **k: after)
    monkeypatch.setattr(comparisons.audit, "choose_row", lambda rows: 1)
    rows = [{"approach": comparisons.LABELS["linear"], "accuracy": 0.93},
            {"approach": comparisons.LABELS["final"], "accuracy": 0.968},
            {"approach": comparisons.TTA_LABEL, "accuracy": 0.97},
            {"approach": comparisons.LABELS["resnet50"], "accuracy": 0.07}]
    models = {"linear": {"run": "lin"}, "final": {"run": "old"}, "resnet50": {"run": "res"}, "before": {"run": "bef"}}
    sweep = {"runs": [{"run": "bef", "name": "before"}, {"run": "old", "name": "after"}], "chosen": "old"}
    path.write_text(json.dumps(REF | {"models": models, "rows": rows, "sweep": sweep, "tta": {}, "resnet50_maps": {}}))
    rec = comparisons.comparison_record(cfg)
    assert rec["model_sha256"] == "cd" * 32 and json.loads(path.read_text())["model_sha256"] == "cd" * 32
    assert [r["approach"] for r in rec["rows"]] == [comparisons.LABELS[k] for k in ("linear", "final", "resnet50")]
    assert rec["rows"][0]["accuracy"] == 0.93 and rec["rows"][1]["accuracy"] == pytest.approx(1.0)
    assert [r["run"] for r in rec["sweep"]["runs"]] == ["bef", "new"] and rec["sweep"]["chosen"] == "new"
    assert rec["models"]["final"]["run"] == "new" and rec["kept_from"]["runs"] == {"linear": "lin", "resnet50": "res",
                                                                                   "before": "bef"}


def test_a_record_describes_the_runs_at_hand_by_name():
    final = SimpleNamespace(ref=REF)
    record = REF | {"models": {"linear": {"run": "linear-full-1"}}}
    assert comparisons.describes(record, final, None)
    assert comparisons.describes(record, final, {"linear": SimpleNamespace(name="linear-full-1")})
    assert not comparisons.describes(record, final, {"linear": SimpleNamespace(name="linear-full-2")})
    assert not comparisons.describes(record | {"records_version": 0}, final, None)


def test_a_stored_map_comes_back_at_the_asked_size():
    m = np.zeros((comparisons.MAP_SIZE, comparisons.MAP_SIZE))
    m[:14] = 1
    record = {"resnet50_maps": {"files": ["a.png"], "size": comparisons.MAP_SIZE, "maps": [m.tolist()]}}
    out = comparisons.map_of(record, "a.png", 224)
    assert out.shape == (224, 224) and out[:100].mean() > 0.99 and out[124:].mean() < 0.01
    assert comparisons.map_of(record, "b.png", 224) is None


def test_the_enhancement_record_is_reused_for_the_same_data_and_settings(tmp_path, monkeypatch):
    cfg = get_config("full")
    monkeypatch.setattr(type(cfg), "reports_dir", property(lambda self: tmp_path))
    monkeypatch.setattr(enhancement_experiment, "_ref", lambda config: {"data_sha256": "d1", "pixels": config.key("clahe")})
    calls = []
    result = {"enhancements": {"none": {"accuracy_vs_none": [0.0, [0.0, 0.0]]}}, "verdicts": [], "adopted": []}
    monkeypatch.setattr(enhancement_experiment, "measure", lambda config, progress=False: calls.append(1) or result)
    enhancement_experiment.enhancement_record(cfg)
    enhancement_experiment.enhancement_record(cfg)
    assert len(calls) == 1
    enhancement_experiment.enhancement_record(cfg.replace(clahe=not cfg.clahe))  # other settings: measured again
    assert len(calls) == 2


def test_the_enhancement_table_shows_each_variant_against_none():
    row = {"accuracy": 0.9, "accuracy_ci": [0.88, 0.92], "macro_auc": 0.98, "macro_auc_ci": [0.97, 0.99],
           "covid_sensitivity": 0.9, "covid_sensitivity_ci": [0.85, 0.94]}
    record = {"enhancements": {"none": row | {"accuracy_vs_none": [0.0, [0.0, 0.0]], "macro_auc_vs_none": [0, [0, 0]]},
                               "gamma 0.8": row | {"accuracy_vs_none": [-0.012, [-0.02, -0.004]],
                                                   "macro_auc_vs_none": [0.001, [-0.001, 0.003]]}}}
    t = enhancement_experiment.table(record)
    assert list(t.index) == ["none", "gamma 0.8"]
    assert t.loc["gamma 0.8", "accuracy vs none (points)"].startswith("-1.20 [-2.00,")
    # a variant with exactly the same films right shows that, not "+0.00 [+0.00, +0.00]"
    record["enhancements"]["same"] = row | {"accuracy_vs_none": [0.0, [0.0, 0.0]], "macro_auc_vs_none": [0.0, [0.0, 0.0]]}
    assert enhancement_experiment.table(record).loc["same", "accuracy vs none (points)"] == "0.00 (the same films right)"


def _fair_record(accuracy=0.85, curve=(0.5, 0.7, 0.8, 0.84, 0.85, 0.85)):
    from cxr.core.config import CLASSES

    return {"budget": {"steps": 1400, "batch_size": 32, "input_size": 128, "epochs": 4.3, "images_seen": 44800,
                       "schedule": "AdamW, cosine decay over the steps"},
            "machine": {"cores": 2, "device": "cpu"}, "weights_origin": "random initialisation", "train_wall_seconds": 4200,
            "curve": [{"step": 100 * (k + 1), "epochs_seen": 0.3 * (k + 1), "val_accuracy": a, "val_macro_auc": a}
                      for k, a in enumerate(curve)],
            "best_check": {"step": 100 * (int(max(range(len(curve)), key=lambda k: curve[k])) + 1), "val_accuracy": max(curve)},
            "still_improving": False,
            "test": {"images": 2197, "accuracy": accuracy, "accuracy_ci": [accuracy - 0.02, accuracy + 0.02], "macro_auc": 0.95,
                     "per_class": {c: {"sensitivity": 0.8, "sensitivity_ci": [0.7, 0.9], "specificity": 0.9} for c in CLASSES}}}


def test_the_recorded_resnet50_is_described_by_its_numbers():
    from cxr.report import resnet50_baseline as resnet50_record

    assert not resnet50_record.still_improving([{"val_accuracy": a} for a in (0.5, 0.8, 0.85, 0.85, 0.84, 0.85)])
    assert resnet50_record.still_improving([{"val_accuracy": a} for a in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85)])
    t = resnet50_record.text(_fair_record(0.85), 0.687)
    assert "16.3 points above the original project's 68.7%" in t["fair_result"]
    assert "10.7 images/s on 2 cores" in t["fair_budget"] and "stopped improving" in t["fair_curve"]
    t = resnet50_record.text(_fair_record(0.60), 0.687)
    assert "8.7 points below" in t["fair_result"]
    assert "Not recorded" in resnet50_record.text(None, 0.687)["fair_budget"]
    assert "recorded run (4.3 epochs at 128 px" in resnet50_record.shown(_fair_record(), {})
    table = resnet50_record.table(_fair_record())
    assert list(table.index)[-1] == "all classes" and table.loc["COVID", "sensitivity"].startswith("80.0%")


def test_the_recorded_resnet50_is_read_only_for_the_data_it_was_made_on(tmp_path):
    from cxr.model.registry import data_ref
    from cxr.report import resnet50_baseline as resnet50_record

    path = tmp_path / "resnet50.json"
    ref = data_ref(get_config())
    path.write_text(json.dumps(_fair_record() | ref))
    assert resnet50_record.read(get_config(), path=path) is not None
    path.write_text(json.dumps(_fair_record() | ref | {"data_sha256": "other"}))
    assert resnet50_record.read(get_config(), path=path) is None


def test_the_validation_curve_is_drawn_from_the_record_or_says_there_is_none():
    import matplotlib

    matplotlib.use("Agg")
    from cxr.report import plots

    fig = plots.validation_curve(_fair_record())
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[0].lines[0].get_xdata()) == 6
    empty = plots.validation_curve(None)
    assert "no recorded run" in empty.axes[0].texts[0].get_text()


def test_the_page_says_where_the_rows_come_from():
    whole = {"command": "make comparisons"}
    assert "Every row was measured" in comparisons.provenance(whole)
    kept = whole | {"kept_from": {"runs": {"linear": "lin", "resnet50": "res", "before": "bef"},
                                  "earlier_final_model": "old"}}
    said = comparisons.provenance(kept)
    assert "(lin, res, bef)" in said and "when old was the final model" in said
