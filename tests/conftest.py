"""Shared fixtures: a small synthetic dataset in the Kaggle layout, with its own cache."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr.core.config import get_config
from cxr.core.runtime import tune_malloc

tune_malloc()  # as the CLI and the chapters do: CNN passes on the CPU are about 3x faster
from cxr.core.config import CLASSES


def synthetic_xray(seed: int, size: int = 96) -> np.ndarray:
    """A distinct smooth grey image (different seeds give uncorrelated images)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8)).astype(np.float32)
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def write_dataset(root: Path, per_class: int = 6, ext: str = ".png") -> Path:
    for c, label in enumerate(CLASSES):
        d = root / label / "images"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(d / f"{label}-{i + 1}{ext}"), synthetic_xray(1000 * c + i))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


@pytest.fixture
def cfg(tmp_path: Path):
    return get_config("full", cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """An empty project folder used as repo_root(), so discovery does not see the real data."""
    h = tmp_path / "home" / "project"
    (h / "data").mkdir(parents=True)
    monkeypatch.setenv("CXR_HOME", str(h))
    monkeypatch.delenv("CXR_DATA_DIR", raising=False)
    return h
