"""The scan: every file of the dataset read once into one table of valid images (with their
SHA-256, hash and thumbnail) and one of skipped files with the reason, cached under the scan's
version; the provenance columns from the development copy's manifest.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr.core.config import CLASSES, Config, cache_key
from cxr.core.files import ensure_dir, publish_dir
from cxr.core.runtime import show_progress
from cxr.data.dataset import DataNotFoundError, find_dataset, list_files
from cxr.data.images import ImageError, decode_gray, phash, thumbnail


@dataclass
class Scan:
    """What `scan` found: valid images, skipped files, and 32x32 thumbnails (rows of `images`)."""
    root: Path
    images: pd.DataFrame
    skipped: pd.DataFrame
    thumbs: np.ndarray


def _listing_key(root: Path, files: pd.Series) -> str:
    """Keyed by the folder, every file's name, size and modification time, and this module's code."""
    listing = hashlib.sha256("".join(f"{f}\0{(root / f).stat().st_size}\0{(root / f).stat().st_mtime_ns}\n"
                                     for f in files).encode()).hexdigest()
    return cache_key([str(root.resolve()), listing], "scan")


def scan(root: str | Path | None, config: Config, progress: bool = True) -> Scan:
    """Read and validate every file once: the table of all images (cached by file sizes and mtimes).

    Both subsets ('main' and, where present, 'audit') are scanned. Columns: file, label, subset, source, chain, database_name, width, height, channels,
    bit_depth, notes, sha256, phash. Problem files are in `skipped` with a reason; none stops the run.
    """
    root = Path(root) if root else find_dataset()
    if not root.is_dir():
        raise DataNotFoundError(f"Dataset folder {root} does not exist.")
    listed, skipped = [], []
    for subset in ("main", "audit"):
        files, bad = list_files(root, subset)
        listed.append(files.assign(subset=subset))
        skipped.append(bad)
    listed = pd.concat(listed, ignore_index=True)
    skipped = pd.concat(skipped, ignore_index=True)

    cache = Path(config.cache_dir) / f"scan-{_listing_key(root, listed.file)}"
    if (cache / "images.csv").exists():
        images = pd.read_csv(cache / "images.csv", dtype={"phash": str, "database_name": str}, keep_default_na=False)
        extra = pd.read_csv(cache / "skipped.csv", keep_default_na=False)
        thumbs = np.load(cache / "thumbs.npy")
        return Scan(root, images, pd.concat([skipped, extra], ignore_index=True), thumbs)

    rows, thumbs, bad = [], [], []
    for f, label, subset in tqdm(listed[["file", "label", "subset"]].itertuples(index=False),
                                 total=len(listed), desc=f"scan {root.name}", disable=not show_progress(progress)):
        try:
            data = (root / f).read_bytes()
            gray, info = decode_gray(data)
        except OSError as e:
            bad.append((f, f"unreadable: {e.strerror or e}"))
            continue
        except ImageError as e:
            bad.append((f, str(e)))
            continue
        rows.append(dict(file=f, label=label, subset=subset, width=info["width"], height=info["height"],
                         channels=info["channels"], bit_depth=info["bit_depth"], notes="; ".join(info["notes"]),
                         sha256=hashlib.sha256(data).hexdigest(), phash=f"{phash(gray):016x}"))
        thumbs.append(thumbnail(gray))
    images = pd.DataFrame(rows, columns=["file", "label", "subset", "width", "height", "channels", "bit_depth",
                                         "notes", "sha256", "phash"])
    images = _add_provenance(root, images)
    thumbs = np.stack(thumbs) if thumbs else np.zeros((0, 32 * 32), np.float32)
    bad = pd.DataFrame(bad, columns=["file", "reason"])

    tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".tmp-", dir=ensure_dir(cache.parent)))
    images.to_csv(tmp / "images.csv", index=False)
    bad.to_csv(tmp / "skipped.csv", index=False)
    np.save(tmp / "thumbs.npy", thumbs)
    publish_dir(tmp, cache)
    return Scan(root, images, pd.concat([skipped, bad], ignore_index=True), thumbs)


def _add_provenance(root: Path, images: pd.DataFrame) -> pd.DataFrame:
    """source / chain / database_name from the shared manifest or Kaggle's *.metadata.xlsx, where known."""
    images = images.assign(source="unknown", chain="unknown", database_name="")
    manifest = root / "manifest.csv"
    if manifest.exists():
        man = pd.read_csv(manifest, keep_default_na=False).set_index("file")
        known = images.file.isin(man.index)
        m = man.loc[images.file[known]]
        images.loc[known, "source"] = m.source_repo.values
        images.loc[known, "chain"] = (m.source_format.str.upper() + " " + m.source_width.astype(str) + " px").values
        images.loc[known, "database_name"] = m.database_name.values
        return images
    for label in CLASSES:
        meta = root / f"{label}.metadata.xlsx"
        if not meta.exists():
            continue
        try:
            md = pd.read_excel(meta)
        except Exception as e:  # noqa: BLE001 - a broken metadata sheet must not stop the scan
            print(f"warning: could not read {meta.name}: {e}")
            continue
        md.columns = [str(c).strip().upper() for c in md.columns]
        if "FILE NAME" not in md or "URL" not in md:
            continue
        url = dict(zip(md["FILE NAME"].astype(str).str.lower(), md["URL"].astype(str)))
        sel = images.label == label
        stem = images.file[sel].map(lambda f: Path(f).stem.lower())
        images.loc[sel, "source"] = stem.map(url).fillna("unknown").values
        images.loc[sel, "database_name"] = images.file[sel].map(lambda f: Path(f).name).values
        fmt = images.file[sel].map(lambda f: Path(f).suffix[1:].upper())
        images.loc[sel, "chain"] = (fmt + " " + images.width[sel].astype(str) + " px").values
    return images


def main_subset(s: Scan) -> tuple[pd.DataFrame, np.ndarray]:
    """The main-set rows of a scan and their thumbnails."""
    keep = (s.images.subset == "main").to_numpy()
    return s.images[keep].reset_index(drop=True), s.thumbs[keep]


def twin_distances(s: Scan, twins: pd.DataFrame) -> pd.DataFrame:
    """pHash bit distance and thumbnail correlation between each audit twin and its original."""
    pos = {f: i for i, f in enumerate(s.images.file)}
    a = np.array([pos[f] for f in twins.file], dtype=int)
    m = np.array([pos[f] for f in twins.twin_file], dtype=int)
    h = np.array([int(x, 16) for x in s.images.phash], dtype=np.uint64)
    return pd.DataFrame({"file": twins.file.to_numpy(), "bits": np.bitwise_count(h[a] ^ h[m]),
                         "corr": np.einsum("ij,ij->i", s.thumbs[a], s.thumbs[m]) if len(a) else []})
