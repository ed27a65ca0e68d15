"""Where `cxr train` spends its time on this machine, and the floor that puts under it.

Prices the parts of the shipped recipe in one run, each as the median of repeated batches of
`batch_size` real training images at the model's input size:

* the frozen layers (stem and blocks before `train_from_block`), as the cache computes them and
  with batch norms folded, plus the two augmentations the cache applies;
* one training step (forward, backward, AdamW) from each cut in `--cuts`, in float32 as the
  recipe trains and (cut `train_from_block` only) under bfloat16 autocast;
* each kind of convolution of the trainable blocks, forward and forward + backward;

then multiplies them by what a run computes (`cxr.train.finetune.finetune_work`: images through the
frozen layers, training steps) for the floor of the recipe: the time `cxr train` cannot go
below on this machine without a different recipe. Writes reports/train_profile.json.

    .venv/bin/python benchmarks/train_profile.py        # under a minute on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr.core.config import CLASSES, get_config, repo_root
from cxr.core.runtime import tune_malloc
from cxr.data import augment
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_audit, load_table
from cxr.model.architectures import efficientnet_lite0, folded
from cxr.model.features import to_tensor
from cxr.train import finetune

tune_malloc()

TARGET_MIN = 20.0  # issue 15: cxr train in 20 minutes or less on two cores


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def step_seconds(acts: torch.Tensor, base: int, labels: torch.Tensor, cut: int, repeats: int,
                 bf16: bool = False) -> float:
    """One training step of the recipe's shape from `cut` (`acts`: the input of block `base` <= cut):
    the first half of the batch and its other-chain half, cross-entropy on both and the consistency
    term, backward, AdamW."""
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=True).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(finetune._trainable(model, cut), lr=1e-4)
    with torch.inference_mode():
        model.eval()
        x = model.features(acts, base, cut)
    x = x.clone().contiguous(memory_format=torch.channels_last)
    half = len(x) // 2

    def step():
        finetune._set_train_mode(model, cut)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model.head(model.features(x, cut)).float()
        loss = F.cross_entropy(logits, labels) + finetune.symmetric_kl(logits[:half], logits[half:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, repeats)


def conv_seconds(acts: torch.Tensor, cut: int, repeats: int) -> dict:
    """Forward and forward + backward seconds of each kind of convolution in blocks cut.., summed over
    the blocks, with inputs that need gradients (as inside the trainable blocks)."""
    model = efficientnet_lite0(pretrained=True).to(memory_format=torch.channels_last).eval()
    out = {}
    x = acts
    for block in model._blocks[cut:]:
        h = x
        for kind in ("_expand_conv", "_depthwise_conv", "_project_conv"):
            conv = getattr(block, kind, None)
            if conv is None:
                continue
            inp = h.detach().clone().requires_grad_(True)
            with torch.no_grad():
                y = conv(inp)
            grad = torch.rand_like(y)

            def forward():
                with torch.no_grad():
                    conv(inp)

            def both():
                conv.zero_grad(set_to_none=True)
                inp.grad = None
                conv(inp).backward(grad)

            t = out.setdefault(kind.strip("_"), {"forward_s": 0.0, "forward_backward_s": 0.0})
            t["forward_s"] += timed(forward, repeats)
            t["forward_backward_s"] += timed(both, repeats)
            with torch.no_grad():  # the next convolution's input, through this one's batch norm
                h = F.relu6(getattr(block, {"_expand_conv": "_bn0", "_depthwise_conv": "_bn1"}.get(kind, "_bn2"))(y))
        with torch.no_grad():
            x = block(x)
    return {k: {n: round(v, 4) for n, v in t.items()} for k, t in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cuts", default="8,9,10,11", help="cuts (first trainable block) to time a step from")
    ap.add_argument("--out", default=str(repo_root() / "reports" / "train_profile.json"))
    args = ap.parse_args()
    cfg = get_config("full")
    cut, size, batch = cfg.train_from_block, cfg.input_size, cfg.batch_size
    cuts = sorted({cut, *(int(c) for c in args.cuts.split(","))})  # the recipe's own cut always
    base = cuts[0]
    root, table = load_table(cfg)
    pixels = load_pixels(root, table, cfg, progress=False)
    tr = np.flatnonzero((table.split == "train").to_numpy())
    va = set(table.file[table.split == "val"])
    twins = load_audit(cfg, root) if cfg.harmonise else None
    n_twins_train = int((twins.twin_split == "train").sum()) if twins is not None else 0
    n_val_twins = int(twins.twin_file.isin(va).sum()) if twins is not None else 0
    work = finetune.finetune_work(cfg, len(tr) + n_twins_train, len(va), n_val_twins)  # twins train too

    images = np.asarray(pixels[tr[:batch]])
    labels = torch.from_numpy(np.array(table.label.iloc[tr[:batch]].map(CLASSES.index), dtype=np.int64))
    model = efficientnet_lite0(pretrained=True).eval().to(memory_format=torch.channels_last)
    fold = folded(model)
    r = args.repeats
    with torch.inference_mode():
        x = to_tensor(images, size)
        frozen = {"plain_s": timed(lambda: model.features(x, 0, cut), r),
                  "folded_s": timed(lambda: fold.features(x, 0, cut), r),
                  "augment_s": timed(lambda: augment.augment_batch(images, augment.train_augment(True, seed=1)), r),
                  "other_chain_s": timed(lambda: augment.augment_batch(images, augment.hospital_chain(seed=1)), r)}
        acts = model.features(x, 0, base).contiguous(memory_format=torch.channels_last)
        at_cut = model.features(acts, base, cut).contiguous(memory_format=torch.channels_last)
        eval_s = timed(lambda: model.head(model.features(at_cut, cut)), r)
    steps = {c: step_seconds(acts, base, labels, c, r) for c in cuts}
    bf16_step = step_seconds(acts, base, labels, cut, r, bf16=True)
    convs = conv_seconds(at_cut, cut, r)

    per_image = lambda s: s / batch  # noqa: E731
    cache_s = (work["frozen_images"] * per_image(frozen["plain_s"])
               + work["augmented_images"] * per_image(frozen["augment_s"])
               + work["chained_images"] * per_image(frozen["other_chain_s"]))
    steps_s = work["steps"] * steps[cut]
    validate_s = cfg.epochs * work["validated_per_epoch"] * per_image(eval_s)
    floor = {"frozen_cache_min": cache_s / 60, "training_steps_min": steps_s / 60, "validation_min": validate_s / 60}
    floor["total_min"] = sum(floor.values())
    depthwise = convs.get("depthwise_conv", {})
    record = {
        "command": "python benchmarks/train_profile.py" + (f" --repeats {r}" if r != 5 else "")
                   + (f" --cuts {args.cuts}" if args.cuts != "8,9,10,11" else ""),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "recipe": {"epochs": cfg.epochs, "train_from_block": cut, "views": cfg.views, "batch_size": batch,
                   "input_size": size, **work},
        "seconds_per_batch": {"batch": batch, "frozen_layers": frozen, "validation_forward_from_cut": eval_s,
                              "training_step_from_cut": steps, "training_step_bf16_autocast": bf16_step,
                              "convolutions_of_trainable_blocks": convs},
        "depthwise_share_of_step": depthwise.get("forward_backward_s", 0.0) / steps[cut],
        "floor": {k: round(v, 2) for k, v in floor.items()},
        "training_steps_alone_min": {c: round(work["steps"] * s / 60, 2) for c, s in steps.items()},
        "target_min": TARGET_MIN,
        "floor_over_target_min": round(floor["total_min"] - TARGET_MIN, 2),
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("recipe", "floor", "training_steps_alone_min", "depthwise_share_of_step",
                                             "floor_over_target_min")}, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
