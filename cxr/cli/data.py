"""`cxr` commands for finding, scanning, splitting and importing the dataset: each parser beside its handler.

The handlers import the package when they run, so that `cxr --help` does not load PyTorch."""
from __future__ import annotations

import argparse
from pathlib import Path


def _data_parser(sub, on) -> None:
    p = sub.add_parser("data", help="find, scan, split or import the dataset")
    p.add_argument("action", choices=("where", "scan", "split", "import"))
    p.add_argument("path", nargs="?", help="dataset folder (import: the Kaggle zip or folder)")
    p.add_argument("--force", action="store_true", help="split: overwrite an existing split file")
    p.set_defaults(func=_data)


def _data(args: argparse.Namespace) -> int:
    from cxr.data import dataset, scanning, splits

    config = args.config
    if args.action == "import":
        dataset.import_kaggle(args.path)
        return 0
    root = Path(args.path) if args.path else dataset.find_dataset()
    if args.action == "where":
        print(root)
        return 0
    s = scanning.scan(root, config=config)
    if args.action == "scan":
        counts = s.images.groupby(["subset", "label"]).size()
        print(f"{root}: {len(s.images)} images")
        print(counts.to_string())
        if len(s.skipped):
            print(f"\n{len(s.skipped)} files skipped:")
            print(s.skipped.to_string(index=False))
        return 0
    if args.action == "split":
        path = splits.splits_path(root)
        if path.exists() and not args.force:
            print(f"{path} exists; pass --force to make it again.")
            return 1
        path.unlink(missing_ok=True)
        split = splits.load_split(root, config.replace(profile="full"))
        print(split.groupby(["label", "split"]).size().unstack().to_string())
        return 0
    raise AssertionError(args.action)


def add(sub, on) -> None:
    """Add this group's commands to `cxr`'s sub-parsers (`on`: the options of commands that run a model)."""
    _data_parser(sub, on)
