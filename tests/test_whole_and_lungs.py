"""The whole film and its lungs in one network file (issue 38): the crop it makes inside is the
crop `cxr.data.lung_crop` makes outside, its head is the mean of the members' tempered logits, and
it loads like any cxr checkpoint."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cxr.assess import explain
from cxr.core.config import CLASSES
from cxr.core.files import save_state
from cxr.data import lung_crop, segmenter
from cxr.data.preprocess import resize
from cxr.model import checkpoints, whole_and_lungs
from cxr.model.architectures import efficientnet_lite0, folded

SIZE = 64


def member(lungs: str, temperature: float, seed: int) -> dict:
    torch.manual_seed(seed)
    net = efficientnet_lite0(pretrained=False).eval()
    return {"model": net.state_dict(), "input_size": SIZE, "temperature": temperature,
            "config": {"lungs": lungs, "lung_margin": 0.1, "image_size": SIZE}}


def seg_file(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"format": segmenter.FORMAT, "widths": list(segmenter.WIDTHS), "model": segmenter.UNet().eval().state_dict()}


def film(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE)).astype(np.float32), (0, 0), 2).astype(np.uint8)


@pytest.fixture(scope="module")
def net():
    state = whole_and_lungs.combine(member("none", 0.7, 1), member("crop", 1.3, 2), seg_file())
    return whole_and_lungs.WholeAndLungs().eval(), state


def test_the_crop_inside_is_the_crop_preprocessing_makes():
    g = film()
    mask = np.zeros((SIZE, SIZE), bool)
    mask[12:50, 8:28] = mask[14:52, 36:58] = True  # two lungs
    y0, y1, x0, x1 = lung_crop.box(mask, 0.1)
    expected = resize(lung_crop.apply(g, mask, "crop", 0.1), SIZE).astype(int)
    net = whole_and_lungs.WholeAndLungs()
    x = torch.from_numpy(g[None, None].astype(np.float32) / 255)
    got = (net.crop(x, torch.tensor([[y0, y1, x0, x1]], dtype=torch.float32))[0, 0].numpy() * 255).round().astype(int)
    diff = np.abs(got - expected)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3  # OpenCV's and PyTorch's bicubic differ at the edges only


class Drawn(torch.nn.Module):
    """A stand-in segmenter whose logits are drawn by `fn`."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, g):
        return self.fn(g)


def test_a_mask_too_small_to_crop_to_gives_the_whole_film():
    net = whole_and_lungs.WholeAndLungs()
    net.seg = Drawn(lambda g: torch.full_like(g, -20.0))  # no lung anywhere
    boxes = net.lung_boxes(torch.rand(2, 1, SIZE, SIZE))
    assert boxes.tolist() == [[0, SIZE, 0, SIZE]] * 2
    # lung in columns 16-39 of every row (at the film's size): a box widened by the margin
    net.seg = Drawn(lambda g: torch.where((torch.arange(g.shape[-1]) >= g.shape[-1] // 4)
                                          & (torch.arange(g.shape[-1]) < g.shape[-1] * 5 // 8), 20.0, -20.0).expand_as(g))
    y0, y1, x0, x1 = net.lung_boxes(torch.rand(1, 1, SIZE, SIZE))[0].tolist()
    assert (y0, y1) == (0, SIZE) and 12 <= x0 < 16 and 40 < x1 <= 44


def test_the_head_is_the_mean_of_the_members_tempered_logits(net):
    model, state = net
    model.load_state_dict(state["model"])
    x = torch.from_numpy(np.stack([film(s) for s in range(3)])[:, None].astype(np.float32) / 255)
    with torch.no_grad():
        crops = model.crop(x, model.lung_boxes(x))
        expected = (model.whole(x) / 0.7 + model.lungs(crops) / 1.3) / 2
        got = model(x)
    assert got.shape == (3, len(CLASSES)) and torch.allclose(got, expected, atol=1e-4)
    assert model.features(x).shape[1] == 2 * whole_and_lungs.FEATURES


def test_it_loads_like_any_checkpoint_and_refuses_members_in_the_wrong_order(tmp_path, net):
    _, state = net
    path = save_state(tmp_path / "wl.pt", {"format": checkpoints.CHECKPOINT_FORMAT, **state})
    model, meta = checkpoints.load_model(path, "cpu")
    assert isinstance(model, whole_and_lungs.WholeAndLungs) and meta["arch"] == whole_and_lungs.ARCH
    assert meta["members"]["lungs"]["temperature"] == 1.3 and meta["config"]["lungs"] == "none"
    p = checkpoints.predict(model, np.stack([film(s) for s in range(2)]), SIZE, progress=False)
    assert p.shape == (2, len(CLASSES)) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="in that order"):
        whole_and_lungs.combine(member("crop", 1.0, 2), member("none", 1.0, 1), seg_file())


def test_the_folded_copy_computes_the_same_function(net):
    model, state = net
    model.load_state_dict(state["model"])
    x = torch.from_numpy(np.stack([film(s) for s in range(2)])[:, None].astype(np.float32) / 255)
    fast = folded(model)
    assert fast is not model and fast.is_folded and folded(fast) is fast
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-3)


def test_its_maps_join_the_two_members_maps_in_the_films_frame(net):
    model, state = net
    model.load_state_dict(state["model"])
    px = np.stack([film(s) for s in range(2)])
    maps = explain.cam_maps(model, px, SIZE, method="GradCAM")
    assert maps.shape == (2, SIZE, SIZE) and maps.min() >= 0 and np.allclose(maps.max((1, 2)), 1, atol=1e-5)
    rand = explain.randomise_last_stages(model, seed=0)
    assert isinstance(rand, whole_and_lungs.WholeAndLungs)
    assert not torch.equal(rand.lungs._fc.weight, model.lungs._fc.weight) and not torch.equal(rand._fc.weight, model._fc.weight)
    assert torch.equal(rand.seg.out.weight, model.seg.out.weight)  # the segmenter is not the classifier


def test_each_member_comes_back_out_as_the_model_it_was():
    whole, lungs = member("none", 0.7, 1), member("crop", 1.3, 2)
    state = {"format": checkpoints.CHECKPOINT_FORMAT, **whole_and_lungs.combine(whole, lungs, seg_file())}
    for name, original in (("whole", whole), ("lungs", lungs)):
        back = whole_and_lungs.member(state, name)
        assert back["arch"] == "efficientnet_lite0" and back["temperature"] == original["temperature"]
        assert back["config"]["lungs"] == original["config"]["lungs"]
        assert set(back["model"]) == set(original["model"])
        assert all(torch.equal(back["model"][k], original["model"][k]) for k in original["model"])
    with pytest.raises(ValueError):
        whole_and_lungs.member(whole | {"format": checkpoints.CHECKPOINT_FORMAT, "arch": "efficientnet_lite0"}, "whole")


def test_retraining_both_members_gives_the_shipped_digest_and_another_lung_run_does_not(tmp_path, monkeypatch):
    """`registry.retrained` makes the file by the steps that made the shipped one (the whole-film run
    exported, combined with the lung-crop run, exported), so a retraining that reproduces each
    member reproduces the shipped digest, and `reproduce_check` says so."""
    from dataclasses import replace
    from types import SimpleNamespace

    from cxr.core.config import get_config
    from cxr.model import registry

    config = replace(get_config("smoke"), cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(registry.segmenter, "SHIPPED", save_state(tmp_path / "seg.pt", seg_file()))
    runs = {}
    for name, lungs, t, seed in (("final", "none", 0.7, 1), ("lung-crop", "crop", 1.3, 2), ("other", "crop", 1.3, 3)):
        (tmp_path / name).mkdir()
        path = save_state(tmp_path / name / "checkpoint.pt", {"format": checkpoints.CHECKPOINT_FORMAT, "arch": "efficientnet_lite0",
                                                               "classes": list(CLASSES), **member(lungs, t, seed)})
        runs[name] = SimpleNamespace(name=f"finetune-smoke-{name}", checkpoint=path)
    whole = checkpoints.export(runs["final"].checkpoint, tmp_path / "whole.pt")
    shipped = checkpoints.export(registry.whole_and_lungs_file(config, whole, runs["lung-crop"].checkpoint),
                                 tmp_path / "shipped.pt")
    monkeypatch.setattr(registry, "SHIPPED", shipped)
    monkeypatch.setattr(registry, "find_run", lambda name, cfg: runs[name])
    model = registry.retrained(config)
    assert model.digest == registry.weights_digest(shipped) and model.run is None
    check = registry.reproduce_check(config)
    assert check["weights_equal"] and check["retrained_runs"] == ["finetune-smoke-final", "finetune-smoke-lung-crop"]
    assert {k: n["equal"] for k, n in check["networks"].items()} == {"whole": True, "lungs": True}
    runs["lung-crop"] = runs["other"]
    other = registry.reproduce_check(config)
    assert not other["weights_equal"]
    # which network came back bit for bit, each named in the appendix
    assert {k: n["equal"] for k, n in other["networks"].items()} == {"whole": True, "lungs": False}
    from cxr.assess import reproduction

    spread = {"test_accuracy": 0.01}
    comparison = {"films": 10, "calls_agreeing": 1.0, "calls_differing": 0, "metrics": {}}
    page = reproduction.markdown(other | {"test": comparison, "largest_probability_difference": 0.0,
                                          "verdict": reproduction.verdict(False, comparison, spread),
                                          "machine": {"cpu": "x", "cpu_family_model_stepping": "1 2 3", "logical_cpus": 2,
                                                      "torch_threads": 2, "libraries": {"torch_build": "2"}}})
    assert "| whole-film network, its weights | equal bit for bit |" in page
    assert "| lung-crop network, its weights | differ |" in page and "torch build 2" in page
