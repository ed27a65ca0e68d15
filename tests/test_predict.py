"""`cxr predict`: every bad input gets a clear per-file status and the batch goes on; DICOM is read
as a radiologist's viewer would; the exported model loads with weights_only and carries its card."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from cxr import checkpoints, cli, ood, predict
from conftest import synthetic_xray
from test_evaluate import tiny_run


def write_dicom(path: Path, arr: np.ndarray | None, modality: str = "DX", photometric: str = "MONOCHROME2",
                broken_jpeg2000: bool = False) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if broken_jpeg2000 else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID, ds.Modality = "Secret^Patient", "ID-12345", modality
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if arr is not None:
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        ds.PixelData = arr.astype(np.uint16).tobytes()
        if broken_jpeg2000:  # a compressed frame that no decoder can read
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not really JPEG 2000" * 4])
    ds.save_as(path, enforce_file_format=True)
    return path


def huge_png_header(path: Path, side: int = 20000) -> Path:
    """A PNG whose header says side x side (a valid IHDR), with almost no data: refused from the header."""
    ok, png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = bytearray(png.tobytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:8], ihdr[8:12] = side.to_bytes(4, "big"), side.to_bytes(4, "big")
    data[12:29] = ihdr
    data[29:33] = zlib.crc32(bytes(ihdr)).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("model")
    mp = pytest.MonkeyPatch()
    mp.setenv("CXR_HOME", str(tmp / "home"))
    (tmp / "home" / "data").mkdir(parents=True)
    ds, cfg, run = tiny_run(tmp, mp, per_class=10)
    model, meta = checkpoints.load_model(run.checkpoint)
    stats = ood.fit_on_split(model, meta["input_size"], cfg, k=8)
    evaluation = {"n": 4, "accuracy": 0.5, "accuracy_ci": [0.1, 0.9], "macro_auc": 0.6, "macro_auc_ci": [0.4, 0.8],
                  "per_class": {}, "operating_points": {
                      "covid@95": {"task": "covid", "target_sensitivity": 0.95, "threshold": 0.25},
                      "abnormal@99": {"task": "abnormal", "target_sensitivity": 0.99, "threshold": 0.5}}}
    out = checkpoints.export(run.checkpoint, tmp / "shipped.pt", evaluation, None, {"agreement": 1.0}, stats)
    mp.undo()
    return out


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "inputs"
    d.mkdir()
    g = synthetic_xray(7, 256)
    cv2.imwrite(str(d / "grey.png"), g)
    cv2.imwrite(str(d / "rgb.jpg"), np.dstack([g, g, g]))
    cv2.imwrite(str(d / "rgba.png"), np.dstack([g, g, g, np.full_like(g, 255)]))
    cv2.imwrite(str(d / "sixteen.tif"), g.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "tiny.png"), np.zeros((1, 1), np.uint8))
    huge_png_header(d / "huge.png")
    (d / "notes.png").write_text("this is not an image")
    (d / "empty.jpg").write_bytes(b"")
    ok, jpg = cv2.imencode(".jpg", g)
    (d / "truncated.jpg").write_bytes(jpg.tobytes()[:200])
    write_dicom(d / "dx.dcm", g.astype(np.uint16) * 16)
    write_dicom(d / "mono1.dcm", g.astype(np.uint16) * 16, photometric="MONOCHROME1")
    write_dicom(d / "ct.dcm", g.astype(np.uint16) * 16, modality="CT")
    write_dicom(d / "nopixels.dcm", None)
    write_dicom(d / "j2k.dcm", g.astype(np.uint16) * 16, broken_jpeg2000=True)
    from skimage import data as samples

    cv2.imwrite(str(d / "astronaut.png"), samples.astronaut()[..., ::-1])
    (tmp_path / "empty-folder").mkdir()
    return d


EXPECTED = {  # file -> status (prefix)
    "grey.png": "ok", "rgb.jpg": "ok", "rgba.png": "ok", "sixteen.tif": "ok", "dx.dcm": "ok", "mono1.dcm": "ok",
    "ct.dcm": "warning: DICOM modality CT: not a radiograph",
    "tiny.png": "error: too small (1x1", "huge.png": "error: too large (20000x20000)",
    "notes.png": "error: not a decodable image", "empty.jpg": "error: empty file",
    "truncated.jpg": "error: not a decodable image", "nopixels.dcm": "error: DICOM file with no pixel data",
    "j2k.dcm": "error: cannot decode the DICOM pixel data", "astronaut.png": "ok",
}


def test_every_bad_input_gets_a_status(model_file: Path, inputs: Path, tmp_path: Path):
    rows = predict.predict_paths([inputs, tmp_path / "nowhere.png", tmp_path / "empty-folder"], model_file,
                                 progress=False).set_index("file")
    for name, status in EXPECTED.items():
        got = rows.loc[f"inputs/{name}", "status"]
        ok_or_ood = status == "ok" and got in (predict.OK, predict.OOD)
        assert ok_or_ood or got.startswith(status), (name, got)
    assert rows.loc[str(tmp_path / "nowhere.png"), "status"] == "error: no such file or folder"
    assert rows.loc[str(tmp_path / "empty-folder"), "status"].startswith("error: no images in this folder")
    read = rows[~rows.status.str.startswith("error")]
    assert np.allclose(read[["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]].sum(axis=1), 1, atol=1e-5)
    assert read.ood_score.notna().all() and set(read.decision) <= {"COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"}
    assert "RGB converted to grey" in rows.loc["inputs/rgb.jpg", "notes"]
    assert "16-bit" in rows.loc["inputs/sixteen.tif", "notes"]
    assert "MONOCHROME1 inverted" in rows.loc["inputs/mono1.dcm", "notes"]
    assert predict.exit_code(rows.reset_index()) == 1


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path: Path):
    g = synthetic_xray(3, 128).astype(np.uint16) * 16
    a, _ = predict.read_dicom(write_dicom(tmp_path / "a.dcm", g))
    b, _ = predict.read_dicom(write_dicom(tmp_path / "b.dcm", g, photometric="MONOCHROME1"))
    assert np.abs(a.astype(int) + b.astype(int) - 255).max() <= 1


def test_command_exit_codes_and_no_dicom_header_in_output(model_file: Path, inputs: Path, tmp_path: Path, capsys):
    out = tmp_path / "results.csv"
    assert cli.main(["predict", str(inputs / "grey.png"), str(inputs / "dx.dcm"), "--model", str(model_file),
                     "--out", str(out), "--threshold", "covid@95", "--cam", str(tmp_path / "cams")]) == 0
    rows = pd.read_csv(out)
    assert list(rows.file) == ["grey.png", "dx.dcm"] and set(rows.decision) <= {"COVID-19", "not COVID-19"}
    text = out.read_text() + capsys.readouterr().out
    assert "Secret" not in text and "ID-12345" not in text
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["dx_gradcam.png", "grey_gradcam.png"]
    assert cli.main(["predict", str(inputs), "--model", str(model_file), "--out", str(tmp_path / "r.json")]) == 1
    assert len(json.loads((tmp_path / "r.json").read_text())) == len(EXPECTED)
    assert cli.main(["predict", str(inputs / "grey.png"), "--model", str(model_file), "--threshold", "covid@50"]) == 2
    assert "covid@50" in capsys.readouterr().err


def test_exported_model_loads_weights_only_and_flags_strange_images(model_file: Path):
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    assert state["precision"] == "float16" and "not_for_clinical_use" in state["card"]
    assert {"threshold", "mean", "components"} <= set(state["ood"])
    model, meta = checkpoints.load_model(model_file)
    assert next(model.parameters()).dtype == torch.float32
    # a chequerboard is far from the synthetic training radiographs
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[None]
    smooth = synthetic_xray(5, 64)[None]
    s = ood.score(meta["ood"], ood.pooled_features(model, np.concatenate([board, smooth]), meta["input_size"]))
    assert s[0] > s[1]


def test_predict_uses_the_shipped_model_whatever_runs_there_are(model_file: Path, monkeypatch, tmp_path):
    from cxr import registry

    monkeypatch.setattr(registry, "SHIPPED", model_file)
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs" / "finetune-full-newer").mkdir(parents=True)
    assert predict.default_model() == model_file  # it carries the operating points and OOD statistics



def test_a_lung_model_predicts_every_input_and_says_when_a_lung_mask_fails(model_file: Path, inputs: Path,
                                                                          tmp_path: Path):
    import torch

    state = torch.load(model_file, map_location="cpu", weights_only=True)
    state["config"] = dict(state.get("config", {}), lungs="crop")  # the same weights, reading the lungs' box
    lung_file = tmp_path / "lungs.pt"
    torch.save(state, lung_file)
    cv2.imwrite(str(inputs / "blank.png"), np.full((256, 256), 128, np.uint8))  # no lungs to find
    rows = predict.predict_paths([inputs], lung_file, progress=False).set_index("file")
    assert predict.load(lung_file).config.lungs == "crop"
    for name, status in EXPECTED.items():
        got = rows.loc[f"inputs/{name}", "status"]
        assert (status == "ok" and got in (predict.OK, predict.OOD)) or got.startswith(status), (name, got)
    note = rows.loc["inputs/blank.png", "notes"]
    assert note.startswith("lung mask ") and note.split()[2].rstrip(":") in {"empty", "too small", "fragmented",
                                                                            "one piece", "lopsided", "too large"}
    assert rows.loc["inputs/dx.dcm", "status"] in (predict.OK, predict.OOD)
