"""The lung segmenter and the checks on its masks: Dice, the failure statuses, the shape probe,
the network's shapes and its file format, on synthetic masks where the answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxr.data import lung_masks, segmenter


def two_lungs(size: int = 128, left: float = 1.0, right: float = 1.0, gap: int = 8) -> np.ndarray:
    """Two upright ellipses either side of the midline; `left`/`right` scale their widths."""
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    out = np.zeros((size, size), bool)
    for sign, k in ((-1, left), (1, right)):
        cx = c + sign * (gap / 2 + 0.18 * size * k)
        out |= ((xx - cx) / (0.17 * size * k)) ** 2 + ((yy - 0.52 * size) / (0.32 * size)) ** 2 <= 1
    return out


def test_dice_of_a_synthetic_pair():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :6] = True  # 60 pixels
    b[:, 4:] = True  # 60 pixels, 20 shared
    assert lung_masks.dice(a, b) == pytest.approx(2 * 20 / 120)
    assert lung_masks.dice(a, a) == 1.0 and lung_masks.dice(a, ~a) == 0.0
    assert lung_masks.dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_every_failure_gets_its_status():
    assert lung_masks.status(two_lungs()) == lung_masks.OK
    assert lung_masks.status(np.zeros((128, 128), bool)) == "empty"
    small = np.zeros((128, 128), bool)
    small[40:60, 30:50] = small[40:60, 80:100] = True
    assert lung_masks.status(small) == "too small"
    assert lung_masks.status(np.ones((128, 128), bool)) == "too large"
    merged = two_lungs(gap=-10)
    assert lung_masks.status(merged) == "one piece"
    assert lung_masks.status(two_lungs(right=0.25)) == "lopsided"
    bits = two_lungs()
    bits[::30, :] = bits[1::30, :] = False  # cut into blocks of about 28 x 28
    bits[:, ::30] = bits[:, 1::30] = False
    assert lung_masks.status(bits) == "fragmented"
    crumbs = two_lungs()
    crumbs[::6, :] = crumbs[:, ::6] = False  # pieces too small to be a lung
    assert lung_masks.status(crumbs) == "fragmented"
    assert set(lung_masks.STATUSES) >= {"empty", "too small", "too large", "one piece", "lopsided", "fragmented"}


def test_statistics_place_the_lungs_where_they_are():
    s = lung_masks.statistics(two_lungs(128))
    assert s["pieces"] == 2 and s["balance"] == pytest.approx(1.0, abs=0.02)
    assert s["centre_y"] == pytest.approx(0.52, abs=0.01)
    assert s["box_top"] == pytest.approx(0.52 - 0.32, abs=0.02) and s["box_height"] == pytest.approx(0.64, abs=0.03)
    assert s["status"] == lung_masks.OK


def test_the_shape_probe_finds_a_class_cue_and_none_where_there_is_none():
    rng = np.random.default_rng(0)
    rows = []
    for label, scale in (("A", 1.0), ("B", 0.8)):
        for _ in range(40):
            rows.append(lung_masks.statistics(two_lungs(96, left=scale * rng.uniform(0.95, 1.05),
                                                        right=scale * rng.uniform(0.95, 1.05))) | {"label": label})
    cue = lung_masks.shape_probe(pd.DataFrame(rows))
    assert cue["macro_auc"] > 0.95 and cue["chance"] == 0.5
    same = pd.DataFrame(rows).assign(label=rng.permutation(["A", "B"] * 40))
    assert lung_masks.shape_probe(same)["macro_auc"] < 0.75
    table = lung_masks.by_class(pd.DataFrame(rows))
    assert table.loc["A", "area mean"] > table.loc["B", "area mean"] and (table["failure rate"] == 0).all()


def test_the_network_keeps_the_size_and_its_file_reads_back_without_unpickling(tmp_path):
    model = segmenter.UNet().eval()
    assert model(torch.zeros(2, 1, segmenter.SIZE, segmenter.SIZE)).shape == (2, 1, segmenter.SIZE, segmenter.SIZE)
    path = segmenter.save(model, tmp_path / "seg.pt", version=1)
    again, meta = segmenter.load(path)
    assert meta["format"] == segmenter.FORMAT and meta["version"] == 1
    x = np.random.default_rng(0).integers(0, 255, (3, 200, 180)).astype(np.uint8)
    masks = segmenter.segment(again, list(x))
    assert [m.shape for m in masks] == [(200, 180)] * 3 and masks[0].dtype == bool
    # 16-bit and RGB images are read as grey
    assert segmenter.to_input(x[0].astype(np.uint16) * 257).shape == (segmenter.SIZE, segmenter.SIZE)
    assert segmenter.to_input(np.stack([x[0]] * 3, -1)).shape == (segmenter.SIZE, segmenter.SIZE)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        segmenter.load(tmp_path / "other.pt")
    torch.save({"format": "something else"}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not a cxr lung segmenter"):
        segmenter.load(tmp_path / "wrong.pt")
    with pytest.raises(FileNotFoundError, match="cxr segmenter"):
        segmenter.load(tmp_path / "missing.pt")


def test_the_held_out_part_is_whole_patients():
    from cxr.train.segmenter import patient_split

    patients = pd.Series(["a", "a", "b", "c", "c", "c", "d", "e", "f", "g"])
    held = patient_split(patients, share=0.3, seed=0)
    for p in patients.unique():
        assert len(set(held[patients == p])) == 1  # all of a patient's films on one side
    assert held.any() and not held.all()
    assert (patient_split(patients, share=0.3, seed=0) == held).all()


def test_folding_the_batch_norms_changes_nothing_but_speed():
    import copy

    torch.manual_seed(0)
    model = segmenter.UNet()
    for m in model.modules():  # statistics as training leaves them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 1, segmenter.SIZE, segmenter.SIZE)
    with torch.no_grad():
        want = model.eval()(x)
        got = segmenter.for_inference(copy.deepcopy(model))(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(want, got, atol=1e-4)


def test_a_lung_at_a_known_place_lands_where_expected_in_the_crop_and_the_mask():
    from cxr.data import lung_crop

    gray = np.full((100, 120), 50, np.uint8)
    mask = np.zeros((100, 120), bool)
    mask[20:60, 30:50] = mask[20:60, 70:90] = True  # two lungs: rows 20-59, columns 30-49 and 70-89
    gray[mask] = 200
    assert lung_crop.box(mask, 0.0) == (20, 60, 30, 90)
    assert lung_crop.box(mask, 0.1) == (16, 64, 24, 96)  # 10% of 40 rows and of 60 columns each side
    assert lung_crop.box(mask, 1.0) == (0, 100, 0, 120)  # kept inside the image
    crop = lung_crop.apply(gray, mask, "crop", 0.0)
    assert crop.shape == (40, 60) and (crop[:, :20] == 200).all() and (crop[:, 20:40] == 50).all()
    masked = lung_crop.apply(gray, mask, "mask")
    assert masked.shape == gray.shape and (masked[~mask] == 0).all() and (masked[mask] == 200).all()
    both = lung_crop.apply(gray, mask, "crop+mask", 0.1)
    assert both.shape == (48, 72) and both[0, 0] == 0 and both[4 + 10, 6 + 10] == 200


def test_a_film_whose_mask_fails_is_passed_whole_with_its_status(monkeypatch):
    from cxr.data import lung_crop

    gray = np.full((64, 64), 80, np.uint8)
    monkeypatch.setattr(lung_crop, "_segmenter", lambda: None)
    monkeypatch.setattr("cxr.data.segmenter.segment", lambda model, images: [np.zeros((64, 64), bool)])
    out, status = lung_crop.lung_input(gray, "crop")
    assert status == "empty" and out.shape == gray.shape
    tiny = np.zeros((64, 64), bool)
    tiny[28:36, 16:26] = tiny[28:36, 38:48] = True  # two lungs of 4% of the image together
    monkeypatch.setattr("cxr.data.segmenter.segment", lambda model, images: [tiny])
    assert lung_crop.lung_input(gray, "crop")[1] == "too small"


def test_the_lung_input_is_a_preprocessing_setting_that_leaves_earlier_keys_alone():
    from cxr.core.config import get_config
    from cxr.data.preprocess import PARAMS

    base = get_config("smoke")
    assert base.key() == base.replace(lungs="none", lung_margin=0.1).key()
    assert base.key() != base.replace(lungs="crop").key()
    assert "lungs" not in base.values(*PARAMS) and base.replace(lungs="crop").values(*PARAMS)["lungs"] == "crop"
