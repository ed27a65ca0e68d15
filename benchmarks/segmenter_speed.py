"""Speed of the shipped lung segmenter on 2 CPU cores: milliseconds per image at 256 px, batched
(the network alone, and with resizing the mask back to the image's size), as the median of
repeated runs. Writes reports/segmenter_speed.json.

    .venv/bin/python benchmarks/segmenter_speed.py [--repeats 20] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from cxr.core.config import repo_root
from cxr.core.files import write_json
from cxr.core.runtime import tune_malloc
from cxr.data import segmenter
from cxr.model.speed import timed

TARGET_MS = 10.0  # issue 25: at most 10 ms per image at 256 px, batched, on 2 cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    tune_malloc()
    model, meta = segmenter.load()
    images = list(np.random.default_rng(0).integers(0, 256, (args.batch, segmenter.SIZE, segmenter.SIZE), dtype=np.uint8))
    x = torch.from_numpy(np.stack([segmenter.to_input(g) for g in images]))[:, None].contiguous(
        memory_format=torch.channels_last)

    def network():
        with torch.no_grad():
            model(x)

    net = [t / args.batch * 1000 for t in timed(network, args.repeats)]
    full = [t / args.batch * 1000 for t in timed(lambda: segmenter.segment(model, images, batch=args.batch), args.repeats)]
    path = segmenter.SHIPPED
    record = {
        "command": "python benchmarks/segmenter_speed.py", "batch": args.batch, "input_size": segmenter.SIZE,
        "network_ms_per_image": {"median": statistics.median(net), "min": min(net), "max": max(net)},
        "segment_ms_per_image": {"median": statistics.median(full), "min": min(full), "max": max(full)},
        "target_ms": TARGET_MS, "within_target": statistics.median(full) <= TARGET_MS,
        "weights_bytes": path.stat().st_size, "weights_limit_bytes": 5_000_000,
        "threads": torch.get_num_threads(), "cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(record, repo_root() / "reports" / "segmenter_speed.json")
    print(f"segmenter: {record['segment_ms_per_image']['median']:.1f} ms per image (network "
          f"{record['network_ms_per_image']['median']:.1f} ms; target {TARGET_MS} ms), {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
