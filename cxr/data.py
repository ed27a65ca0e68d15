"""Finding, validating, de-duplicating and splitting the radiographs.

The dataset is looked for, in this order:

1. ``$CXR_DATA_DIR``;
2. ``data/COVID-19_Radiography_Dataset`` (your own Kaggle download, see ``cxr data import``);
3. ``../shared/cxr-radiography`` (the development copy: JPEG, same layout, with ``manifest.csv``).

Every file is read once by :func:`scan`, which returns one table of valid images and one of
files that were skipped, with the reason. Nothing is ever copied into the repository.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .runtime import show_progress
from .classes import CLASSES
from .config import Config, get_config, repo_root

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MIN_SIDE = 64  # smaller images are skipped: nothing diagnostic survives at that size
KAGGLE_NAME = "COVID-19_Radiography_Dataset"
SPLITS_CSV = "splits.csv"
HOW_TO_GET_DATA = f"""No chest X-ray dataset was found. Looked in:
{{looked}}
To fix it, do one of:
  * set CXR_DATA_DIR to a folder in the Kaggle layout (<class>/images/*.png);
  * download the Kaggle "COVID-19 Radiography Database" (needs internet and a Kaggle account):
        kaggle datasets download -d tawsifurrahman/covid19-radiography-database
    then lay it out for this project with:
        cxr data import covid19-radiography-database.zip
  * on the project's build machines, put the shared copy at ../shared/cxr-radiography."""


class DataNotFoundError(FileNotFoundError):
    pass


class ImageError(ValueError):
    """A file that cannot be used as a radiograph; the message says why."""


def canonical_label(name: str) -> str | None:
    """'viral_pneumonia', 'Viral Pneumonia', 'lung opacity' ... -> the Kaggle spelling, or None."""
    key = name.strip().lower().replace("_", " ").replace("-", " ")
    for c in CLASSES:
        if key == c.lower().replace("_", " "):
            return c
    return "COVID" if key in ("covid 19", "covid19") else None


# --------------------------------------------------------------------------- discovery
def candidate_dirs() -> list[tuple[str, Path]]:
    root = repo_root()
    out = []
    if os.environ.get("CXR_DATA_DIR"):
        out.append(("$CXR_DATA_DIR", Path(os.environ["CXR_DATA_DIR"]).expanduser()))
    out.append(("your Kaggle download", root / "data" / KAGGLE_NAME))
    out.append(("the shared development copy", (root / ".." / "shared" / "cxr-radiography").resolve()))
    return out


def _looks_like_dataset(path: Path) -> bool:
    return path.is_dir() and any(canonical_label(p.name) for p in path.iterdir() if p.is_dir())


def find_dataset() -> Path:
    """The first dataset folder that exists (see the module docstring); a clear error otherwise."""
    looked = []
    for why, path in candidate_dirs():
        if _looks_like_dataset(path):
            return path
        looked.append(f"  - {path} ({why}): {'no class folders in it' if path.exists() else 'missing'}")
        if why == "$CXR_DATA_DIR":  # an explicit choice that is wrong should not be silently replaced
            raise DataNotFoundError(f"CXR_DATA_DIR={path} holds no class folders "
                                    f"({', '.join(CLASSES)}); fix or unset it.")
    raise DataNotFoundError(HOW_TO_GET_DATA.format(looked="\n".join(looked)))


def list_files(root: Path, subset: str = "main") -> tuple[pd.DataFrame, pd.DataFrame]:
    """All candidate files of `subset` ('main' or 'audit') as (file, label), plus skipped files."""
    root = Path(root)
    base = root / "audit" if subset == "audit" else root
    rows, skipped = [], []
    if not base.is_dir():
        return pd.DataFrame(columns=["file", "label"]), pd.DataFrame(columns=["file", "reason"])
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name == "audit" or d.name == "masks":
            continue
        label = canonical_label(d.name)
        img_dir = d / "images" if (d / "images").is_dir() else d
        files = sorted(p for p in img_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        for p in files:
            rel = p.relative_to(root).as_posix()
            if label is None:
                skipped.append((rel, f"unknown label folder {d.name!r} (expected one of {', '.join(CLASSES)})"))
            elif p.suffix.lower() not in IMAGE_EXTS:
                skipped.append((rel, f"not an image file name ({p.suffix or 'no extension'})"))
            else:
                rows.append((rel, label))
    return pd.DataFrame(rows, columns=["file", "label"]), pd.DataFrame(skipped, columns=["file", "reason"])


# --------------------------------------------------------------------------- reading
def decode_gray(data: bytes) -> tuple[np.ndarray, dict]:
    """Bytes of an image file -> 8-bit grey array, and what had to be normalised to get there.

    Raises ImageError (with the reason) for empty, undecodable or too small files.
    """
    if not data:
        raise ImageError("empty file")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError("not a decodable image (corrupt, truncated or not an image)")
    info = {"channels": 1 if arr.ndim == 2 else arr.shape[2], "bit_depth": arr.dtype.itemsize * 8, "notes": []}
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY)
            info["notes"].append("RGBA converted to grey")
        elif arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
            info["notes"].append("RGB converted to grey")
        else:
            arr = arr[..., 0]
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        if hi <= lo:
            raise ImageError(f"blank {info['bit_depth']}-bit image (all pixels {lo:g})")
        arr = np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)
        info["notes"].append(f"{info['bit_depth']}-bit rescaled to 8-bit (min-max)")
    h, w = arr.shape
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"too small ({w}x{h}; needs at least {MIN_SIDE} px a side)")
    if h != w:
        info["notes"].append(f"not square ({w}x{h}); resized to a square")
    info.update(width=w, height=h)
    return arr, info


def read_gray(path: str | Path) -> np.ndarray:
    """One image file as an 8-bit grey array (see decode_gray); ImageError says what is wrong."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"unreadable: {e.strerror or e}") from e
    return decode_gray(data)[0]


def phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash (8x8 low frequencies of a 32x32 thumbnail against their median)."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    return int(np.packbits(low.flatten() > np.median(low)).view(">u8")[0])


def thumbnail(gray: np.ndarray, size: int = 32) -> np.ndarray:
    """Zero-mean, unit-norm thumbnail: dot products of two of them are Pearson correlations."""
    t = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    n = np.linalg.norm(t)
    return t / n if n > 0 else t


# --------------------------------------------------------------------------- the table
@dataclass
class Scan:
    """What `scan` found: valid images, skipped files, and 32x32 thumbnails (rows of `images`)."""

    root: Path
    images: pd.DataFrame
    skipped: pd.DataFrame
    thumbs: np.ndarray


def _listing_key(root: Path, files: pd.Series) -> str:
    """Keyed by the folder, every file's name, size and modification time, and this module's code."""
    from .config import cache_key

    listing = hashlib.sha256("".join(f"{f}\0{(root / f).stat().st_size}\0{(root / f).stat().st_mtime_ns}\n"
                                     for f in files).encode()).hexdigest()
    return cache_key([str(root.resolve()), listing], "scan")


def scan(root: str | Path | None = None, config: Config | None = None, progress: bool = True) -> Scan:
    """Read and validate every file once: the table of all images (cached by file sizes and mtimes).

    Both subsets ('main' and, where present, 'audit') are scanned. Columns: file, label, subset, source, chain, database_name, width, height, channels,
    bit_depth, notes, sha256, phash. Problem files are in `skipped` with a reason; none stops the run.
    """
    from tqdm.auto import tqdm

    config = config or get_config()
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

    tmp = Path(tempfile.mkdtemp(prefix=cache.name + ".tmp-", dir=_ensure(cache.parent)))
    images.to_csv(tmp / "images.csv", index=False)
    bad.to_csv(tmp / "skipped.csv", index=False)
    np.save(tmp / "thumbs.npy", thumbs)
    _publish(tmp, cache)
    return Scan(root, images, pd.concat([skipped, bad], ignore_index=True), thumbs)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _publish(tmp: Path, final: Path) -> None:
    """Atomically move a finished temporary folder into place (a concurrent winner is kept)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


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


# --------------------------------------------------------------------------- duplicates
def duplicate_pairs(table: pd.DataFrame, thumbs: np.ndarray, max_bits: int = 10,
                    min_corr: float = 0.97) -> pd.DataFrame:
    """Pairs of rows that are the same radiograph: identical bytes, or near duplicates.

    Near duplicates: perceptual hashes within `max_bits` of each other (a cheap candidate
    filter) *and* 32x32 thumbnails correlated at `min_corr` or more. Chapter 01 shows how the
    thresholds were chosen (the audit twins are known same-image pairs).
    Returns columns i, j (row positions), bits, corr, kind ('exact' or 'near').
    """
    n = len(table)
    if n < 2:
        return pd.DataFrame(columns=["i", "j", "bits", "corr", "kind"])
    h = np.array([int(x, 16) for x in table.phash], dtype=np.uint64)
    out = []
    for start in range(0, n, 2048):
        d = np.bitwise_count(h[start:start + 2048, None] ^ h[None, :])
        ii, jj = np.nonzero(d <= max_bits)
        ii = ii + start
        keep = ii < jj
        ii, jj = ii[keep], jj[keep]
        corr = np.einsum("ij,ij->i", thumbs[ii], thumbs[jj])
        out.append(pd.DataFrame({"i": ii, "j": jj, "bits": d[ii - start, jj], "corr": corr}))
    pairs = pd.concat(out, ignore_index=True)
    sha = table.sha256.to_numpy()
    exact = sha[pairs.i] == sha[pairs.j]
    pairs["kind"] = np.where(exact, "exact", "near")
    pairs = pairs[exact | (pairs["corr"] >= min_corr)]
    return pairs.reset_index(drop=True)


def group_ids(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Connected components of the duplicate graph: one integer group per row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs.i.astype(int), pairs.j.astype(int))), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# --------------------------------------------------------------------------- the split
def make_split(table: pd.DataFrame, groups: np.ndarray, fractions=(0.70, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """Stratified, group-aware, deterministic train/val/test split.

    Each duplicate group goes to one split as a whole. Groups are ordered by a seeded hash of
    their first file name (so the result does not depend on row order) and dealt out per class
    (the group's majority label) to keep each class at `fractions`.
    """
    df = table[["file", "label"]].copy()
    df["group"] = [f"g{g:05d}" for g in groups]
    first = df.groupby("group").file.min()
    # rename groups by their first file so ids are stable whatever order the rows came in
    names = {g: "g" + hashlib.sha1(f.encode()).hexdigest()[:10] for g, f in first.items()}
    df["group"] = df.group.map(names)
    glabel = df.groupby("group").label.agg(lambda s: s.value_counts().index[0])
    gsize = df.groupby("group").size()
    order = sorted(glabel.index, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    assign = {}
    for label in CLASSES:
        gs = [g for g in order if glabel[g] == label]
        total = gsize[gs].sum()
        filled = {"train": 0, "val": 0, "test": 0}
        targets = dict(zip(("train", "val", "test"), (f * total for f in fractions)))
        for g in gs:  # give each group to the split furthest below its target
            split = max(filled, key=lambda s: (targets[s] - filled[s]) / max(targets[s], 1e-9))
            assign[g] = split
            filled[split] += gsize[g]
    df["split"] = df.group.map(assign)
    return df[["file", "label", "split", "group"]]


def splits_path(root: Path) -> Path:
    """data/splits.csv for the shared copy (committed); data/splits-<dataset>.csv for any other."""
    data = repo_root() / "data"
    return data / SPLITS_CSV if (root / "manifest.csv").exists() else data / f"splits-{root.name}.csv"


def load_split(root: Path | None = None, config: Config | None = None, create: bool = True) -> pd.DataFrame:
    """The committed split of this dataset (created, deterministically, when it has none yet).

    In the smoke profile, a fixed stratified sample of it: the first files of each class and
    split in a seeded hash order.
    """
    config = config or get_config()
    root = Path(root) if root else find_dataset()
    path = splits_path(root)
    if path.exists():
        split = pd.read_csv(path, keep_default_na=False)
        missing = ~split.file.map(lambda f: (root / f).exists())
        if missing.all() and len(split):
            raise DataNotFoundError(f"{path} lists files that are not in {root}: is it the split of another "
                                    "dataset? Delete it to make a new one.")
        if missing.any():
            print(f"note: {missing.sum()} files of {path.name} are not in {root}; they are left out.")
            split = split[~missing]
    elif create:
        images, thumbs = main_subset(scan(root, config=config))
        pairs = duplicate_pairs(images, thumbs, config.near_duplicate_bits, config.near_duplicate_corr)
        split = make_split(images, group_ids(len(images), pairs), config.split_fractions, config.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        split.to_csv(path, index=False)
        print(f"wrote a new split of {len(split)} images to {path}")
    else:
        raise FileNotFoundError(f"No split file {path}; run `cxr data split`.")
    if config.smoke:
        split = smoke_sample(split, config)
    return split.reset_index(drop=True)


def _hash_ordered(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`rows` in the order of a hash of each file name with the seed: a draw that depends on
    neither row order nor the machine."""
    key = rows.file.map(lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    return rows.assign(_k=key).sort_values("_k").drop(columns="_k")


def smoke_sample(split: pd.DataFrame, config: Config) -> pd.DataFrame:
    parts = [g.head(config.smoke_per_class[s]) for (s, _), g in _hash_ordered(split, config.seed).groupby(["split", "label"])]
    return pd.concat(parts).sort_values(["split", "label", "file"])


def stratified_sample(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """About `n` rows of `rows`, each label in its own proportion (all rows when there are no more
    than `n`), drawn as `smoke_sample` draws: in hash order (`_hash_ordered`)."""
    if len(rows) <= n:
        return rows
    parts = [g.head(max(1, round(n * len(g) / len(rows)))) for _, g in _hash_ordered(rows, seed).groupby("label")]
    return pd.concat(parts).sort_values(["label", "file"])


# --------------------------------------------------------------------------- import
def import_kaggle(src: str | Path, dest: str | Path | None = None, progress: bool = True) -> Path:
    """Lay out the Kaggle download (zip or folder) as data/COVID-19_Radiography_Dataset.

    Class folders (<class>/images, <class>/masks), the metadata sheets and the README are
    kept; anything else is left behind. Returns the dataset folder.
    """
    from tqdm.auto import tqdm

    src = Path(src).expanduser()
    dest = Path(dest) if dest else repo_root() / "data" / KAGGLE_NAME
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; give the Kaggle zip or its unpacked folder.")

    def wanted(parts: tuple[str, ...]) -> tuple[str, ...] | None:
        """Path parts below the dataset root, if this member belongs to the dataset."""
        for k, part in enumerate(parts):
            if canonical_label(part) and len(parts) > k + 1:
                rest = parts[k:]
                ok = (len(rest) == 3 and rest[1] in ("images", "masks")) or len(rest) == 2
                return rest if ok and Path(rest[-1]).suffix.lower() in IMAGE_EXTS else None
            if part.lower().endswith(".metadata.xlsx") or part.lower().startswith("readme"):
                return (part,) if k == len(parts) - 1 else None
        return None

    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=_ensure(dest.parent)))
    n = 0
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as z:
                for info in tqdm(z.infolist(), desc="import", disable=not show_progress(progress)):
                    rel = wanted(Path(info.filename).parts)
                    if info.is_dir() or rel is None:
                        continue
                    rel = (canonical_label(rel[0]) or rel[0],) + rel[1:] if len(rel) > 1 else rel
                    out = tmp.joinpath(*rel)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as fin, open(out, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                    n += 1
        elif src.is_dir():
            for p in tqdm(sorted(src.rglob("*")), desc="import", disable=not show_progress(progress)):
                rel = wanted(p.relative_to(src).parts) if p.is_file() else None
                if rel is None:
                    continue
                rel = (canonical_label(rel[0]) or rel[0],) + rel[1:] if len(rel) > 1 else rel
                out = tmp.joinpath(*rel)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, out)
                n += 1
        else:
            raise ValueError(f"{src} is neither a zip file nor a folder.")
        if not any(canonical_label(p.name) for p in tmp.iterdir()):
            raise ValueError(f"No class folders ({', '.join(CLASSES)}) found in {src}: is it the Kaggle "
                             "COVID-19 Radiography Database?")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"imported {n} files into {dest}")
    return dest


# --------------------------------------------------------------------------- one call for the notebooks
def load_table(config: Config | None = None, root: str | Path | None = None) -> tuple[Path, pd.DataFrame]:
    """The dataset folder and one row per image of this profile: the split joined with the scan."""
    config = config or get_config()
    root = Path(root) if root else find_dataset()
    split = load_split(root, config)
    images, _ = main_subset(scan(root, config=config, progress=False))
    table = split.merge(images.drop(columns=["label"]), on="file", how="inner", validate="one_to_one")
    lost = len(split) - len(table)
    if lost:
        print(f"note: {lost} files of the split could not be read now and are left out (see `cxr data scan`).")
    return root, table.reset_index(drop=True)


def load_audit(config: Config | None = None, root: str | Path | None = None) -> pd.DataFrame:
    """Audit twins with their main-set twin's file and split (empty when the dataset has no audit subset)."""
    config = config or get_config()
    root = Path(root) if root else find_dataset()
    s = scan(root, config=config, progress=False)
    audit = s.images[s.images.subset == "audit"]
    if audit.empty:
        return audit.assign(twin_file="", twin_split="")
    main = s.images[(s.images.subset == "main") & (s.images.database_name != "")]
    twin = dict(zip(main.database_name, main.file))
    audit = audit.assign(twin_file=audit.database_name.map(twin))
    audit = audit[audit.twin_file.notna()]
    split = load_split(root, config.replace(profile="full"))
    audit = audit.assign(twin_split=audit.twin_file.map(dict(zip(split.file, split.split))).fillna("none"))
    if config.smoke:
        audit = audit.sort_values("file").groupby("label").head(config.smoke_per_class["test"])
    return audit.reset_index(drop=True)


def twin_distances(s: Scan, twins: pd.DataFrame) -> pd.DataFrame:
    """pHash bit distance and thumbnail correlation between each audit twin and its original."""
    pos = {f: i for i, f in enumerate(s.images.file)}
    a = np.array([pos[f] for f in twins.file], dtype=int)
    m = np.array([pos[f] for f in twins.twin_file], dtype=int)
    h = np.array([int(x, 16) for x in s.images.phash], dtype=np.uint64)
    return pd.DataFrame({"file": twins.file.to_numpy(), "bits": np.bitwise_count(h[a] ^ h[m]),
                         "corr": np.einsum("ij,ij->i", s.thumbs[a], s.thumbs[m]) if len(a) else []})


def database_number(names: pd.Series) -> np.ndarray:
    """The number in a database file name ('Normal-123.png' -> 123); -1 where there is none."""
    return names.str.extract(r"-(\d+)\.\w+$")[0].fillna(-1).astype(int).to_numpy()


def paediatric_score(images: pd.DataFrame, thumbs: np.ndarray, adult_from: int = 3000, seed: int = 0) -> np.ndarray:
    """Cross-fitted 'looks like a child' score for every image (nan where not scored).

    A logistic regression on thumbnails separates Viral Pneumonia (all paediatric) from Normal
    images numbered above `adult_from` (assumed adult); every image is scored by a model fitted on
    the other folds, so no image is scored by a model that saw it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    num = database_number(images.database_name)
    vp = images.label.eq("Viral Pneumonia").to_numpy()
    normal = images.label.eq("Normal").to_numpy()
    ref = vp | (normal & (num > adult_from))
    score = np.full(len(images), np.nan)
    target = vp.astype(int)
    if ref.sum() < 10 or target[ref].min() == target[ref].max():
        return score
    folds = StratifiedKFold(n_splits=min(5, int(np.bincount(target[ref]).min())), shuffle=True, random_state=seed)
    fold_of = np.full(len(images), -1)
    for k, (_, test) in enumerate(folds.split(np.flatnonzero(ref), target[ref])):
        fold_of[np.flatnonzero(ref)[test]] = k
    rest = ~ref  # images outside the reference set get a fold at random, so every score is out-of-fold
    fold_of[rest] = np.random.default_rng(seed).integers(0, folds.n_splits, rest.sum())
    for k in range(folds.n_splits):
        fit = ref & (fold_of != k)
        model = LogisticRegression(C=1.0, max_iter=2000).fit(thumbs[fit], target[fit])
        score[fold_of == k] = model.predict_proba(thumbs[fold_of == k])[:, 1]
    return score


def change_point(values: np.ndarray) -> int:
    """Index k that best splits a sequence into two constant segments values[:k], values[k:] (least squares)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n < 2:
        return 0
    c1, c2 = np.cumsum(v), np.cumsum(v * v)
    k = np.arange(1, n)
    left = c2[k - 1] - c1[k - 1] ** 2 / k
    right = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (n - k)
    return int(k[np.argmin(left + right)])
