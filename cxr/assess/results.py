"""The results file of `cxr predict` on an archive: rows appended batch by batch and flushed, so a
killed run loses at most the batch in flight; a rerun with the same `--out` skips every file
already there (the same path, size and modification time) and predicts the rest; and shard parts
merged into one file, with every file checked to be there exactly once.

A `.csv` results file is the stream itself. A `.parquet` (or `.json`) file is written at the end
from a CSV journal beside it (`OUT.partial.csv`), streamed in pieces so memory stays flat. Beside
each results file, `OUT.run.json` says what made it (model digest, decision rule, paths, shard)
and whether the run finished; a rerun with another model or rule is refused rather than mixed in.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import CLASSES
from cxr.core.files import write_json
from cxr.data.walk import parse_shard

COLUMNS = ["file", "status", *CLASSES, "decision", "ood_score", "notes", "cam", "bytes", "modified_ns"]
READ_CHUNK = 50_000  # rows per piece when a results file is read back or converted


def _key63(text: str) -> int:
    h = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8)
    return int.from_bytes(h.digest(), "big") >> 1  # fits an int64 array


def key_of(file: str, size: int, mtime_ns: int) -> int:
    """One file version as a 63-bit number: 8 bytes a file, so resuming a million-file run holds 8 MB."""
    return _key63(f"{file}\0{int(size)}\0{int(mtime_ns)}")


def file_key(file: str) -> int:
    """A file's path alone as a 63-bit number (for merging: one row per path)."""
    return _key63(file)


class Done:
    """The file versions a results file already holds, as a sorted array of keys."""
    def __init__(self, keys: np.ndarray | None = None):
        self.keys = np.sort(np.asarray(keys if keys is not None else [], np.int64))

    def __len__(self) -> int:
        return len(self.keys)

    def has(self, file: str, size: int, mtime_ns: int) -> bool:
        k = key_of(file, size, mtime_ns)
        i = int(np.searchsorted(self.keys, k))
        return i < len(self.keys) and int(self.keys[i]) == k


def journal_path(out: Path) -> Path:
    """Where the rows stream to: the results file itself for CSV, a CSV beside it otherwise."""
    return out if out.suffix.lower() == ".csv" else out.with_name(out.name + ".partial.csv")


def run_path(out: Path) -> Path:
    return out.with_name(out.name + ".run.json")


def read_run(out: Path) -> dict | None:
    p = run_path(Path(out))
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _repair(journal: Path) -> None:
    """Cut a line the killed run left half-written, so the file ends with a whole row."""
    with journal.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        step, pos = 65536, end
        while pos > 0:  # the last newline from the end
            pos = max(0, pos - step)
            f.seek(pos)
            block = f.read(min(step, end - pos))
            i = block.rfind(b"\n")
            if i >= 0:
                f.truncate(pos + i + 1)
                return
        f.truncate(0)


def chunks(path: Path, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A results file (CSV, Parquet or JSON) in pieces of READ_CHUNK rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for b in pq.ParquetFile(path).iter_batches(batch_size=READ_CHUNK, columns=columns):
            yield b.to_pandas()
    elif suffix == ".json":
        frame = pd.read_json(path, orient="records", dtype={"file": str, "notes": str, "cam": str})
        yield frame[columns] if columns else frame
    else:
        if path.stat().st_size == 0:
            return
        yield from pd.read_csv(path, usecols=columns, chunksize=READ_CHUNK, keep_default_na=False,
                               na_values={c: [""] for c in [*CLASSES, "ood_score"]},
                               dtype={"file": str, "status": str, "notes": str, "cam": str, "decision": str})


def done_in(path: Path) -> Done:
    """The file versions in a results file (empty when there is none)."""
    if not Path(path).exists():
        return Done()
    keys = []
    for c in chunks(path, ["file", "bytes", "modified_ns"]):
        keys.append(np.fromiter((key_of(f, s, m) for f, s, m in zip(c.file, c.bytes, c.modified_ns)), np.int64,
                                len(c)))
    return Done(np.concatenate(keys) if keys else None)


class Writer:
    """Rows appended to the journal and flushed batch by batch; `finish` writes the final format."""
    def __init__(self, out: str | Path, about: dict):
        self.out = Path(out)
        self.journal = journal_path(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        earlier = read_run(self.out)
        for k in ("model_sha256", "threshold"):
            if earlier and k in earlier and earlier[k] != about.get(k):
                raise ValueError(f"{self.out} was made with another {'model' if k == 'model_sha256' else 'decision rule'}"
                                 f" ({earlier[k]}, now {about.get(k)}): its rows would be mixed with this run's. "
                                 "Give another --out, or the same --model and --threshold to resume it.")
        if self.journal != self.out and self.out.exists() and not self.journal.exists():
            self._unpack()  # a finished Parquet/JSON file grows: its rows go back into the journal first
        if self.journal.exists():
            _repair(self.journal)
        self.done = done_in(self.journal)
        self.resumed = len(self.done)
        # the site verdict of the run being resumed (it is decided once, before the first row)
        self.earlier_site = (earlier or {}).get("site") if self.resumed else None
        self.written = 0
        write_json(about | {"complete": False, "rows": self.resumed}, run_path(self.out))
        new = not self.journal.exists() or self.journal.stat().st_size == 0
        self._f = self.journal.open("a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._f, COLUMNS, extrasaction="ignore")
        if new:
            self._csv.writeheader()
            self._f.flush()
        self.about = about

    def _unpack(self) -> None:
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            w.writeheader()
            for c in chunks(self.out):
                w.writerows(c.to_dict("records"))
        os.replace(tmp, self.journal)

    def note(self, extra: dict) -> None:
        """Add to what the run record says (the site verdict, before the first row) and write it now."""
        self.about = self.about | extra
        write_json(self.about | {"complete": False, "rows": self.resumed + self.written}, run_path(self.out))

    def append(self, rows: list[dict]) -> None:
        """Write a batch of rows and flush it to the operating system (a SIGKILL then loses nothing of it)."""
        if not rows:
            return
        self._csv.writerows(rows)
        self._f.flush()
        self.written += len(rows)

    def finish(self, extra: dict | None = None) -> Path:
        """Close the journal, write the final format, and mark the run complete."""
        self._f.close()
        if self.journal != self.out:
            convert(self.journal, self.out)
            self.journal.unlink()
        total = self.resumed + self.written
        write_json(self.about | (extra or {}) | {"complete": True, "rows": total}, run_path(self.out))
        return self.out

    def close(self) -> None:
        """Stop without finishing (an interrupted run): what was appended stays for the rerun."""
        if not self._f.closed:
            self._f.close()


def convert(src: Path, out: Path) -> Path:
    """A CSV results file as Parquet or JSON (through a temporary file and a rename)."""
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        try:
            for c in chunks(src):
                table = pa.Table.from_pandas(_typed(c), preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:
                pq.write_table(pa.Table.from_pandas(_typed(pd.DataFrame(columns=COLUMNS)), preserve_index=False), tmp)
        finally:
            if writer is not None:
                writer.close()
    else:
        frame = pd.concat(list(chunks(src)) or [pd.DataFrame(columns=COLUMNS)], ignore_index=True)
        tmp.write_text(frame.to_json(orient="records", indent=1))
    os.replace(tmp, out)
    return out


def _typed(c: pd.DataFrame) -> pd.DataFrame:
    c = c.reindex(columns=COLUMNS)
    for col in ("file", "status", "decision", "notes", "cam"):
        c[col] = c[col].fillna("").astype(str)
    for col in [*CLASSES, "ood_score"]:
        c[col] = pd.to_numeric(c[col], errors="coerce").astype("float64")
    for col in ("bytes", "modified_ns"):
        c[col] = pd.to_numeric(c[col], errors="coerce").fillna(-1).astype("int64")
    return c


def read(path: str | Path) -> pd.DataFrame:
    """A whole results file as one table (for small runs, tests and notebooks)."""
    parts = list(chunks(Path(path)))
    return _typed(pd.concat(parts, ignore_index=True)) if parts else _typed(pd.DataFrame(columns=COLUMNS))


# --------------------------------------------------------------------------- shards
def merge(out: str | Path, parts: Iterable[str | Path], expected: Iterable[str] | None = None) -> dict:
    """Shard parts into one results file, and what is wrong with them: files in more than one part
    (doubled), shards or files with no row (missing), parts whose run did not finish.

    `expected` is every file the parts should hold (their shown paths); without it, missing files
    are found from the parts' run records: the shards 1..N that are absent, and parts that did not
    finish. The merged file is written either way; the caller decides what the problems mean."""
    out, parts = Path(out), [Path(p) for p in parts]
    problems = {"doubled": [], "missing": [], "unfinished": [], "missing_shards": [], "mixed": []}
    runs = {p: read_run(p) for p in parts}
    models = {r.get("model_sha256") for r in runs.values() if r}
    if len(models) > 1:
        problems["mixed"] = sorted(str(m) for m in models)
    shards = [parse_shard(r["shard"]) for r in runs.values() if r and r.get("shard")]
    if shards:
        n = shards[0][1]
        have = {k for k, of in shards if of == n}
        problems["missing_shards"] = [f"{k}/{n}" for k in range(1, n + 1) if k not in have]
    problems["unfinished"] = [str(p) for p, r in runs.items() if not r or not r.get("complete")]
    keys = []
    for p in parts:
        for c in chunks(p, ["file"]):
            keys.append(np.fromiter((file_key(f) for f in c.file), np.int64, len(c)))
    keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    uniq, counts = np.unique(keys, return_counts=True)
    twice = set(uniq[counts > 1].tolist())
    journal = out.with_name(out.name + ".merging.csv")
    seen_doubled = set()
    with journal.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        w.writeheader()
        for p in parts:
            for c in chunks(p):
                for row in c.to_dict("records"):
                    k = file_key(row["file"])
                    if k in twice:
                        if k in seen_doubled:
                            continue  # one row per file in the merged table; the problem is reported
                        seen_doubled.add(k)
                        problems["doubled"].append(row["file"])
                    w.writerow(row)
    if expected is not None:
        have = set(uniq.tolist())
        problems["missing"] = [f for f in expected if file_key(f) not in have]
    if out.suffix.lower() == ".csv":
        os.replace(journal, out)
    else:
        convert(journal, out)
        journal.unlink()
    record = {"merged_from": [str(p) for p in parts], "rows": int(len(uniq)), "complete": not any(problems.values()),
              "model_sha256": next(iter(models)) if len(models) == 1 else None} | {
        k: v for k, v in problems.items() if v}
    write_json(record, run_path(out))
    return {"out": str(out), "rows": int(len(uniq)), "problems": problems}
