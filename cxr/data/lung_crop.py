"""The lung fields as the classifier's input: crop a film to the box around both lungs (with a
margin), blank everything outside them, or both, from the lung segmenter's mask.

A mask that fails the check (`lung_masks.status`) is never used silently: a film whose mask is
empty or too small to trust is passed whole, and the status is returned with the image, for
`cxr predict` to report.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from cxr.data import lung_masks, segmenter

#: statuses whose mask is too little to crop to: the whole film is used instead
WHOLE_FILM = ("empty", "too small")


def box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the box around the mask, widened by `margin` of its height and width on
    each side and kept inside the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dy, dx = round(margin * (y1 - y0)), round(margin * (x1 - x0))
    return max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)


def apply(gray: np.ndarray, mask: np.ndarray, how: str, margin: float = 0.1) -> np.ndarray:
    """The film as `how` asks ("crop", "mask" or "crop+mask") given its lung mask (same size)."""
    g = np.asarray(gray)
    m = np.asarray(mask, bool)
    if "mask" in how:
        g = np.where(m, g, 0).astype(g.dtype)
    if "crop" in how:
        y0, y1, x0, x1 = box(m, margin)
        g = g[y0:y1, x0:x1]
    return np.ascontiguousarray(g)


@lru_cache(maxsize=1)
def _segmenter():
    return segmenter.load()[0]


def lung_input(gray: np.ndarray, how: str, margin: float = 0.1) -> tuple[np.ndarray, str]:
    """The film's lung input and its mask's status, segmented by the shipped segmenter (loaded
    once per process). A mask that is empty or too small gives the whole film back."""
    mask = segmenter.segment(_segmenter(), [gray])[0]
    status = lung_masks.status(mask)
    if status in WHOLE_FILM:
        return np.asarray(gray), status
    return apply(gray, mask, how, margin), status
