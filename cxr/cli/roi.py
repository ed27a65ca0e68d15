"""`cxr` commands for what the model could be worth at a site: each parser beside its handler.

The handlers import the package when they run, so that `cxr --help` does not load PyTorch."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _roi_parser(sub, on) -> None:
    p = sub.add_parser("roi", help="what the model could be worth at a site (the business chapter's calculator)")
    p.add_argument("--preset", default="default", help="a use case (see --list; default: default)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="change one input (repeatable)")
    p.add_argument("--data", choices=("test", "external"), default="test",
                   help="whose measured performance: the database test split or the external radiographs")
    p.add_argument("--evaluation", metavar="RECORD", help="an evaluation record to read performance from instead")
    p.add_argument("--draws", type=int, default=2000, help="draws of the uncertainty analysis (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--list", action="store_true", help="list the presets and stop")
    p.set_defaults(func=_roi)


def _roi(args: argparse.Namespace) -> int:
    from cxr.roi import cases, format, inputs, model, uncertainty

    if args.list:
        for name, (site, story) in cases.PRESETS.items():
            print(f"{name:<22} {site.name} ({inputs.WORKFLOW_NAMES[site.workflow]}, {site.operating_point})")
        return 0
    changes = {}
    for item in args.set or []:
        if "=" not in item:
            raise inputs.InputError(f"--set {item!r}: write FIELD=VALUE, e.g. --set studies_per_year=80000")
        k, v = item.split("=", 1)
        changes[k.strip()] = v.strip()
    site = cases.site_from(args.preset, changes)
    record = Path(args.evaluation) if args.evaluation else _default_record(args.data, args.config)
    perf = inputs.performance(record, site.operating_point)
    result = model.roi(site, perf)
    u = uncertainty.psa(site, perf, n=args.draws, seed=args.seed)
    if args.json:
        print(json.dumps({"site": site.__dict__, "performance": perf.to_dict(), "result": result,
                          "psa": {k: v for k, v in u.items() if k != "net_values"}}, indent=1, default=str))
    else:
        print(format.format_result(site, perf, result, u))
    return 0


def _default_record(which: str, config) -> Path:
    reports = config.reports_dir
    return reports / ("evaluation.json" if which == "test" else "external.json")


def add(sub, on) -> None:
    """Add this group's commands to `cxr`'s sub-parsers (`on`: the options of commands that run a model)."""
    _roi_parser(sub, on)
