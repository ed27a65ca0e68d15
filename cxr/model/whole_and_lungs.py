"""The whole film and its lungs in one network file: the shape in which the outside rule's choice,
the average of the whole-film and lung-crop models (issue 38), can run wherever one model runs.

`WholeAndLungs` takes what every other model takes, the whole film (B, 1, S, S) in [0, 1], and
does inside what `cxr.data.lung_crop` does outside: the lung segmenter's mask of the film, the box
around both lungs widened by `margin`, the film cropped to that box and resized to S (bicubic, as
`preprocess.resize` enlarges), or the whole film where the mask covers less than
`lung_masks.AREA_RANGE[0]` of it (an empty or too small mask). Its feature map is the two
members' maps side by side (B, 2560, h, w), each in its own frame; its head is one linear layer
on their pooled features that gives the mean of the members' temperature-scaled logits, so the
model is linear in its pooled features as an EfficientNet-Lite0 is (what the site check's
features and `cxr adapt`'s new head need). The mean of logits is the geometric mean of the two
members' probabilities, renormalised: near, but not equal to, the mean of probabilities that
chapter 05's "average of the two" measured, so it is measured again as its own candidate.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from cxr.core.config import CLASSES
from cxr.data import lung_masks, segmenter
from cxr.model.architectures import efficientnet_lite0, folded

ARCH = "whole_and_lungs"
FEATURES = 1280  # each member's pooled features


class WholeAndLungs(nn.Module):
    """Two EfficientNet-Lite0 (`whole`, `lungs`) and the lung segmenter (`seg`); see the module."""

    def __init__(self, margin: float = 0.1, widths: tuple[int, ...] = segmenter.WIDTHS, dropout: float = 0.2):
        super().__init__()
        self.whole = efficientnet_lite0(pretrained=False)
        self.lungs = efficientnet_lite0(pretrained=False)
        self.seg = segmenter.UNet(tuple(widths))
        self.margin = margin
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(2 * FEATURES, len(CLASSES))

    def lung_boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4) boxes (y0, y1, x0, x1) in pixels of `x`, as `lung_crop.box` draws them around the
        segmenter's mask; the whole film where the mask is too small to crop to."""
        size = x.shape[-1]
        g = F.interpolate(x * 255.0, size=(segmenter.SIZE, segmenter.SIZE), mode="bilinear", align_corners=False)
        mean = g.mean((1, 2, 3), keepdim=True)
        std = g.std((1, 2, 3), unbiased=False, keepdim=True).clamp_min(1e-3)
        p = torch.sigmoid(self.seg((g - mean) / std))
        mask = F.interpolate(p, size=(size, size), mode="bilinear", align_corners=False)[:, 0] >= 0.5
        idx = torch.arange(size, device=x.device)
        rows, cols = mask.any(2), mask.any(1)
        y0 = torch.where(rows, idx, size).amin(1)
        y1 = torch.where(rows, idx, -1).amax(1) + 1
        x0 = torch.where(cols, idx, size).amin(1)
        x1 = torch.where(cols, idx, -1).amax(1) + 1
        dy, dx = torch.round(self.margin * (y1 - y0)), torch.round(self.margin * (x1 - x0))
        box = torch.stack([(y0 - dy).clamp_min(0), (y1 + dy).clamp_max(size), (x0 - dx).clamp_min(0),
                           (x1 + dx).clamp_max(size)], 1).float()
        whole = mask.float().mean((1, 2)) < lung_masks.AREA_RANGE[0]
        full = torch.tensor([0.0, size, 0.0, size], device=x.device).expand_as(box)
        return torch.where(whole[:, None], full, box)

    def crop(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Each film cropped to its box and resized to the film's size (bicubic, pixel centres as
        OpenCV places them), rounded to 8 bits as a preprocessed film is."""
        b, _, size, _ = x.shape
        j = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size  # output pixel centres, 0..1
        y0, y1, x0, x1 = boxes.unbind(1)
        sy = y0[:, None] + j[None] * (y1 - y0)[:, None] - 0.5  # source pixel coordinates
        sx = x0[:, None] + j[None] * (x1 - x0)[:, None] - 0.5
        gy, gx = (2 * sy + 1) / size - 1, (2 * sx + 1) / size - 1
        grid = torch.stack([gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)], -1)
        out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
        return torch.round(out.clamp(0, 1) * 255) / 255

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The two members' last feature maps side by side: the whole film's, then the lungs'."""
        return torch.cat([self.whole.features(x), self.lungs.features(self.crop(x, self.lung_boxes(x)))], 1)

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(fmap.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def folded_members(self) -> "WholeAndLungs":
        """An inference copy with each member's batch norms folded (`architectures.folded`)."""
        was_training = self.training
        out = copy.deepcopy(self.eval())
        self.train(was_training)
        out.whole, out.lungs, out.seg = folded(out.whole), folded(out.lungs), segmenter.for_inference(out.seg)
        for p in out.parameters():
            p.requires_grad_(False)
        out.is_folded = True
        return out.eval()


def combine(whole: dict, lungs: dict, seg: dict) -> dict:
    """A `WholeAndLungs` checkpoint's contents from a whole-film and a lung-crop checkpoint's
    (`checkpoints.read_checkpoint`) and the lung segmenter file's (`seg`): the members' weights, and
    a head that gives the mean of the members' logits, each divided by its temperature. The
    preprocessing is the whole-film member's (the whole film); what each member was is kept under
    "members"."""
    wc, lc = whole.get("config", {}), lungs.get("config", {})
    if lc.get("lungs") != "crop" or wc.get("lungs", "none") != "none":
        raise ValueError("a whole-film model and a lung-crop model (cxr train --lungs crop) are combined, in that order.")
    if whole["input_size"] != lungs["input_size"] or wc.get("image_size") != lc.get("image_size"):
        raise ValueError(f"the two models take other sizes ({whole['input_size']} and {lungs['input_size']} px).")
    if not isinstance(seg, dict) or seg.get("format") != segmenter.FORMAT:
        raise ValueError("the third file is not a cxr lung segmenter.")
    net = WholeAndLungs(float(lc.get("lung_margin", 0.1)), tuple(seg["widths"]))
    net.whole.load_state_dict(_float(whole["model"]))
    net.lungs.load_state_dict(_float(lungs["model"]))
    net.seg.load_state_dict(_float(seg["model"]))
    tw, tl = float(whole.get("temperature", 1.0)), float(lungs.get("temperature", 1.0))
    with torch.no_grad():
        net._fc.weight.copy_(torch.cat([net.whole._fc.weight / tw, net.lungs._fc.weight / tl], 1) / 2)
        net._fc.bias.copy_((net.whole._fc.bias / tw + net.lungs._fc.bias / tl) / 2)
    return {"arch": ARCH, "classes": list(CLASSES), "input_size": whole["input_size"], "config": wc,
            "model": net.state_dict(), "temperature": 1.0, "margin": net.margin,
            "seg_widths": list(seg["widths"]),
            "members": {"whole": {"temperature": tw, "source_run": whole.get("source_run"), "config": wc},
                        "lungs": {"temperature": tl, "source_run": lungs.get("source_run"), "config": lc}}}


def source_runs(members: dict) -> str:
    """The runs a combined file came from, as its `source_run` names them ("whole: RUN + lungs: RUN")."""
    return " + ".join(f"{k}: {m.get('source_run')}" for k, m in members.items())


def member(state: dict, name: str) -> dict:
    """One member ("whole" or "lungs") of a `WholeAndLungs` checkpoint's contents, as the
    EfficientNet-Lite0 checkpoint it was made from: its weights, temperature and training config
    (the metadata the combined file keeps, such as a model card, stays with the combined file)."""
    if state.get("arch") != ARCH:
        raise ValueError(f"not a {ARCH} checkpoint")
    prefix = f"{name}."
    info = state["members"][name]
    return {"format": state["format"], "arch": "efficientnet_lite0", "classes": state["classes"],
            "input_size": state["input_size"], "config": info["config"], "temperature": info["temperature"],
            "source_run": info.get("source_run"),
            "model": {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}}


def _float(state: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
