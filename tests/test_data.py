"""Discovery, validation of bad files, import, duplicates and split invariants."""
from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_xray, write_dataset

from cxr.core.config import CLASSES, repo_root
from cxr.data import dataset, images, scanning, splits


# ---------------------------------------------------------------- discovery order
def test_discovery_order(home: Path, tmp_path: Path, monkeypatch):
    shared = write_dataset(home.parent / "shared" / "cxr-radiography", per_class=1)
    assert dataset.find_dataset() == shared.resolve()
    kaggle = write_dataset(home / "data" / dataset.KAGGLE_NAME, per_class=1)
    assert dataset.find_dataset() == kaggle
    env = write_dataset(tmp_path / "mine", per_class=1)
    monkeypatch.setenv("CXR_DATA_DIR", str(env))
    assert dataset.find_dataset() == env


def test_no_dataset_says_how_to_get_it(home: Path):
    with pytest.raises(dataset.DataNotFoundError) as e:
        dataset.find_dataset()
    msg = str(e.value)
    assert "cxr data import" in msg and "kaggle datasets download" in msg and str(home / "data") in msg


def test_wrong_data_dir_is_not_silently_replaced(home: Path, tmp_path: Path, monkeypatch):
    write_dataset(home.parent / "shared" / "cxr-radiography", per_class=1)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "nothing-here"))
    with pytest.raises(dataset.DataNotFoundError, match="CXR_DATA_DIR"):
        dataset.find_dataset()


# ---------------------------------------------------------------- validation
def test_bad_files_are_reported_and_good_ones_normalised(dataset: Path, cfg):
    d = dataset / "COVID" / "images"
    (d / "empty.png").write_bytes(b"")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (d / "notes.txt").write_text("not an image")
    (d / "fake.jpg").write_text("a text file with an image name")
    cv2.imwrite(str(d / "tiny.png"), np.zeros((20, 20), np.uint8))
    rgb = np.dstack([synthetic_xray(7001)] * 3)
    rgb[..., 0] = 255 - rgb[..., 0]
    cv2.imwrite(str(d / "rgb.png"), rgb)
    cv2.imwrite(str(d / "rgba.png"), np.dstack([synthetic_xray(7002)] * 3 + [np.full((96, 96), 255, np.uint8)]))
    cv2.imwrite(str(d / "deep.png"), (synthetic_xray(7003).astype(np.uint16) * 16))  # 12 bits used of 16
    cv2.imwrite(str(d / "wide.png"), cv2.resize(synthetic_xray(7004), (160, 96)))
    unknown = dataset / "Tuberculosis" / "images"
    unknown.mkdir(parents=True)
    cv2.imwrite(str(unknown / "tb-1.png"), synthetic_xray(7005))

    s = scanning.scan(dataset, cfg, progress=False)
    reasons = dict(zip(s.skipped.file.map(lambda f: Path(f).name), s.skipped.reason))
    assert reasons["empty.png"] == "empty file"
    assert "not a decodable image" in reasons["corrupt.png"]
    assert "not a decodable image" in reasons["fake.jpg"]
    assert "not an image file name" in reasons["notes.txt"]
    assert "too small" in reasons["tiny.png"]
    assert "unknown label folder 'Tuberculosis'" in reasons["tb-1.png"]
    notes = dict(zip(s.images.file.map(lambda f: Path(f).name), s.images.notes))
    assert "RGB converted to grey" in notes["rgb.png"]
    assert "RGBA converted to grey" in notes["rgba.png"]
    assert "16-bit rescaled" in notes["deep.png"]
    assert "not square" in notes["wide.png"]
    assert len(s.images) == 4 * 6 + 4  # the good files all survive
    deep = images.read_gray(d / "deep.png")
    assert deep.dtype == np.uint8 and deep.min() == 0 and deep.max() == 255


def test_scan_is_cached_and_notices_changes(dataset: Path, cfg):
    first = scanning.scan(dataset, cfg, progress=False)
    again = scanning.scan(dataset, cfg, progress=False)
    pd.testing.assert_frame_equal(first.images, again.images)
    cv2.imwrite(str(dataset / "Normal" / "images" / "Normal-99.png"), synthetic_xray(4242))
    assert len(scanning.scan(dataset, cfg, progress=False).images) == len(first.images) + 1


def test_labels_are_canonical():
    assert dataset.canonical_label("viral_pneumonia") == "Viral Pneumonia"
    assert dataset.canonical_label("Lung Opacity") == "Lung_Opacity"
    assert dataset.canonical_label("COVID-19") == "COVID"
    assert dataset.canonical_label("Tuberculosis") is None


# ---------------------------------------------------------------- import
def test_import_kaggle_zip(home: Path, tmp_path: Path):
    src = write_dataset(tmp_path / "unpacked" / dataset.KAGGLE_NAME, per_class=2)
    (src / "COVID" / "masks").mkdir()
    cv2.imwrite(str(src / "COVID" / "masks" / "COVID-1.png"), synthetic_xray(1))
    (src / "COVID.metadata.xlsx").write_bytes(b"placeholder")
    (src / "README.md.txt").write_text("readme")
    z = tmp_path / "covid19-radiography-database.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in src.rglob("*"):
            zf.write(p, p.relative_to(src.parent).as_posix())
        zf.writestr("__MACOSX/junk", "x")
    dest = dataset.import_kaggle(z, progress=False)
    assert dest == repo_root() / "data" / dataset.KAGGLE_NAME
    assert sorted(p.name for p in (dest / "Viral Pneumonia" / "images").iterdir()) == \
        ["Viral Pneumonia-1.png", "Viral Pneumonia-2.png"]
    assert (dest / "COVID" / "masks" / "COVID-1.png").exists()
    assert (dest / "COVID.metadata.xlsx").exists()
    assert not (dest / "__MACOSX").exists()
    assert dataset.find_dataset() == dest


def test_import_rejects_other_archives(home: Path, tmp_path: Path):
    z = tmp_path / "other.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("cats/1.png", "x")
    with pytest.raises(ValueError, match="No class folders"):
        dataset.import_kaggle(z, progress=False)
    assert not (home / "data" / dataset.KAGGLE_NAME).exists()


# ---------------------------------------------------------------- duplicates and split
def test_duplicates_found_and_kept_together(dataset: Path, cfg):
    d = dataset / "Normal" / "images"
    base = synthetic_xray(1000 * 2 + 0)  # Normal-1
    (d / "Normal-copy.png").write_bytes((d / "Normal-1.png").read_bytes())  # exact
    noisy = np.clip(base.astype(int) + np.random.default_rng(1).integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 75])
    (d / "Normal-near.jpg").write_bytes(jpg.tobytes())  # near: noise and JPEG
    s = scanning.scan(dataset, cfg, progress=False)
    images, thumbs = scanning.main_subset(s)
    pairs = splits.duplicate_pairs(images, thumbs, cfg.near_duplicate_bits, cfg.near_duplicate_corr)
    names = {frozenset((images.file[i].split("/")[-1], images.file[j].split("/")[-1])): k
             for i, j, k in zip(pairs.i, pairs.j, pairs.kind)}
    assert names[frozenset(("Normal-1.png", "Normal-copy.png"))] == "exact"
    assert names[frozenset(("Normal-1.png", "Normal-near.jpg"))] == "near"
    assert len(pairs) == 3  # the three files pair with each other and nothing else does
    groups = splits.group_ids(len(images), pairs)
    split = splits.make_split(images, groups, seed=3)
    trio = split[split.file.str.contains("Normal-1.png|Normal-copy|Normal-near")]
    assert trio.group.nunique() == 1 and trio.split.nunique() == 1


def test_split_is_deterministic_stratified_and_order_free(dataset: Path, cfg):
    write_dataset(dataset, per_class=40)
    images, thumbs = scanning.main_subset(scanning.scan(dataset, cfg, progress=False))
    groups = splits.group_ids(len(images), splits.duplicate_pairs(images, thumbs))
    a = splits.make_split(images, groups)
    perm = np.random.default_rng(0).permutation(len(images))
    b = splits.make_split(images.iloc[perm].reset_index(drop=True), groups[perm])
    pd.testing.assert_frame_equal(a.sort_values("file").reset_index(drop=True),
                                  b.sort_values("file").reset_index(drop=True))
    shares = pd.crosstab(a.label, a.split, normalize="index")
    assert np.allclose(shares["train"], 0.70, atol=0.03) and np.allclose(shares["test"], 0.15, atol=0.03)


SPLITS = repo_root() / "data" / "splits.csv"


@pytest.mark.skipif(not SPLITS.exists(), reason="no committed split")
def test_committed_split_invariants():
    split = pd.read_csv(SPLITS, keep_default_na=False)
    assert {"file", "label", "split", "group"} <= set(split.columns)
    assert set(split.split) == {"train", "val", "test"}
    assert set(split.label) == set(CLASSES)
    assert split.file.is_unique
    assert split.groupby("group").split.nunique().max() == 1, "a duplicate group straddles two splits"
    assert not split.file.str.startswith("audit/").any(), "the audit subset must stay out of the split"
    shares = pd.crosstab(split.label, split.split, normalize="index")
    assert np.allclose(shares["val"], 0.15, atol=0.01) and np.allclose(shares["test"], 0.15, atol=0.01)


def test_stratified_sample_keeps_class_shares_and_does_not_depend_on_row_order():
    import pandas as pd

    from cxr.data.splits import stratified_sample

    rows = pd.DataFrame({"file": [f"f{i}.png" for i in range(1000)],
                         "label": ["Normal"] * 600 + ["COVID"] * 300 + ["Viral Pneumonia"] * 100})
    s = stratified_sample(rows, 100, seed=0)
    assert s.label.value_counts().to_dict() == {"Normal": 60, "COVID": 30, "Viral Pneumonia": 10}
    shuffled = stratified_sample(rows.sample(frac=1.0, random_state=1), 100, seed=0)
    assert list(s.file) == list(shuffled.file)
    assert set(stratified_sample(rows, 100, seed=1).file) != set(s.file)
    assert len(stratified_sample(rows, 5000)) == 1000  # fewer rows than asked: all of them


def test_make_stops_first_with_the_one_message_when_the_data_is_missing(tmp_path: Path):
    """`make book` and `make test` check for the data before anything runs: with none, they stop
    with the message that says where it was looked for and how to get it, and run no chapter."""
    if not shutil.which("make"):
        pytest.skip("no make here")
    root = repo_root()
    env = {**os.environ, "CXR_DATA_DIR": str(tmp_path / "nowhere")}
    for target in ("book", "test"):
        r = subprocess.run(["make", "-n", target], cwd=root, capture_output=True, text=True, env=env)
        lines = r.stdout.splitlines()
        check = next(i for i, line in enumerate(lines) if "cxr data where" in line)
        runs = [i for i, line in enumerate(lines) if "jupyter-book build" in line or "pytest" in line]
        assert runs and check < min(runs), f"make {target} runs something before it checks for the data"
    r = subprocess.run(["make", "--no-print-directory", "data-check"], cwd=root, capture_output=True, text=True,
                       env=env)
    assert r.returncode != 0
    assert "CXR_DATA_DIR=" in r.stderr and "holds no class folders" in r.stderr and "Traceback" not in r.stderr
