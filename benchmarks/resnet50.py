"""The original project's model, fairly trained: ResNet50, class-weighted loss, Albumentations and
CLAHE (the original's recipe, `cxr train --approach resnet50`), for a step budget that fits in
about 90 minutes on two CPU cores, at a lower resolution than the original's 224 px to fit it.
No ImageNet ResNet50 weights can be had offline, so it starts from random weights (the original
fine-tuned ImageNet weights).

Writes reports/resnet50.json (`cxr.report.resnet50_baseline.make`): the budget (resolution, steps, batch,
epochs), the validation curve, the test metrics with 95% intervals on the whole test split, the
wall time and the machine, and the network's Grad-CAM maps of the images chapter 05 draws.
Chapters 03 and 05 show that record. The run is keyed like every run: run again, it is reused.

    .venv/bin/python benchmarks/resnet50.py                  # 1,400 steps of 32 at 128 px, about 75 min
    .venv/bin/python benchmarks/resnet50.py --device cuda    # on a GPU
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1400, help="training steps of 32 images (cosine schedule)")
    ap.add_argument("--size", type=int, default=128, help="input resolution (the original used 224)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--out", default=str(ROOT / "reports" / "resnet50.json"))
    ap.add_argument("--note", default="", help="said in the record, e.g. that other work shared the machine")
    args = ap.parse_args()
    import logging

    from cxr.core.config import get_config
    from cxr.core.runtime import tune_malloc
    from cxr.report import resnet50_baseline
    from cxr.train import run as train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # a line at every check
    tune_malloc()
    full = get_config("full", **({"device": args.device} if args.device else {}))  # resolved once, here
    config = resnet50_baseline.recipe(full, args.steps, args.size)
    run = train.fit("resnet50", config, progress=True)
    record = resnet50_baseline.make(run, config, command="python benchmarks/resnet50.py", note=args.note)
    resnet50_baseline.write(record, args.out)
    print(resnet50_baseline.headline(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
