"""Test-time augmentation: the mean prediction over a few fixed views of each image."""
from __future__ import annotations

import numpy as np

from cxr.core.config import CLASSES, Config
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model.checkpoints import load_model, pixel_config, predict

TTA_VIEWS = 3


def tta_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The image, shifted 4 px right and down, and scaled to 95% about its centre."""
    import cv2

    size = pixels.shape[-1]
    def warp(m):
        return np.stack([cv2.warpAffine(np.asarray(im), m, (size, size), borderMode=cv2.BORDER_CONSTANT) for im in pixels])
    c = size / 2
    return [np.asarray(pixels), warp(np.float32([[1, 0, 4], [0, 1, 4]])), warp(cv2.getRotationMatrix2D((c, c), 0, 0.95))]


def tta_predictions(run, config: Config, progress: bool = True, splits=("val", "test")) -> dict[str, np.ndarray]:
    """Mean probabilities over the TTA views for the splits of a run (validation and test). The first
    view, the image itself, is what the run already predicted for the split (the same model on the
    same images), so only the other views are computed."""
    model, meta = load_model(run.checkpoint, config.device)
    root, table = load_table(config)
    pixels = load_pixels(root, table, pixel_config(meta, config), progress=False)
    out = {}
    for s in splits:
        rows = table.index[table.split == s].to_numpy()
        views = tta_views(pixels[rows])
        saved = run.predictions(s)
        first = (saved[list(CLASSES)].to_numpy(np.float32) if saved.file.tolist() == table.file[rows].tolist()
                 else predict(model, views[0], meta["input_size"], progress=progress, desc=f"TTA {s} 1/{len(views)}"))
        out[s] = np.mean([first] + [predict(model, v, meta["input_size"], progress=progress,
                                            desc=f"TTA {s} {k + 1}/{len(views)}") for k, v in enumerate(views) if k],
                         axis=0)
    return out
