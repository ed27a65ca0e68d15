"""Prediction speed of `cxr predict` with the shipped model: one image end to end (read the file,
preprocess, predict, OOD score), with and without a Grad-CAM overlay, as the median of repeated
runs; and batched throughput on a folder of test images. Writes reports/predict_speed.json.

    .venv/bin/python benchmarks/predict_speed.py [--repeats 30] [--folder-images 256]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cxr.assess import predict
from cxr.core.config import get_config, repo_root
from cxr.core.runtime import tune_malloc
from cxr.data.splits import load_table
from cxr.model import registry
from cxr.model.speed import timed

tune_malloc()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--folder-images", type=int, default=256)
    ap.add_argument("--out", default=str(repo_root() / "reports" / "predict_speed.json"))
    args = ap.parse_args()
    cfg = get_config("full")
    root, table = load_table(cfg)
    test = table[table.split == "test"].reset_index(drop=True)
    pred = predict.load(registry.SHIPPED, cfg)
    one = root / test.file[0]
    with tempfile.TemporaryDirectory() as tmp:
        cams = Path(tmp) / "cams"
        single = timed(lambda: predict.predict_paths([one], pred, progress=False), args.repeats)
        with_cam = timed(lambda: predict.predict_paths([one], pred, cam_dir=cams, progress=False), args.repeats)
        folder = Path(tmp) / "folder"
        folder.mkdir()
        for f in test.file[: args.folder_images]:
            shutil.copy(root / f, folder / Path(f).name)
        t = time.perf_counter()
        rows = predict.predict_paths([folder], pred, progress=False)
        batch_s = time.perf_counter() - t
    record = {
        "command": "python benchmarks/predict_speed.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                     vars(args).items() if k != "out"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "model": registry.SHIPPED.name,
        "single_image_ms": {"median": 1000 * statistics.median(single), "runs": [1000 * s for s in single]},
        "single_image_with_gradcam_ms": {"median": 1000 * statistics.median(with_cam),
                                         "runs": [1000 * s for s in with_cam]},
        "folder": {"images": int(len(rows)), "seconds": batch_s, "images_per_second": len(rows) / batch_s},
        "targets": {"single_image_ms": 100, "single_image_with_gradcam_ms": 500},
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"one image {record['single_image_ms']['median']:.0f} ms, with Grad-CAM "
          f"{record['single_image_with_gradcam_ms']['median']:.0f} ms (medians of {args.repeats}); folder of "
          f"{len(rows)}: {record['folder']['images_per_second']:.0f} images/s -> {args.out}")


if __name__ == "__main__":
    main()
