"""Finding the dataset: where it is looked for, its class folders, the external and site folders,
and importing a Kaggle download.

The dataset is looked for, in this order:

1. ``$CXR_DATA_DIR``;
2. ``data/COVID-19_Radiography_Dataset`` (your own Kaggle download, see ``cxr data import``);
3. ``../shared/cxr-radiography`` (the development copy: JPEG, same layout, with ``manifest.csv``).

Every file is then read once by `scanning.scan`. Nothing is ever copied into the repository.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from cxr.core.config import CLASSES, repo_root
from cxr.core.files import ensure_dir
from cxr.core.runtime import show_progress
from cxr.data.images import IMAGE_EXTS

KAGGLE_NAME = "COVID-19_Radiography_Dataset"


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


def canonical_label(name: str) -> str | None:
    """'viral_pneumonia', 'Viral Pneumonia', 'lung opacity' ... -> the Kaggle spelling, or None."""
    key = name.strip().lower().replace("_", " ").replace("-", " ")
    for c in CLASSES:
        if key == c.lower().replace("_", " "):
            return c
    return "COVID" if key in ("covid 19", "covid19") else None


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


def import_kaggle(src: str | Path, dest: str | Path | None = None, progress: bool = True) -> Path:
    """Lay out the Kaggle download (zip or folder) as data/COVID-19_Radiography_Dataset.

    Class folders (<class>/images, <class>/masks), the metadata sheets and the README are
    kept; anything else is left behind. Returns the dataset folder.
    """
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

    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=ensure_dir(dest.parent)))
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


EXTERNAL_ENV = "CXR_EXTERNAL_DIR"


def external_dir() -> Path | None:
    """The external evaluation set: $CXR_EXTERNAL_DIR, else ../shared/cxr-external-dev; None if absent."""
    if os.environ.get(EXTERNAL_ENV):
        return Path(os.environ[EXTERNAL_ENV])
    p = repo_root().parent / "shared" / "cxr-external-dev"
    return p if p.is_dir() else None


def site_dir() -> Path | None:
    """One outside hospital's normal films for site adaptation: $CXR_SITE_DIR, else
    ../shared/cxr-site-normal; None if absent."""
    if os.environ.get("CXR_SITE_DIR"):
        return Path(os.environ["CXR_SITE_DIR"])
    p = repo_root().parent / "shared" / "cxr-site-normal"
    return p if p.is_dir() else None
