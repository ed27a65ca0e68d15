"""`cxr train` and batched inference on one device, at the full data's scale, in one record.

On a machine the data cannot reach (a rented GPU with a 64 MiB upload), `--synthetic` times the
real command on synthetic radiographs that carry the real split's file names, labels and count
(and the audit twins', from a manifest): every step runs as it does on the real data (scan,
preprocessing, frozen-layer caches, the paired epochs, the predictions), so the times are the
pipeline's, but the model's metrics mean nothing and are not recorded. Without `--synthetic` it
times the real dataset (`cxr.data.dataset.find_dataset`). Caches and runs start empty, in a temporary folder.

    python benchmarks/device_speed.py --device cuda --synthetic --manifest M.csv.gz --out reports/device_speed.json
    python benchmarks/device_speed.py --device cpu --synthetic --per-class 20     # a quick check of the script
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write_one(args: tuple[str, int, int]) -> None:
    import cv2
    import numpy as np

    path, seed, size = args
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12)).astype(np.float32)
    img = np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
                  + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])


def synthetic_dataset(dest: Path, manifest: str | None, per_class: int | None, size: int = 224) -> int:
    """Synthetic images under the real split's names (and the manifest's audit twins); returns the count."""
    import pandas as pd

    split = pd.read_csv(ROOT / "data" / "splits.csv", keep_default_na=False)
    if per_class:
        split = split.groupby(["label", "split"]).head(per_class)
    rows = split[["file", "label"]].assign(subset="main", database_name="")
    if manifest:
        man = pd.read_csv(manifest, keep_default_na=False)
        names = man[man.subset == "main"].set_index("file").database_name
        rows["database_name"] = rows.file.map(names).fillna("")
        twins = man[(man.subset == "audit") & man.database_name.isin(set(rows.database_name) - {""})]
        rows = pd.concat([rows, twins[["file", "label", "subset", "database_name"]]], ignore_index=True)
    rows = rows.assign(source_repo="synthetic", source_format="jpeg", source_width=size)
    dest.mkdir(parents=True, exist_ok=True)
    rows.to_csv(dest / "manifest.csv", index=False)
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_one, [(str(dest / f), i, size) for i, f in enumerate(rows.file)], chunksize=64)
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--synthetic", action="store_true", help="time the pipeline on synthetic images (see above)")
    ap.add_argument("--manifest", help="with --synthetic: a manifest (file,label,subset,database_name) for the twins")
    ap.add_argument("--per-class", type=int, help="with --synthetic: only this many images per class and split")
    ap.add_argument("--train-timeout", type=float, default=3600)
    ap.add_argument("--out", default=str(ROOT / "reports" / "device_speed.json"))
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from cxr.core import runtime
    from cxr.model import checkpoints, registry, speed

    runtime.tune_malloc()

    dev = runtime.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="cxr-device-"))
    env = dict(os.environ, CXR_PROFILE="full", CXR_DEVICE=dev.type, TQDM_DISABLE="1",
               CXR_CACHE_DIR=str(work / "cache"), CXR_RUNS_DIR=str(work / "runs"))
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python benchmarks/device_speed.py " + " ".join(sys.argv[1:]),
              "device": dev.type, "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
              "cpu_cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
              "data": "synthetic (the real split's names and count; metrics not meaningful)" if args.synthetic else "real"}
    if args.synthetic:
        t = time.perf_counter()
        record["images"] = synthetic_dataset(work / "data", args.manifest, args.per_class)
        record["synthetic_data_seconds"] = time.perf_counter() - t
        env["CXR_DATA_DIR"] = str(work / "data")
    print(json.dumps(record), flush=True)

    t = time.perf_counter()
    log = Path(args.out).with_suffix(".train.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:  # the command's own output, as it goes
        try:
            code = subprocess.run([sys.executable, "-m", "cxr.cli", "train", "--device", dev.type], env=env, cwd=ROOT,
                                  timeout=args.train_timeout, stdout=f, stderr=subprocess.STDOUT).returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {args.train_timeout:.0f} s"
    record["cxr_train_seconds"] = time.perf_counter() - t
    record["cxr_train_exit"] = code
    print(log.read_text()[-3000:], flush=True)
    runs = sorted((work / "runs").glob("finetune-*/done.json"))
    if runs:
        done = json.loads(runs[0].read_text())
        record["run"] = {k: done.get(k) for k in ("epochs", "best_epoch", "activation_cache_seconds",
                                                  "train_wall_seconds", "train_images", "safety_stop_fired")}
        history = pd.read_csv(runs[0].parent / "history.csv")
        record["run"]["epoch_wall_seconds"] = history[["epoch", "wall_seconds"]].to_dict("records")
        model, meta = checkpoints.load_model(runs[0].parent / "checkpoint.pt", on=dev.type)
    else:
        model, meta = checkpoints.load_model(registry.SHIPPED, on=dev.type)
    size = meta["input_size"]
    record["inference"] = {f"batch_{b}": speed.inference_speed(model, size, batch=b, repeats=15) for b in (64, 256)}
    pixels = np.random.default_rng(0).integers(0, 255, (2048, 224, 224), dtype=np.uint8)
    checkpoints.predict(model, pixels[:64], size, progress=False)
    t = time.perf_counter()
    checkpoints.predict(model, pixels, size, progress=False)
    record["inference"]["predict_2048_uint8_images_per_second"] = len(pixels) / (time.perf_counter() - t)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
