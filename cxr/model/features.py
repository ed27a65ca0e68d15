"""Frozen pretrained features: computed once per (images, model, input size) and cached on disk."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxr.core.config import Config, cache_key
from cxr.core.files import save_npy
from cxr.core.runtime import autocast, device, show_progress, to_numpy
from cxr.model.architectures import efficientnet_lite0, folded


def to_tensor(batch: np.ndarray, size: int, device: torch.device | None = None) -> torch.Tensor:
    """uint8 (B, S, S) images -> float (B, 1, size, size) in [0, 1], channels-last, on `device`
    (the CPU when None)."""
    x = torch.from_numpy(np.array(batch, dtype=np.float32))
    if device is not None and device.type != "cpu":
        x = x.to(device, non_blocking=True)
    x = x.div_(255).unsqueeze(1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear",
                          **({} if x.shape[-1] > size else {"align_corners": False}))
    return x.contiguous(memory_format=torch.channels_last)


def pixels_key(pixels: np.ndarray) -> str:
    """The cache key of a preprocessed array from `preprocess.load_pixels` (its folder name)."""
    name = getattr(pixels, "filename", None)
    if name is None:  # an in-memory array: hash its bytes
        return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()[:16]
    return Path(name).parent.name


@torch.inference_mode()
def embed(pixels: np.ndarray, config: Config, size: int | None = None, batch: int = 64,
          progress: bool = True) -> np.ndarray:
    """Global-average-pooled ImageNet EfficientNet-Lite0 features (N, 1280), cached on disk."""
    size = size or config.input_size
    key = cache_key(["lite0-imagenet-pooled", size, pixels_key(pixels)], "features")
    path = Path(config.cache_dir) / f"features-{key}.npy"
    if path.exists():
        return np.load(path)
    torch.manual_seed(config.seed)
    dev = device(config.device)
    model = folded(efficientnet_lite0(pretrained=True)).to(dev)
    out = np.zeros((len(pixels), 1280), np.float32)
    for i in tqdm(range(0, len(pixels), batch), desc=f"features {size}px", disable=not show_progress(progress)):
        with autocast(dev):
            out[i:i + batch] = to_numpy(model.features(to_tensor(pixels[i:i + batch], size, dev)).mean((2, 3)))
    save_npy(path, out)
    return out


