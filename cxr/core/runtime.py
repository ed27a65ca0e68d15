"""Process-level settings that make PyTorch usable on a small CPU machine.

glibc returns every large freed block to the kernel and maps it again on the next allocation,
so a CNN forward pass on the CPU spends most of its time in page faults (measured here: 28
images/s at 224 px and 60% system time, against 97 images/s without it). Raising malloc's mmap
and trim thresholds keeps that memory in the process. Call `tune_malloc()` once at the start of
a process that runs models (the CLI, every chapter, the benchmarks and the tests do); importing
`cxr` changes nothing. CXR_NO_MALLOPT=1 turns it off; it affects only the current process.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

from cxr.core.config import DEVICE_ENV

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Raise glibc's malloc thresholds; returns False where that is not possible (not glibc)."""
    if os.environ.get("CXR_NO_MALLOPT") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(1 << 30))
    ok &= libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int((1 << 31) - 1))
    ok &= libc.mallopt(M_TOP_PAD, ctypes.c_int(1 << 28))
    return bool(ok)


def show_progress(progress: bool) -> bool:
    """Whether to draw a progress bar: asked for, and not switched off with TQDM_DISABLE=1
    (tqdm ignores that variable when `disable=` is passed explicitly)."""
    return bool(progress) and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


# --------------------------------------------------------------------------- where models run
DEVICES = ("auto", "cpu", "cuda")


def device(name: str = "auto"):
    """The torch device models run on: `name` (a configuration's `device`: "auto" means CUDA when
    PyTorch sees a GPU, else the CPU). Asking for CUDA where there is none is an error that says what to do."""
    import torch

    chosen = (name or "auto").strip().lower()
    if chosen not in DEVICES:
        raise ValueError(f"device {chosen!r} is not one of {', '.join(DEVICES)} (from --device or ${DEVICE_ENV}).")
    if chosen == "auto":
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
    elif chosen == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device cuda was asked for (--device or ${DEVICE_ENV}), but PyTorch sees no CUDA GPU "
                         "here: use --device auto or cpu.")
    return torch.device(chosen)


def model_device(model):
    """The device a model's weights are on."""
    import torch

    return next(iter(model.parameters()), torch.empty(0)).device


def autocast(dev):
    """Mixed precision (bfloat16 matrix work) on CUDA; nothing on the CPU, whose results stay as they are."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()


def to_numpy(t):
    """A tensor's values as a float32 NumPy array on the host (no copy for a float32 CPU tensor)."""
    return t.detach().float().cpu().numpy()


def cpu_info() -> dict[str, str]:
    """The CPU as Linux reports it (/proc/cpuinfo: the first processor's "model name", "cpu
    family", "model", "stepping", "flags", ...); empty where there is no such file."""
    info: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    for line in lines:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info
