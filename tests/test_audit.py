"""The shortcut audit, the targets and the rule that chooses, and the harmonising augmentation,
on synthetic data where the right answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxr.assess import audit
from cxr.core import targets
from cxr.core.config import CLASSES
from cxr.data import augment
from cxr.train.finetune import symmetric_kl

NORMAL, VP, LO = CLASSES.index("Normal"), CLASSES.index("Viral Pneumonia"), CLASSES.index("Lung_Opacity")


def _radiographs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey images whose 'anatomy' decides the class: a bright blob in the left half (Normal) or
    the right half (Viral Pneumonia), on a dark background that reaches 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    imgs, labels = [], []
    for i in range(n):
        label = NORMAL if i % 2 else VP
        cx = rng.integers(10, 24) if label == NORMAL else rng.integers(40, 54)
        blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - rng.integers(20, 44)) ** 2) / 60.0)
        imgs.append(np.clip(blob + rng.normal(0, 3, (64, 64)), 0, 255).astype(np.uint8))
        labels.append(label)
    return np.stack(imgs), np.array(labels)


def _twins(n: int = 60) -> audit.Twins:
    """Originals and their twins through the Lung Opacity copy's chain (y = 0.63 x + 35, JPEG)."""
    orig, labels = _radiographs(n)
    chain = augment.ProcessingChain(contrast=(0.63, 0.63), black=(35, 35), size=(80, 80), quality=(75, 75), p=1.0)
    twin = augment.augment_batch(orig, __import__("albumentations").Compose([chain], seed=0))
    split = np.array(["val", "test", "train"] * (n // 3))
    table = pd.DataFrame({"file": [f"t{i}" for i in range(n)], "label": [CLASSES[k] for k in labels], "twin_split": split})
    return audit.Twins(table, table.assign(file=[f"o{i}" for i in range(n)]), twin, orig)


def _onehot(k: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES))[k]


def reads_anatomy(px: np.ndarray) -> np.ndarray:
    """Left half brighter than the right: Normal, else Viral Pneumonia (survives any increasing intensity map)."""
    px = px.astype(np.float32)
    return _onehot(np.where(px[:, :, :32].mean((1, 2)) > px[:, :, 32:].mean((1, 2)), NORMAL, VP))


def reads_processing(px: np.ndarray) -> np.ndarray:
    """Lung Opacity whenever the black level is lifted (the planted artefact), else the anatomy."""
    keyed = np.percentile(px.reshape(len(px), -1), 1, axis=1) > 20
    return np.where(keyed[:, None], _onehot(np.full(len(px), LO)), reads_anatomy(px))


def test_the_twin_check_fails_a_model_keyed_on_the_planted_artefact_and_passes_one_that_ignores_it():
    twins = _twins()
    good = audit.twin_check(reads_anatomy, twins)
    bad = audit.twin_check(reads_processing, twins)
    assert good["n"] == bad["n"] == 40  # twins of val and test originals only
    assert good["agreement"] >= targets.TWIN_AGREEMENT and good["to_lung_opacity"] == 0
    assert bad["agreement"] < 0.1 and bad["to_lung_opacity"] > 0.9
    assert audit.twin_check(reads_processing, twins, splits=("train",))["n"] == 20
    sens = {c: 1.0 for c in CLASSES}
    assert targets.verdicts(good["agreement"], sens)["twin_agreement"]
    assert not targets.verdicts(bad["agreement"], sens)["twin_agreement"]


def test_twin_agreement_counts_drift_to_lung_opacity_only_from_other_classes():
    r = audit.twin_agreement(np.array([2, 2, 1, 3]), np.array([2, 1, 1, 1]))
    assert r == {"n": 4, "agreement": 0.5, "to_lung_opacity": 0.5}
    assert np.isnan(audit.twin_agreement(np.zeros(0, int), np.zeros(0, int))["agreement"])


def test_shortfall_and_the_choice_use_every_target():
    ok = {"COVID": 0.95, "Lung_Opacity": 0.86, "Normal": 0.97, "Viral Pneumonia": 0.99}
    assert targets.shortfall(0.975, ok) == 0
    assert targets.shortfall(0.9409, ok) == pytest.approx(0.03, abs=1e-4)  # 3% below the twin target
    low_lo = ok | {"Lung_Opacity": 0.80}
    assert targets.shortfall(0.99, low_lo) == pytest.approx(1 - 0.80 / 0.85)
    assert targets.shortfall(float("nan"), ok) == 0  # no twins: only the floors count
    candidates = [
        {"twin_agreement": 0.94, "sensitivity": ok, "balanced_accuracy": 0.99},  # misses the twin target
        {"twin_agreement": 0.98, "sensitivity": ok, "balanced_accuracy": 0.95},  # meets all
        {"twin_agreement": 0.99, "sensitivity": ok, "balanced_accuracy": 0.96},  # meets all, better
        {"twin_agreement": 0.99, "sensitivity": low_lo, "balanced_accuracy": 0.99},  # misses a floor
    ]
    assert targets.choose(candidates) == 2
    assert targets.choose(candidates[:1] + candidates[3:]) == 0  # none meets all: the one that meets the floors
    assert targets.choose([candidates[3], {**candidates[3], "balanced_accuracy": 0.999}]) == 1  # then accuracy
    with pytest.raises(ValueError):
        targets.choose([])


def test_choose_row_reads_validation_only():
    sens = {c: 0.95 for c in CLASSES}
    def row(val_twins, test_twins):
        return {"val": {"twin_agreement": val_twins, "sensitivity": sens, "balanced_accuracy": 0.95},
                "test": {"twin_agreement": test_twins, "sensitivity": sens, "balanced_accuracy": 0.99}}
    assert audit.choose_row([row(0.98, 0.90), row(0.96, 1.0)]) == 0


def test_processing_chain_lifts_the_black_level_and_compresses_the_range():
    img = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (128, 1))
    chain = augment.ProcessingChain(contrast=(0.6, 0.6), black=(40, 40), size=(100, 100), quality=(90, 90), p=1.0)
    out = __import__("albumentations").Compose([chain], seed=1)(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[:, 5:20].mean() > 35 and abs(out[:, -20:-5].mean() - (0.6 * img[:, -20:-5].mean() + 40)) < 6


def test_hospital_chain_is_seeded_and_varied():
    imgs, _ = _radiographs(12, seed=3)
    a = augment.augment_batch(imgs, augment.hospital_chain(seed=5))
    b = augment.augment_batch(imgs, augment.hospital_chain(seed=5))
    c = augment.augment_batch(imgs, augment.hospital_chain(seed=6))
    assert a.shape == imgs.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert all(not np.array_equal(x, y) for x, y in zip(a, imgs))  # every view is reprocessed
    # the anatomy survives: the planted left/right blob is still where it was in most views
    assert (reads_anatomy(a).argmax(1) == reads_anatomy(imgs).argmax(1)).mean() >= 0.9


def test_collimation_and_marker_touch_the_edges_only():
    img = np.full((64, 64), 128, np.uint8)
    band = augment.Collimation(width=(0.1, 0.1), p=1.0).apply(img, edges=[True, False, False, False], w=[0.1] * 4,
                                                                 value=0)
    assert (band[:6] == 0).all() and (band[7:] == 128).all()
    marked = augment.Marker(p=1.0).apply(img, text="R", scale=0.5, x=2, y=14, value=255, thick=1)
    changed = marked != img
    assert changed.any() and not changed[32:, 32:].any()


def test_symmetric_kl_is_zero_for_equal_answers_and_symmetric():
    a = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 2.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    d = symmetric_kl(a, b)
    assert d.shape == (2,) and d[0] > 0.5 and d[1].abs() < 1e-7
    assert torch.allclose(d, symmetric_kl(b, a))


def test_cxr_audit_compare_writes_a_record_and_names_the_chosen_run(home, tmp_path, monkeypatch, capsys):
    import json

    from conftest import write_dataset

    from cxr.cli import main
    from cxr.core.config import get_config
    from cxr.train import run

    ds = write_dataset(tmp_path / "tiny", per_class=10)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    monkeypatch.setenv("CXR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    cfg = get_config("full", epochs=1, patience=5, views=1, input_size=64, image_size=64, batch_size=8)
    a = run.fit("finetune", cfg, progress=False)
    b = run.fit("finetune", cfg.replace(harmonise=False), progress=False)
    out = tmp_path / "mitigation.json"
    assert main.main(["audit", "--compare", str(a.path), str(b.path), "--names", "after", "before",
                     "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["name"] for r in record["runs"]] == ["after", "before"]
    assert record["chosen"] in {a.path.name, b.path.name} and record["command"].startswith("cxr audit --compare")
    assert "chosen by the rule" in capsys.readouterr().out
    assert main.main(["audit", "--compare", str(a.path), "--names", "x", "y"]) == 2  # names must match the runs

    # the chapter's sweep shows the record only when it names the final model's run; a record of
    # other runs (another recipe, another build) gives way to the comparison record's before/after
    monkeypatch.setattr(type(cfg), "reports_dir", property(lambda self: tmp_path))
    assert audit.sweep(cfg, a.path.name, {"runs": []}) == record
    assert audit.sweep(cfg, "finetune-full-another", {"runs": []}) == {"runs": []}


def test_the_occlusion_pair_chooses_its_words_from_the_numbers():
    def occ(covid, opacity, only, as_is=0.95):
        # the shortcut figures are COVID-19 and Lung Opacity; Viral Pneumonia and Normal do not count
        found = {"COVID": covid, "Lung_Opacity": opacity, "Normal": 0.97, "Viral Pneumonia": 0.86}
        return {"lungs_hidden_sensitivity": found, "lungs_hidden_covid_vs_normal_auc": 0.9,
                "lungs_only_balanced_accuracy": only, "as_is_balanced_accuracy": as_is}

    shortcut = audit.lung_reading(occ(0.53, 0.67, 0.50))
    assert not shortcut["needs_lungs"] and not shortcut["lungs_enough"] and "does not need the lungs" in shortcut["text"]
    reader = audit.lung_reading(occ(0.05, 0.10, 0.93))
    assert reader["needs_lungs"] and reader["lungs_enough"] and "they are enough" in reader["text"]
    at = targets.OUTSIDE_TARGETS["lungs_hidden_sensitivity"]
    assert audit.lung_reading(occ(at, at, 0.95 - targets.LUNGS_ONLY_GAP))["text"] == reader["text"]
    assert "also what lies around" in audit.lung_reading(occ(0.05, 0.10, 0.60))["text"]
    assert "does not need them" in audit.lung_reading(occ(0.05, 0.40, 0.94))["text"]  # Lung Opacity alone


def test_the_input_rule_reads_the_lungs_before_accuracy_and_the_targets_before_both():
    floors = {c: 0.95 for c in CLASSES}
    whole = {"twin_agreement": 0.975, "sensitivity": floors, "balanced_accuracy": 0.96,
             "lungs_hidden_balanced_accuracy": 0.88}
    lungs = {"twin_agreement": 0.98, "sensitivity": floors, "balanced_accuracy": 0.93,
             "lungs_hidden_balanced_accuracy": 0.30}
    assert targets.choose_input([whole, lungs]) == 1  # reads the lungs, though less accurate
    weak = lungs | {"sensitivity": floors | {"COVID": 0.80}}
    assert targets.choose_input([whole, weak]) == 0  # a floor missed loses first
    half = lungs | {"lungs_hidden_balanced_accuracy": 0.50}
    assert targets.choose_input([whole, half]) == 1  # neither reads the lungs: the one that needs them more
    assert targets.choose_input([lungs, lungs | {"balanced_accuracy": 0.94}]) == 1
    assert targets.choose_input([lungs, dict(lungs)]) == 0  # a tie goes to the first


def test_the_outside_rule_reads_the_floors_then_the_outside_normals_then_balanced_accuracy():
    """Issue 38's rule on a toy table (`targets.choose_for_outside`)."""
    sens = {"COVID": 0.95, "Lung_Opacity": 0.88, "Normal": 0.97, "Viral Pneumonia": 0.96}
    whole = {"accuracy": 0.968, "sensitivity": sens, "twin_agreement": 0.975, "balanced_accuracy": 0.95,
             "site_normal_called_covid": 0.33}
    lungs = whole | {"accuracy": 0.95, "balanced_accuracy": 0.93, "site_normal_called_covid": 0.155}
    assert targets.choose_for_outside([whole, lungs]) == 1  # fewer outside normals called COVID-19 wins
    # a floor missed loses first, however good outside: twins, Lung Opacity, COVID-19, accuracy
    for worse in ({"twin_agreement": 0.955}, {"sensitivity": sens | {"Lung_Opacity": 0.84}},
                  {"sensitivity": sens | {"COVID": 0.92}}, {"accuracy": 0.93}, {"twin_agreement": float("nan")}):
        assert targets.choose_for_outside([whole, lungs | worse | {"site_normal_called_covid": 0.0}]) == 0
    assert targets.choose_for_outside([lungs | {"twin_agreement": 0.96}, whole]) == 0  # exactly on a floor meets it
    # the same outside share: balanced accuracy decides; a missing share counts as the worst
    assert targets.choose_for_outside([lungs, lungs | {"balanced_accuracy": 0.94}]) == 1
    assert targets.choose_for_outside([lungs | {"site_normal_called_covid": None}, whole]) == 1
    assert targets.choose_for_outside([lungs, dict(lungs)]) == 0  # a tie goes to the first
    with pytest.raises(ValueError):
        targets.choose_for_outside([])
