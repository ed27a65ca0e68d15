"""The `cxr` command line: `cxr data ...`, `cxr train`, `cxr evaluate`, `cxr audit`, `cxr adapt`, `cxr roi`,
`cxr predict`, `cxr export`."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import LUNG_INPUTS
from .runtime import DEVICE_ENV, DEVICES, device


def _data(args: argparse.Namespace) -> int:
    from . import dataset, scanning, splits
    from .config import get_config

    config = get_config(args.profile)
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


def _train(args: argparse.Namespace) -> int:
    import json

    from . import train
    from .config import get_config

    overrides = {k: v for k, v in dict(epochs=args.epochs, views=args.views, lr=args.lr, lungs=args.lungs).items()
                 if v is not None}
    if args.no_harmonise:
        overrides["harmonise"] = False
    if args.budget_min is not None:
        overrides["wall_budget_s"] = args.budget_min * 60
    config = get_config(args.profile, **overrides)
    print(config.describe())
    run = train.fit(args.approach, config, retrain=args.retrain)
    s = run.summary
    print(f"\nrun: {run.path}")
    print(f"training wall time: {s['train_wall_seconds'] / 60:.1f} min, epochs: {s.get('epochs')}")
    for split in ("val", "test"):
        m = s[split]
        sens = ", ".join(f"{c} {100 * v['sensitivity']:.1f}%" for c, v in m["per_class"].items())
        print(f"{split}: accuracy {100 * m['accuracy']:.2f}%, macro AUC {m['macro_auc']:.4f}; sensitivity: {sens}")
    if args.report:
        cmd = args.command_line or "cxr " + " ".join(args.argv)
        from .report import training_record

        report = training_record(run, cmd)
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.report} (inference {report['inference_images_per_second']:.0f} images/s)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_folder, format_summary

    result = evaluate_folder(args.data, args.checkpoint, args.out, split=args.split, thresholds_from=args.thresholds)
    print(format_summary(result))
    if args.out:
        print(f"\nwrote {args.out} (and .txt, .csv beside it)")
    else:
        print(json.dumps({k: result[k] for k in ("n", "accuracy", "macro_auc", "ece")}))
    return 0


def _roi(args: argparse.Namespace) -> int:
    import json

    from . import roi_cases, roi_format, roi_inputs, roi_model, roi_uncertainty

    if args.list:
        for name, (site, story) in roi_cases.PRESETS.items():
            print(f"{name:<22} {site.name} ({roi_inputs.WORKFLOW_NAMES[site.workflow]}, {site.operating_point})")
        return 0
    changes = {}
    for item in args.set or []:
        if "=" not in item:
            raise roi_inputs.InputError(f"--set {item!r}: write FIELD=VALUE, e.g. --set studies_per_year=80000")
        k, v = item.split("=", 1)
        changes[k.strip()] = v.strip()
    site = roi_cases.site_from(args.preset, changes)
    record = Path(args.evaluation) if args.evaluation else _default_record(args.data)
    perf = roi_inputs.performance(record, site.operating_point)
    result = roi_model.roi(site, perf)
    u = roi_uncertainty.psa(site, perf, n=args.draws, seed=args.seed)
    if args.json:
        print(json.dumps({"site": site.__dict__, "performance": perf.to_dict(), "result": result,
                          "psa": {k: v for k, v in u.items() if k != "net_values"}}, indent=1, default=str))
    else:
        print(roi_format.format_result(site, perf, result, u))
    return 0


def _export(args: argparse.Namespace) -> int:
    from . import registry, report
    from .config import get_config

    if args.remeasure:  # the shipped file's card, operating points and OOD statistics measured on its own weights
        out = report.export_model(registry.SHIPPED, registry.SHIPPED)
        print(f"measured {out} again on its own weights (weights unchanged: {registry.shipped().digest[:12]})")
        return 0
    run = Path(args.run) if args.run else registry.find_run("final", get_config("full")).path
    if not (run / "checkpoint.pt").exists():
        raise registry.MissingModel(f"{run} has no checkpoint.pt: pass a finished run folder, or train one with `cxr train`.")
    out = report.export_model(run, args.out or registry.SHIPPED)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, half precision) from {run.name}")
    return 0


def _enhancement(args: argparse.Namespace) -> int:
    from . import enhancement
    from .config import get_config

    config = get_config(args.profile)
    record = enhancement.enhancement_record(config, remake=args.remake, progress=True)
    print(enhancement.table(record).to_string())
    print("; ".join(record["verdicts"]))
    print(f"wrote {config.reports_dir / 'enhancement.json'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from . import comparisons
    from .config import get_config

    config = get_config(args.profile)
    record = comparisons.comparison_record(config, remake=args.remake)
    for row in record["rows"]:
        print(", ".join(f"{k} {v}" for k, v in row.items()))
    print(record["tta"]["verdict"])
    print(f"wrote {comparisons.record_path(config)}")
    return 0


def _reproduced(args: argparse.Namespace) -> int:
    from . import registry
    from .config import get_config
    from .files import write_json

    config = get_config(args.profile)
    record = registry.reproduce_check(config)
    out = write_json(record, args.out or config.reports_dir / "reproduce.json")
    if record["weights_equal"]:
        print(f"the retrained {record['retrained_run']} exports to the shipped weights bit for bit "
              f"(sha256 {record['shipped_sha256'][:16]})")
    else:
        print(f"the retrained {record['retrained_run']} differs from the shipped model ({record['shipped_from']}): "
              f"largest class-probability difference on the {record['test_images']:,} test images "
              f"{record['largest_probability_difference']:.2e}")
    print(f"wrote {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge(args)
    from . import predict, registry, results, site_check, walk

    shard = walk.parse_shard(args.shard)
    pred = predict.load(args.model)
    digest = registry.weights_digest(pred.checkpoint)
    counts = predict.Counts()
    writer = None
    verdict = _given_verdict(args, digest)
    if args.out:
        about = {"command": "cxr " + " ".join(sys.argv[1:]), "model": pred.checkpoint.name,
                 "model_sha256": digest, "threshold": args.threshold,
                 "paths": [str(p) for p in args.paths], "shard": args.shard}
        writer = results.Writer(args.out, about)
        if verdict is None and writer.earlier_site:  # a resumed run keeps the verdict it recorded
            verdict = site_check.Verdict.from_record(writer.earlier_site)

    def decided(v):
        if writer is not None:
            writer.note({"site": v.record()})
        print(site_check.advice(v), file=sys.stderr)

    if verdict is not None and writer is not None:
        writer.note({"site": verdict.record()})
    run = predict.stream(args.paths, pred, args.threshold, args.cam, args.batch, args.workers, shard,
                         done=writer.done if writer else None, counts=counts, progress=True)
    run = predict.site_checked(run, pred, verdict, on_verdict=decided)
    if writer is None:
        import pandas as pd

        rows = pd.DataFrame([r for b in run for r in b], columns=results.COLUMNS)
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(rows.drop(columns=["notes", "cam", "bytes", "modified_ns"]).round(4).to_string(index=False))
    else:
        try:
            for rows in run:
                writer.append(rows)
        except KeyboardInterrupt:
            writer.close()
            print(f"\ninterrupted: {writer.resumed + writer.written:,} rows are in {writer.journal}; the same command "
                  "goes on from there", file=sys.stderr)
            return 130
        out = writer.finish({"ignored": counts.tally.ignored})
        print(f"wrote {out}: {counts.rows:,} new rows" + (f", {counts.skipped:,} files already there (skipped)"
                                                          if counts.skipped else ""))
    if counts.tally.line():
        print(counts.tally.line(), file=sys.stderr)
    if counts.errors:
        print(f"\n{counts.errors:,} of {counts.rows:,} inputs could not be read (see status); the rest were predicted.",
              file=sys.stderr)
    print("Research use only; not for clinical use.")
    return 1 if counts.errors else 0


def _given_verdict(args: argparse.Namespace, digest: str):
    """The site verdict the command line fixes: --site-check off, or a site profile (--site)."""
    from . import site_check

    if args.site_check == "off":
        return site_check.Verdict(site_check.UNCHECKED, 0, reference="turned off (--site-check off)")
    if args.site:
        return site_check.read_profile(args.site, digest)
    return None


def _site_check(args: argparse.Namespace) -> int:
    """`cxr site-check FOLDER`: the verdict on a folder; its metrics when labelled; a report; a profile."""
    from . import predict, registry, site_check, site_folder
    from .files import write_json

    if args.measure:
        from . import site_record
        from .config import get_config

        record = site_record.site_record(get_config(), remake=True, progress=True)
        print(site_record.false_alarm_table(record).to_string())
        print(site_record.power_table(record).to_string())
        print(f"wrote {get_config().reports_dir / 'site_check.json'}")
        return 0
    if not args.folder:
        raise ValueError("cxr site-check needs FOLDER (the site's films), or --measure")
    pred = predict.load(args.model)
    if pred.site is None:
        raise ValueError(f"{pred.checkpoint.name} carries no site reference: use the shipped model, an adapted one, "
                         "or attach one with cxr export --remeasure")
    site = site_folder.check_folder(args.folder, pred, workers=args.workers)
    v = site.verdict
    print(f"site check: {v.verdict}  ({v.films:,} films; mean rank {v.mean_rank:.3f} against 0.5 + {v.margin} "
          f"among {v.reference or 'the reference'}; p = {v.p_value:.2e})" if v.films >= v.min_films else
          f"site check: {v.verdict} ({v.films} films)")
    print("the model calls them: " + ", ".join(f"{c} {100 * s:.1f}%" for c, s in v.calls.items()))
    if site.unread:
        print(f"{site.unread:,} files were not read or not radiographs (cxr predict lists them with their status)")
    found = site_folder.metrics_at(site, pred.points, seed=0)
    if found:
        from .metrics import operating_point_table

        print(site_folder.metrics_table(found).to_string())
        if found.get("operating_points"):
            print("\nat the operating points chosen on the database's validation split:")
            print(operating_point_table(found["operating_points"], where="site").to_string())
    print("\n" + site_check.advice(v))
    if args.out:
        write_json(site_check.profile(v, registry.weights_digest(pred.checkpoint)), args.out)
        print(f"wrote {args.out}: pass it to cxr predict --site {args.out} (every shard then uses this verdict)")
    if args.report:
        from . import site_report

        curve = site_report.adaptation_curve(args.folder, site, pred)
        out = site_report.write(args.report, site, found, pred, curve)
        print(f"wrote {out} (print it to PDF with: chromium --headless --print-to-pdf=site.pdf {out})")
    print("Research use only; not for clinical use.")
    return 0


def _merge(args: argparse.Namespace) -> int:
    """`cxr predict --merge OUT PART...`: shard parts into one file, every file once, or say what is wrong."""
    from . import results, walk

    parts = [Path(p) for p in args.paths]
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        print(f"error: no such results file: {', '.join(absent)}", file=sys.stderr)
        return 2
    roots = sorted({r for p in parts for r in (results.read_run(p) or {}).get("paths", [])})
    expected = None
    if roots and all(Path(r).exists() for r in roots):
        expected = (it.shown for it in walk.items(roots) if walk.looks_like_image(it))
    report = results.merge(args.merge, parts, expected)
    pr = report["problems"]
    print(f"wrote {report['out']}: {report['rows']:,} files from {len(parts)} parts")
    said = {"doubled": "in more than one part (one row kept)", "missing": "with no row in any part",
            "missing_shards": "shards with no part", "unfinished": "parts whose run did not finish (rerun its "
                                                                   "command: it resumes)",
            "mixed": "models: the parts were made by different models"}
    for k, text in said.items():
        if pr[k]:
            names = ", ".join(map(str, pr[k][:5])) + (", ..." if len(pr[k]) > 5 else "")
            print(f"problem: {len(pr[k]):,} {'files ' if k in ('doubled', 'missing') else ''}{text}: {names}",
                  file=sys.stderr)
    if expected is None:
        print("note: the parts' folders are not here, so missing files were checked by shard and by finished runs "
              "only", file=sys.stderr)
    ok = not any(pr.values())
    print("every file is there exactly once" if ok else "the merged file has problems (above)")
    return 0 if ok else 1


def _audit(args: argparse.Namespace) -> int:
    from . import audit, registry
    from .config import get_config
    from .files import write_json
    from .dataset import external_dir

    config = get_config(args.profile)
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


def _adapt(args: argparse.Namespace) -> int:
    from . import adapt
    from .config import get_config
    from .registry import default_checkpoint

    checkpoint = Path(args.model) if args.model else default_checkpoint()
    out = Path(args.out) if args.out else Path(f"cxr-adapted-{Path(args.data).resolve().name}.pt")
    r = adapt.adapt(checkpoint, args.data, out, method=args.method, config=get_config(args.profile), progress=True)
    print(f"adapted {checkpoint.name} ({r['method']}) on {', '.join(f'{n} {c}' for c, n in r['films'].items())} "
          f"local films; {len(r['skipped'])} skipped")
    for s in r["skipped"][:20]:
        print(f"  skipped {s['file']}: {s['reason']}")
    sens = ", ".join(f"{c} {100 * v:.1f}%" for c, v in r["database_test_sensitivity"].items())
    print(f"database test split after adaptation: accuracy {100 * r['database_test_accuracy']:.1f}%; sensitivity {sens}")
    print(f"wrote {out}. Check it on local films it was not adapted on before use "
          f"(cxr evaluate --data HELD_OUT_FOLDER --checkpoint {out}).")
    return 0


def _segmenter(args: argparse.Namespace) -> int:
    from . import segmenter_train
    from .config import repo_root
    from .runtime import device

    record = Path(args.record) if args.record else repo_root() / "reports" / "segmenter.json"
    r = segmenter_train.train(args.data, args.out, record, epochs=args.epochs, seed=args.seed, device=str(device()))
    h = r["held_out"]
    print(f"lung segmenter: held-out Dice {h['dice_mean']:.4f} (patient mean 95% interval "
          f"{h['dice_patient_mean_ci'][0]:.4f}-{h['dice_patient_mean_ci'][1]:.4f}; target {r['target_dice']}) on "
          f"{r['split']['held_out_images']} films of {r['split']['held_out_patients']} patients; "
          f"{h['failed']} masks failed the check; {r['weights_bytes'] / 1e6:.2f} MB; {r['wall_seconds'] / 60:.1f} min")
    print(f"wrote {r['weights']} and {record}")
    return 0


def _lung_masks(args: argparse.Namespace) -> int:
    from . import mask_audit
    from .config import get_config

    r = mask_audit.mask_record(get_config(args.profile), args.weights)
    for c, row in r["by_class"].items():
        print(f"{c}: {row['masks']} masks, area {row['area mean']:.3f} (sd {row['area sd']:.3f}), "
              f"balance {row['balance mean']:.2f}, failed {100 * row['failure rate']:.1f}%")
    p = r["shape_probe"]
    print(f"mask shape alone: balanced accuracy {100 * p['balanced_accuracy']:.1f}% (chance {100 * p['chance']:.0f}%), "
          f"macro AUC {p['macro_auc']:.3f}")
    return 0


def _lung_compare(args: argparse.Namespace) -> int:
    from . import lung_model, registry
    from .config import get_config

    config = get_config(args.profile)
    models = {"whole film (shipped)": registry.shipped(config).checkpoint}
    for name in args.runs:
        try:
            models[name] = registry.find_run(name, config).checkpoint
        except registry.MissingModel as e:
            print(f"left out: {e}")
    for item in args.model or []:
        name, _, path = item.partition("=")
        models[name] = Path(path)
    out = Path(args.out) if args.out else config.reports_dir / "lung_model.json"
    rec = lung_model.record(models, config, out)
    print(lung_model.table(rec).to_string())
    print(f"chosen by the rule (validation only): {rec['chosen']}; wrote {out}")
    return 0


def _default_record(which: str) -> Path:
    from .config import get_config

    reports = get_config().reports_dir
    return reports / ("evaluation.json" if which == "test" else "external.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxr", description=__doc__)
    parser.add_argument("--profile", choices=("full", "smoke"), default=None,
                        help="configuration profile (default: $CXR_PROFILE, else full)")
    sub = parser.add_subparsers(dest="command", required=True)
    # every command that runs a model takes --device
    on = argparse.ArgumentParser(add_help=False)
    on.add_argument("--device", choices=DEVICES, default=None,
                    help=f"where models run: auto (CUDA when there is a GPU, else the CPU), cpu or cuda "
                         f"(default: ${DEVICE_ENV}, else auto)")

    p = sub.add_parser("data", help="find, scan, split or import the dataset")
    p.add_argument("action", choices=("where", "scan", "split", "import"))
    p.add_argument("path", nargs="?", help="dataset folder (import: the Kaggle zip or folder)")
    p.add_argument("--force", action="store_true", help="split: overwrite an existing split file")
    p.set_defaults(func=_data)

    p = sub.add_parser("train", parents=[on], help="train a model on the split of the current profile")
    p.add_argument("--approach", choices=("finetune", "linear", "resnet50"), default="finetune")
    p.add_argument("--epochs", type=int)
    p.add_argument("--views", type=int, help="augmented views per training image (finetune)")
    p.add_argument("--lr", type=float)
    p.add_argument("--budget-min", type=float, help="wall-time budget in minutes")
    p.add_argument("--no-harmonise", action="store_true", help="no processing-chain augmentation")
    p.add_argument("--lungs", choices=LUNG_INPUTS,
                   help="the input: the whole film (none, the default), or its lung fields as the lung segmenter "
                        "draws them: cropped to their box with a margin, masked outside, or both")
    p.add_argument("--retrain", action="store_true", help="train again even if an identical run exists")
    p.add_argument("--report", help="also write a JSON report (e.g. reports/training.json)")
    p.add_argument("--command-line", help=argparse.SUPPRESS)
    p.set_defaults(func=_train)

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

    p = sub.add_parser("adapt", parents=[on], help="adapt the model to a site from the site's own labelled films")
    p.add_argument("--data", required=True, help="the site's films in the database layout (<class>/images/*.jpg)")
    p.add_argument("--model", help="checkpoint to adapt (default: as cxr evaluate)")
    p.add_argument("--method", choices=("head", "prior"), default="head",
                   help="head: refit the last layer (default); prior: the class biases only")
    p.add_argument("--out", help="adapted model to write (default: ./cxr-adapted-<folder>.pt)")
    p.set_defaults(func=_adapt)

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

    p = sub.add_parser("predict", parents=[on], help="the model on image files or folders (PNG, JPEG, TIFF, DICOM)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="files or folders (walked, nested; DICOM found by content); with --merge, the parts")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--threshold", default="argmax",
                   help="decision rule: argmax (default) or an operating point of the model, e.g. covid@95, abnormal@99")
    p.add_argument("--cam", metavar="DIR", help="write a Grad-CAM overlay PNG per image here")
    p.add_argument("--out", help="results file (.csv, .parquet or .json), written as it goes; the same command "
                                 "again skips the files already in it and predicts the rest")
    p.add_argument("--shard", metavar="K/N", help="take the K-th of N shares of the files (a hash of each path), "
                                                  "for N machines; combine the parts with --merge")
    p.add_argument("--merge", metavar="OUT", help="combine the shard parts given as PATH into OUT, checking that no "
                                                  "file is missing or doubled")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that decode while the model runs (default: cores - 1, at most 4; 0: none)")
    p.add_argument("--batch", type=int, default=None, help="images per forward pass (default 32; 256 on a GPU)")
    p.add_argument("--site", metavar="SITE.json",
                   help="the site verdict of `cxr site-check FOLDER --out SITE.json` (shards then agree), instead of "
                        "deciding it from the first 256 films")
    p.add_argument("--site-check", choices=("on", "off"), default="on",
                   help="off: no site check (rows read ok even where the films differ from the database)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("site-check", help="do a folder's films come from the database the model describes? "
                                          "(and, for a labelled folder, the site's metrics)")
    p.add_argument("folder", nargs="?", metavar="FOLDER",
                   help="the site's films (any tree of images or DICOM; the database layout <class>/images/* is "
                        "read as labelled)")
    p.add_argument("--model", help="checkpoint (default: the shipped model; an adapted model carries its site)")
    p.add_argument("--out", metavar="SITE.json", help="write the verdict as a site profile for cxr predict --site")
    p.add_argument("--report", metavar="SITE.html", help="write a one-page validation report for the site")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (as cxr predict)")
    p.add_argument("--measure", action="store_true",
                   help="instead: measure the check's false alarms on database folders and its power on the outside "
                        "sets (reports/site_check.json)")
    p.set_defaults(func=_site_check)

    p = sub.add_parser("export", help="write the shippable model (half precision, operating points, model card)")
    p.add_argument("--run", help="run folder (default: the full profile's final run)")
    p.add_argument("--out", help="file to write (default: the package's shipped model)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the shipped file again on its own weights and rewrite its card (no run needed)")
    p.set_defaults(func=_export)

    p = sub.add_parser("enhancement", help="chapter 02's experiment: does CLAHE or gamma help a linear probe "
                                            "on validation? (make comparisons)")
    p.add_argument("--profile", choices=["full", "smoke"], help="default: $CXR_PROFILE or full")
    p.add_argument("--remake", action="store_true", help="measure again even if the record describes this data")
    p.set_defaults(func=_enhancement)

    p = sub.add_parser("compare", help="the comparison record the book shows (the linear head, ResNet50 and "
                                        "before models beside the final one; make comparisons)")
    p.add_argument("--profile", choices=["full", "smoke"], help="default: $CXR_PROFILE or full")
    p.add_argument("--remake", action="store_true", help="measure again even if the record describes these models")
    p.set_defaults(func=_compare)

    p = sub.add_parser("segmenter", parents=[on], help="train the lung segmenter on cxr-lung-masks (patients held out)")
    p.add_argument("--data", help="the cxr-lung-masks folder (default: $CXR_LUNG_MASKS_DIR, else ../shared/cxr-lung-masks)")
    p.add_argument("--out", help="weights to write (default: the package's cxr/weights/lung_segmenter.pt)")
    p.add_argument("--record", help="record to write (default: reports/segmenter.json)")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_segmenter)

    p = sub.add_parser("lung-masks", help="the lung segmenter's masks of the test split, per class, and whether "
                                           "mask shape alone tells the classes apart (reports/lung_masks.json)")
    p.add_argument("--weights", help="segmenter weights (default: cxr/weights/lung_segmenter.pt)")
    p.set_defaults(func=_lung_masks)

    p = sub.add_parser("lung-compare", parents=[on], help="the lung models against the shipped whole-film model, "
                                                          "side by side, and the one the rule chooses (reports/lung_model.json)")
    p.add_argument("--runs", nargs="*", default=["lung-crop", "lung-crop+mask"],
                   help="lung runs of the profile to compare (default: lung-crop lung-crop+mask; missing ones are left out)")
    p.add_argument("--model", action="append", metavar="NAME=CHECKPOINT", help="another model to compare (repeatable)")
    p.add_argument("--out", help="record to write (default: <reports>/lung_model.json)")
    p.set_defaults(func=_lung_compare)

    p = sub.add_parser("reproduced", help="does the retrained final run give the shipped model? (make reproduce)")
    p.add_argument("--out", help="record to write (default: <reports>/reproduce.json)")
    p.set_defaults(func=_reproduced)

    args = parser.parse_args(argv)
    from .runtime import tune_malloc

    tune_malloc()
    # progress and cache messages (cxr.train's log) on stderr, without touching a caller's logging
    log = logging.getLogger("cxr")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "device", None):
        os.environ[DEVICE_ENV] = args.device  # the notebooks and every function read it through runtime.device()
    if args.command == "data" and args.action == "import" and not args.path:
        parser.error("cxr data import needs PATH: the Kaggle zip or its unpacked folder")
    try:
        if hasattr(args, "device"):
            log.info("models run on %s", device())  # fails here, clearly, for cuda without a GPU
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"cxr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
