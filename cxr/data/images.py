"""Reading one radiograph: decoding any supported file to 8-bit grey (16-bit, RGB and palette
images included, with what was changed), and the small summaries the scan keeps of it (a
perceptual hash and a thumbnail).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


MIN_SIDE = 64  # smaller images are skipped: nothing diagnostic survives at that size


class ImageError(ValueError):
    """A file that cannot be used as a radiograph; the message says why."""


def decode_gray(data: bytes) -> tuple[np.ndarray, dict]:
    """Bytes of an image file -> 8-bit grey array, and what had to be normalised to get there.

    Raises ImageError (with the reason) for empty, undecodable or too small files.
    """
    if not data:
        raise ImageError("empty file")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError("not a decodable image (corrupt, truncated or not an image)")
    info = {"channels": 1 if arr.ndim == 2 else arr.shape[2], "bit_depth": arr.dtype.itemsize * 8, "notes": []}
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY)
            info["notes"].append("RGBA converted to grey")
        elif arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
            info["notes"].append("RGB converted to grey")
        else:
            arr = arr[..., 0]
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        if hi <= lo:
            raise ImageError(f"blank {info['bit_depth']}-bit image (all pixels {lo:g})")
        arr = np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)
        info["notes"].append(f"{info['bit_depth']}-bit rescaled to 8-bit (min-max)")
    h, w = arr.shape
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"too small ({w}x{h}; needs at least {MIN_SIDE} px a side)")
    if h != w:
        info["notes"].append(f"not square ({w}x{h}); resized to a square")
    info.update(width=w, height=h)
    return arr, info


def read_gray(path: str | Path) -> np.ndarray:
    """One image file as an 8-bit grey array (see decode_gray); ImageError says what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"unreadable: {e.strerror or e}") from e
    return decode_gray(data)[0]


def phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash (8x8 low frequencies of a 32x32 thumbnail against their median)."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    return int(np.packbits(low.flatten() > np.median(low)).view(">u8")[0])


def thumbnail(gray: np.ndarray, size: int = 32) -> np.ndarray:
    """Zero-mean, unit-norm thumbnail: dot products of two of them are Pearson correlations."""
    t = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    n = np.linalg.norm(t)
    return t / n if n > 0 else t
