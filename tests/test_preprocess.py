"""CLAHE, gamma, and the preprocessed-image cache (reuse, invalidation, atomic writes)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import synthetic_xray

from cxr.data import images, preprocess, scanning


def test_clahe_raises_local_contrast_and_keeps_shape():
    g = (synthetic_xray(3) // 4 + 96).astype(np.uint8)  # a dull, low-contrast image
    out = preprocess.clahe(g, clip=2.0, tile=8)
    assert out.shape == g.shape and out.dtype == np.uint8
    assert out.std() > g.std()
    assert np.abs(preprocess.clahe(g, clip=4.0).astype(int) - g).mean() > np.abs(out.astype(int) - g).mean()


def test_gamma_lut():
    g = np.array([[0, 64, 128, 255]], np.uint8)
    assert preprocess.gamma_correct(g, 1.0).tolist() == g.tolist()
    bright = preprocess.gamma_correct(g, 0.5)
    assert bright[0, 0] == 0 and bright[0, 3] == 255 and bright[0, 1] == round(255 * (64 / 255) ** 0.5)


def _table(dataset, cfg):
    images, _ = scanning.main_subset(scanning.scan(dataset, cfg, progress=False))
    return images


def test_cache_is_reused(dataset: Path, cfg, monkeypatch):
    table = _table(dataset, cfg)
    first = preprocess.load_pixels(dataset, table, cfg, progress=False)
    assert first.shape == (len(table), cfg.image_size, cfg.image_size)
    expected = preprocess.preprocess(images.read_gray(dataset / table.file[0]), cfg)
    assert np.array_equal(first[0], expected)

    calls = []
    monkeypatch.setattr(preprocess, "read_gray", lambda p: calls.append(p) or images.read_gray(p))
    again = preprocess.load_pixels(dataset, table, cfg, progress=False)
    assert calls == [] and np.array_equal(np.asarray(first), np.asarray(again))


def test_cache_invalidated_by_params_and_content(dataset: Path, cfg):
    table = _table(dataset, cfg)
    k = preprocess.pixels_cache_key(dataset, table, cfg)
    assert preprocess.pixels_cache_key(dataset, table, cfg.replace(clahe=True)) != k
    assert preprocess.pixels_cache_key(dataset, table, cfg.replace(image_size=128)) != k
    f = dataset / table.file[0]
    cv2.imwrite(str(f), synthetic_xray(999))
    changed = _table(dataset, cfg)
    assert preprocess.pixels_cache_key(dataset, changed, cfg) != k
    pixels = preprocess.load_pixels(dataset, changed, cfg, progress=False)
    assert np.array_equal(pixels[0], preprocess.preprocess(synthetic_xray(999), cfg))


def test_killed_run_leaves_no_trusted_cache(dataset: Path, cfg, monkeypatch):
    table = _table(dataset, cfg)
    n = {"k": 0}

    def dies_half_way(path):
        n["k"] += 1
        if n["k"] > len(table) // 2:
            raise KeyboardInterrupt("killed")
        return images.read_gray(path)

    monkeypatch.setattr(preprocess, "read_gray", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        preprocess.load_pixels(dataset, table, cfg, progress=False)
    assert not list(Path(cfg.cache_dir).glob("pixels-*/meta.json"))
    assert not list(Path(cfg.cache_dir).glob("pixels-*.tmp-*"))  # cleaned up on the way out
    monkeypatch.setattr(preprocess, "read_gray", images.read_gray)
    pixels = preprocess.load_pixels(dataset, table, cfg, progress=False)
    assert np.array_equal(pixels[-1], preprocess.preprocess(images.read_gray(dataset / table.file.iloc[-1]), cfg))


def test_image_stats_columns():
    px = np.stack([synthetic_xray(i, 64) for i in range(3)])
    st = preprocess.image_stats(px)
    assert list(st.columns) == ["mean", "std", "p05", "p95", "black_share", "hf_energy"] and len(st) == 3
    assert np.allclose(st["mean"], px.reshape(3, -1).mean(1))
