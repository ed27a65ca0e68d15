"""Contrast enhancement, resizing, and the on-disk cache of preprocessed images.

The cache is one uint8 array of shape (N, size, size) per (set of files, parameters): a raw
file read back as a memory map, so a second run does not decode 15,000 images again. Its key
hashes every file's path and SHA-256 and every parameter; it is written to a temporary folder
and renamed into place when complete, so a killed run never leaves a half cache that a later
run would trust.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr.core.config import Config, cache_key
from cxr.core.files import ensure_dir, publish_dir
from cxr.core.runtime import show_progress
from cxr.data.images import read_gray
from cxr.data.lung_crop import WHOLE_FILM, lung_input


def clahe(gray: np.ndarray, clip: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) on an 8-bit grey image."""
    return cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(tile), int(tile))).apply(gray)


def gamma_correct(gray: np.ndarray, gamma: float) -> np.ndarray:
    """out = 255 * (in / 255) ** gamma; gamma < 1 brightens, > 1 darkens."""
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** float(gamma)).astype(np.uint8)
    return cv2.LUT(gray, lut)


def resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Square resize: area interpolation when shrinking, bicubic when enlarging."""
    if gray.shape == (size, size):
        return gray
    interp = cv2.INTER_AREA if min(gray.shape) >= size else cv2.INTER_CUBIC
    return cv2.resize(gray, (size, size), interpolation=interp)


def enhance(gray: np.ndarray, config: Config) -> np.ndarray:
    """The enhancement the config asks for (CLAHE and/or gamma), applied after resizing."""
    if config.gamma is not None:
        gray = gamma_correct(gray, config.gamma)
    if config.clahe:
        gray = clahe(gray, config.clahe_clip, config.clahe_tile)
    return gray


def preprocess(gray: np.ndarray, config: Config, notes: list | None = None) -> np.ndarray:
    """The classifier's input: the lung fields when the config asks for them (`lung_crop`), then
    resized and enhanced. A lung mask that fails its check is said in `notes` when given."""
    if config.lungs != "none":
        gray, status = lung_input(gray, config.lungs, config.lung_margin)
        if notes is not None and status != "ok":
            notes.append(f"lung mask {status}" + (": the whole film was used" if status in WHOLE_FILM else ""))
    return enhance(resize(gray, config.image_size), config)


PARAMS = ("image_size", "clahe", "clahe_clip", "clahe_tile", "gamma", "lungs", "lung_margin")


def pixels_cache_key(root: Path, table: pd.DataFrame, config: Config) -> str:
    """Keyed by the parameters, the folder, every file's path and SHA-256, and the reading and
    preprocessing code."""
    files = hashlib.sha256("".join(f"{f}\0{sha}\n" for f, sha in zip(table.file, table.sha256)).encode()).hexdigest()
    return cache_key([config.values(*PARAMS), str(Path(root).resolve()), files], "pixels")


def load_pixels(root: str | Path, table: pd.DataFrame, config: Config,
                progress: bool = True) -> np.ndarray:
    """Preprocessed images of `table` (columns file, sha256) as a read-only (N, S, S) uint8 array."""
    root = Path(root)
    n, s = len(table), config.image_size
    folder = Path(config.cache_dir) / f"pixels-{pixels_cache_key(root, table, config)}"
    if not (folder / "meta.json").exists():
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=ensure_dir(folder.parent)))
        try:
            arr = np.lib.format.open_memmap(tmp / "pixels.npy", mode="w+", dtype=np.uint8, shape=(n, s, s))
            for i, f in enumerate(tqdm(table.file, desc=f"preprocess {s}px", disable=not show_progress(progress))):
                arr[i] = preprocess(read_gray(root / f), config)
            arr.flush()
            del arr
            table[["file", "sha256"]].to_csv(tmp / "index.csv", index=False)
            meta = {p: getattr(config, p) for p in PARAMS} | {"n": n, "root": str(root)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks completion
            publish_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return np.load(folder / "pixels.npy", mmap_mode="r")


def image_stats(pixels: np.ndarray, batch: int = 1024) -> "pd.DataFrame":
    """Per-image intensity statistics: mean, std, 5th/95th percentiles, share of near-black
    pixels (< 10), and high-frequency energy (mean |Laplacian|, sensitive to compression and
    resampling)."""
    rows = []
    for i in range(0, len(pixels), batch):
        x = np.asarray(pixels[i:i + batch])
        flat = x.reshape(len(x), -1)
        lap = np.stack([np.abs(cv2.Laplacian(im, cv2.CV_32F)).mean() for im in x])
        rows.append(pd.DataFrame({
            "mean": flat.mean(1), "std": flat.std(1),
            "p05": np.percentile(flat, 5, axis=1), "p95": np.percentile(flat, 95, axis=1),
            "black_share": (flat < 10).mean(1), "hf_energy": lap,
        }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
