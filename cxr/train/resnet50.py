"""Training approach ``resnet50``: the original project's recipe (torchvision ResNet50, full
fine-tuning, class-weighted loss, online augmentation) for a fixed number of steps."""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxr.core import metrics
from cxr.core.config import CLASSES
from cxr.core.files import save_state, write_csv
from cxr.core.runtime import autocast, device, show_progress
from cxr.data import augment
from cxr.data.splits import stratified_sample
from cxr.model.architectures import resnet50
from cxr.model.checkpoints import predict, save_checkpoint
from cxr.model.features import to_tensor
from cxr.model.registry import write_predictions

log = logging.getLogger("cxr.train.run")


def _class_weights(y: np.ndarray) -> torch.Tensor:
    counts = np.bincount(y, minlength=len(CLASSES)).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def fit_run(path, config, table, pixels, y, progress, eval_every_s, root):
    """The original recipe, full fine-tuning with online augmentation, for `resnet_steps` steps of
    `resnet_batch_size` images at `resnet_lr` (cosine schedule).

    The wall budget is only a safety stop, reported when it fires. ImageNet weights are used if
    torchvision's cache has them; otherwise the run starts from random weights and says so. Its
    validation predictions (and so its temperature) are those of the fixed validation subset it
    checks at the end of training (`resnet_val_subset`); its test predictions, those of a fixed
    stratified subset of the test split (`resnet_test_subset`).
    """
    torch.manual_seed(config.seed)
    model, origin = resnet50(pretrained=True)
    dev = device(config.device)
    model = model.to(dev, memory_format=torch.channels_last)
    log.info("ResNet50: %s", origin)
    tr = np.flatnonzero((table.split == "train").to_numpy())
    # fixed, stratified subsets: validation for the checks during training, test for the comparison
    va, te = (np.sort(stratified_sample(table[table.split == s], n, seed=config.seed).index.to_numpy())
              for s, n in (("val", config.resnet_val_subset), ("test", config.resnet_test_subset)))
    lr, batch, steps = config.resnet_lr, config.resnet_batch_size, config.resnet_steps
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    weights = _class_weights(y[tr]).to(dev)
    transform = augment.train_augment(harmonise=False, seed=config.seed)
    budget = config.wall_budget_s
    history, trained, seen, step, epoch = [], 0.0, 0, 0, 0
    if (path / "last.pt").exists():
        state = torch.load(path / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, trained, seen, step, epoch = (state["history"], state["trained"], state["seen"], state["step"],
                                               state["epoch"])
    bar = tqdm(total=steps, initial=step, desc="ResNet50 (steps)", disable=not show_progress(progress))
    next_eval = (len(history) + 1) * (eval_every_s or math.inf)  # extra, timed checks for the benchmark's curves
    budget_stop, pv = False, None
    order = np.random.default_rng(config.seed + epoch).permutation(len(tr))
    pos = seen % len(tr)
    while step < steps:
        if trained >= budget:
            budget_stop = True  # the safety stop fired: the run says so in done.json
            log.warning(f"stopping early: the wall-time safety stop of {budget / 60:.0f} min fired after {step} of {steps} steps")
            break
        if pos >= len(order):
            epoch, pos = epoch + 1, 0
            order = np.random.default_rng(config.seed + epoch).permutation(len(tr))
        idx = np.sort(order[pos:pos + batch])
        pos += len(idx)
        t = time.perf_counter()
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = to_tensor(augment.augment_batch(pixels[tr[idx]], transform), config.input_size, dev)
        with autocast(dev):
            logits = model(x).float()
        loss = F.cross_entropy(logits, torch.from_numpy(y[tr[idx]]).to(dev), weight=weights, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t
        trained += dt
        seen += len(idx)
        step += 1
        bar.update(1)
        # a check (and a resumable state) every 100 steps and at the end, and the benchmark's timed ones
        if trained >= next_eval or step % 100 == 0 or step == steps:
            pv = predict(model, pixels[va], config.input_size, progress=False)
            history.append({"step": step, "images_seen": seen, "epochs_seen": seen / len(tr), "train_loss": loss.item(),
                            "val_accuracy": metrics.accuracy_from_proba(y[va], pv),
                            "val_macro_auc": metrics.macro_auc(y[va], pv), "wall_seconds": trained})
            next_eval = trained + (eval_every_s or math.inf)
            write_csv(pd.DataFrame(history), path / "history.csv")
            save_state(path / "last.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "history": history, "trained": trained, "seen": seen, "step": step,
                                          "epoch": epoch})
            h = history[-1]
            log.info(f"{trained / 60:5.1f} min, {seen:,} images: val acc {h['val_accuracy']:.4f}, "
                     f"val AUC {h['val_macro_auc']:.4f}")
    bar.close()
    save_checkpoint(path / "checkpoint.pt", model, "resnet50", config, weights_origin=origin)
    # validation: the fixed subset, as the last check predicted it (a full pass of the split would take
    # about 90 s more on two cores, for a temperature); test: its fixed subset, for the comparison
    if pv is None or history[-1]["step"] != step:  # resumed after the last check, or stopped between checks
        pv = predict(model, pixels[va], config.input_size, progress=False)
    write_predictions(path, "val", table, va, pv)
    write_predictions(path, "test", table, te, predict(model, pixels[te], config.input_size, progress=progress,
                                                         desc="predict test"))
    (path / "last.pt").unlink(missing_ok=True)
    return {"arch": "resnet50", "weights_origin": origin, "epochs": seen / len(tr), "images_seen": seen, "steps": step,
            "train_wall_seconds": trained, "safety_stop_fired": budget_stop}
