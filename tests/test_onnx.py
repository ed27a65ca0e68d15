"""`cxr export --onnx`: the shipped model as one ONNX file that ONNX Runtime serves without `cxr`,
giving `cxr predict`'s probabilities and out-of-distribution features, with what `cxr predict`
knows (classes, preprocessing, temperature, operating points, OOD statistics) in its metadata."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr.assess import predict
from cxr.cli import main
from cxr.core.config import CLASSES, get_config
from cxr.data import splits
from cxr.model import backends, onnx_file, registry

# Run in a fresh interpreter that cannot import cxr: the file, ONNX Runtime, OpenCV and the metadata
# are all a user who serves the model elsewhere has.
ALONE = r"""
import json, sys
sys.modules["cxr"] = None  # any import of cxr now fails: only the file and these libraries are used
import cv2, numpy as np, onnxruntime as ort
path, films = sys.argv[1], sys.argv[2:]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
meta = json.loads(session.get_modelmeta().custom_metadata_map["cxr"])
size = meta["preprocessing"]["image_size"]
def prepare(file):
    g = cv2.imread(file, cv2.IMREAD_GRAYSCALE)
    if g.shape != (size, size):
        g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA if min(g.shape) >= size else cv2.INTER_CUBIC)
    return g
pixels = np.stack([prepare(f) for f in films])
probabilities, features = session.run(["probabilities", "features"], {"pixels": pixels})
ood = meta["ood"]
x = features.astype(np.float64) - np.asarray(ood["mean"])
z = x @ np.asarray(ood["components"]).T
d2 = (z * z / np.asarray(ood["variances"])).sum(1) + np.maximum((x * x).sum(1) - (z * z).sum(1), 0) / ood["rest_variance"]
print(json.dumps({"classes": meta["classes"], "probabilities": probabilities.tolist(), "d2": d2.tolist(),
                  "cxr_imported": any(m.startswith("cxr.") for m in sys.modules), "points": sorted(meta["operating_points"] or {})}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "cxr.onnx"
    assert main.main(["export", "--onnx", str(out)]) == 0
    return out


def test_onnx_runtime_alone_gives_cxr_predicts_probabilities(exported: Path):
    cfg = get_config("smoke")
    root, table = splits.load_table(cfg)
    films = [str(root / f) for f in table[table.split == "test"].file[:12]]
    rows = predict.predict_paths(films, predict.load(None, cfg), progress=False)
    run = subprocess.run([sys.executable, "-I", "-c", ALONE, str(exported), *films], capture_output=True, text=True,
                         cwd=exported.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert not got["cxr_imported"] and got["classes"] == list(CLASSES)
    ours = rows[list(CLASSES)].to_numpy(float)
    theirs = np.asarray(got["probabilities"])
    # one network agrees within 1e-4; the whole film and its lungs (two networks, the segmenter and the crop
    # between them) within the backends' agreement bound
    tol = backends.TOLERANCE if registry.two_in_one(registry.SHIPPED) else 1e-4
    assert np.abs(ours - theirs).max() < tol, np.abs(ours - theirs).max()
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert got["points"] == sorted(predict.load(None, cfg).points)


def test_the_metadata_says_what_cxr_predict_knows(exported: Path):
    meta = onnx_file.read_metadata(exported)
    shipped = predict.load(None, get_config("smoke"))
    assert meta["classes"] == list(CLASSES) and meta["temperature"] == pytest.approx(shipped.meta["temperature"])
    assert meta["ood"]["threshold"] == pytest.approx(shipped.ood["threshold"])
    assert meta["operating_points"] == shipped.points
    assert meta["preprocessing"]["image_size"] == shipped.config.image_size and "INTER_AREA" in meta["preprocessing"]["steps"]
    assert "not for clinical use" in json.dumps(meta).lower() or meta["not_for_clinical_use"]


def test_the_onnx_features_give_the_same_out_of_distribution_score(exported: Path):
    pred = predict.load(None, get_config("smoke"))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, pred.config.image_size, pred.config.image_size), dtype=np.uint8)
    _, features = onnx_file.run(exported, pixels)
    from cxr.model import ood

    _, ours = ood.proba_and_features(pred.fast, pixels, pred.size)
    assert np.allclose(ood.score(pred.ood, features), ood.score(pred.ood, ours), rtol=1e-3)


def test_a_file_that_is_not_cxrs_says_so(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match="cxr export --onnx"):
        onnx_file.read_metadata(tmp_path / "other.onnx")
    assert registry.SHIPPED.exists()
