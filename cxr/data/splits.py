"""The committed split: near-duplicates found by perceptual hash and kept on one side, a
class-stratified 70/15/15 split of the groups, its file (`data/splits.csv`), and the fixed samples
(the smoke profile's, and stratified samples for probes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import CLASSES, Config, repo_root
from cxr.core.files import write_csv
from cxr.data.dataset import DataNotFoundError, find_dataset
from cxr.data.scanning import main_subset, scan

SPLITS_CSV = "splits.csv"


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


@dataclass(frozen=True)
class DuplicateGroups:
    """The duplicate pairs kept (exact, or near and correlated at least `corr`), the group of every
    image, and the counts chapter 01 states."""
    pairs: pd.DataFrame
    groups: np.ndarray
    sizes: np.ndarray
    mixed: int  # groups whose images carry two labels

    @property
    def multi(self) -> np.ndarray:
        """The groups with more than one image."""
        return np.flatnonzero(self.sizes > 1)

    def counts(self) -> pd.DataFrame:
        """The counts as chapter 01's table shows them."""
        return pd.Series({
            "exact duplicate pairs (identical bytes)": int((self.pairs.kind == "exact").sum()),
            "near duplicate pairs": int((self.pairs.kind == "near").sum()),
            "groups with more than one image": len(self.multi),
            "images in those groups": int(self.sizes[self.multi].sum()),
            "largest group": int(self.sizes.max()),
            "groups mixing two classes": self.mixed,
        }, name="count").to_frame()

    def spread(self, n: int = 6) -> pd.DataFrame:
        """`n` pairs spread evenly from the most to the least correlated, to look at."""
        shown = self.pairs.sort_values("corr", ascending=False)
        return shown.iloc[np.unique(np.linspace(0, len(shown) - 1, n).astype(int))]


def duplicate_groups(images: pd.DataFrame, candidates: pd.DataFrame, corr: float) -> DuplicateGroups:
    """The candidate pairs kept as duplicates (identical bytes, or thumbnails correlated at least
    `corr`) and the groups they make among `images`."""
    pairs = candidates[(candidates.kind == "exact") | (candidates["corr"] >= corr)]
    groups = group_ids(len(images), pairs)
    labels = pd.Series(images.label.to_numpy()).groupby(groups).nunique()
    return DuplicateGroups(pairs, groups, np.bincount(groups), int((labels > 1).sum()))


def straddling_groups(table: pd.DataFrame) -> int:
    """How many duplicate groups of a split table have images in two splits (the split's promise: none)."""
    return int(table.groupby("group").split.nunique().gt(1).sum())


def group_ids(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Connected components of the duplicate graph: one integer group per row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs.i.astype(int), pairs.j.astype(int))), shape=(n, n))
    return connected_components(graph, directed=False)[1]


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


def load_split(root: Path | None, config: Config, create: bool = True) -> pd.DataFrame:
    """The committed split of this dataset (created, deterministically, when it has none yet).

    In the smoke profile, a fixed stratified sample of it: the first files of each class and
    split in a seeded hash order.
    """
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
        write_csv(split, path)
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


def load_table(config: Config, root: str | Path | None = None) -> tuple[Path, pd.DataFrame]:
    """The dataset folder and one row per image of this profile: the split joined with the scan."""
    root = Path(root) if root else find_dataset()
    split = load_split(root, config)
    images, _ = main_subset(scan(root, config=config, progress=False))
    table = split.merge(images.drop(columns=["label"]), on="file", how="inner", validate="one_to_one")
    lost = len(split) - len(table)
    if lost:
        print(f"note: {lost} files of the split could not be read now and are left out (see `cxr data scan`).")
    return root, table.reset_index(drop=True)


def load_audit(config: Config, root: str | Path | None = None) -> pd.DataFrame:
    """Audit twins with their main-set twin's file and split (empty when the dataset has no audit subset)."""
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
