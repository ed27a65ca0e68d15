"""Every backend side by side, in one run (`cxr.model.backends`): the shipped model alone and
`cxr predict` end to end, with agreement and accuracy, and which backend `auto` chose. Writes
reports/backends.json.

* **The model alone**: 256 database films read and preprocessed beforehand, batches of 32, the
  median of 6 timed passes after a warm-up, each backend in a process of its own (so its peak
  memory is its own); "torch eager" is the network as trained (batch norms not folded), the
  baseline of the issue's target; "torch" is what `--backend torch` runs.
* **End to end**: `cxr predict --backend B` on an archive tree of N files (benchmarks/archive_speed.py's
  tree: nested study folders, a tenth of them extensionless 12-bit DICOM), the default decoding
  workers, the site check on.
* **Agreement**: `cxr.assess.agreement.measure` on the full test and validation splits.

    .venv/bin/python benchmarks/backends.py [--sizes 1000 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from archive_speed import cpu_name, make_tree, run  # benchmarks/ is this script's folder
from cxr.core.config import get_config, repo_root
from cxr.core.files import write_json

ALONE = ("torch eager", "torch", "onnxruntime", "openvino")
TARGETS = {"model_alone_default_over_torch_eager": 3.0, "end_to_end_images_per_second_10000": 150,
           "memory_growth_ratio_at_most": 1.25}


def cpu_flags() -> list[str]:
    """The vector and matrix extensions Linux reports (what sets a runtime's speed)."""
    from cxr.core.runtime import cpu_info

    return sorted(f for f in cpu_info().get("flags", "").split()
                  if f.startswith(("avx", "amx", "fma", "sse4")) or "vnni" in f or "bf16" in f)


def alone(name: str, images: int = 256, batch: int = 32, repeats: int = 6) -> dict:
    """One backend's model-alone speed and peak memory (run in its own process by `main`)."""
    from cxr.assess import predict
    from cxr.core.runtime import tune_malloc
    from cxr.data.preprocess import preprocess
    from cxr.data.reading import read_file
    from cxr.data.splits import load_table
    from cxr.model import backends, checkpoints

    tune_malloc()
    full = get_config("full", backend="torch" if name.startswith("torch") else name)
    pred = predict.load(None, full)
    root, table = load_table(full)
    files = table.file.to_numpy()[np.random.default_rng(1).permutation(len(table))[:images]]
    x = np.stack([preprocess(read_file(root / f, f).image, pred.config, []) for f in files])
    model = pred.model if name == "torch eager" else pred.fast

    def once():
        if name == "torch eager":  # the trained network, batch by batch, nothing folded
            return [checkpoints.forward(model, x[i:i + batch], pred.size, ("proba", "features"), batch)
                    for i in range(0, len(x), batch)]
        return checkpoints.forward(model, x, pred.size, ("proba", "features"), batch)

    once()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        rates.append(images / (time.perf_counter() - t))
    return {"backend": name, "ran_on": "torch" if name == "torch eager" else backends.name_of(model),
            "images_per_second": float(np.median(rates)), "runs": rates, "batch": batch, "images": images,
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--alone", help=argparse.SUPPRESS)  # one backend's model-alone run, in a child process
    ap.add_argument("--out", default=str(repo_root() / "reports" / "backends.json"))
    args = ap.parse_args()
    if args.alone:
        print(json.dumps(alone(args.alone)))
        return

    from cxr.assess import agreement
    from cxr.assess.predict import default_workers
    from cxr.model import backends, registry

    full = get_config("full")
    model = registry.final_model(full)
    network, meta = model.loaded
    chosen = backends.runner(network, meta, model.checkpoint, full.replace(backend="auto")).backend
    print(f"auto chose {chosen.name}: {chosen.reason}", flush=True)

    speeds = []
    for name in ALONE:
        out = subprocess.run([sys.executable, __file__, "--alone", name], capture_output=True, text=True,
                             env=dict(os.environ, TQDM_DISABLE="1"))
        if out.returncode:
            speeds.append({"backend": name, "error": out.stderr.strip().splitlines()[-1]})
        else:
            speeds.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(speeds[-1], flush=True)
    eager = next(s["images_per_second"] for s in speeds if s["backend"] == "torch eager")
    for s in speeds:
        if "images_per_second" in s:
            s["over_torch_eager"] = s["images_per_second"] / eager

    agree = agreement.measure(model, full)
    print(json.dumps({k: v for k, v in agree["backends"].items()}, indent=1), flush=True)

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root = Path(tmp) / f"archive-{n}"
            tree = make_tree(root, n, 0.1)
            for name in ("torch", "onnxruntime", "openvino"):
                if name != "torch" and not backends.installed(name):
                    continue
                r = run(root, Path(tmp) / f"results-{n}-{name}.csv", default_workers(), "on", backend=name) | tree
                runs.append(r | {"backend": name})
                print(f"{n:,} files, {name}: {r['images_per_second']:.0f} images/s, peak {r['peak_memory_mb']:.0f} MB",
                      flush=True)
    default_alone = next(s for s in speeds if s["backend"] == chosen.name)
    default_runs = {r["files"]: r for r in runs if r["backend"] == chosen.name}
    largest = default_runs[max(default_runs)]
    record = {
        "command": "python benchmarks/backends.py --sizes " + " ".join(map(str, args.sizes)),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": cpu_name(), "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(), "model": registry.SHIPPED.name, "model_sha256": model.digest,
        "default": chosen.name, "default_reason": chosen.reason, "preference": list(backends.PREFERENCE),
        "probe_tolerance": backends.TOLERANCE, "versions": versions(),
        "model_alone": speeds, "agreement": agree, "end_to_end": runs, "targets": TARGETS,
        "default_model_alone_over_torch_eager": default_alone["over_torch_eager"],
        "default_end_to_end_images_per_second": largest["images_per_second"],
        "default_end_to_end_files": largest["files"],
        "memory_growth_ratio": (largest["peak_memory_mb"] / default_runs[min(default_runs)]["peak_memory_mb"]
                                if len(default_runs) > 1 else None),
    }
    write_json(record, args.out)
    print(f"-> {args.out}")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnxruntime", "openvino", "onnx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    main()
