"""The backbones: pretrained weights really are ImageNet weights; grey stems are equivalent."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from cxr.model import architectures


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    from skimage import data as skdata

    x = torch.tensor(skdata.chelsea()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)


def test_lite0_names_the_cat(cat):
    m = architectures.efficientnet_lite0(num_classes=1000, in_channels=3).eval()
    with torch.no_grad():
        top = m(cat).softmax(1).topk(3).indices[0].tolist()
    assert top[0] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
    random = architectures.efficientnet_lite0(num_classes=1000, in_channels=3, pretrained=False).eval()
    with torch.no_grad():
        assert random(cat).softmax(1).max() < 0.05  # an untrained network has no idea


def test_grey_stem_is_equivalent_to_rgb(cat):
    rgb = architectures.efficientnet_lite0(num_classes=1000, in_channels=3).eval()
    grey = architectures.efficientnet_lite0(num_classes=1000, in_channels=1).eval()
    g = cat.mean(1, keepdim=True)
    with torch.no_grad():
        assert torch.allclose(grey(g), rgb(g.expand(-1, 3, -1, -1)), atol=1e-4)


def test_resnet50_says_when_it_starts_from_random(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    caplog.set_level(logging.INFO, logger="cxr.model.architectures")
    m, origin = architectures.resnet50()
    said = [r for r in caplog.records if "random weights" in r.getMessage()]
    # in the log at info level: a warning would print on chapter 03's page beside the sentence that says it
    assert said and all(r.levelno == logging.INFO for r in said)
    assert "random" in origin
    assert m(torch.rand(2, 1, 64, 64)).shape == (2, 4)


def test_resnet50_grey_stem_matches_normalised_rgb(tmp_path):
    import torchvision

    net = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50-test.pth"
    torch.save(net.state_dict(), path)
    grey, origin = architectures.resnet50(weights_path=path)
    assert origin == f"ImageNet weights ({path.name})"  # the file, not this machine's folder
    grey.fc = net.fc
    grey.eval()
    x = torch.rand(1, 1, 96, 96)
    mean = torch.tensor(architectures.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(architectures.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        a = grey.conv1(x)[..., 2:-2, 2:-2]  # away from the zero-padded border
        b = net.conv1((x.expand(-1, 3, -1, -1) - mean) / std)[..., 2:-2, 2:-2]
    assert torch.allclose(a, b, atol=1e-4)


def test_missing_resnet_weights_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        architectures.resnet50(weights_path=tmp_path / "nope.pth")


@pytest.mark.parametrize("k,stride,size", [(3, 1, 14), (5, 1, 15), (3, 2, 16), (3, 2, 15), (5, 2, 28), (1, 1, 7)])
def test_same_padding_matches_tensorflow_same(k, stride, size):
    """SAME padding, symmetric (done by the convolution) or not (padded first), equals an explicit
    TensorFlow-style pad followed by a plain convolution."""
    import math

    import torch
    import torch.nn.functional as F

    from cxr.model.architectures import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(4, 6, k, stride=stride, bias=True)
    x = torch.randn(2, 4, size, size)
    total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
    lo, hi = total // 2, total - total // 2
    expected = F.conv2d(F.pad(x, (lo, hi, lo, hi)), conv.weight, conv.bias, stride)
    out = conv(x)
    assert out.shape[-1] == math.ceil(size / stride)
    assert torch.allclose(out, expected, atol=1e-5)


def test_folded_copy_computes_the_same_function_and_leaves_the_model_alone(cat):
    grey = cat.mean(1, keepdim=True)
    m = architectures.efficientnet_lite0(num_classes=1000, in_channels=1).train()  # ImageNet batch-norm statistics
    f = architectures.folded(m)
    assert m.training and any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # the original is untouched
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
    assert not any(p.requires_grad for p in f.parameters())
    with torch.no_grad():
        want = m.eval()(grey)
        got = f(grey)
        part = (m.features(grey, 0, 8), f.features(grey, 0, 8))
    for a, b in ((got, want), part):  # float rounding only: errors far below the values' range
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    assert torch.equal(got.argmax(1), want.argmax(1))
    resnet, _ = architectures.resnet50(pretrained=False)
    assert architectures.folded(resnet) is resnet  # only EfficientNet-Lite0 is folded


def test_in_place_activations_give_the_same_gradients_as_out_of_place(monkeypatch):
    """ReLU6 runs in place on batch-norm outputs; a training step must not change because of it."""
    x = torch.rand(4, 1, 64, 64)

    def grads():
        torch.manual_seed(0)
        m = architectures.efficientnet_lite0(pretrained=False).train()
        m(x).logsumexp(1).sum().backward()
        return [p.grad.clone() for p in m.parameters()]

    in_place = grads()
    relu6 = F.relu6
    monkeypatch.setattr(architectures.F, "relu6", lambda t, inplace=False: relu6(t))
    out_of_place = grads()
    assert all(torch.equal(a, b) for a, b in zip(in_place, out_of_place))


def test_a_models_kind_is_said_from_its_checkpoint():
    from cxr.model import checkpoints, whole_and_lungs

    assert checkpoints.kind({"arch": "efficientnet_lite0", "config": {}}) == "a partly fine-tuned EfficientNet-Lite0"
    assert checkpoints.kind({"arch": "efficientnet_lite0", "config": {"approach": "linear"}}).startswith("a frozen")
    assert checkpoints.kind({"arch": "efficientnet_lite0", "config": {"lungs": "crop"}}).endswith("the box around the lungs")
    assert checkpoints.kind({"arch": whole_and_lungs.ARCH}).startswith("two partly fine-tuned EfficientNet-Lite0")
