"""Chapter 03's training log for a shipped file that carries no history: the retrained runs' histories,
each said to be the shipped network's run or a retraining whose weights differ (cxr training-log)."""
from types import SimpleNamespace

import matplotlib
import pandas as pd

from cxr.core import book
from cxr.report import plots, training_log

matplotlib.use("Agg")


def _run(name, epochs=3, best=2):
    history = pd.DataFrame({"epoch": range(1, epochs + 1), "train_loss": [0.9, 0.5, 0.4][:epochs],
                            "val_loss": [0.8, 0.45, 0.5][:epochs], "val_accuracy": [0.8, 0.9, 0.89][:epochs],
                            "val_balanced_accuracy": [0.7, 0.85, 0.84][:epochs], "val_macro_auc": [0.9, 0.97, 0.96][:epochs]})
    return SimpleNamespace(name=name, history=history, summary={"best_epoch": best, "train_wall_seconds": 1200.0})


def _record(monkeypatch, lungs_equal=True):
    runs = [_run("finetune-full-aaa"), _run("finetune-full-bbb", best=3)]
    check = {"shipped_from": "whole: finetune-full-zzz + lungs: finetune-full-bbb", "shipped_sha256": "d1",
             "weights_equal": False, "networks": {"whole": {"equal": False}, "lungs": {"equal": lungs_equal}}}
    monkeypatch.setattr(training_log.registry, "retrained_runs", lambda config: runs)
    monkeypatch.setattr(training_log.registry, "reproduce_check", lambda config: check)
    return training_log.make(SimpleNamespace(profile="full"))


def test_the_record_keeps_each_runs_history_and_whether_its_network_came_back(monkeypatch):
    rec = _record(monkeypatch)
    assert list(rec["networks"]) == ["whole", "lungs"] and rec["shipped_sha256"] == "d1"
    assert [e["run"] for e in rec["networks"].values()] == ["finetune-full-aaa", "finetune-full-bbb"]
    assert [e["bitwise_equal"] for e in rec["networks"].values()] == [False, True]
    assert len(rec["networks"]["lungs"]["history"]) == 3
    titles = [t for t, _ in training_log.shown(rec)]
    assert "retraining" in titles[0] and "weights differ" in titles[0]
    assert "shipped network's run, bit for bit" in titles[1]
    said = training_log.text(rec)
    assert "kept epoch 2 of 3" in said and "kept epoch 3 of 3" in said and "20.0 min" in said
    assert "not the shipped weights" in said
    assert "retraining" in training_log.title("lungs", {**rec["networks"]["lungs"], "bitwise_equal": False})


def test_the_record_is_shown_only_for_the_weights_it_describes(monkeypatch):
    rec = _record(monkeypatch)
    monkeypatch.setattr(training_log.records, "read", lambda name: rec)
    assert training_log.read_for(SimpleNamespace(digest="d1")) is rec
    assert training_log.read_for(SimpleNamespace(digest="other")) is None


def test_the_figure_draws_a_row_per_network_with_its_title(monkeypatch):
    rec = _record(monkeypatch)
    fig = plots.training_history(training_log.shown(rec))
    assert len(fig.axes) == 4
    assert "whole film" in fig.axes[0].get_title(loc="left") and "lung crop" in fig.axes[2].get_title(loc="left")
    book.legible("training", fig)
    one = plots.training_history((_run("x").history, {"best_epoch": 2}))
    assert len(one.axes) == 2
    placeholder = plots.training_history(None)
    assert "no training history" in placeholder.axes[0].texts[0].get_text()
