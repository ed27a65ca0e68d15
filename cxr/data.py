"""The table every chapter starts from: the dataset folder and one row per image of the profile
(the split joined with the scan), and the audit twins with their originals.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .config import Config, get_config
from .dataset import find_dataset
from .scanning import main_subset, scan
from .splits import load_split


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
