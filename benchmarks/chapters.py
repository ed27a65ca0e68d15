"""How long each chapter takes to run top to bottom on its own, as a reader reruns it in
JupyterLab on a fresh clone: every chapter in a fresh kernel with an empty cache folder (no chapter
run first, no scan, pixel or prediction cache), on the shipped model and the committed records.

Writes reports/chapter_times.json, and the table from it into book/chapter_times.md (which the
book's appendix includes).

    .venv/bin/python benchmarks/chapters.py [--profile full] [--chapters 00 03] [--shared-cache]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from cxr.core.config import repo_root
from cxr.core.files import write_json

TARGET_S = 180  # issue 24: every chapter in at most 3 minutes on 2 cores
MARK = ("<!-- chapter-times -->", "<!-- /chapter-times -->")


def run_chapter(path: Path, env: dict, timeout: int = 1800) -> float:
    """Execute one notebook in a fresh kernel (as JupyterLab's "run all" does); its wall seconds."""
    nb = nbformat.read(path, as_version=4)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        t = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        return time.perf_counter() - t
    finally:
        os.environ.clear()
        os.environ.update(old)


def markdown(record: dict) -> str:
    """The table as the README and the introduction show it."""
    lines = ["| chapter | seconds | within 3 min |", "|---|---:|---|"]
    for name, r in record["chapters"].items():
        lines.append(f"| {name} | {r['seconds']:.0f} | {'yes' if r['seconds'] <= TARGET_S else 'no'} |")
    lines.append("")
    lines.append(f"Measured {record['created'][:10]} with `{record['command']}` on {record['machine']} "
                 f"({record['cores']} cores), {record['profile']} profile, each chapter in a fresh kernel with an "
                 f"empty cache{' (shared across chapters)' if record['shared_cache'] else ''}; "
                 f"{record['within_target']} of {len(record['chapters'])} within {TARGET_S // 60} minutes.")
    return "\n".join(lines)


def write_tables(record: dict) -> None:
    table = markdown(record)
    (repo_root() / "book" / "chapter_times.md").write_text(table + "\n")
    readme = repo_root() / "README.md"
    text = readme.read_text()
    if MARK[0] in text:
        text = re.sub(re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]), f"{MARK[0]}\n{table}\n{MARK[1]}", text,
                      flags=re.S)
        readme.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="full")
    ap.add_argument("--chapters", nargs="*", help="chapter numbers (default: all)")
    ap.add_argument("--shared-cache", action="store_true", help="one cache for all chapters (a book build's order)")
    args = ap.parse_args()
    notebooks = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        notebooks = [p for p in notebooks if p.name[:2] in args.chapters]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nb in notebooks:
            cache = Path(tmp) / ("shared" if args.shared_cache else nb.stem)
            cache.mkdir(exist_ok=True)
            # no runs either: a fresh clone has only the shipped model and the committed records
            env = {"CXR_PROFILE": args.profile, "CXR_CACHE_DIR": str(cache), "TQDM_DISABLE": "1",
                   "CXR_RUNS_DIR": str(Path(tmp) / "no-runs")}
            seconds = run_chapter(nb, env)
            out[nb.stem] = {"seconds": seconds, "within_target": seconds <= TARGET_S}
            print(f"{nb.stem}: {seconds:.0f} s", flush=True)
    path = repo_root() / "reports" / "chapter_times.json"
    old = json.loads(path.read_text()) if path.exists() and args.chapters else {"chapters": {}}
    chapters = {**old.get("chapters", {}), **out}
    record = {"profile": args.profile, "chapters": dict(sorted(chapters.items())), "target_seconds": TARGET_S,
              "within_target": sum(r["within_target"] for r in chapters.values()),
              "shared_cache": args.shared_cache, "machine": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python benchmarks/chapters.py" + (" --shared-cache" if args.shared_cache else "")}
    write_json(record, path)
    write_tables(record)
    print(markdown(record))


if __name__ == "__main__":
    main()
