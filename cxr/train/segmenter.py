"""Training the lung segmenter (`cxr segmenter`): on `cxr-lung-masks`, with a held-out part chosen
by patient, for a fixed schedule (nothing is chosen on the held-out part), written to
`cxr/weights/lung_segmenter.pt` with its record `reports/segmenter.json`.
"""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from cxr.core import records
from cxr.core.config import VERSIONS, display_path, repo_root
from cxr.core.files import write_json
from cxr.core.runtime import show_progress
from cxr.data import lung_masks, segmenter
from cxr.model.registry import state_digest

HELD_OUT = 0.15


def masks_dir() -> Path | None:
    """`cxr-lung-masks`: $CXR_LUNG_MASKS_DIR, else `../shared/cxr-lung-masks` beside the project."""
    for p in (os.environ.get("CXR_LUNG_MASKS_DIR"), repo_root().parent / "shared" / "cxr-lung-masks"):
        if p and (Path(p) / "manifest.csv").exists():
            return Path(p)
    return None


def load_pairs(root: str | Path) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    """The manifest, and every image (grey, as stored) and mask (bool) it lists; a pair that does
    not read is left out with a message."""
    root = Path(root)
    manifest = pd.read_csv(root / "manifest.csv", dtype={"patientid": str}, keep_default_na=False)
    keep, images, masks = [], [], []
    for i, row in manifest.iterrows():
        g = cv2.imread(str(root / row["image"]), cv2.IMREAD_GRAYSCALE)
        m = cv2.imread(str(root / row["mask"]), cv2.IMREAD_GRAYSCALE)
        if g is None or m is None or g.shape != m.shape:
            print(f"skipped {row['image']}: the image or its mask does not read, or their sizes differ")
            continue
        keep.append(i)
        images.append(g)
        masks.append(m > 127)
    return manifest.loc[keep].reset_index(drop=True), images, masks


def digest(path: str | Path | None = None) -> str:
    """The SHA-256 of a segmenter file's weights (default: the shipped one), as records name it."""
    path = Path(path) if path else segmenter.SHIPPED
    return state_digest(torch.load(path, map_location="cpu", weights_only=True)["model"])


def patient_split(patients: pd.Series, share: float = HELD_OUT, seed: int = 0) -> np.ndarray:
    """True for the rows held out: every film of a `share` of the patients, drawn by the seed."""
    ids = np.array(sorted(set(patients)))
    held = set(np.random.default_rng(seed).permutation(ids)[:max(1, round(share * len(ids)))])
    return patients.isin(held).to_numpy()


def _square(images, masks):
    x = np.stack([cv2.resize(g, (segmenter.SIZE, segmenter.SIZE), interpolation=cv2.INTER_AREA) for g in images])
    y = np.stack([cv2.resize(m.astype(np.float32), (segmenter.SIZE, segmenter.SIZE), interpolation=cv2.INTER_AREA)
                  for m in masks])
    return x, y


def augment(x8: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as training sees it: the grey levels changed (gamma, contrast, the enhancement the
    classifier uses, blur, noise) and image and mask moved together (rotation, scale, shift, a
    squash of the aspect), then standardised per image."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    imgs = []
    for g in x8:
        if rng.random() < 0.5:
            g = clahe.apply(g)
        f = g.astype(np.float32) / 255
        f = f ** math.exp(rng.uniform(-0.4, 0.4))
        f = (f - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.3:
            f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.5, 1.5))
        f = f + rng.normal(0, rng.uniform(0, 0.03), f.shape).astype(np.float32)
        imgs.append(f)
    x = torch.from_numpy(np.stack(imgs))[:, None]
    t = torch.from_numpy(y)[:, None]
    n = len(x)
    angle = torch.from_numpy(rng.uniform(-12, 12, n) * math.pi / 180).float()
    scale = torch.from_numpy(rng.uniform(0.8, 1.2, n)).float()
    aspect = torch.from_numpy(np.exp(rng.uniform(-0.12, 0.12, n))).float()
    shift = torch.from_numpy(rng.uniform(-0.08, 0.08, (n, 2))).float()
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * aspect, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos / aspect, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    t = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean, std = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mean) / std, t


def mean_interval(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean (one value per patient)."""
    v = np.asarray(values, float)
    means = np.random.default_rng(seed).choice(v, (n_boot, len(v))).mean(1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    soft_dice = (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + (1 - soft_dice).mean()


def held_out_scores(model, images, masks) -> pd.DataFrame:
    """Dice of each held-out image at its own size, and the status of the drawn mask."""
    drawn = segmenter.segment(model, images)
    return pd.DataFrame({"dice": [lung_masks.dice(a, b) for a, b in zip(drawn, masks)],
                         "status": [lung_masks.status(m) for m in drawn],
                         "true_status": [lung_masks.status(m) for m in masks]})


def train(root: str | Path | None = None, out: str | Path | None = None, record: str | Path | None = None,
          epochs: int = 80, batch: int = 16, lr: float = 3e-3, seed: int = 0, device: str = "cpu",
          progress: bool = True) -> dict:
    """Train the segmenter for `epochs` (a fixed schedule), measure it on the held-out patients,
    save its weights (half precision) to `out` and its record to `record`."""
    root = Path(root) if root else masks_dir()
    if root is None or not (Path(root) / "manifest.csv").exists():
        raise FileNotFoundError("No lung-mask data: put cxr-lung-masks in ../shared/ beside the project, "
                                "or set CXR_LUNG_MASKS_DIR to its folder.")
    out = Path(out) if out else segmenter.SHIPPED
    manifest, images, masks = load_pairs(root)
    held = patient_split(manifest.patientid, seed=seed)
    train_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    x8, y = _square([images[i] for i in train_rows], [masks[i] for i in train_rows])

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = segmenter.UNet().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train_rows) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    history, start = [], time.perf_counter()
    bar = tqdm(range(epochs), desc="lung segmenter", disable=not show_progress(progress))
    for epoch in bar:
        model.train()
        order, losses = rng.permutation(len(train_rows)), []
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            xb, yb = augment(x8[idx], y[idx], rng)
            loss = loss_fn(model(xb.to(device).contiguous(memory_format=torch.channels_last)), yb.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}")
    wall = time.perf_counter() - start
    model = model.cpu().eval()
    segmenter.save(model, out, version=VERSIONS["segmenter"], seed=seed, epochs=epochs)
    shipped, _ = segmenter.load(out)  # measured as it ships: in half precision
    scores = held_out_scores(shipped, [images[i] for i in held_rows], [masks[i] for i in held_rows])
    scores = scores.assign(patient=manifest.patientid.to_numpy()[held_rows], view=manifest.view.to_numpy()[held_rows])
    per_patient = scores.groupby("patient").dice.mean().to_numpy()
    rec = {
        "command": "cxr segmenter", "version": VERSIONS["segmenter"], "data": display_path(root),
        "weights": display_path(out), "weights_sha256": digest(out), "weights_bytes": out.stat().st_size,
        "parameters": int(sum(p.numel() for p in model.parameters())), "input_size": segmenter.SIZE,
        "budget": {"epochs": epochs, "batch": batch, "lr": lr, "steps": steps, "seed": seed, "device": device},
        "split": {"rule": f"every film of {HELD_OUT:.0%} of the patients, drawn by the seed",
                  "train_images": int(len(train_rows)), "train_patients": int(manifest.patientid[~held].nunique()),
                  "held_out_images": int(len(held_rows)), "held_out_patients": int(manifest.patientid[held].nunique())},
        "held_out": {"dice_mean": float(scores.dice.mean()), "dice_median": float(scores.dice.median()),
                     "dice_min": float(scores.dice.min()),
                     "dice_patient_mean_ci": mean_interval(per_patient, seed=seed),
                     "dice_by_view": scores.groupby("view").dice.mean().to_dict(),
                     "failed": int((scores.status != lung_masks.OK).sum()),
                     "statuses": scores.status.value_counts().to_dict(),
                     "hand_drawn_statuses": scores.true_status.value_counts().to_dict()},
        "target_dice": 0.95, "history": history, "wall_seconds": wall,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "device": device},
    }
    if record:
        write_json(rec, record)
    return rec


def shipped_record(reports: str | Path | None = None) -> dict | None:
    """`reports/segmenter.json` when it describes the shipped weights (by their digest), else None."""
    path = Path(reports or repo_root() / "reports") / "segmenter.json"
    if not segmenter.SHIPPED.exists():
        return None
    return records.fresh(path, {"weights_sha256": digest()})
