"""`cxr` commands for judging a model on labelled films: evaluation, the shortcut audit, adaptation to a site: each parser beside its handler.

The handlers import the package when they run, so that `cxr --help` does not load PyTorch."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _evaluate_parser(sub, on) -> None:
    p = sub.add_parser("evaluate", parents=[on], help="evaluate a model on any labelled folder in the Kaggle layout")
    p.add_argument("--data", required=True, help="folder with <class>/images/*.png|jpg")
    p.add_argument("--checkpoint", help="checkpoint.pt (default: the final model of the latest full run)")
    p.add_argument("--out", help="JSON file to write (a .txt summary and .csv predictions go beside it)")
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="only this split's files of the folder's split file (e.g. the test split of data/splits.csv)")
    p.add_argument("--thresholds", metavar="RECORD",
                   help="apply the operating points of this evaluation record (made with --split test; they were "
                        "chosen on its validation split), e.g. reports/evaluation.json")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from cxr.assess.evaluate import evaluate_folder, format_summary

    result = evaluate_folder(args.data, args.checkpoint, args.out, split=args.split, config=args.config,
                             thresholds_from=args.thresholds)
    print(format_summary(result))
    if args.out:
        print(f"\nwrote {args.out} (and .txt, .csv beside it)")
    else:
        print(json.dumps({k: result[k] for k in ("n", "accuracy", "macro_auc", "ece")}))
    return 0


def _audit_parser(sub, on) -> None:
    p = sub.add_parser("audit", parents=[on], help="the shortcut audit of a run (twins, maps, occlusion), or several runs compared")
    p.add_argument("--run", help="run folder (default: the profile's final model)")
    p.add_argument("--before", help="run folder of the same recipe without harmonisation (default: the profile's, "
                                    "made by `cxr train --no-harmonise`)")
    p.add_argument("--no-before", action="store_true", help="audit without the before/after comparison")
    p.add_argument("--compare", nargs="+", metavar="RUN",
                   help="instead: compare these run folders on validation, test and external, and mark the one "
                        "the rule chooses from validation numbers")
    p.add_argument("--names", nargs="+", help="with --compare: a name per run, in the same order")
    p.add_argument("--out", help="JSON record to write, e.g. reports/explain.json or reports/mitigation.json")
    p.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from cxr.assess import audit
    from cxr.core.files import write_json
    from cxr.data.dataset import external_dir
    from cxr.model import registry

    config = args.config
    if args.compare:
        names = args.names or [Path(r).name for r in args.compare]
        if len(names) != len(args.compare):
            raise ValueError(f"--names gives {len(names)} names for {len(args.compare)} runs.")
        runs = {n: registry.load_run(r) for n, r in zip(names, args.compare)}
        record = audit.compare(runs, config, external_dir=external_dir())
        print(audit.comparison_table(record).round(1).to_string())
        print(f"\nchosen by the rule (validation numbers only): {record['chosen']}")
    else:
        run = registry.from_run(registry.load_run(args.run), config) if args.run else registry.final_model(config)
        before = None
        if not args.no_before:  # a missing "before" run stops here with the command that trains it
            before = registry.load_run(args.before) if args.before else registry.comparison_run("before", config)
        record = audit.shortcut_audit(run, config, before=before, progress=True).record
        record["command"] = "cxr " + " ".join(args.argv)
        print(f"twin agreement {100 * record['twin_agreement']:.1f}% (target {100 * record['targets']['twin_agreement']:.0f}%) "
              f"on {record['twins_evaluated']} twins; lungs hidden accuracy {100 * record['occlusion']['lungs_hidden_accuracy']:.1f}%")
        print("verdicts:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in record["verdicts"].items()))
    if args.out:
        write_json(record | {"command": "cxr " + " ".join(args.argv)}, args.out)
        print(f"wrote {args.out}")
    return 0


def _adapt_parser(sub, on) -> None:
    p = sub.add_parser("adapt", parents=[on], help="adapt the model to a site from the site's own labelled films")
    p.add_argument("--data", required=True, help="the site's films in the database layout (<class>/images/*.jpg)")
    p.add_argument("--model", help="checkpoint to adapt (default: as cxr evaluate)")
    p.add_argument("--method", choices=("head", "prior"), default="head",
                   help="head: refit the last layer (default); prior: the class biases only")
    p.add_argument("--out", help="adapted model to write (default: ./cxr-adapted-<folder>.pt)")
    p.set_defaults(func=_adapt)


def _adapt(args: argparse.Namespace) -> int:
    from cxr.assess import adapt
    from cxr.model.registry import default_checkpoint

    checkpoint = Path(args.model) if args.model else default_checkpoint(args.config)
    out = Path(args.out) if args.out else Path(f"cxr-adapted-{Path(args.data).resolve().name}.pt")
    r = adapt.adapt(checkpoint, args.data, out, method=args.method, config=args.config, progress=True)
    print(f"adapted {checkpoint.name} ({r['method']}) on {', '.join(f'{n} {c}' for c, n in r['films'].items())} "
          f"local films; {len(r['skipped'])} skipped")
    for s in r["skipped"][:20]:
        print(f"  skipped {s['file']}: {s['reason']}")
    sens = ", ".join(f"{c} {100 * v:.1f}%" for c, v in r["database_test_sensitivity"].items())
    print(f"database test split after adaptation: accuracy {100 * r['database_test_accuracy']:.1f}%; sensitivity {sens}")
    print(f"wrote {out}. Check it on local films it was not adapted on before use "
          f"(cxr evaluate --data HELD_OUT_FOLDER --checkpoint {out}).")
    return 0


def add(sub, on) -> None:
    """Add this group's commands to `cxr`'s sub-parsers (`on`: the options of commands that run a model)."""
    _evaluate_parser(sub, on)
    _audit_parser(sub, on)
    _adapt_parser(sub, on)
