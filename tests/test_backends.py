"""The backends (`cxr.model.backends`): each runtime gives PyTorch's probabilities and features,
`auto` passes over a runtime that is missing or disagrees, a backend asked for by name that cannot
run says what to do, and on the smoke data every installed runtime meets the agreement targets
(`cxr.assess.agreement`) for the shipped model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_predict import model_file  # noqa: F401 - a fixture

from cxr.assess import agreement, predict, results
from cxr.cli import main
from cxr.core.config import get_config
from cxr.model import backends, checkpoints, registry

RUNTIMES = [n for n in backends.PREFERENCE if backends.installed(n)]


@pytest.fixture(scope="module")
def shipped():
    config = get_config("smoke")
    network, meta = checkpoints.load_model(registry.SHIPPED, "cpu")
    return network, meta, config


@pytest.mark.parametrize("name", RUNTIMES)
def test_a_runtime_gives_pytorchs_probabilities_and_features(shipped, name):
    network, meta, config = shipped
    run = backends.runner(network, meta, registry.SHIPPED, config.replace(backend=name))
    assert backends.name_of(run) == name and run.backend.reason == "asked for"
    films = backends.probe_films(meta["input_size"], n=6, seed=3)
    mine = checkpoints.forward(run, films, meta["input_size"], ("proba", "features"), batch=4)
    ref = checkpoints.forward(network, films, meta["input_size"], ("proba", "features"), batch=4)
    # 1280 pooled features per network (the whole film and its lungs: 2560)
    assert mine["proba"].shape == (6, 4) and mine["features"].shape == ref["features"].shape
    assert ref["features"].shape[1] in (1280, 2560)
    assert np.abs(mine["proba"] - ref["proba"]).max() < 1e-4
    assert np.abs(mine["features"] - ref["features"]).max() < 1e-3 * np.abs(ref["features"]).max()


def test_auto_takes_the_first_runtime_that_agrees_and_falls_back_to_torch(shipped, monkeypatch):
    network, meta, config = shipped
    auto = config.replace(backend="auto")
    assert backends.name_of(backends.runner(network, meta, registry.SHIPPED, auto)) == (RUNTIMES or ["torch"])[0]
    # a runtime that disagrees with PyTorch is passed over, and named it is an error
    monkeypatch.setattr(backends, "disagreement", lambda *a: (0.2, 0.0))
    chosen = backends.runner(network, meta, registry.SHIPPED, auto).backend
    assert chosen.name == "torch" and "disagreed" in chosen.reason
    if RUNTIMES:
        with pytest.raises(backends.BackendUnavailable, match="disagrees with PyTorch"):
            backends.runner(network, meta, registry.SHIPPED, config.replace(backend=RUNTIMES[0]))
    # none installed (aarch64 without wheels, say): auto runs PyTorch; a runtime named says how to install it
    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    chosen = backends.runner(network, meta, registry.SHIPPED, auto).backend
    assert chosen.name == "torch" and "not installed" in chosen.reason
    with pytest.raises(backends.BackendUnavailable, match="pip install -c constraints.txt openvino"):
        backends.runner(network, meta, registry.SHIPPED, config.replace(backend="openvino"))
    with pytest.raises(ValueError, match="not one of auto, torch, onnxruntime, openvino"):
        backends.runner(network, meta, registry.SHIPPED, config.replace(backend="tensorrt"))


@pytest.mark.skipif(not RUNTIMES, reason="no runtime installed")
@pytest.mark.parametrize("input_size", [128, 100])
def test_a_model_that_shrinks_its_films_exports_and_agrees(shipped, tmp_path, input_size):
    """A model trained at a smaller input than its films (the smoke profile's 128 px from 224 px
    films) shrinks them inside the ONNX graph as `features.to_tensor` does, sizes that do not divide included."""
    from cxr.core.files import save_state

    network, meta, config = shipped
    # one network (the shipped whole-film model, or the whole-film network of the shipped file): the
    # shrinking is the graph's first step, whatever follows it
    state = dict(checkpoints.read_checkpoint(registry.whole_film(config.replace(cache_dir=tmp_path))),
                 input_size=input_size)
    save_state(tmp_path / "small.pt", state)
    small, small_meta = checkpoints.load_model(tmp_path / "small.pt", "cpu")
    run = backends.runner(small, small_meta, tmp_path / "small.pt", config.replace(backend=RUNTIMES[0], cache_dir=tmp_path))
    assert backends.name_of(run) == RUNTIMES[0]
    films = backends.probe_films(224, n=3, seed=5)
    mine = checkpoints.forward(run, films, input_size, ("proba",))["proba"]
    assert np.abs(mine - checkpoints.forward(small, films, input_size, ("proba",))["proba"]).max() < 1e-4


def test_the_onnx_file_is_made_once_per_checkpoint(shipped, tmp_path):
    _, _, config = shipped
    config = config.replace(cache_dir=tmp_path)
    first = backends.onnx_file(registry.SHIPPED, config)
    stamp = first.stat().st_mtime_ns
    assert backends.onnx_file(registry.SHIPPED, config) == first and first.stat().st_mtime_ns == stamp


@pytest.mark.skipif(not RUNTIMES, reason="no runtime installed")
def test_predict_gives_the_same_rows_with_every_backend(model_file: Path, tmp_path: Path, capsys):  # noqa: F811
    from test_predict import _archive

    root = _archive(tmp_path / "archive", 12)
    got = {}
    for name in ["torch", *RUNTIMES]:
        out = tmp_path / f"{name}.csv"
        assert main.main(["predict", str(root), "--model", str(model_file), "--backend", name, "--out", str(out),
                          "--workers", "0"]) == 0
        assert f"backend: {name}" in capsys.readouterr().err
        got[name] = results.read(out).sort_values("file").reset_index(drop=True)
    classes = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    for name in RUNTIMES:
        assert (got[name].decision == got["torch"].decision).all() and (got[name].status == got["torch"].status).all()
        assert np.abs(got[name][classes].to_numpy() - got["torch"][classes].to_numpy()).max() < 1e-4
        assert np.abs(got[name].ood_score - got["torch"].ood_score).max() < 1e-3


@pytest.mark.skipif(not RUNTIMES, reason="no runtime installed")
def test_every_runtime_meets_the_agreement_targets_on_the_smoke_data():
    config = get_config("smoke")
    record = agreement.measure(registry.final_model(config), config, names=RUNTIMES)
    assert record["test_images"] > 50
    for name in RUNTIMES:
        rec = record["backends"][name]
        assert rec["backend"] == name and rec["passes"], rec
        assert rec["call_agreement"] >= 0.995 and rec["probability_max_difference"] < 1e-3
    # the verdict can fail: a backend that changed calls would not pass
    bad = dict(record["backends"][RUNTIMES[0]], call_agreement=0.99)
    assert not agreement.passes(bad, record["torch"])


def test_the_predictor_runs_its_batches_on_the_configured_backend(model_file: Path):  # noqa: F811
    pred = predict.load(model_file, get_config("smoke", backend="torch"))
    assert backends.name_of(pred.fast) == "torch"
