"""How unlike the training radiographs an image is, in the model's own feature space.

The score is a Mahalanobis distance of the final model's pooled features (1280 numbers) under a
probabilistic PCA fitted on the training split: the leading `k` components with their own
variances, the rest with their mean variance (so an image that differs in a direction the
training images never vary in still scores high). The threshold is the (1 - flag_rate) quantile
on the validation split: about 1% of in-distribution images are flagged. A flagged image still
gets its probabilities; the flag says they describe something the model was not trained on.

What it cannot do: radiographs from other hospitals look like chest radiographs to the model and
are rarely flagged, even where its answers on them are wrong (chapter 08 measures both).
"""
from __future__ import annotations

import numpy as np
import torch

from cxr.core.book import pct, share_word
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model.checkpoints import forward, pixel_config


def pooled_features(model: torch.nn.Module, pixels: np.ndarray, size: int, batch: int = 64) -> np.ndarray:
    """The final model's pooled last feature map (N, 1280) for preprocessed uint8 images."""
    return forward(model, pixels, size, ("features",), batch)["features"]


def proba_and_features(model: torch.nn.Module, pixels: np.ndarray, size: int, batch: int = 64
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (before temperature scaling) and pooled features in one forward pass."""
    out = forward(model, pixels, size, ("proba", "features"), batch)
    return out["proba"], out["features"]


def fit(train: np.ndarray, val: np.ndarray, k: int = 64, flag_rate: float = 0.01) -> dict:
    """Statistics of the training features, and the threshold that flags `flag_rate` of validation."""
    train = np.asarray(train, np.float64)
    if len(train) < 3:
        raise ValueError("Fitting the out-of-distribution score needs at least 3 training images.")
    mean = train.mean(0)
    _, s, vt = np.linalg.svd(train - mean, full_matrices=False)
    var = s ** 2 / (len(train) - 1)
    k = int(min(k, len(var) - 1))
    rest = float(var[k:].mean()) if len(var) > k else float(var[-1])
    stats = {"mean": mean.astype(np.float32).tolist(), "components": vt[:k].astype(np.float32).tolist(),
             "variances": var[:k].astype(np.float32).tolist(), "rest_variance": max(rest, 1e-12),
             "flag_rate": flag_rate, "fitted_on": int(len(train))}
    stats["threshold"] = float(np.quantile(score(stats, val), 1 - flag_rate)) if len(val) else float("inf")
    return stats


def score(stats: dict, features: np.ndarray) -> np.ndarray:
    """The out-of-distribution score of each row of `features` (higher: less like training)."""
    x = np.asarray(features, np.float64) - np.asarray(stats["mean"], np.float64)
    comps = np.asarray(stats["components"], np.float64)
    z = x @ comps.T
    residual = (x * x).sum(1) - (z * z).sum(1)
    d2 = (z * z / np.asarray(stats["variances"], np.float64)).sum(1) + np.maximum(residual, 0) / stats["rest_variance"]
    return np.sqrt(d2 / x.shape[1])


def flagged(stats: dict, scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores) > stats["threshold"]


def fit_on_split(model: torch.nn.Module, meta: dict, config, k: int = 64, flag_rate: float = 0.01) -> dict:
    """`fit` on the training and validation images of the profile's split, preprocessed as the
    model was trained (`meta`: its checkpoint's metadata)."""
    root, table = load_table(config)
    pixels = load_pixels(root, table, pixel_config(meta, config), progress=False)
    size = meta["input_size"]
    rows = {s: np.flatnonzero((table.split == s).to_numpy()) for s in ("train", "val")}
    feats = {s: pooled_features(model, np.asarray(pixels[r]), size) for s, r in rows.items()}
    return fit(feats["train"], feats["val"], k=k, flag_rate=flag_rate)


def flag_words(groups: dict, external_accuracy: float | None = None) -> str:
    """What the flag rates say, in words chosen from them (`groups`: the OOD record's groups): how
    many pictures that are not chest radiographs it catches, and how many of the radiographs from
    other hospitals, beside how often the model is right on those."""
    other = groups.get("not chest radiographs")
    ext = [g for k, g in groups.items() if k.startswith("external")]
    parts = []
    if other:
        parts.append(f"The flag catches {share_word(other['flagged'], other['n'])} of the pictures that are not chest "
                     f"radiographs ({other['flagged']} of {other['n']}).")
    if ext:
        k, n = sum(g["flagged"] for g in ext), sum(g["n"] for g in ext)
        text = f"Of the radiographs from other hospitals it flags {share_word(k, n)} ({k} of {n})"
        if external_accuracy is not None:
            text += f", while the model is right on {pct(external_accuracy)} of them"
        parts.append(text + ".")
    parts.append('A low score means "this looks like the training data", not "this answer is right".')
    return " ".join(parts)
