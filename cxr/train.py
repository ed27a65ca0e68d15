"""Training. Three approaches, one run folder format.

* ``linear``: frozen ImageNet EfficientNet-Lite0 features and a logistic-regression head.
* ``finetune`` (the final model): EfficientNet-Lite0 with its first `train_from_block` blocks
  frozen. Their output is computed once per augmented view of each training image and cached
  on disk, so each epoch trains only the last stages and the head: on two CPU cores this is
  several times faster than a full forward and backward pass, with the same model at the end.
* ``resnet50``: the original project's recipe (torchvision ResNet50, full fine-tuning,
  class-weighted loss, online augmentation) under a fixed wall-time budget.

A run folder (``runs/<approach>-<key>``) holds config.json, history.csv (one row per
validation), checkpoint.pt (the best weights; loads with ``torch.load(weights_only=True)``),
last.pt (to resume), predictions_val.csv, predictions_test.csv and done.json. The key
(`run_key`) is the approach, the config fields it reads, the data and the recipe's explicit version,
so an identical run is reused, not repeated, and an edit that changes no recipe renames no run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .runtime import autocast, device, model_device, show_progress, to_numpy
from . import augment, evaluate, targets
from .config import VERSIONS, Config, cache_key, display_path, get_config, source_hash
from .classes import CLASSES
from .data import load_audit, load_table, stratified_sample
from .features import embed, to_tensor
from .models import efficientnet_lite0, folded, resnet50
from .preprocess import load_pixels
from .files import ensure, save_state
from .registry import APPROACHES, Run, load_run, run_path
from .trained import load_model, predict, save_checkpoint

# Progress and cache messages go to the log (the CLI shows it on stderr), not into the book's pages.
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- linear head
def fit_linear_head(features: np.ndarray, y: np.ndarray, seed: int = 0, cs=(0.003, 0.01, 0.03, 0.1)) -> Pipeline:
    """Standardise, then class-weighted multinomial logistic regression; C by 3-fold CV on these rows only."""
    if len(np.unique(y)) < 2:
        raise ValueError("A linear head needs at least two classes in its training rows.")
    if int(np.bincount(y).min(initial=0)) >= 3:
        clf = LogisticRegressionCV(Cs=list(cs), cv=3, max_iter=3000, class_weight="balanced",
                                   scoring="neg_log_loss", random_state=seed)
    else:  # too few rows for cross-validation
        clf = LogisticRegression(C=cs[1], max_iter=3000, class_weight="balanced", random_state=seed)
    return make_pipeline(StandardScaler(), clf).fit(features, y)


def proba_all_classes(model, features: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """predict_proba with one column per class, zeros for classes the model never saw."""
    p = model.predict_proba(features)
    out = np.zeros((len(features), n_classes))
    out[:, model.classes_] = p
    return out


# --------------------------------------------------------------------------- the driver
def fit(approach: str = "finetune", config: Config | None = None, progress: bool = True,
        retrain: bool = False, eval_every_s: float | None = None, reuse: bool = True) -> Run:
    """Train `approach` on the split of the current profile; reuse an identical finished run.

    A run that was interrupted resumes from its last epoch (finetune, resnet50).
    `eval_every_s` adds validations on a fixed validation subset during training (for
    time-to-accuracy curves in the benchmark).
    """
    if approach not in APPROACHES:
        raise ValueError(f"approach must be one of {APPROACHES}")
    config = config or get_config()
    root, table = load_table(config)
    path = run_path(approach, config, table)
    key = path.name.rsplit("-", 1)[1]
    if (path / "done.json").exists() and reuse and not retrain:
        log.info("reusing finished run %s (same recipe, config and data)", path.name)
        return load_run(path)
    if retrain and path.exists():
        shutil.rmtree(path)
    ensure(path)
    final = approach == "finetune" and config.key() == get_config(config.profile).key()
    (path / "config.json").write_text(json.dumps(config.to_dict() | {
        "approach": approach, "key": key, "final": final, "recipe_version": VERSIONS[approach],
        "source_hash": source_hash()}, indent=1))  # the source hash: provenance, not identity
    pixels = load_pixels(root, table, config, progress=progress)
    y = table.label.map(CLASSES.index).to_numpy()
    start = time.perf_counter()
    trainer = {"linear": _fit_linear, "finetune": _fit_finetune, "resnet50": _fit_resnet50}[approach]
    model_info = trainer(path, config, table, pixels, y, progress, eval_every_s, root)
    model_info.setdefault("train_wall_seconds", time.perf_counter() - start)
    # temperature scaling, fitted on validation only; stored with the weights
    val = pd.read_csv(path / "predictions_val.csv", keep_default_na=False)
    temperature = evaluate.fit_temperature(val.label.map(CLASSES.index).to_numpy(), val[list(CLASSES)].to_numpy())
    state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
    state["temperature"] = temperature
    save_state(path / "checkpoint.pt", state)
    summary = {"approach": approach, "profile": config.profile, "final": final, "temperature": temperature,
               **model_info}
    for split in ("val", "test"):
        p = pd.read_csv(path / f"predictions_{split}.csv", keep_default_na=False)
        s = evaluate.summary(p.label.map(CLASSES.index).to_numpy(), p[list(CLASSES)].to_numpy(), n_boot=200,
                             seed=config.seed)
        summary[split] = {"n": s["n"], "accuracy": s["accuracy"], "macro_auc": s["macro_auc"],
                          "per_class": {c: {k: s["per_class"][c][k] for k in ("sensitivity", "specificity")}
                                        for c in CLASSES}}
    (path / "done.json").write_text(json.dumps(summary, indent=1))
    return load_run(path)


def _write_predictions(path: Path, split_name: str, table: pd.DataFrame, rows: np.ndarray, proba: np.ndarray) -> None:
    df = table.loc[rows, ["file", "label"]].reset_index(drop=True)
    df[list(CLASSES)] = proba
    df["pred"] = [CLASSES[i] for i in proba.argmax(1)]
    df.to_csv(path / f"predictions_{split_name}.csv", index=False)


def _group_weights(group: np.ndarray) -> np.ndarray:
    """Per-image weights that give every group (a class, or a class seen through another
    processing chain) the same total weight: a shortcut that helps one large group cannot pay
    for errors on a small one (group reweighting, as in Sagawa et al. 2020)."""
    counts = np.bincount(group)
    present = counts > 0
    w = np.zeros(len(counts))
    w[present] = len(group) / (present.sum() * counts[present])
    return w[group].astype(np.float32)


def _class_weights(y: np.ndarray) -> torch.Tensor:
    counts = np.bincount(y, minlength=len(CLASSES)).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


# --------------------------------------------------------------------------- approach: linear
def _fit_linear(path, config, table, pixels, y, progress, eval_every_s, root):
    feats = embed(pixels, config, size=config.input_size, progress=progress)
    masks = {s: (table.split == s).to_numpy() for s in ("train", "val", "test")}
    head = fit_linear_head(feats[masks["train"]], y[masks["train"]], seed=config.seed)
    for s in ("val", "test"):
        _write_predictions(path, s, table, np.flatnonzero(masks[s]), proba_all_classes(head, feats[masks[s]]))
    lr = head[-1]
    pd.DataFrame([{"epoch": 1, "val_accuracy": evaluate.accuracy_from_proba(
        y[masks["val"]], proba_all_classes(head, feats[masks["val"]]))}]).to_csv(path / "history.csv", index=False)
    # the scaler folded into the logistic regression, as the network's own final layer: the
    # checkpoint is then an ordinary EfficientNet-Lite0 checkpoint that load_model can read
    scaler = head[0]
    coef = np.zeros((len(CLASSES), feats.shape[1]))
    bias = np.full(len(CLASSES), -1e4)  # a class never seen in training is never predicted
    coef[lr.classes_] = lr.coef_ / scaler.scale_
    bias[lr.classes_] = lr.intercept_ - (lr.coef_ / scaler.scale_) @ scaler.mean_
    model = efficientnet_lite0(pretrained=True)
    model._fc.weight.data.copy_(torch.from_numpy(coef))
    model._fc.bias.data.copy_(torch.from_numpy(bias))
    save_checkpoint(path / "checkpoint.pt", model, "efficientnet_lite0", config,
                    head="logistic regression", C=float(np.atleast_1d(getattr(lr, "C_", [lr.C]))[0]))
    return {"arch": "efficientnet_lite0 (frozen) + logistic regression", "epochs": 1}


# --------------------------------------------------------------------------- approach: finetune
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
    from tqdm.auto import tqdm

    from .features import pixels_key

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
    dev = device()
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


def _fit_finetune(path, config, table, pixels, y, progress, eval_every_s, root):
    from tqdm.auto import tqdm

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

    dev = device()
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
        sensitivity = evaluate.class_sensitivity(yv, pv)
        row = {"epoch": epoch + 1, "view": epoch % len(views), "train_loss": total_loss / max(seen, 1),
               "val_loss": val_loss, "val_accuracy": evaluate.accuracy_from_proba(yv, pv),
               "val_balanced_accuracy": evaluate.balanced_accuracy(yv, pv),
               "val_macro_auc": evaluate.macro_auc(yv, pv), "val_twin_agreement": twin_agreement,
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
        pd.DataFrame(history).to_csv(path / "history.csv", index=False)
        if bad_epochs >= config.patience:
            log.info("early stop: no validation improvement for %d epochs", config.patience)
            break
        if time.perf_counter() - start - eval_seconds > config.wall_budget_s and epoch + 1 < config.epochs:
            budget_stop = True  # the safety stop fired: the run says so in done.json
            log.warning(f"stopping early: the wall-time safety stop of {config.wall_budget_s / 60:.0f} min fired after "
                  f"epoch {epoch + 1} of {config.epochs}")
            break
    train_seconds = time.perf_counter() - start - eval_seconds

    final, _ = load_model(path / "checkpoint.pt")
    for s in ("val", "test"):
        rows = np.flatnonzero((table.split == s).to_numpy())
        _write_predictions(path, s, table, rows, predict(final, pixels[rows], config.input_size, progress=progress,
                                                         desc=f"predict {s}"))
    (path / "last.pt").unlink(missing_ok=True)
    best_epoch = int(torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"])
    return {"arch": "efficientnet_lite0", "epochs": len(history), "best_epoch": best_epoch,
            "val_twin_agreement": history[best_epoch - 1]["val_twin_agreement"], "val_twins": int(len(val_twin_orig)),
            "consistency": config.consistency if paired else 0.0,
            "activation_cache_seconds": cache_seconds, "train_wall_seconds": train_seconds,
            "train_images": int(n_train), "train_twins": int(n_train - len(tr)), "safety_stop_fired": budget_stop}


# --------------------------------------------------------------------------- approach: resnet50
def _fit_resnet50(path, config, table, pixels, y, progress, eval_every_s, root):
    """The original recipe, full fine-tuning with online augmentation, for `resnet_steps` steps of
    `resnet_batch_size` images at `resnet_lr` (cosine schedule).

    The wall budget is only a safety stop, reported when it fires. ImageNet weights are used if
    torchvision's cache has them; otherwise the run starts from random weights and says so. Its
    validation predictions (and so its temperature) are those of the fixed validation subset it
    checks at the end of training (`resnet_val_subset`); its test predictions, those of a fixed
    stratified subset of the test split (`resnet_test_subset`).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    model, origin = resnet50(pretrained=True)
    dev = device()
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
                            "val_accuracy": evaluate.accuracy_from_proba(y[va], pv),
                            "val_macro_auc": evaluate.macro_auc(y[va], pv), "wall_seconds": trained})
            next_eval = trained + (eval_every_s or math.inf)
            pd.DataFrame(history).to_csv(path / "history.csv", index=False)
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
    _write_predictions(path, "val", table, va, pv)
    _write_predictions(path, "test", table, te, predict(model, pixels[te], config.input_size, progress=progress,
                                                         desc="predict test"))
    (path / "last.pt").unlink(missing_ok=True)
    return {"arch": "resnet50", "weights_origin": origin, "epochs": seen / len(tr), "images_seen": seen, "steps": step,
            "train_wall_seconds": trained, "safety_stop_fired": budget_stop}


# --------------------------------------------------------------------------- test-time augmentation
TTA_VIEWS = 3


def tta_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The image, shifted 4 px right and down, and scaled to 95% about its centre."""
    import cv2

    size = pixels.shape[-1]
    def warp(m):
        return np.stack([cv2.warpAffine(np.asarray(im), m, (size, size), borderMode=cv2.BORDER_CONSTANT) for im in pixels])
    c = size / 2
    return [np.asarray(pixels), warp(np.float32([[1, 0, 4], [0, 1, 4]])), warp(cv2.getRotationMatrix2D((c, c), 0, 0.95))]


def tta_predictions(run: Run, config: Config, progress: bool = True, splits=("val", "test")) -> dict[str, np.ndarray]:
    """Mean probabilities over the TTA views for the splits of a run (validation and test). The first
    view, the image itself, is what the run already predicted for the split (the same model on the
    same images), so only the other views are computed."""
    model, meta = load_model(run.checkpoint)
    root, table = load_table(config)
    pixels = load_pixels(root, table, config, progress=False)
    out = {}
    for s in splits:
        rows = table.index[table.split == s].to_numpy()
        views = tta_views(pixels[rows])
        saved = run.predictions(s)
        first = (saved[list(CLASSES)].to_numpy(np.float32) if saved.file.tolist() == table.file[rows].tolist()
                 else predict(model, views[0], meta["input_size"], progress=progress, desc=f"TTA {s} 1/{len(views)}"))
        out[s] = np.mean([first] + [predict(model, v, meta["input_size"], progress=progress,
                                            desc=f"TTA {s} {k + 1}/{len(views)}") for k, v in enumerate(views) if k],
                         axis=0)
    return out


# --------------------------------------------------------------------------- speed and reports
@torch.inference_mode()
def inference_speed(model: torch.nn.Module, size: int, batch: int = 64, repeats: int = 5, threads: int | None = None) -> dict:
    """Median images/s of batched inference at `size` px over `repeats` timed batches (after one warm-up)."""
    if threads:
        torch.set_num_threads(threads)
    model = folded(model.eval())  # as `trained.predict` runs a batch
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


def training_report(run: Run, command: str) -> dict:
    """The reports/training.json record of a finished run (test metrics recomputed from its predictions)."""
    y, p = run.proba("test")
    s = evaluate.summary(y, p, n_boot=1000, seed=run.config.get("seed", 0))
    model, meta = load_model(run.checkpoint)
    speed = inference_speed(model, meta["input_size"])
    return {
        "profile": run.config["profile"],
        "approach": run.config.get("approach"),
        "run": run.path.name,
        "test": {"n": s["n"], "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                 "macro_auc": s["macro_auc"], "macro_auc_ci": s["macro_auc_ci"],
                 "per_class": {c: {k: s["per_class"][c][k] for k in
                                   ("n", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "auc")}
                               for c in CLASSES}},
        "val": run.summary["val"],
        "train_wall_seconds": run.summary["train_wall_seconds"],
        "epochs": run.summary.get("epochs"),
        "best_epoch": run.summary.get("best_epoch"),
        "inference_images_per_second": speed["images_per_second"],
        "inference": speed,
        "input_size": meta["input_size"],
        "config": {k: display_path(v) if k in ("cache_dir", "runs_dir") else v for k, v in run.config.items()},
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
