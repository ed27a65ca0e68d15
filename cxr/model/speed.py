"""How fast a trained model predicts: batched inference throughput, as `checkpoints.predict` runs it."""
from __future__ import annotations

import time

import numpy as np
import torch

from cxr.core.runtime import autocast, model_device
from cxr.model.architectures import folded


def timed(fn, repeats: int) -> list[float]:
    """Wall seconds of each of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


@torch.inference_mode()
def inference_speed(model: torch.nn.Module, size: int, batch: int = 64, repeats: int = 5, threads: int | None = None) -> dict:
    """Median images/s of batched inference at `size` px over `repeats` timed batches (after one warm-up)."""
    if threads:
        torch.set_num_threads(threads)
    model = folded(model.eval())  # as `checkpoints.predict` runs a batch
    dev = model_device(model)
    x = torch.rand(batch, 1, size, size).to(dev).contiguous(memory_format=torch.channels_last)
    with autocast(dev):
        model(x)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        with autocast(dev):
            model(x).float().cpu()  # the result on the host, as a caller gets it
        rates.append(batch / (time.perf_counter() - t))
    return {"images_per_second": float(np.median(rates)), "runs": rates, "batch": batch, "size": size,
            "threads": torch.get_num_threads()}
