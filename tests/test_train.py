"""Training through the real code on a tiny synthetic dataset: run folders, checkpoints, resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from cxr.core import runtime
from cxr.core.config import CLASSES, get_config
from cxr.model import checkpoints, speed, tta
from cxr.train import finetune, run as train


@pytest.fixture
def tiny(home: Path, tmp_path: Path, monkeypatch):
    ds = write_dataset(tmp_path / "tiny", per_class=10)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    return get_config("full", epochs=2, patience=5, views=2, input_size=64, image_size=64, batch_size=8,
                      cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")


def test_finetune_run_folder_and_checkpoint(tiny):
    run = train.fit("finetune", tiny, progress=False)
    for name in ("config.json", "history.csv", "checkpoint.pt", "predictions_val.csv", "predictions_test.csv",
                 "done.json"):
        assert (run.path / name).exists(), name
    assert not (run.path / "last.pt").exists()
    state = torch.load(run.checkpoint, map_location="cpu", weights_only=True)
    assert state["arch"] == "efficientnet_lite0" and state["temperature"] > 0
    model, meta = checkpoints.load_model(run.checkpoint)
    assert meta["input_size"] == 64
    assert len(run.history) == 2 and {"val_loss", "val_accuracy", "wall_seconds"} <= set(run.history.columns)
    preds = run.predictions("test")
    assert np.allclose(preds[["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]].sum(axis=1), 1, atol=1e-4)
    # the same config, split and code: the run is reused, not repeated
    again = train.fit("finetune", tiny, progress=False)
    assert again.path == run.path and again.summary == run.summary


def test_interrupted_finetune_resumes(tiny, monkeypatch):
    calls = {"n": 0}
    real = finetune.save_state

    def dies_after_first_epoch(path, state):
        real(path, state)
        if path.name == "last.pt":
            calls["n"] += 1
            raise KeyboardInterrupt("killed after epoch 1")

    monkeypatch.setattr(finetune, "save_state", dies_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.fit("finetune", tiny, progress=False)
    monkeypatch.setattr(finetune, "save_state", real)
    run = train.fit("finetune", tiny, progress=False)
    assert calls["n"] == 1
    assert run.history.epoch.tolist() == [1, 2]  # epoch 1 from the first session, epoch 2 resumed


def test_linear_head_checkpoint_is_an_ordinary_model(tiny):
    run = train.fit("linear", tiny, progress=False)
    model, meta = checkpoints.load_model(run.checkpoint)
    from cxr.data.preprocess import load_pixels
    from cxr.data.splits import load_table

    root, table = load_table(tiny)
    test = table[table.split == "test"]
    p = checkpoints.predict(model, load_pixels(root, test.reset_index(drop=True), tiny, progress=False), 64, progress=False)
    _, saved = run.proba("test")
    # the folded-in scaler and head reproduce sklearn's output (to bfloat16's precision on a GPU)
    assert np.allclose(p, saved, atol=1e-3 if runtime.model_device(model).type == "cpu" else 1e-2)


def test_load_model_rejects_wrong_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        checkpoints.load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not a cxr checkpoint"):
        checkpoints.load_model(plain)
    other = tmp_path / "other.pt"
    torch.save({"format": checkpoints.CHECKPOINT_FORMAT, "arch": "efficientnet_lite0", "classes": ["cat", "dog"],
                "model": {}}, other)
    with pytest.raises(ValueError, match="predicts classes"):
        checkpoints.load_model(other)
    with pytest.raises(FileNotFoundError):
        checkpoints.load_model(tmp_path / "missing.pt")


def test_inference_speed_reports_median():
    from cxr.model.architectures import efficientnet_lite0

    s = speed.inference_speed(efficientnet_lite0(pretrained=False), 64, batch=4, repeats=3)
    assert s["images_per_second"] == pytest.approx(float(np.median(s["runs"])))


def test_paired_views_and_the_selection_rule_are_recorded(tiny):
    run = train.fit("finetune", tiny, progress=False)
    assert run.summary["consistency"] == tiny.consistency > 0  # paired views with the consistency loss
    assert {"val_twin_agreement", "val_sensitivity_Lung_Opacity"} <= set(run.history.columns)
    # the kept epoch is the one the report's rule ranks highest on validation
    from cxr.core import targets

    h = run.history
    keys = [(*targets.selection_key(r.val_twin_agreement, {c: r[f"val_sensitivity_{c}"] for c in CLASSES},
                                    r.val_balanced_accuracy), -r.val_loss) for _, r in h.iterrows()]
    assert run.summary["best_epoch"] == int(h.epoch[max(range(len(keys)), key=keys.__getitem__)])
    # the consistency weight is part of the recipe, so part of the run's key
    off = train.fit("finetune", tiny.replace(consistency=0.0), progress=False)
    assert off.path != run.path and off.summary["consistency"] == 0.0


def test_finetune_work_counts_what_a_run_computes(tiny, monkeypatch):
    """benchmarks/train_profile.py prices a run by these counts, so they must be the run's own."""
    steps = {"n": 0}
    real = torch.optim.AdamW.step

    def counted(self, *args, **kwargs):
        steps["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted)
    drawn = {"n": 0}
    real_draw = finetune.augment.augment_batch

    def counted_draw(images, transform):
        drawn["n"] += len(images)
        return real_draw(images, transform)

    monkeypatch.setattr(finetune.augment, "augment_batch", counted_draw)
    run = train.fit("finetune", tiny, progress=False)  # cold caches: every frozen pass is this run's
    s = run.summary
    work = finetune.finetune_work(tiny, s["train_images"], s["val"]["n"], s["val_twins"])
    assert steps["n"] == work["steps"] > 0
    cached = sum(np.load(p, mmap_mode="r").shape[0] for p in Path(tiny.cache_dir).glob("activations-*.npy"))
    assert cached == work["frozen_images"]
    assert drawn["n"] == work["augmented_images"] + work["chained_images"] > 0
    assert work["activations_per_step"] == tiny.batch_size  # paired: half the radiographs, each twice
    unpaired = finetune.finetune_work(tiny.replace(consistency=0.0), 10, 0)
    assert unpaired["activations_per_step"] == tiny.batch_size and unpaired["frozen_images"] == tiny.views * 10


def test_resnet50_trains_its_recipe_steps(tiny):
    run = train.fit("resnet50", tiny.replace(resnet_steps=3, resnet_batch_size=4, resnet_val_subset=4,
                                             resnet_test_subset=4), progress=False)
    assert run.summary["steps"] == 3 and run.summary["images_seen"] == 12 and not run.summary["safety_stop_fired"]
    assert run.history.step.iloc[-1] == 3
    # validation: the fixed subset the checks used (the last check's predictions); test: its own fixed
    # subset, every class in it
    from cxr.core.config import CLASSES
    from cxr.data.splits import load_table

    _, table = load_table(tiny)
    y_val, _ = run.proba("val")
    y_test, _ = run.proba("test")
    assert len(y_val) < (table.split == "val").sum()
    assert len(y_test) < (table.split == "test").sum()
    assert set(y_test) == set(range(len(CLASSES)))
    test_files = set(table.file[table.split == "test"])
    assert set(run.predictions("test").file) <= test_files


def test_a_run_gives_the_same_model_with_cold_and_warm_caches(tiny):
    """The frozen-layer caches change where the time goes, never the model."""
    cold = train.fit("finetune", tiny, progress=False)
    w_cold = torch.load(cold.checkpoint, weights_only=True)["model"]
    warm = train.fit("finetune", tiny, progress=False, retrain=True)  # the caches are on disk now
    w_warm = torch.load(warm.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(w_cold[k], w_warm[k]) for k in w_cold)


def test_the_plain_view_cache_is_shared_by_runs_that_differ_only_in_their_draws(tiny):
    from cxr.data.preprocess import load_pixels
    from cxr.data.splits import load_table

    root, table = load_table(tiny)
    pixels = load_pixels(root, table, tiny, progress=False)
    rows = np.flatnonzero((table.split == "train").to_numpy())
    plain = finetune.frozen_activations(pixels, rows, tiny, 0, progress=False)
    for other in (tiny.replace(seed=1), tiny.replace(harmonise=False)):
        again = finetune.frozen_activations(pixels, rows, other, 0, progress=False)
        assert again.filename == plain.filename  # one file, computed once
        drawn = finetune.frozen_activations(pixels, rows, other, 1, progress=False)
        assert drawn.filename != finetune.frozen_activations(pixels, rows, tiny, 1, progress=False).filename
    assert finetune.frozen_activations(pixels, rows, tiny, 0, progress=False, chain=True).filename != plain.filename


def test_tta_averages_its_views_and_takes_the_first_from_the_runs_predictions(tiny):
    from cxr.data.preprocess import load_pixels
    from cxr.data.splits import load_table

    run = train.fit("finetune", tiny, progress=False)
    mean = tta.tta_predictions(run, tiny, progress=False, splits=("val",))
    assert set(mean) == {"val"}  # the test split only when asked (chapter 03 asks when validation kept it)
    root, table = load_table(tiny)
    pixels = load_pixels(root, table, tiny, progress=False)
    views = tta.tta_views(pixels[table.index[table.split == "val"].to_numpy()])
    assert len(views) == tta.TTA_VIEWS and all(not np.array_equal(views[0], v) for v in views[1:])
    model, meta = checkpoints.load_model(run.checkpoint)
    direct = np.mean([checkpoints.predict(model, v, meta["input_size"], progress=False) for v in views], axis=0)
    np.testing.assert_allclose(mean["val"], direct, atol=1e-6)
