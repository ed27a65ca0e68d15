"""The lung segmenter: a small U-Net that draws both lung fields of a frontal chest radiograph.

It reads a grey image of any size, resized to `SIZE` x `SIZE` and standardised per image (so raw
films and the classifier's enhanced pixels both work), and returns a mask at the image's own size.
The network works at half resolution after a strided first layer and its logits are upsampled
bilinearly, which keeps it at a few milliseconds per image on a CPU. Its weights ship in
`cxr/weights/lung_segmenter.pt` (half precision, a plain dict read with ``weights_only=True``);
`segmenter_train` makes them, and `lung_masks` judges the masks it draws. `lung_fields` is the
one definition of "the lungs" that every measurement uses (the shortcut audit's occlusion and
Grad-CAM energy, and the lung-model comparison).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxr.core.files import save_state
from cxr.data import lung_masks

SIZE = 256
FORMAT = "cxr-lung-segmenter-1"
SHIPPED = Path(__file__).parents[1] / "weights" / "lung_segmenter.pt"
WIDTHS = (8, 16, 32, 64, 96)


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
    return nn.Sequential(*_conv(cin, cout), *sum((_conv(cout, cout) for _ in range(convs - 1)), []))


class UNet(nn.Module):
    """A U-Net at half resolution: a strided stem, four down and four up stages, one logit per pixel."""
    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.down = nn.ModuleList([_block(widths[0], widths[0])] +
                                  [_block(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.up = nn.ModuleList([_block(b + a, a, convs=1) for a, b in zip(widths[:-1], widths[1:])][::-1])
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.up, skips[-2::-1]):
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return F.interpolate(self.out(h), size=size, mode="bilinear", align_corners=False)


def to_input(gray: np.ndarray) -> np.ndarray:
    """One grey image (any size, 8 or 16 bit, or RGB) as the network reads it: SIZE x SIZE float32,
    zero mean and unit variance."""
    g = np.asarray(gray)
    if g.ndim == 3:
        g = cv2.cvtColor(g[..., :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
    g = cv2.resize(g.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return ((g - g.mean()) / max(float(g.std()), 1e-3)).astype(np.float32)


def save(model: UNet, path: str | Path, **meta) -> Path:
    """The weights in half precision, with plain metadata (`weights_only=True` reads it)."""
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    return save_state(path, {"format": FORMAT, "size": SIZE, "widths": list(WIDTHS), "model": weights, **meta})


def load(path: str | Path | None = None) -> tuple[UNet, dict]:
    """The segmenter and its metadata (default: the shipped one), with a clear message for a file
    that is missing or is not a lung segmenter."""
    path = Path(path) if path else SHIPPED
    if not path.exists():
        raise FileNotFoundError(f"No lung segmenter at {path}: restore cxr/weights/lung_segmenter.pt from git, "
                                "or train one with `cxr segmenter`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"{path} is not a readable PyTorch file ({type(e).__name__}: {e}).") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cxr lung segmenter (expected format {FORMAT!r}).")
    model = UNet(tuple(state["widths"]))
    model.load_state_dict({k: v.float() for k, v in state["model"].items()})
    return for_inference(model), {k: v for k, v in state.items() if k != "model"}


def for_inference(model: UNet) -> UNet:
    """The model in eval mode with each batch norm folded into its convolution (the same function,
    fewer passes over memory) and channels-last memory, the CPU's fast layout."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = model.eval()
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
    return model.to(memory_format=torch.channels_last)


@torch.no_grad()
def probabilities(model: UNet, images, batch: int = 32) -> np.ndarray:
    """The lung probability of every pixel, at SIZE x SIZE (N, SIZE, SIZE), batched."""
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.stack([to_input(g) for g in images[i:i + batch]]))[:, None]
        out.append(torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)))[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, SIZE, SIZE), np.float32)


def segment(model: UNet, images, batch: int = 32) -> list[np.ndarray]:
    """The lung mask of each image (bool), at the image's own size."""
    masks = []
    for g, p in zip(images, probabilities(model, images, batch)):
        h, w = np.asarray(g).shape[:2]
        masks.append(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5)
    return masks


def lung_fields(images, model: UNet | None = None) -> tuple[np.ndarray, int]:
    """The lung field of each image (bool, N x H x W), as every measurement defines it: the
    segmenter's mask, or, where that mask fails the check (`lung_masks.status`), the mean of the
    masks that passed, thresholded at one half (the same place on every such film, never a
    silent wrong mask); and how many were replaced."""
    model = load()[0] if model is None else model
    fields, ok = fields_of(np.stack(segment(model, np.asarray(images))))
    return fields, int((~ok).sum())


def fields_of(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`lung_fields` from masks already made: the fields (a copy; a mask that fails the check
    replaced by the passing masks' mean, thresholded at one half) and which masks passed."""
    masks = np.asarray(masks, bool)
    ok = np.array([lung_masks.status(m) == lung_masks.OK for m in masks], bool)
    fields = masks.copy()
    if ok.any() and not ok.all():
        fields[~ok] = masks[ok].mean(0) >= 0.5
    return fields, ok
