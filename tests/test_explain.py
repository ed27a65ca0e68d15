"""The measuring parts of chapter 05 on small cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_xray

from cxr.assess import audit, explain
from cxr.model.architectures import efficientnet_lite0


def test_energy_share_and_regions():
    cam = np.zeros((10, 10))
    cam[0, 0] = 3.0
    cam[5, 5] = 1.0
    border = explain.border_region(10, 0.1)
    assert border.sum() == 100 - 64 and border[0, 0] and not border[5, 5]
    assert explain.energy_share(cam, border) == pytest.approx(0.75)
    corners = explain.corner_region(10, 0.2)
    assert corners.sum() == 16 and corners[0, 0] and corners[9, 9] and not corners[0, 5]
    assert np.isnan(explain.energy_share(np.zeros((10, 10)), border))


def test_twin_agreement_counts():
    orig = np.array([2, 2, 3, 3, 1])
    twin = np.array([2, 1, 3, 1, 1])
    r = audit.twin_agreement(orig, twin)
    assert r["n"] == 5 and r["agreement"] == pytest.approx(3 / 5)
    assert r["to_lung_opacity"] == pytest.approx(2 / 5)  # an original already called Lung Opacity does not count


def test_occlusion_hides_the_region_only():
    px = np.stack([synthetic_xray(1, 32), synthetic_xray(2, 32)])
    region = np.zeros((2, 32, 32), bool)
    region[:, 8:16, 8:16] = True
    hidden = explain.occlude(px, region, keep=False)
    kept = explain.occlude(px, region, keep=True)
    assert np.array_equal(hidden[~region], px[~region]) and len(np.unique(hidden[0][region[0]])) == 1
    assert np.array_equal(kept[region], px[region]) and len(np.unique(kept[0][~region[0]])) == 1


def test_the_occlusion_pair_of_a_model_that_reads_only_the_lungs_falls_to_chance_with_them_hidden():
    px = np.stack([synthetic_xray(k, 32) for k in range(8)])
    lungs = np.zeros((8, 32, 32), bool)
    lungs[:, 8:24, 4:28] = True
    y = np.arange(8) % 4
    px[:, 12] = 100
    px[np.arange(8), 12, 6 + 4 * y] = 255  # the class is written inside the lungs

    def reads_lungs(images):  # finds the bright pixel in row 12, else says COVID
        found = [np.flatnonzero(im[12] == 255) for im in images]
        return np.eye(4)[[(f[0] - 6) // 4 if len(f) else 0 for f in found]]

    o = explain.occlusion(reads_lungs, px, y, lungs)
    assert o["as is"]["balanced accuracy"] == 1.0 and o["lungs only"]["balanced accuracy"] == 1.0
    assert o["lungs hidden"]["balanced accuracy"] == 0.25 and o["lungs hidden"]["COVID sensitivity"] == 1.0


def test_map_similarity_and_chain_probe():
    rng = np.random.default_rng(0)
    a = rng.random((3, 56, 56)).astype(np.float32)
    assert np.allclose(explain.map_similarity(a, a), 1.0)
    assert abs(np.nanmean(explain.map_similarity(a, rng.random((3, 56, 56))))) < 0.2
    orig = rng.normal(0, 1, (100, 8))
    assert audit.chain_probe_auc(orig, orig + np.r_[3, np.zeros(7)]) > 0.95  # a visible trace
    assert audit.chain_probe_auc(orig, rng.normal(0, 1, (100, 8))) < 0.7  # no trace


def test_cam_maps_and_randomisation():
    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=True).eval()
    px = np.stack([synthetic_xray(i, 64) for i in range(2)])
    maps = explain.cam_maps(model, px, 64, targets=[0, 1], method="GradCAM")
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    rnd = explain.randomise_last_stages(model, 11)
    assert not torch.equal(rnd._fc.weight, model._fc.weight) and torch.equal(rnd._blocks[0]._bn1.weight,
                                                                            model._blocks[0]._bn1.weight)
    for m in explain.METHODS[1:]:
        assert explain.cam_maps(model, px, 64, method=m).shape == (2, 64, 64)


def test_viewer_controls_and_first_view(caplog):
    """The interactive viewer of chapter 05, driven without a front end (the notebook skips it
    when run headless, so this is where it is exercised)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    import pandas as pd

    torch.manual_seed(0)
    model = efficientnet_lite0(pretrained=False).eval()
    labels = ["COVID", "COVID", "Normal", "Normal", "Normal"]
    table = pd.DataFrame({"file": [f"{c}/images/{c}-{i}.jpg" for i, c in enumerate(labels)], "label": labels})
    px = np.stack([synthetic_xray(i, 64) for i in range(len(labels))])
    figures = len(plt.get_fignums())
    view = explain.viewer({"toy": model}, px, table, 64)
    assert isinstance(view, w.interactive)
    assert len(plt.get_fignums()) == figures + 1  # the first view was drawn
    assert "Exception in interact callback" not in caplog.text
    controls = {c.description: c for c in view.children if isinstance(c, w.ValueWidget)}
    assert set(controls) == {"class", "image", "model", "method", "target"}
    assert controls["image"].max == 1  # two COVID images
    controls["image"].value = 1
    controls["class"].value = "Normal"  # three Normal images, and back to the first
    assert controls["image"].max == 2 and controls["image"].value == 0
    controls["method"].value, controls["target"].value = "EigenCAM", "Viral Pneumonia"
    assert "Exception in interact callback" not in caplog.text and len(plt.get_fignums()) > figures + 1
    plt.close("all")


def test_road_scores_are_pytorch_grad_cams_and_repeatable():
    """The vectorised imputation builds the library's equation system exactly, so the scores are
    `ROADCombined`'s under the same random stream; and they are seeded, so a rerun repeats them."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined, neighbors_weights
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from scipy.sparse import csc_matrix

    rng = np.random.default_rng(0)
    img = torch.rand(1, 40, 40)
    mask = (torch.rand(40, 40) > 0.4).float()
    a_lib, b_lib = NoisyLinearImputer.setup_sparse_system(mask.numpy(), img.numpy(), neighbors_weights)
    a, b = explain._Imputer.system(mask.numpy(), img.numpy())
    assert (csc_matrix(a_lib) != a).nnz == 0 and np.array_equal(b_lib, b)

    model = efficientnet_lite0(pretrained=False).eval()
    px = np.stack([synthetic_xray(i, 64) for i in range(3)])
    cams = rng.random((3, 64, 64)).astype(np.float32)
    targets = [0, 1, 2]
    ours = explain.road_scores(model, px, 64, cams, targets, percentiles=(30, 70), seed=5)
    net, _ = explain.cam_model(model)
    torch.manual_seed(5)
    x = explain.to_tensor(px, 64).contiguous()
    with torch.no_grad():
        lib = ROADCombined(percentiles=[30, 70])(x, cams, [ClassifierOutputSoftmaxTarget(t) for t in targets], net)
    np.testing.assert_array_equal(ours, np.asarray(lib).ravel())
    np.testing.assert_array_equal(ours, explain.road_scores(model, px, 64, cams, targets, percentiles=(30, 70), seed=5))
