"""`cxr predict` end to end on whole folders, as a hospital would run it, with the site check on:
the database's test split as one folder and class by class (links to its files in the database
layout), `cxr-site-normal`, and each collection of `cxr-external-dev`. For each: the verdict the
run recorded before its first row, the rows by status, and how many normal films were called
COVID-19 with status `ok` (the failure the check exists to stop). Writes reports/site_predict.json.

    .venv/bin/python benchmarks/site_predict.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cxr.assess import results
from cxr.core.config import get_config, repo_root
from cxr.core.files import write_json
from cxr.data.dataset import external_dir, site_dir
from cxr.data.splits import load_table
from cxr.model import registry


def linked(root: Path, files: list[Path]) -> Path:
    """A folder in the database layout of links to `files` (each `<class>/images/<name>` kept)."""
    for f in files:
        dest = root / f.parent.parent.name / "images" / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(f)
    return root


def run(folder: Path, out: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cxr.cli", "predict", str(folder), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode not in (0, 1):
        raise SystemExit(f"cxr predict failed on {folder}:\n{proc.stderr[-2000:]}")
    rows = results.read(out)
    site = results.read_run(out)["site"]
    normal = rows.file.str.contains("/Normal/images/")
    called = rows[["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]].idxmax(axis=1)
    return {"films": int(len(rows)), "verdict": site["verdict"], "p_value": site["p_value"],
            "mean_rank": site["mean_rank"], "films_judged": site["films"],
            "statuses": {k: int(v) for k, v in rows.status.value_counts().items()},
            "normals": int(normal.sum()),
            "normals_called_covid_ok": int((normal & (called == "COVID") & (rows.status == "ok")).sum()),
            "normals_called_covid": int((normal & (called == "COVID")).sum()),
            "seconds": time.perf_counter() - t}


def main() -> None:
    config = get_config("full")
    root, table = load_table(config)
    folders = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        test = table[table.split == "test"]
        folders["database test split, one folder"] = linked(tmp / "test", [root / f for f in test.file])
        for label, g in test.groupby("label"):
            folders[f"database test split, {label} only"] = linked(tmp / f"test-{label}", [root / f for f in g.file])
        if site_dir() is not None:
            folders["cxr-site-normal"] = site_dir()
        ext = external_dir()
        if ext is not None:
            man = pd.read_csv(ext / "manifest.csv")
            for name, g in man.groupby("collection"):
                folders[f"cxr-external-dev: {name}"] = linked(tmp / f"ext-{name}", [ext / f for f in g.file])
        out = {}
        for k, (name, folder) in enumerate(folders.items()):
            out[name] = run(folder, tmp / f"rows-{k}.csv")
            r = out[name]
            print(f"{name}: {r['verdict']} (p = {r['p_value']:.1e}), {r['films']} rows {r['statuses']}, normals called "
                  f"COVID-19 with status ok {r['normals_called_covid_ok']} of {r['normals']}", flush=True)
    record = {"command": "python benchmarks/site_predict.py", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "model_sha256": registry.shipped().digest, "folders": out}
    path = write_json(record, repo_root() / "reports" / "site_predict.json")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
