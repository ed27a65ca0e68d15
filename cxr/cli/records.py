"""`cxr` commands for the experiment records the book shows: enhancement, comparisons, lung masks, lung models: each parser beside its handler.

The handlers import the package when they run, so that `cxr --help` does not load PyTorch."""
from __future__ import annotations

import argparse
from pathlib import Path


def _enhancement_parser(sub, on) -> None:
    p = sub.add_parser("enhancement", help="chapter 02's experiment: does CLAHE or gamma help a linear probe "
                                            "on validation? (make comparisons)")
    p.add_argument("--profile", choices=["full", "smoke"], help="default: $CXR_PROFILE or full")
    p.add_argument("--remake", action="store_true", help="measure again even if the record describes this data")
    p.set_defaults(func=_enhancement)


def _enhancement(args: argparse.Namespace) -> int:
    from cxr.report import enhancement_experiment

    config = args.config
    record = enhancement_experiment.enhancement_record(config, remake=args.remake, progress=True)
    print(enhancement_experiment.table(record).to_string())
    print("; ".join(record["verdicts"]))
    print(f"wrote {config.reports_dir / 'enhancement.json'}")
    return 0


def _compare_parser(sub, on) -> None:
    p = sub.add_parser("compare", help="the comparison record the book shows (the linear head, ResNet50 and "
                                        "before models beside the final one; make comparisons)")
    p.add_argument("--profile", choices=["full", "smoke"], help="default: $CXR_PROFILE or full")
    p.add_argument("--remake", action="store_true", help="measure again even if the record describes these models")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from cxr.report import comparisons

    config = args.config
    record = comparisons.comparison_record(config, remake=args.remake)
    for row in record["rows"]:
        print(", ".join(f"{k} {v}" for k, v in row.items()))
    print(record["tta"]["verdict"])
    print(f"wrote {comparisons.record_path(config)}")
    return 0


def _lung_masks_parser(sub, on) -> None:
    p = sub.add_parser("lung-masks", help="the lung segmenter's masks of the test split, per class, and whether "
                                           "mask shape alone tells the classes apart (reports/lung_masks.json)")
    p.add_argument("--weights", help="segmenter weights (default: cxr/weights/lung_segmenter.pt)")
    p.set_defaults(func=_lung_masks)


def _lung_masks(args: argparse.Namespace) -> int:
    from cxr.report import mask_audit

    r = mask_audit.mask_record(args.config, args.weights)
    for c, row in r["by_class"].items():
        print(f"{c}: {row['masks']} masks, area {row['area mean']:.3f} (sd {row['area sd']:.3f}), "
              f"balance {row['balance mean']:.2f}, failed {100 * row['failure rate']:.1f}%")
    p = r["shape_probe"]
    print(f"mask shape alone: balanced accuracy {100 * p['balanced_accuracy']:.1f}% (chance {100 * p['chance']:.0f}%), "
          f"macro AUC {p['macro_auc']:.3f}")
    return 0


def _lung_compare_parser(sub, on) -> None:
    p = sub.add_parser("lung-compare", parents=[on], help="the lung models against the whole-film model, "
                                                          "side by side, and the one the rule chooses (reports/lung_model.json)")
    p.add_argument("--runs", nargs="*", default=["lung-crop", "lung-crop+mask"],
                   help="lung runs of the profile to compare (default: lung-crop lung-crop+mask; missing ones are left out)")
    p.add_argument("--model", action="append", metavar="NAME=CHECKPOINT", help="another model to compare (repeatable)")
    p.add_argument("--out", help="record to write (default: <reports>/lung_model.json)")
    p.set_defaults(func=_lung_compare)


def _lung_compare(args: argparse.Namespace) -> int:
    from cxr.model import registry
    from cxr.report import lung_experiment

    config = args.config
    models = {"whole film": registry.whole_film(config)}
    for name in args.runs:
        try:
            models[name] = registry.find_run(name, config).checkpoint
        except registry.MissingModel as e:
            print(f"left out: {e}")
    for item in args.model or []:
        name, _, path = item.partition("=")
        models[name] = Path(path)
    out = Path(args.out) if args.out else config.reports_dir / "lung_model.json"
    rec = lung_experiment.record(models, config, out)
    print(lung_experiment.table(rec).to_string())
    print(f"chosen by the rule (validation only): {rec['chosen']}; wrote {out}")
    return 0


def _outside_compare_parser(sub, on) -> None:
    p = sub.add_parser("outside-compare", parents=[on], help="issue 38's candidates for hospitals the model has never "
                       "seen, measured alike (database, shortcut measures, outside films), and the one the rule "
                       "chooses (reports/outside.json)")
    p.add_argument("--model", action="append", metavar="NAME=CHECKPOINT",
                   help="use this checkpoint for one of the candidates' models (repeatable; default: the profile's runs)")
    p.add_argument("--out", help="record to write (default: <reports>/outside.json)")
    p.set_defaults(func=_outside_compare)


def _outside_compare(args: argparse.Namespace) -> int:
    from cxr.model import registry
    from cxr.report import outside_experiment

    config = args.config
    given = dict(item.partition("=")[::2] for item in args.model or [])
    models = {}
    for name in sorted({m for members, _ in outside_experiment.CANDIDATES.values() for m in members}):
        try:
            if name in given:
                models[name] = Path(given[name])
            elif name == "shipped":  # the whole-film model (the shipped file, or its whole-film member)
                models[name] = registry.whole_film(config)
            elif name == "whole-and-lungs":  # the shipped file when it is the two in one, else made in the cache
                models[name] = registry.whole_and_lungs_model(config, given.get("shipped"), given.get("lung-crop"))
            else:
                models[name] = registry.find_run(name, config).checkpoint
        except registry.MissingModel as e:
            print(f"left out: {e}")
    out = Path(args.out) if args.out else config.reports_dir / "outside.json"
    rec = outside_experiment.record(models, config, out, progress=True)
    shipped = registry.shipped(config).digest
    print(outside_experiment.table(rec, shipped).to_string())
    print(outside_experiment.measures(rec, shipped).to_string())
    print(f"chosen by the rule (validation floors, then the outside hospital's normals): {rec['chosen']}; wrote {out}")
    return 0


def add(sub, on) -> None:
    """Add this group's commands to `cxr`'s sub-parsers (`on`: the options of commands that run a model)."""
    _enhancement_parser(sub, on)
    _compare_parser(sub, on)
    _lung_masks_parser(sub, on)
    _lung_compare_parser(sub, on)
    _outside_compare_parser(sub, on)
