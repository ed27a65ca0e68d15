"""The `cxr` command line: `cxr data ...`, `cxr train`, `cxr evaluate`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data(args: argparse.Namespace) -> int:
    from . import data
    from .config import get_config

    config = get_config(args.profile)
    if args.action == "import":
        data.import_kaggle(args.path)
        return 0
    root = Path(args.path) if args.path else data.find_dataset()
    if args.action == "where":
        print(root)
        return 0
    s = data.scan(root, config=config)
    if args.action == "scan":
        counts = s.images.groupby(["subset", "label"]).size()
        print(f"{root}: {len(s.images)} images")
        print(counts.to_string())
        if len(s.skipped):
            print(f"\n{len(s.skipped)} files skipped:")
            print(s.skipped.to_string(index=False))
        return 0
    if args.action == "split":
        path = data.splits_path(root)
        if path.exists() and not args.force:
            print(f"{path} exists; pass --force to make it again.")
            return 1
        path.unlink(missing_ok=True)
        split = data.load_split(root, config.replace(profile="full"))
        print(split.groupby(["label", "split"]).size().unstack().to_string())
        return 0
    raise AssertionError(args.action)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxr", description=__doc__)
    parser.add_argument("--profile", choices=("full", "smoke"), default=None,
                        help="configuration profile (default: $CXR_PROFILE, else full)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="find, scan, split or import the dataset")
    p.add_argument("action", choices=("where", "scan", "split", "import"))
    p.add_argument("path", nargs="?", help="dataset folder (import: the Kaggle zip or folder)")
    p.add_argument("--force", action="store_true", help="split: overwrite an existing split file")
    p.set_defaults(func=_data)

    args = parser.parse_args(argv)
    if args.command == "data" and args.action == "import" and not args.path:
        parser.error("cxr data import needs PATH: the Kaggle zip or its unpacked folder")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"cxr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
