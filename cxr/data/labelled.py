"""Reading a labelled folder (the database layout, ``<class>/images/*``): the one loop that reads,
checks and preprocesses every film, and sets aside the ones it cannot use with the reason.
`cxr evaluate` (evaluate.py) and `cxr adapt` (adapt.py) read their folders through it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr.core.config import CLASSES
from cxr.core.runtime import show_progress
from cxr.data.dataset import list_files
from cxr.data.preprocess import preprocess
from cxr.data.reading import read_file


def list_labelled(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The folder's image files with their labels, and the files skipped by name (with the reason)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give a folder in the database layout "
                                f"(<class>/images/*.png|jpg), classes {', '.join(CLASSES)}.")
    return list_files(folder, "main")


def read_labelled(folder: str | Path, files: pd.DataFrame, skipped: pd.DataFrame, config, progress: bool = False,
                  purpose: str = "to evaluate") -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Read and preprocess (with `config`'s settings) the listed files: the rows kept, their pixels
    (N, S, S) and `skipped` with every unusable file added. Raises when none is usable."""
    folder = Path(folder)
    images, keep = [], []
    skipped = skipped.copy()
    for f in tqdm(files.file, desc="read", disable=not show_progress(progress)):
        r = read_file(folder / f, f)  # the same reading, checks and reasons as cxr predict
        if r.image is None:
            skipped.loc[len(skipped)] = (f, r.status.removeprefix("error: "))
        else:
            images.append(preprocess(r.image, config))
            keep.append(f)
    if not images:
        raise ValueError(f"No usable images in {folder} ({len(skipped)} files skipped): nothing {purpose}.")
    return files.set_index("file").loc[keep].reset_index(), np.stack(images), skipped
