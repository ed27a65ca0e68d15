"""Training approach ``finetune``, the final model's recipe: EfficientNet-Lite0 with its first
`train_from_block` blocks frozen. Their output is computed once per augmented view of each
training image and cached on disk (`frozen_activations`), so each epoch trains only the last
stages and the head: on two CPU cores several times faster than a full forward and backward
pass, with the same model at the end. Each view is paired with the same view through another
hospital's processing and a consistency loss asks for the same answer on both; epochs are
chosen by the report's rule (`targets.selection_key`)."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxr.core import metrics, targets
from cxr.core.config import CLASSES, Config, cache_key
from cxr.core.files import save_state, write_csv
from cxr.core.runtime import autocast, device, model_device, show_progress, to_numpy
from cxr.data import augment
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_audit
from cxr.model.architectures import efficientnet_lite0
from cxr.model.checkpoints import load_model, predict, save_checkpoint
from cxr.model.features import pixels_key, to_tensor
from cxr.model.registry import write_predictions

log = logging.getLogger("cxr.train.run")


def _group_weights(group: np.ndarray) -> np.ndarray:
    """Per-image weights that give every group (a class, or a class seen through another
    processing chain) the same total weight: a shortcut that helps one large group cannot pay
    for errors on a small one (group reweighting, as in Sagawa et al. 2020)."""
    counts = np.bincount(group)
    present = counts > 0
    w = np.zeros(len(counts))
    w[present] = len(group) / (present.sum() * counts[present])
    return w[group].astype(np.float32)


def frozen_activations(pixels: np.ndarray, rows: np.ndarray, config: Config, view: int, progress: bool = True,
                       batch: int = 64, chain: bool = False) -> np.ndarray:
    """Output of the frozen stem and blocks[:train_from_block] for `rows`, as a float16 memmap.

    View 0 is the image itself; view v > 0 is an augmented copy (seeded by view), so an epoch can
    see a different augmentation of every image without recomputing the frozen layers. With
    `chain`, every image of the view is then passed through another hospital's processing
    (`augment.hospital_chain`): row for row, the same radiograph with the same augmentation, only
    processed differently, the pair the consistency loss compares. Cached on disk, keyed by the
    images, the rows, the view, the augmentation settings and the code path's version.
    """
    cut = config.train_from_block
    # view 0 without the other chain is the images themselves: no draw, so no seed or harmonisation
    # in its key, and runs that differ only there (the seeds, chapter 05's "before" model) share it
    drawn = [config.harmonise, config.seed, chain] if view > 0 or chain else []
    key = cache_key([pixels_key(pixels), hashlib.sha256(rows.tobytes()).hexdigest(), view, cut, config.input_size,
                     *drawn], "activations")
    path = Path(config.cache_dir) / f"activations-{key}.npy"
    # The frozen model is built whether or not the cache exists: building it draws the random
    # initial state of its layers from torch's global generator (the pretrained weights replace it
    # after), and the training that follows must see the same random stream either way, so that a
    # run gives the same model on a fresh machine and on one whose caches are warm.
    model = efficientnet_lite0(pretrained=True)
    if path.exists():
        return np.load(path, mmap_mode="r")
    dev = device(config.device)
    model = model.eval().to(dev, memory_format=torch.channels_last)
    transform = augment.train_augment(config.harmonise, seed=config.seed * 1000 + view) if view > 0 else None
    chained = augment.hospital_chain(seed=config.seed * 1000 + 500 + view) if chain else None
    # not models.folded: it would change float16 cache entries in their last bit (about 1% of them),
    # and with them the trained model, to save about a minute of a 19-minute run
    # (reports/train_profile.json); the shipped model is what this exact code trains
    with torch.inference_mode():
        probe = model.features(to_tensor(pixels[rows[:1]], config.input_size, dev), 0, cut)
        tmp = path.with_name(path.name + f".tmp-{time.time_ns()}.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(rows),) + tuple(probe.shape[1:]))
        try:
            for i in tqdm(range(0, len(rows), batch), desc=f"frozen layers, view {view}{' (other chain)' if chain else ''}", disable=not show_progress(progress)):
                imgs = np.asarray(pixels[rows[i:i + batch]])
                if transform is not None:
                    imgs = augment.augment_batch(imgs, transform)
                if chained is not None:
                    imgs = augment.augment_batch(imgs, chained)
                with autocast(dev):
                    out[i:i + batch] = to_numpy(model.features(to_tensor(imgs, config.input_size, dev), 0, cut))
            out.flush()
            del out
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def _trainable(model, cut: int) -> list[torch.nn.Parameter]:
    frozen = [model._conv_stem, model._bn0, *model._blocks[:cut]]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _set_train_mode(model, cut: int) -> None:
    model.train()
    for m in [model._bn0, *model._blocks[:cut]]:
        m.eval()  # frozen layers keep their ImageNet batch-norm statistics


@torch.inference_mode()
def _top_proba(model, acts: np.ndarray, cut: int, batch: int = 256) -> np.ndarray:
    model.eval()
    dev = model_device(model)
    out = []
    for i in range(0, len(acts), batch):
        x = torch.from_numpy(np.asarray(acts[i:i + batch], dtype=np.float32)).to(dev).contiguous(
            memory_format=torch.channels_last)
        with autocast(dev):
            logits = model.head(model.features(x, cut))
        out.append(to_numpy(logits.float().softmax(1)))
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric Kullback-Leibler divergence between the softmaxes of two logit batches."""
    la, lb = a.log_softmax(1), b.log_softmax(1)
    return 0.5 * ((la.exp() * (la - lb)).sum(1) + (lb.exp() * (lb - la)).sum(1))


def _val_twins(config: Config, root, table: pd.DataFrame, va: np.ndarray, progress: bool):
    """Frozen activations of the audit twins of validation originals, and each original's position in `va`."""
    twins = load_audit(config, root)
    pos = {f: i for i, f in enumerate(table.file.to_numpy()[va])}
    twins = twins[twins.twin_file.isin(pos)].reset_index(drop=True)
    if twins.empty:
        return np.zeros((0,)), np.zeros(0, dtype=int)
    acts = frozen_activations(load_pixels(root, twins, config, progress=progress), np.arange(len(twins)), config, 0,
                              progress)
    return acts, twins.twin_file.map(pos).to_numpy()


def paired_views(config: Config) -> bool:
    """Whether the recipe trains on paired views (a view and its other-chain view, with the consistency loss)."""
    return config.harmonise and config.consistency > 0


def finetune_steps(config: Config, n_train: int) -> tuple[int, int]:
    """(radiographs per step, steps per epoch) of the finetune recipe for `n_train` training rows.
    Paired (harmonise with a consistency weight): each step takes batch_size / 2 radiographs, each
    as its view and its other-chain view, so a step always passes `batch_size` activations."""
    per_step = config.batch_size // 2 if paired_views(config) else config.batch_size
    return per_step, math.ceil(n_train / per_step)


def finetune_work(config: Config, n_train: int, n_val: int, n_val_twins: int = 0) -> dict:
    """What a finetune run computes, in units a profile can price (benchmarks/train_profile.py):
    images through the frozen layers for its cache (every view of every training row, once more
    through another chain when paired, then validation and its twins); of those, the images drawn
    through the training augmentation (views after the first) and through another chain (the
    paired copies); and training steps of `batch_size` activations through the trainable blocks."""
    paired = paired_views(config)
    copies = 2 if paired else 1
    per_step, steps_per_epoch = finetune_steps(config, n_train)
    return {"frozen_images": config.views * n_train * copies + n_val + n_val_twins,
            "augmented_images": (config.views - 1) * n_train * copies,
            "chained_images": config.views * n_train if paired else 0,
            "steps": steps_per_epoch * config.epochs, "activations_per_step": per_step * copies,
            "validated_per_epoch": n_val + n_val_twins, "paired": paired}


def fit_run(path, config, table, pixels, y, progress, eval_every_s, root):
    torch.manual_seed(config.seed)
    cut = config.train_from_block
    tr = np.flatnonzero((table.split == "train").to_numpy())
    va = np.flatnonzero((table.split == "val").to_numpy())
    resumed = 0.0
    if (path / "last.pt").exists():
        resumed = float(torch.load(path / "last.pt", map_location="cpu", weights_only=True)["elapsed"])
    start = time.perf_counter() - resumed  # wall time counts the frozen-layer cache and earlier sessions
    y_train = y[tr]
    group = y_train.copy()  # (class, chain) groups for the loss weights: twins are groups of their own
    sources = [(pixels, tr)]
    if config.harmonise:
        # real examples of the Lung Opacity processing chain applied to other classes: the audit
        # twins whose originals are training images, labelled with their original's class
        twins = load_audit(config, root)
        twins = twins[twins.twin_split == "train"].reset_index(drop=True)
        if len(twins):
            sources.append((load_pixels(root, twins, config, progress=progress), np.arange(len(twins))))
            y_twins = twins.label.map(CLASSES.index).to_numpy()
            y_train = np.concatenate([y_train, y_twins])
            group = np.concatenate([group, len(CLASSES) + y_twins])
    views = [np.concatenate([frozen_activations(px, rows, config, v, progress) for px, rows in sources])
             for v in range(config.views)]
    paired = paired_views(config)
    chain_views = ([np.concatenate([frozen_activations(px, rows, config, v, progress, chain=True) for px, rows in sources])
                    for v in range(config.views)] if paired else None)
    val_acts = frozen_activations(pixels, va, config, 0, progress)
    # the audit twins of validation originals: the twin target is part of choosing the best epoch
    val_twin_acts, val_twin_orig = _val_twins(config, root, table, va, progress)
    cache_seconds = time.perf_counter() - start - resumed
    n_train = len(y_train)

    dev = device(config.device)
    model = efficientnet_lite0(pretrained=True).to(dev, memory_format=torch.channels_last)
    params = _trainable(model, cut)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_step, steps_per_epoch = finetune_steps(config, n_train)
    total = steps_per_epoch * config.epochs
    warm = max(1, steps_per_epoch // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    sample_weight = torch.from_numpy(_group_weights(group)).to(dev)
    history, best, bad_epochs, first_epoch, eval_seconds = [], None, 0, 0, 0.0
    if resumed:
        state = torch.load(path / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, best, bad_epochs, first_epoch = state["history"], state["best"], state["bad_epochs"], state["epoch"] + 1
        log.info("resuming %s after epoch %d", path.name, first_epoch)
    yv = y[va]
    budget_stop = False
    for epoch in range(first_epoch, config.epochs):
        acts = views[epoch % len(views)]
        _set_train_mode(model, cut)
        order = np.random.default_rng(config.seed * 7919 + epoch).permutation(n_train)
        total_loss, seen = 0.0, 0
        bar = tqdm(range(0, len(order), per_step), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not show_progress(progress), leave=False)
        for i in bar:
            idx = np.sort(order[i:i + per_step])
            x = np.asarray(acts[idx], dtype=np.float32)
            if paired:
                x = np.concatenate([x, np.asarray(chain_views[epoch % len(views)][idx], dtype=np.float32)])
            x = torch.from_numpy(x).to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            target = torch.from_numpy(y_train[idx]).to(dev)
            w = sample_weight[idx]
            with autocast(dev):
                logits = model.head(model.features(x, cut)).float()
            k = 2 if paired else 1
            per_image = F.cross_entropy(logits, target.repeat(k), reduction="none", label_smoothing=0.05)
            loss = (per_image * w.repeat(k)).sum() / (k * w.sum())
            if paired:  # the consistency loss: a radiograph and its other-chain view should get the same answer
                loss = loss + config.consistency * (symmetric_kl(*logits.split(len(idx))) * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        t_eval = time.perf_counter()
        pv = _top_proba(model, val_acts, cut)
        val_loss = float(F.nll_loss(torch.log(torch.from_numpy(pv).clamp_min(1e-8)), torch.from_numpy(yv)))
        twin_agreement = (float(np.mean(pv[val_twin_orig].argmax(1) == _top_proba(model, val_twin_acts, cut).argmax(1)))
                          if len(val_twin_orig) else float("nan"))
        sensitivity = metrics.class_sensitivity(yv, pv)
        row = {"epoch": epoch + 1, "view": epoch % len(views), "train_loss": total_loss / max(seen, 1),
               "val_loss": val_loss, "val_accuracy": metrics.accuracy_from_proba(yv, pv),
               "val_balanced_accuracy": metrics.balanced_accuracy(yv, pv),
               "val_macro_auc": metrics.macro_auc(yv, pv), "val_twin_agreement": twin_agreement,
               **{f"val_sensitivity_{c}": v for c, v in sensitivity.items()}, "lr": sched.get_last_lr()[0],
               "wall_seconds": time.perf_counter() - start - eval_seconds}
        history.append(row)
        eval_seconds += time.perf_counter() - t_eval
        # model selection and early stopping: the report's rule (targets.selection_key) on validation
        # and the twins of validation originals, ties broken by validation loss
        score = (*targets.selection_key(twin_agreement, sensitivity, row["val_balanced_accuracy"]), -val_loss)
        improved = best is None or score > tuple(best)
        if improved:
            best, bad_epochs = list(score), 0
            save_checkpoint(path / "checkpoint.pt", model, "efficientnet_lite0", config, epoch=epoch + 1)
        else:
            bad_epochs += 1
        log.info(f"epoch {epoch + 1:2d}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                 f"val acc {row['val_accuracy']:.4f}  balanced {row['val_balanced_accuracy']:.4f}  "
                 f"AUC {row['val_macro_auc']:.4f}  twins {twin_agreement:.3f}  "
                 f"{row['wall_seconds'] / 60:.1f} min{'  *' if improved else ''}")
        save_state(path / "last.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "history": history, "best": best,
                                      "bad_epochs": bad_epochs, "epoch": epoch,
                                      "elapsed": time.perf_counter() - start - eval_seconds})
        write_csv(pd.DataFrame(history), path / "history.csv")
        if bad_epochs >= config.patience:
            log.info("early stop: no validation improvement for %d epochs", config.patience)
            break
        if time.perf_counter() - start - eval_seconds > config.wall_budget_s and epoch + 1 < config.epochs:
            budget_stop = True  # the safety stop fired: the run says so in done.json
            log.warning(f"stopping early: the wall-time safety stop of {config.wall_budget_s / 60:.0f} min fired after "
                  f"epoch {epoch + 1} of {config.epochs}")
            break
    train_seconds = time.perf_counter() - start - eval_seconds

    final, _ = load_model(path / "checkpoint.pt", config.device)
    for s in ("val", "test"):
        rows = np.flatnonzero((table.split == s).to_numpy())
        write_predictions(path, s, table, rows, predict(final, pixels[rows], config.input_size, progress=progress,
                                                         desc=f"predict {s}"))
    (path / "last.pt").unlink(missing_ok=True)
    best_epoch = int(torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"])
    return {"arch": "efficientnet_lite0", "epochs": len(history), "best_epoch": best_epoch,
            "val_twin_agreement": history[best_epoch - 1]["val_twin_agreement"], "val_twins": int(len(val_twin_orig)),
            "consistency": config.consistency if paired else 0.0,
            "activation_cache_seconds": cache_seconds, "train_wall_seconds": train_seconds,
            "train_images": int(n_train), "train_twins": int(n_train - len(tr)), "safety_stop_fired": budget_stop}
