"""Where a trained model's arithmetic runs: PyTorch, ONNX Runtime or OpenVINO, behind one call.

Every bulk prediction (`cxr predict`, `cxr evaluate`, the site check, the audit, the book's
records) runs the model through `runner`, which gives an object `checkpoints.forward` accepts in
place of a network. The runtimes run the model's ONNX file (`onnx_file.export`, made once per
model in the cache), in float32 only: a backend must give the calls PyTorch gives, so no quantised
or reduced-precision form is used (`reports/backends.json` measures how close each one is).

* ``torch``: the network itself, batch norms folded (`architectures.folded`); on a GPU, CUDA.
* ``onnxruntime``: ONNX Runtime's CPU provider.
* ``openvino``: OpenVINO's CPU plugin, its inference precision held at f32 (on CPUs with bf16 or
  AMX it would otherwise pick bf16 by itself, and calls could change).
* ``auto`` (the default): on a GPU, torch; on the CPU, the first of `PREFERENCE` that is installed
  and passes the agreement probe, else torch. The order is the one `benchmarks/backends.py`
  measured (OpenVINO fastest, then ONNX Runtime, then PyTorch).

**The agreement probe.** Before a runtime serves a model, it runs `PROBE` fixed synthetic films
beside PyTorch; a largest probability difference above `TOLERANCE` (or features off by more than
`TOLERANCE` relatively) means that runtime is not used: `auto` goes on to the next, a backend
asked for by name is an error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.core.config import BACKEND_ENV, BACKENDS, Config, cache_key
from cxr.core.files import ensure_dir, sha256_of
from cxr.core.runtime import model_device
from cxr.model.architectures import folded
from cxr.model.checkpoints import forward, load_model
from cxr.model.onnx_file import OPSET, export

#: what a runtime runs of the ONNX file: the logits (the softmax is `checkpoints.forward`'s) and the features
OUTPUTS = ["logits", "features"]
#: the CPU runtimes `auto` tries, fastest first (benchmarks/backends.py on the development machines)
PREFERENCE = ("openvino", "onnxruntime")
#: the largest class-probability difference from PyTorch the probe accepts
TOLERANCE = 1e-3
PROBE = 4
#: what installs each runtime (the versions are pinned in constraints.txt)
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
log = logging.getLogger("cxr")


class BackendUnavailable(ValueError):
    """A backend asked for by name cannot run here; the message says what to do."""


def check_name(name: str) -> str:
    name = (name or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not one of {', '.join(BACKENDS)} (from --backend or ${BACKEND_ENV}).")
    return name


def installed(name: str) -> bool:
    """Whether the runtime's Python package imports here (torch always does)."""
    if name == "torch":
        return True
    try:
        __import__(PACKAGES[name])
    except Exception:  # noqa: BLE001 - a broken install is a missing one
        return False
    return True


def onnx_file(checkpoint: str | Path, config: Config) -> Path:
    """The model of `checkpoint` as an ONNX file in the cache (`onnx_file.export`), made once per
    checkpoint file (its SHA-256) and export version."""
    path = Path(config.cache_dir) / f"onnx-{cache_key([sha256_of(checkpoint), OPSET], 'onnx')}.onnx"
    if not path.exists():
        ensure_dir(path.parent)
        export(checkpoint, path)
    return path


def threads() -> int:
    """The threads a runtime computes with: as many as PyTorch uses here."""
    import torch

    return max(1, torch.get_num_threads())


class Compiled:
    """A model's ONNX file in a runtime: what `checkpoints.forward` runs instead of a network, one
    batch at a time (`run_batch`). `network` keeps the PyTorch model, for what needs it (Grad-CAM)."""

    def __init__(self, name: str, path: Path, network):
        self.name, self.path, self.network = name, Path(path), network
        if name == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._run = lambda x: session.run(OUTPUTS, {"pixels": x})
        elif name == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                  "INFERENCE_NUM_THREADS": threads()})
            request = compiled.create_infer_request()
            outputs = [compiled.output(name) for name in OUTPUTS]

            def run(x):
                got = request.infer({"pixels": x})
                return [np.array(got[o]) for o in outputs]
            self._run = run
        else:
            raise ValueError(f"no runtime {name!r}")

    def run_batch(self, pixels: np.ndarray) -> list[np.ndarray]:
        """(logits (N, 4), pooled features (N, 1280)) of one batch of preprocessed uint8 films."""
        return [np.asarray(a, np.float32) for a in self._run(np.ascontiguousarray(pixels, np.uint8))]


def probe_films(size: int, n: int = PROBE, seed: int = 0) -> np.ndarray:
    """`n` fixed synthetic films (smooth blobs and noise): the same every time, not radiographs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    films = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 3)
        base = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.2 * r)) + rng.normal(0, 12, (size, size))
        films.append(np.clip(base + 30, 0, 255).astype(np.uint8))
    return np.stack(films)


def disagreement(compiled: Compiled, network, size: int, image_size: int | None = None) -> tuple[float, float]:
    """(largest probability difference, largest relative feature difference) from PyTorch on the
    probe: films of `image_size` (what preprocessing gives), the model's input `size`."""
    films = probe_films(image_size or size)
    mine = forward(compiled, films, size, ("proba", "features"))
    ref = forward(network, films, size, ("proba", "features"))
    scale = np.abs(ref["features"]).max() + 1e-6
    return float(np.abs(mine["proba"] - ref["proba"]).max()), float(np.abs(mine["features"] - ref["features"]).max() / scale)


@dataclass
class Choice:
    """Which backend runs a model, and why (for logs and records)."""
    name: str
    reason: str


def load(checkpoint: str | Path, config: Config) -> tuple[object, dict]:
    """(runner, metadata) of a checkpoint: `checkpoints.load_model` then `runner`."""
    network, meta = load_model(checkpoint, config.device)
    return runner(network, meta, checkpoint, config), meta


def runner(network, meta: dict, checkpoint: str | Path, config: Config):
    """What bulk prediction runs for `config.backend`: the folded PyTorch network, or a `Compiled`
    runtime that passed the agreement probe. `runner(...).backend` says which and why."""
    asked = check_name(config.backend)
    fast = folded(network)
    on_gpu = model_device(network).type != "cpu"
    if not hasattr(network, "head"):  # only an EfficientNet-Lite0 exports (onnx_file): a ResNet50 runs in PyTorch
        if asked not in ("auto", "torch"):
            raise BackendUnavailable(f"--backend {asked} runs the EfficientNet-Lite0 models only: use --backend torch.")
        return _tagged(fast, Choice("torch", "only EfficientNet-Lite0 models run on a runtime"))
    if asked == "torch" or (asked == "auto" and on_gpu):
        return _tagged(fast, Choice("torch", "asked for" if asked == "torch" else "a GPU: PyTorch on CUDA"))
    if on_gpu:
        raise BackendUnavailable(f"--backend {asked} runs on the CPU, but the model is on the GPU: use --backend auto "
                                 "(PyTorch on CUDA) or --device cpu.")
    tried = []
    key = (str(Path(checkpoint).resolve()), Path(checkpoint).stat().st_mtime_ns)
    for name in ([asked] if asked != "auto" else list(PREFERENCE)):
        if asked == "auto" and (key, name) in _FAILED:  # tried in this process already: not again
            tried.append(f"{name} {_FAILED[key, name]}")
            continue
        if not installed(name):
            if asked != "auto":
                raise BackendUnavailable(f"--backend {name}: the {PACKAGES[name]} package is not installed here: "
                                         f"pip install -c constraints.txt {PACKAGES[name]} (or use --backend auto).")
            tried.append(f"{name} not installed")
            continue
        try:
            compiled = Compiled(name, onnx_file(checkpoint, config), network)
            dp, df = disagreement(compiled, fast, meta["input_size"], meta.get("config", {}).get("image_size"))
        except Exception as e:  # noqa: BLE001 - a runtime that cannot run this model is passed over, and said
            if asked != "auto":
                raise BackendUnavailable(f"--backend {name} could not run this model ({type(e).__name__}: {e}).") from e
            _FAILED[key, name] = f"failed ({type(e).__name__})"
            tried.append(f"{name} {_FAILED[key, name]}")
            continue
        if dp <= TOLERANCE and df <= TOLERANCE:
            return _tagged(compiled, Choice(name, "asked for" if asked != "auto" else
                                            f"fastest installed runtime; agrees with PyTorch within {dp:.1e}"))
        if asked != "auto":
            raise BackendUnavailable(f"--backend {name} disagrees with PyTorch on this model (probabilities by {dp:.2g}, "
                                     f"features by {df:.2g}, above {TOLERANCE}): use --backend torch.")
        tried.append(f"{name} disagreed ({dp:.1g})")
    return _tagged(fast, Choice("torch", "no runtime usable here: " + "; ".join(tried)))


#: runtimes that could not run a checkpoint (by path and modification time) in this process: `auto`
#: does not export and fail again for every record that asks
_FAILED: dict[tuple, str] = {}


def _tagged(model, choice: Choice):
    model.backend = choice
    log.debug("backend %s (%s)", choice.name, choice.reason)
    return model


def name_of(model) -> str:
    """The backend a runner runs on ("torch" for a plain network)."""
    return getattr(getattr(model, "backend", None), "name", "torch")
