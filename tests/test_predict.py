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
from conftest import synthetic_xray
from test_evaluate import tiny_run

from cxr.assess import predict, results
from cxr.cli import main
from cxr.core.config import get_config
from cxr.data import reading, walk
from cxr.model import checkpoints, ood


def write_dicom(path: Path, arr: np.ndarray | None, modality: str = "DX", photometric: str = "MONOCHROME2",
                broken_jpeg2000: bool = False) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

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
    stats = ood.fit_on_split(model, meta, cfg, k=8)
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
    rows = predict.predict_paths([inputs, tmp_path / "nowhere.png", tmp_path / "empty-folder"], predict.load(model_file, get_config()),
                                 progress=False).set_index("file")
    for name, status in EXPECTED.items():
        got = rows.loc[f"inputs/{name}", "status"]
        ok_or_ood = status == "ok" and got in (reading.OK, predict.OOD)
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
    a, _ = reading.read_dicom(write_dicom(tmp_path / "a.dcm", g))
    b, _ = reading.read_dicom(write_dicom(tmp_path / "b.dcm", g, photometric="MONOCHROME1"))
    assert np.abs(a.astype(int) + b.astype(int) - 255).max() <= 1


def test_command_exit_codes_and_no_dicom_header_in_output(model_file: Path, inputs: Path, tmp_path: Path, capsys):
    out = tmp_path / "results.csv"
    assert main.main(["predict", str(inputs / "grey.png"), str(inputs / "dx.dcm"), "--model", str(model_file),
                     "--out", str(out), "--threshold", "covid@95", "--cam", str(tmp_path / "cams")]) == 0
    rows = pd.read_csv(out)
    assert list(rows.file) == ["grey.png", "dx.dcm"] and set(rows.decision) <= {"COVID-19", "not COVID-19"}
    text = out.read_text() + capsys.readouterr().out
    assert "Secret" not in text and "ID-12345" not in text
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["dx_gradcam.png", "grey_gradcam.png"]
    assert main.main(["predict", str(inputs), "--model", str(model_file), "--out", str(tmp_path / "r.json")]) == 1
    assert len(json.loads((tmp_path / "r.json").read_text())) == len(EXPECTED)
    assert main.main(["predict", str(inputs / "grey.png"), "--model", str(model_file), "--threshold", "covid@50"]) == 2
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
    from cxr.model import registry

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
    rows = predict.predict_paths([inputs], predict.load(lung_file, get_config()), progress=False).set_index("file")
    assert predict.load(lung_file, get_config()).config.lungs == "crop"
    for name, status in EXPECTED.items():
        got = rows.loc[f"inputs/{name}", "status"]
        assert (status == "ok" and got in (reading.OK, predict.OOD)) or got.startswith(status), (name, got)
    note = rows.loc["inputs/blank.png", "notes"]
    assert note.startswith("lung mask ") and note.split()[2].rstrip(":") in {"empty", "too small", "fragmented",
                                                                            "one piece", "lopsided", "too large"}
    assert rows.loc["inputs/dx.dcm", "status"] in (reading.OK, predict.OOD)


# --------------------------------------------------------------------------- an archive (issue 27)
@pytest.fixture
def pacs(tmp_path: Path) -> Path:
    """A PACS-like export: nested study/series folders of extensionless DICOM, a DICOMDIR, a text
    file, a CT object, a presentation state without pixels, and two files of the same name."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    root = tmp_path / "export"
    for s in range(2):
        for k in range(3):
            folder = root / f"STUDY{s}" / f"SERIES{k}"
            folder.mkdir(parents=True)
            write_dicom(folder / "IM00001", synthetic_xray(10 * s + k, 128).astype(np.uint16) * 16)
    write_dicom(root / "STUDY0" / "SERIES0" / "IM00002", synthetic_xray(99, 128).astype(np.uint16) * 16,
                modality="CT")
    write_dicom(root / "STUDY1" / "SERIES0" / "IM00002", None)  # a presentation state: no pixel data
    cv2.imwrite(str(root / "STUDY1" / "film.png"), synthetic_xray(5, 128))
    (root / "notes.txt").write_text("report")
    (root / "README").write_text("no extension, not DICOM")
    meta = FileMetaDataset()  # a real DICOMDIR: DICOM preamble, media-storage-directory SOP class
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.1.3.10", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.save_as(root / "DICOMDIR", enforce_file_format=True)
    ds.save_as(root / "INDEX", enforce_file_format=True)  # the same under another name: found by content
    return root


def test_a_pacs_export_is_read_by_content(model_file: Path, pacs: Path, capsys):
    rows = predict.predict_paths([pacs], predict.load(model_file, get_config()), progress=False).set_index("file")
    images = [f"export/STUDY{s}/SERIES{k}/IM00001" for s in range(2) for k in range(3)]
    assert set(images) <= set(rows.index)
    assert all(rows.loc[f, "status"] in (reading.OK, predict.OOD) for f in images)
    assert rows.loc["export/STUDY1/film.png", "status"] in (reading.OK, predict.OOD)
    assert rows.loc["export/STUDY0/SERIES0/IM00002", "status"] == "warning: DICOM modality CT: not a radiograph"
    assert rows.loc["export/STUDY1/SERIES0/IM00002", "status"].startswith("error: DICOM file with no pixel data")
    assert not {"export/DICOMDIR", "export/INDEX", "export/notes.txt", "export/README"} & set(rows.index)
    assert len(rows) == 9
    # the command says what it left out in one line
    assert main.main(["predict", str(pacs), "--model", str(model_file), "--workers", "0"]) == 1  # one error row
    err = capsys.readouterr().err
    assert "ignored 4 files that are not images: DICOMDIR, INDEX, README, notes.txt" in err
    order = list(rows.index)
    assert order == sorted(order, key=lambda f: Path(f).parts)  # the walk's order is the sorted paths'


def test_rows_come_in_the_same_order_with_workers(model_file: Path, pacs: Path):
    serial = predict.predict_paths([pacs], predict.load(model_file, get_config()), progress=False, batch=2, workers=0)
    # OpenCV's thread pool running in this process before the workers are forked: a forked worker
    # that touched it waited forever (a CI run hung here)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    big = np.zeros((2000, 2000), np.uint8)
    for _ in range(3):
        cv2.GaussianBlur(big, (31, 31), 5)
    pooled = predict.predict_paths([pacs], predict.load(model_file, get_config()), progress=False, batch=2, workers=2)
    assert cv2.getNumThreads() == 2  # given back after the run
    cv2.setNumThreads(threads)
    assert list(serial.file) == list(pooled.file)
    cols = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert np.allclose(serial[cols].fillna(-1), pooled[cols].fillna(-1), atol=1e-6)


def _archive(root: Path, n: int) -> Path:
    for i in range(n):
        folder = root / f"P{i % 7:02d}" / f"S{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"im{i:04d}.png"), synthetic_xray(i % 11, 96))
    return root


def test_a_killed_run_resumes_with_every_file_exactly_once(model_file: Path, tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root = _archive(tmp_path / "archive", 120)
    out = tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "cxr.cli", "predict", str(root), "--model", str(model_file), "--out", str(out),
           "--batch", "8", "--workers", "1"]
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 30):
        time.sleep(0.05)
    import psutil

    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert workers and not alive  # its decoding workers die with it, not left waiting for work
    before = out.read_text().count("\n") - 1
    assert 0 < before < 120, before  # killed mid-run, with rows already written
    with out.open("a") as f:
        f.write("archive/P00/S0/half-a-row.png,ok,0.1")  # what a kill in the middle of a write leaves
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    rows = results.read(out)
    assert len(rows) == 120 and rows.file.is_unique
    assert set(rows.file) == {f"archive/P{i % 7:02d}/S{i % 3}/im{i:04d}.png" for i in range(120)}
    assert results.read_run(out)["complete"] is True
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)  # nothing left to do
    assert "0 new rows, 120 files already there" in again.stdout and len(results.read(out)) == 120
    os.utime(root / "P00" / "S0" / "im0000.png", ns=(1, 1))  # a changed file is predicted again
    subprocess.run(cmd, env=env, capture_output=True)
    assert len(results.read(out)) == 121


def test_a_resumed_run_refuses_another_model(model_file: Path, tmp_path: Path):
    out = tmp_path / "r.csv"
    results.Writer(out, {"model_sha256": "aaa", "threshold": "argmax"}).finish()
    with pytest.raises(ValueError, match="another model"):
        results.Writer(out, {"model_sha256": "bbb", "threshold": "argmax"})


def test_shards_cover_every_file_once_and_merge_finds_what_is_wrong(model_file: Path, tmp_path: Path, capsys):
    root = _archive(tmp_path / "archive", 40)
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part-{k}.csv"
        assert main.main(["predict", str(root), "--model", str(model_file), "--shard", f"{k}/3", "--out", str(part),
                         "--workers", "0"]) == 0
        parts.append(part)
    files = [set(results.read(p).file) for p in parts]
    assert all(files) and sum(map(len, files)) == 40 and len(set.union(*files)) == 40
    merged = tmp_path / "all.parquet"
    assert main.main(["predict", "--merge", str(merged), *map(str, parts)]) == 0
    assert "every file is there exactly once" in capsys.readouterr().out
    assert len(results.read(merged)) == 40 and results.read(merged).file.is_unique
    # a doubled file (in two parts) and a missing one (its row lost) are found and named
    one, two = results.read(parts[0]), results.read(parts[1])
    lost = one.file.iloc[0]
    one.iloc[1:].to_csv(parts[0], index=False)
    pd.concat([two, one.iloc[[1]]]).to_csv(parts[1], index=False)
    assert main.main(["predict", "--merge", str(tmp_path / "m.csv"), *map(str, parts)]) == 1
    err = capsys.readouterr().err
    assert f"1 files with no row in any part: {lost}" in err
    assert f"1 files in more than one part (one row kept): {one.file.iloc[1]}" in err
    # without the third part, its shard is missing
    assert main.main(["predict", "--merge", str(tmp_path / "m2.csv"), *map(str, parts[:2])]) == 1
    assert "shards with no part: 3/3" in capsys.readouterr().err


def test_parquet_results_and_cams_of_files_with_one_name(model_file: Path, pacs: Path, tmp_path: Path):
    out, cams = tmp_path / "r.parquet", tmp_path / "cams"
    assert main.main(["predict", str(pacs), "--model", str(model_file), "--out", str(out), "--cam", str(cams),
                     "--workers", "0"]) == 1
    rows = results.read(out)
    assert len(rows) == 9 and not (tmp_path / "r.parquet.partial.csv").exists()
    got = {c for c in rows.cam if c}
    assert "export/STUDY0/SERIES1/IM00001_gradcam.png" in got and len(got) == 8
    assert all((cams / c).is_file() for c in got)
    text = out.read_bytes()
    assert b"Secret" not in text and b"ID-12345" not in text


def test_the_walk_streams_and_shards_by_path_below_the_root(tmp_path: Path):
    a = _archive(tmp_path / "a" / "archive", 30)
    b = tmp_path / "b" / "elsewhere"
    import shutil

    shutil.copytree(a, b)
    first = next(walk.items([a]))  # a generator: the first file before the tree is listed
    assert first.shown.startswith("archive/")
    shares_a = {it.rel for it in walk.items([a], (2, 4))}
    shares_b = {it.rel for it in walk.items([b], (2, 4))}
    assert shares_a == shares_b and 0 < len(shares_a) < 30  # mounted elsewhere, the same share
    with pytest.raises(ValueError, match="K/N"):
        walk.parse_shard("2-4")
    with pytest.raises(ValueError, match="between 1 and N"):
        walk.parse_shard("5/4")
