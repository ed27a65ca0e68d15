"""Where the model looks, measured: CAM maps, energy shares in the lungs, the border frame and
the corners, sanity and faithfulness checks, and occlusion. `cxr.assess.audit` puts them together with
the twin checks into the shortcut audit's record.

The database has no lung masks: the lung fields are the lung segmenter's
(`cxr.data.segmenter.lung_fields`, trained on hand-drawn masks), the one definition every measure uses.
"""
from __future__ import annotations

import collections
import copy
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from cxr.core import metrics
from cxr.core.config import CLASSES
from cxr.core.runtime import model_device, to_numpy
from cxr.model.architectures import EfficientNetLite0
from cxr.model.features import to_tensor
from cxr.model.whole_and_lungs import WholeAndLungs

METHODS = ("GradCAM", "GradCAM++", "EigenCAM")


# --------------------------------------------------------------------------- regions
def border_region(size: int, frac: float = 0.1) -> np.ndarray:
    """The outer frame of the image (width `frac` of the side): where markers and text sit."""
    m = np.ones((size, size), bool)
    k = int(round(frac * size))
    m[k:size - k, k:size - k] = False
    return m


def corner_region(size: int, frac: float = 0.2) -> np.ndarray:
    k = int(round(frac * size))
    m = np.zeros((size, size), bool)
    m[:k, :k] = m[:k, -k:] = m[-k:, :k] = m[-k:, -k:] = True
    return m


def energy_share(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of a map's total (non-negative) energy that falls inside `region`."""
    cam = np.clip(cam, 0, None)
    total = cam.sum()
    return float(cam[region].sum() / total) if total > 0 else float("nan")


# --------------------------------------------------------------------------- CAM maps
class _Sequential(torch.nn.Module):
    """EfficientNetLite0 with its head activation as a module, so CAM libraries can hook it."""
    def __init__(self, model: EfficientNetLite0):
        super().__init__()
        self.model = model
        self.act = torch.nn.ReLU6()

    def forward(self, x):
        m = self.model
        f = m.features(x, 0, len(m._blocks))
        f = self.act(m._bn1(m._conv_head(f)))
        return m.head(f)


def cam_model(model: torch.nn.Module) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    """A hookable version of a cxr model and the target layer(s) for CAM methods (none for the
    whole film and its lungs, whose maps `cam_maps` makes from its two members')."""
    if isinstance(model, WholeAndLungs):
        return model.eval(), []
    if isinstance(model, EfficientNetLite0):
        wrapped = _Sequential(model).eval()
        return wrapped, [wrapped.act]  # the last convolutional feature map (1280 x 7 x 7 at 224 px)
    if hasattr(model, "layer4"):
        return model.eval(), [model.layer4[-1]]
    raise TypeError(f"no CAM target layer known for {type(model).__name__}")


def cam_maps(model: torch.nn.Module, pixels: np.ndarray, size: int, targets: list[int] | None = None,
             method: str = "GradCAM", batch: int = 16) -> np.ndarray:
    """CAM maps in [0, 1] for the `targets` class of each image (default: the predicted class),
    computed at the model's input `size` and returned at the images' own size (N, S, S)."""
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if isinstance(model, WholeAndLungs):
        return _two_member_maps(model, pixels, size, targets, method, batch)
    cls = {"GradCAM": GradCAM, "GradCAM++": GradCAMPlusPlus, "EigenCAM": EigenCAM}[method]
    net, layers = cam_model(model)
    out = []
    with cls(model=net, target_layers=layers) as cam:
        for i in range(0, len(pixels), batch):
            x = to_tensor(pixels[i:i + batch], size, model_device(net)).contiguous()
            t = None if targets is None else [ClassifierOutputTarget(int(c)) for c in targets[i:i + batch]]
            out.append(cam(input_tensor=x, targets=t))
    s = pixels.shape[-1]
    maps = np.concatenate(out) if out else np.zeros((0, size, size), np.float32)
    if s != size:
        maps = np.stack([cv2.resize(m, (s, s), interpolation=cv2.INTER_LINEAR) for m in maps]) if len(maps) else \
            np.zeros((0, s, s), np.float32)
    return maps


def _two_member_maps(model: WholeAndLungs, pixels: np.ndarray, size: int, targets: list[int] | None, method: str,
                     batch: int) -> np.ndarray:
    """The maps of the whole film and its lungs: each member's map for the model's class (its own
    call when `targets` is None), the lung member's computed on its crop and put back into the
    crop's box, averaged and scaled to [0, 1]. The model's logits are the mean of its members', so
    each member's map explains its half of the call."""
    if targets is None:
        with torch.inference_mode():
            targets = [int(c) for i in range(0, len(pixels), batch)
                       for c in model(to_tensor(pixels[i:i + batch], size, model_device(model))).argmax(1)]
    with torch.inference_mode():
        x = to_tensor(pixels, size, model_device(model))
        found = model.lung_boxes(x)
        boxes = found.round().long().tolist()
        crops = to_numpy((model.crop(x, found)[:, 0] * 255).round()).astype(np.uint8)
    whole = cam_maps(model.whole, pixels, size, targets, method, batch)
    lungs = cam_maps(model.lungs, crops, size, targets, method, batch)
    s = whole.shape[-1]
    out = np.zeros_like(whole)
    for i, ((y0, y1, x0, x1), w, lung) in enumerate(zip(boxes, whole, lungs)):
        placed = np.zeros((size, size), np.float32)
        placed[y0:y1, x0:x1] = cv2.resize(cv2.resize(lung, (size, size), interpolation=cv2.INTER_LINEAR),
                                          (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        if s != size:
            placed = cv2.resize(placed, (s, s), interpolation=cv2.INTER_LINEAR)
        m = (w + placed) / 2
        out[i] = m / m.max() if m.max() > 0 else m
    return out


def randomise_last_stages(model: torch.nn.Module, from_block: int = 11, seed: int = 0) -> torch.nn.Module:
    """A copy of the model with blocks[from_block:], the head conv and the classifier re-initialised
    (in each member, and the joint head, of the whole film and its lungs)."""
    if isinstance(model, WholeAndLungs):
        m = copy.deepcopy(model)
        m.whole = randomise_last_stages(model.whole, from_block, seed)
        m.lungs = randomise_last_stages(model.lungs, from_block, seed + 1)
        torch.manual_seed(seed)
        m._fc.reset_parameters()
        return m.eval()
    torch.manual_seed(seed)
    m = copy.deepcopy(model)
    for module in [*m._blocks[from_block:], m._conv_head, m._bn1, m._fc]:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    return m.eval()


def map_similarity(a: np.ndarray, b: np.ndarray, size: int = 28) -> np.ndarray:
    """Spearman rank correlation between paired maps, per image (compared at `size` px)."""
    out = []
    for x, y in zip(a, b):
        xs = cv2.resize(x.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA).ravel()
        ys = cv2.resize(y.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA).ravel()
        out.append(spearmanr(xs, ys).statistic if xs.std() > 0 and ys.std() > 0 else np.nan)
    return np.array(out)


def road_scores(model: torch.nn.Module, pixels: np.ndarray, size: int, cams: np.ndarray, targets: list[int],
                percentiles=(20, 40, 60, 80), batch: int = 8, seed: int = 0) -> np.ndarray:
    """ROAD (remove and debias) combined faithfulness score per image, as pytorch-grad-cam's
    `ROADCombined` computes it: higher means removing the pixels the map ranks highest hurts the
    prediction more than removing the lowest-ranked ones. The imputation is pytorch-grad-cam's
    noisy linear imputation with its equation system built in one vectorised step (`_Imputer`: the
    same system and solution, several times faster), and its noise is seeded."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (PerturbationConfidenceMetric,
                                                                  RemoveLeastRelevantFirst, RemoveMostRelevantFirst)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    net, _ = cam_model(model)
    imputer = _Imputer()
    # ROADCombined's order: every percentile least-relevant-first, then most-relevant-first
    lerf = [PerturbationConfidenceMetric(RemoveLeastRelevantFirst(p, imputer)) for p in percentiles]
    morf = [PerturbationConfidenceMetric(RemoveMostRelevantFirst(p, imputer)) for p in percentiles]
    if cams.shape[-1] != size:  # maps are kept at image size; ROAD works at the model's input size
        cams = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in cams])
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(pixels), batch):
        x = to_tensor(pixels[i:i + batch], size, model_device(net)).contiguous()
        t = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets[i:i + batch]]
        # the metrics below ask for one imputation at a time; solve the batch's systems first, several
        # at once (SuperLU releases the GIL), in the order they will be asked for
        imputer.solve_ahead([(x[k].cpu(), torch.from_numpy(cams[i + k])) for k in range(len(x))], lerf + morf)
        with torch.no_grad():
            lo = np.mean(np.float32([m(x, cams[i:i + batch], t, net) for m in lerf]), axis=0)
            mo = np.mean(np.float32([m(x, cams[i:i + batch], t, net) for m in morf]), axis=0)
        out.append(np.asarray((lo - mo) / 2).ravel())
    return np.concatenate(out)


class _Imputer:
    """pytorch-grad-cam's `NoisyLinearImputer` (each removed pixel the weighted mean of its eight
    neighbours, solved as one sparse system, plus noise), with the system assembled from arrays
    instead of element by element into a `lil_matrix` (most of ROAD's time on a CPU)."""
    noise = 0.01

    def __init__(self):
        self._recorded: list | None = None
        self._solved: collections.deque = collections.deque()

    def solve_ahead(self, inputs: list, metrics: list) -> None:
        """Solve now the systems that `metrics` (each over every (image, map) of `inputs`, in that
        order) will ask for, on as many threads as there are cores; the calls then only add the noise,
        so the random stream, and with it every result, is the same as solving them one by one."""
        self._recorded = []
        try:
            for m in metrics:
                for img, cam in inputs:
                    m.perturbation(img, cam)  # records (image, mask) without solving
            jobs = self._recorded
        finally:
            self._recorded = None
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            self._solved.extend(zip((mask for _, mask in jobs), pool.map(lambda job: self.solve(*job), jobs)))

    @classmethod
    def solve(cls, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The removed pixels' values, (channels, removed), without the noise."""
        from scipy.sparse.linalg import spsolve

        a, b = cls.system(mask.numpy(), img.numpy())
        return torch.tensor(spsolve(a, b), dtype=torch.float).reshape(len(b), -1).t()

    @staticmethod
    def system(mask: np.ndarray, img: np.ndarray):
        from pytorch_grad_cam.metrics.road import neighbors_weights
        from scipy.sparse import csc_matrix

        h, w = mask.shape
        maskflt = mask.reshape(-1)
        imgflat = img.reshape((img.shape[0], -1))
        indices = np.flatnonzero(maskflt == 0)
        to_var = np.zeros(len(maskflt), dtype=int)
        to_var[indices] = np.arange(len(indices))
        n = len(indices)
        b = np.zeros((n, img.shape[0]))
        sum_neighbors = np.ones(n)
        r0, c0 = indices // w, indices % w
        rows, cols, vals = [np.arange(n)], [np.arange(n)], []
        for (dr, dc), weight in neighbors_weights:
            r, c = r0 + dr, c0 + dc
            valid = (r >= 0) & (c >= 0) & (r < h) & (c < w)
            ids = np.flatnonzero(valid)
            coords = (r * w + c)[valid]
            known = maskflt[coords] > 0.5
            b[ids[known], :] -= weight * imgflat[:, coords[known]].T
            unknown = maskflt[coords] < 0.5
            rows.append(ids[unknown])
            cols.append(to_var[coords[unknown]])
            vals.append(np.full(int(unknown.sum()), weight))
            sum_neighbors[~valid] -= weight
        vals.insert(0, -sum_neighbors)
        a = csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        return a, b

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._recorded is not None:
            self._recorded.append((img, mask))
            return img
        if self._solved:
            solved_mask, res = self._solved.popleft()
            if not torch.equal(solved_mask, mask):
                raise RuntimeError("ROAD asked for imputations in another order than they were solved.")
        else:
            res = self.solve(img, mask)
        imgflt = img.reshape(img.shape[0], -1)
        indices = np.flatnonzero(mask.reshape(-1).numpy() == 0)
        filled = imgflt.clone()
        filled[:, indices] = res + self.noise * torch.randn_like(res)
        return filled.reshape_as(img)


# --------------------------------------------------------------------------- occlusion
def occlude(pixels: np.ndarray, regions: np.ndarray, keep: bool) -> np.ndarray:
    """Images with the region replaced by the image's mean grey (keep=False), or everything else (keep=True)."""
    out = np.array(pixels, copy=True)
    for im, r in zip(out, regions):
        hide = r if not keep else ~r
        if hide.any():
            im[hide] = int(np.asarray(im).mean())
    return out


def occlusion(predict, pixels: np.ndarray, y: np.ndarray, lungs: np.ndarray) -> dict[str, dict]:
    """The occlusion pair: accuracy, balanced accuracy (chance 25%), per-class sensitivity and
    COVID-19 against Normal AUC of `predict` (images -> probabilities) as is, with the lungs hidden
    and with only the lungs shown."""
    out = {}
    for name, px in (("as is", pixels), ("lungs hidden", occlude(pixels, lungs, keep=False)),
                     ("lungs only", occlude(pixels, lungs, keep=True))):
        p = predict(px)
        out[name] = {"accuracy": metrics.accuracy_from_proba(y, p), "balanced accuracy": metrics.balanced_accuracy(y, p),
                     **{f"{c} sensitivity": v for c, v in metrics.class_sensitivity(y, p).items()},
                     "COVID vs Normal AUC": metrics.covid_vs_normal_auc(y, p)}
    return out


def energy_table(cams: np.ndarray, lungs: np.ndarray, labels: pd.Series) -> pd.DataFrame:
    """Per image: energy share in the lungs, the border frame and the corners, and the lung area share."""
    size = cams.shape[-1]
    border, corners = border_region(size), corner_region(size)
    return pd.DataFrame({
        "label": labels.to_numpy(),
        "lung": [energy_share(c, m) for c, m in zip(cams, lungs)],
        "border": [energy_share(c, border) for c in cams],
        "corners": [energy_share(c, corners) for c in cams],
        "lung_area": lungs.reshape(len(lungs), -1).mean(1),
    })


# --------------------------------------------------------------------------- interactive viewer (JupyterLab)
def viewer(models: dict, pixels: np.ndarray, table: pd.DataFrame, size: int):
    """ipywidgets viewer: pick the class, the image, the model, the method and the target class."""
    import ipywidgets as w
    import matplotlib.pyplot as plt


    labels = table.label.to_numpy()
    cls = w.Dropdown(options=list(CLASSES), description="class")
    img = w.IntSlider(min=0, max=max(int((labels == CLASSES[0]).sum()) - 1, 0), description="image")
    model = w.Dropdown(options=list(models), description="model")
    method = w.Dropdown(options=list(METHODS), description="method")
    target = w.Dropdown(options=["predicted"] + list(CLASSES), description="target")

    def on_class(change):
        img.max = max(int((labels == change["new"]).sum()) - 1, 0)
        img.value = 0

    cls.observe(on_class, names="value")

    def show(cls, img, model, method, target):
        rows = np.flatnonzero(labels == cls)
        if not len(rows):
            print(f"no {cls} images in this sample")
            return
        i = rows[min(img, len(rows) - 1)]
        net = models[model]
        g = np.asarray(pixels[i])
        with torch.no_grad():
            p = to_numpy(net(to_tensor(g[None], size, model_device(net))).softmax(1))[0]
        t = int(p.argmax()) if target == "predicted" else CLASSES.index(target)
        cam = cam_maps(net, g[None], size, targets=[t], method=method)[0]
        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        axes[0].imshow(g, cmap="gray")
        axes[0].set_title(f"{table.file.iloc[i].split('/')[-1]} (true: {cls})", fontsize=9)
        axes[1].imshow(overlay(g, cam))
        probs = ", ".join(f"{c[:5]} {q:.2f}" for c, q in zip(CLASSES, p))
        axes[1].set_title(f"{method} for {CLASSES[t]}\n{probs}", fontsize=9)
        for ax in axes:
            ax.axis("off")
        plt.show()

    return w.interactive(show, cls=cls, img=img, model=model, method=method, target=target)


def overlay(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A CAM map over a grey image as an RGB uint8 picture (jet colour map)."""
    import cv2

    cam = np.clip(cam, 0, 1)
    heat = cv2.applyColorMap((255 * cam).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2)
    return (alpha * heat + (1 - alpha) * rgb).astype(np.uint8)
