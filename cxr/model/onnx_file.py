"""The shipped model as one ONNX file (`cxr export --onnx`), to serve without `cxr`: ONNX Runtime,
Triton or a browser runs it, and the file says in its metadata what `cxr predict` knows.

The graph takes what `cxr.data.preprocess.preprocess` gives: uint8 grey films (N, S, S), S the
model's `image_size`. It scales them to [0, 1] (and resizes them to `input_size` when the two
differ) and returns

* ``probabilities`` (N, 4): the four classes at the model's temperature, as `cxr predict` reports them;
* ``features`` (N, 1280): the pooled last feature map, for the out-of-distribution score;
* ``logits`` (N, 4): before the temperature and the softmax (what `cxr.model.backends` runs).

The batch norms are folded into their convolutions first (`architectures.folded`), as `cxr predict`
runs the model. The metadata key ``cxr`` holds JSON: the classes in output order, the preprocessing
settings and steps, the temperature, the operating points (thresholds and the rule that applies
them) and the out-of-distribution statistics with their threshold.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr.core.config import CLASSES
from cxr.core.files import ensure
from cxr.data.preprocess import PARAMS
from cxr.model.architectures import folded
from cxr.model.checkpoints import load_model

#: the ONNX opset the file is written with (ONNX Runtime 1.16 and later read it)
OPSET = 17
OUTPUTS = ["probabilities", "features", "logits"]
#: what the metadata says about turning a radiograph into the graph's input
PREPROCESSING = ("read the film as 8-bit grey (colour through OpenCV's grey conversion, 16-bit min-max rescaled to "
                 "8-bit); resize it to image_size x image_size without keeping its aspect (cv2.INTER_AREA when "
                 "shrinking, cv2.INTER_CUBIC when enlarging); then gamma, then CLAHE, when the settings ask for them "
                 "(lungs other than 'none' needs cxr's lung segmenter); feed the uint8 array "
                 "(N, image_size, image_size): the graph scales it to [0, 1] itself")


def area_matrix(source: int, target: int) -> torch.Tensor:
    """(target, source): row i averages the input pixels of adaptive average pooling's bin i,
    floor(i * source / target) to ceil((i + 1) * source / target). `A @ x @ A.T` is
    `F.adaptive_avg_pool2d(x, target)` (what `features.to_tensor`'s "area" mode computes) for any
    pair of sizes; the ONNX exporter takes that pooling only when one size divides the other."""
    m = torch.zeros(target, source)
    for i in range(target):
        start, end = (i * source) // target, -(-((i + 1) * source) // target)
        m[i, start:end] = 1.0 / (end - start)
    return m


class _Graph(nn.Module):
    """uint8 films -> (tempered probabilities, pooled features, logits), one pass."""

    def __init__(self, model: nn.Module, image_size: int, input_size: int, temperature: float):
        super().__init__()
        self.model, self.image_size, self.input_size = model, image_size, input_size
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / temperature, dtype=torch.float32))
        if image_size > input_size:
            self.register_buffer("area", area_matrix(image_size, input_size))

    def forward(self, pixels: torch.Tensor):
        x = pixels.float().div(255.0).unsqueeze(1)
        if self.image_size < self.input_size:  # as features.to_tensor: bilinear up, area (mean pooling) down
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        elif self.image_size > self.input_size:
            x = torch.matmul(torch.matmul(self.area, x), self.area.t())
        fmap = self.model.features(x)
        logits = self.model.head(fmap)
        return (logits * self.inverse_temperature).softmax(1), fmap.mean((2, 3)), logits


def metadata(meta: dict) -> dict:
    """What the ONNX file tells a user who has only it (see the module docstring)."""
    trained = meta.get("config", {})
    return {"format": "cxr-onnx", "version": 2, "classes": list(CLASSES),
            "inputs": {"pixels": "uint8 (N, image_size, image_size) preprocessed grey films"},
            "outputs": {"probabilities": "(N, 4) at the temperature, in the order of classes",
                        "features": "(N, 1280) pooled features for the out-of-distribution score",
                        "logits": "(N, 4) before the temperature"},
            "preprocessing": {"steps": PREPROCESSING, **{k: trained.get(k) for k in PARAMS if k in trained}},
            "input_size": meta["input_size"], "temperature": float(meta.get("temperature", 1.0)),
            "operating_points": meta.get("operating_points"), "ood": meta.get("ood"),
            "source_run": meta.get("source_run"), "precision": "float32 (from the shipped half-precision weights)",
            "intended_use": (meta.get("card") or {}).get("intended_use"),
            "not_for_clinical_use": (meta.get("card") or {}).get("not_for_clinical_use")}


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the model of `checkpoint` as an ONNX file at `out` (fp32, batch size free), with its
    metadata; checked with `onnx.checker` before it is written in place."""
    import onnx

    model, meta = load_model(checkpoint, "cpu")
    size = int(meta.get("config", {}).get("image_size", meta["input_size"]))
    graph = _Graph(folded(model).eval(), size, int(meta["input_size"]), float(meta.get("temperature", 1.0))).eval()
    example = torch.zeros(2, size, size, dtype=torch.uint8)
    out = Path(out)
    ensure(out.parent)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad(), warnings.catch_warnings():
        # the "same" padding's sizes are traced as constants: right for the one input size the file takes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the TorchScript exporter (dynamo=False): deprecated for torch.export's, which needs onnxscript
        # and more; the file it writes is checked by onnx.checker here and against cxr predict in tests
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, (example,), str(tmp), input_names=["pixels"], output_names=OUTPUTS,
                          dynamic_axes={name: {0: "n"} for name in ("pixels", *OUTPUTS)},
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "cxr", json.dumps(metadata(meta))
    proto.doc_string = "cxr: chest radiograph classifier (COVID-19, Lung Opacity, Normal, Viral Pneumonia); not for clinical use"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    return out


def read_metadata(path: str | Path) -> dict:
    """The `cxr` metadata of an ONNX file written by `export` (ONNX Runtime alone can read it too:
    `InferenceSession(path).get_modelmeta().custom_metadata_map["cxr"]`)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "cxr" not in props:
        raise ValueError(f"{path} is not a cxr ONNX file (no 'cxr' metadata): make one with `cxr export --onnx`.")
    return json.loads(props["cxr"])


def run(path: str | Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, features) of preprocessed films through the ONNX file, with ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities, features = session.run(["probabilities", "features"], {"pixels": np.ascontiguousarray(pixels, np.uint8)})
    return probabilities, features
