"""`cxr predict` on an archive, end to end: a PACS-like tree of N files (links to the database's
images in nested study/series folders, and a share of extensionless DICOM files made from them),
predicted by the command itself in a subprocess, model load included. For each size and number
of decoding workers: images/s, peak memory of the whole process tree (sampled), and the time to
the first row in the results file; with the site check on and off (`--site-check`), so the
check's cost is measured in the same run. Writes reports/archive_speed.json.

    .venv/bin/python benchmarks/archive_speed.py [--sizes 1000 10000] [--workers 0 1 2] [--dicom-share 0.1]
                                                 [--site-check on off]
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from cxr.core.config import get_config, repo_root
from cxr.core.files import write_json
from cxr.data.splits import load_table
from cxr.model import registry

TARGET_IMAGES_PER_S = 120
SITE_CHECK_BUDGET = 0.05  # the site check may cost at most this share of a run's time


def overheads(runs: list[dict]) -> list[dict]:
    """The site check's cost: the median wall time of the runs with the check against the median of
    the same runs without it (same files, same workers, alternating)."""
    out = []
    for files, workers in sorted({(r["files"], r["workers"]) for r in runs}):
        same = [r for r in runs if r["files"] == files and r["workers"] == workers]
        on = [r["seconds"] for r in same if r["site_check"] == "on"]
        off = [r["seconds"] for r in same if r["site_check"] == "off"]
        if on and off:
            ratio = float(np.median(on) / np.median(off) - 1)
            out.append({"files": files, "workers": workers, "runs_each": min(len(on), len(off)),
                        "median_seconds_on": float(np.median(on)), "median_seconds_off": float(np.median(off)),
                        "overhead": ratio, "within_budget": ratio <= SITE_CHECK_BUDGET})
    return out


def make_tree(root: Path, n: int, dicom_share: float, seed: int = 0) -> dict:
    """N files below `root`: PATIENT/STUDY/SERIES/IMnnnnn, links to database images, and a share
    of DICOM files (12-bit, no extension) made from other database images."""
    import cv2
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    data_root, table = load_table(get_config("full"))
    rng = np.random.default_rng(seed)
    files = table.file.to_numpy()[rng.permutation(len(table))]
    every = round(1 / dicom_share) if dicom_share > 0 else 0  # one DICOM file in `every`
    for i in range(n):
        folder = root / f"P{i // 500:04d}" / f"ST{(i // 50) % 10}" / f"SE{(i // 10) % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        src = data_root / files[i % len(files)]
        if every and i % every == 0:
            gray = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta, ds.Modality = meta, "DX"
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.Rows, ds.Columns = gray.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = (gray.astype(np.uint16) * 16).tobytes()
            ds.save_as(folder / f"IM{i:06d}", enforce_file_format=True)
        else:
            (folder / f"IM{i:06d}{Path(src).suffix}").symlink_to(src)
    dicoms = sum(1 for p in root.rglob("IM*") if not p.suffix)
    return {"files": n, "dicom_files": dicoms, "linked_images": n - dicoms}


def run(root: Path, out: Path, workers: int, site_check: str = "on", backend: str = "auto") -> dict:
    """The command on the tree, watched: wall time, first row, peak memory of it and its workers."""
    cmd = [sys.executable, "-m", "cxr.cli", "predict", str(root), "--out", str(out), "--workers", str(workers),
           "--site-check", site_check, "--backend", backend]
    env = dict(os.environ, TQDM_DISABLE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    top, peak, first = psutil.Process(proc.pid), 0, None
    while proc.poll() is None:
        try:
            rss = top.memory_info().rss + sum(c.memory_info().rss for c in top.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if first is None and out.exists():
            with out.open("rb") as f:
                if f.read().count(b"\n") >= 2:  # the header and one row
                    first = time.perf_counter() - t0
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"cxr predict failed ({proc.returncode}):\n{err[-2000:]}")
    rows = sum(1 for _ in out.open()) - 1
    steady = rows / (wall - first) if first is not None and wall > first else None
    from cxr.assess.results import read_run

    site = (read_run(out) or {}).get("site", {})
    return {"workers": workers, "site_check": site_check, "backend": backend, "site_verdict": site.get("verdict"), "rows": rows, "seconds": wall, "images_per_second": rows / wall,
            "steady_images_per_second": steady, "first_row_seconds": first, "peak_memory_mb": peak / 2**20, "exit_code": proc.returncode}


def model_alone(batch: int = 32, images: int = 256, repeats: int = 5) -> float:
    """Images/s of the shipped model's forward pass alone (probabilities and OOD features, batches
    of `batch` database images already read and preprocessed), the median of `repeats` passes,
    with the command's malloc settings: the ceiling for the end-to-end number, measured in this run."""
    from cxr.assess import predict
    from cxr.core.runtime import tune_malloc
    from cxr.data.preprocess import preprocess
    from cxr.data.reading import read_file
    from cxr.model import ood

    tune_malloc()  # as `cxr` itself does (cxr/cli/main.py)
    full = get_config("full")
    pred = predict.load(None, full)
    data_root, table = load_table(full)
    files = table.file.to_numpy()[np.random.default_rng(1).permutation(len(table))[:images]]
    x = np.stack([preprocess(read_file(data_root / f, f).image, pred.config, []) for f in files])
    ood.proba_and_features(pred.fast, x, pred.size, batch=batch)  # warm up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        ood.proba_and_features(pred.fast, x, pred.size, batch=batch)
        rates.append(images / (time.perf_counter() - t))
    return float(np.median(rates))


def cpu_name() -> str:
    """The processor's name as Linux reports it (what set the model's speed), else the platform's."""
    from cxr.core.runtime import cpu_info

    return cpu_info().get("model name") or platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dicom-share", type=float, default=0.1)
    ap.add_argument("--site-check", nargs="+", choices=("on", "off"), default=["on", "off"],
                    help="run each size and worker count with the site check on, off, or both (its cost)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each configuration (on and off alternate)")
    ap.add_argument("--out", default=str(repo_root() / "reports" / "archive_speed.json"))
    args = ap.parse_args()
    alone = model_alone()
    print(f"the model alone: {alone:.0f} images/s", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root = Path(tmp) / f"archive-{n}"
            tree = make_tree(root, n, args.dicom_share)
            for w, k, check in itertools.product(args.workers, range(args.repeats), args.site_check):
                r = run(root, Path(tmp) / f"results-{n}-{w}-{check}-{k}.csv", w, check) | tree
                runs.append(r)
                print(f"{n:,} files, {w} workers, site check {check} ({r['site_verdict']}): "
                      f"{r['images_per_second']:.0f} images/s "
                      f"({r['steady_images_per_second']:.0f} after the first row), first row after "
                      f"{r['first_row_seconds']:.1f} s, peak {r['peak_memory_mb']:.0f} MB", flush=True)
    after = model_alone()  # again at the end: a machine that changed speed during the runs shows here
    print(f"the model alone, after the runs: {after:.0f} images/s", flush=True)
    from cxr.assess.predict import default_workers

    default = [r for r in runs if r["workers"] == default_workers() and r["site_check"] == "on"]
    record = {
        "command": "python benchmarks/archive_speed.py --sizes " + " ".join(map(str, args.sizes)) + " --workers "
                   + " ".join(map(str, args.workers)) + f" --dicom-share {args.dicom_share} --site-check "
                   + " ".join(args.site_check) + f" --repeats {args.repeats}",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": cpu_name(),
        "cores": os.cpu_count(), "model": registry.SHIPPED.name, "default_workers": default_workers(),
        "model_alone_images_per_second": alone,
        "model_alone_after_images_per_second": after, "runs": runs, "target_images_per_second": TARGET_IMAGES_PER_S,
        "default_meets_target": bool(default) and all(r["images_per_second"] >= TARGET_IMAGES_PER_S for r in default),
    }
    for r in runs:
        r["fraction_of_model_alone"] = r["images_per_second"] / max(alone, after)
    record["site_check_overhead"] = overheads(runs)
    for o in record["site_check_overhead"]:
        print(f"site check, {o['files']:,} files, {o['workers']} workers: {100 * o['overhead']:+.1f}% of the run's time "
              f"(target at most {100 * SITE_CHECK_BUDGET:.0f}%)", flush=True)
    if len({r["files"] for r in default}) > 1:
        small, large = min(default, key=lambda r: r["files"]), max(default, key=lambda r: r["files"])
        record["memory_growth_ratio"] = large["peak_memory_mb"] / small["peak_memory_mb"]
    write_json(record, args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
