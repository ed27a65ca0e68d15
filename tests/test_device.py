"""Where models run: --device auto|cpu|cuda, else $CXR_DEVICE, resolved once into the configuration
(`Config.device`) and passed down; nothing below the entry points reads the environment. The CPU
path everywhere; the CUDA tests run only where PyTorch sees a GPU and are skipped elsewhere."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from cxr.cli import main
from cxr.core import runtime
from cxr.core.config import get_config
from cxr.model import checkpoints, registry
from cxr.train import run as train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def test_auto_is_cuda_only_where_there_is_a_gpu(monkeypatch):
    monkeypatch.delenv("CXR_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.device().type == "cpu" and runtime.device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.device().type == "cuda" and runtime.device("cpu").type == "cpu"


def test_the_environment_chooses_at_the_entry_point_when_no_argument_does(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CXR_DEVICE", "cpu")
    assert get_config().device == "cpu" and runtime.device(get_config().device).type == "cpu"
    assert get_config(device="cuda").device == "cuda"  # an explicit choice wins over the environment
    assert runtime.device().type == "cuda"  # below the entry point the environment is not read
    assert get_config().key() == get_config(device="cuda").key()  # where a model runs names no run or cache
    monkeypatch.setenv("CXR_DEVICE", " CUDA ")
    assert runtime.device(get_config().device).type == "cuda"


def test_bad_or_impossible_devices_say_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU.*--device auto or cpu"):
        runtime.device("cuda")
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        runtime.device("tpu")
    monkeypatch.setenv("CXR_DEVICE", "gpu")
    with pytest.raises(ValueError, match="CXR_DEVICE"):
        runtime.device(get_config().device)


def test_cli_device_flag_reaches_every_model_command(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CXR_DEVICE", "auto")
    for command in (["train"], ["evaluate", "--data", "x"], ["audit"], ["adapt", "--data", "x"], ["predict", "x"]):
        assert main.main(command + ["--device", "cuda"]) == 2, command
        assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main.main(["predict", "x", "--device", "tpu"])


def test_models_load_and_predict_on_the_cpu_when_asked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU here or not, "cpu" is the CPU
    monkeypatch.setenv("CXR_DEVICE", "cpu")
    model, meta = checkpoints.load_model(registry.SHIPPED, get_config().device)
    assert runtime.model_device(model).type == "cpu"
    pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    p = checkpoints.predict(model, pixels, meta["input_size"], progress=False)
    assert p.shape == (3, 4) and p.dtype == np.float32 and np.allclose(p.sum(1), 1, atol=1e-5)


def test_autocast_leaves_the_cpu_untouched():
    x = torch.randn(4, 8)
    with runtime.autocast(torch.device("cpu")):
        y = x @ x.T
    assert y.dtype == torch.float32 and torch.equal(y, x @ x.T)


@cuda
def test_cuda_predictions_match_the_cpu(monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 224, 224), dtype=np.uint8)
    cpu_model, meta = checkpoints.load_model(registry.SHIPPED, on="cpu")
    gpu_model, _ = checkpoints.load_model(registry.SHIPPED, on="cuda")
    assert runtime.model_device(gpu_model).type == "cuda"
    p_cpu = checkpoints.predict(cpu_model, pixels, meta["input_size"], progress=False)
    p_gpu = checkpoints.predict(gpu_model, pixels, meta["input_size"], progress=False)
    assert np.abs(p_cpu - p_gpu).max() < 0.05  # bfloat16 on the GPU
    assert (p_cpu.argmax(1) == p_gpu.argmax(1)).mean() >= 0.9


@cuda
def test_cuda_training_runs_and_reloads_on_the_cpu(home: Path, tmp_path: Path, monkeypatch):
    ds = write_dataset(tmp_path / "tiny", per_class=10)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    monkeypatch.setenv("CXR_DEVICE", "cuda")
    cfg = get_config("full", epochs=2, patience=5, views=2, input_size=64, image_size=64, batch_size=8,
                     cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    run = train.fit("finetune", cfg, progress=False)
    assert len(run.history) == 2 and np.isfinite(run.history.val_loss).all()
    model, _ = checkpoints.load_model(run.checkpoint, on="cpu")
    assert runtime.model_device(model).type == "cpu"
