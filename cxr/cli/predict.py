"""`cxr` commands for the model on a hospital's films: predictions on folders and PACS archives, and the site check: each parser beside its handler.

The handlers import the package when they run, so that `cxr --help` does not load PyTorch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _predict_parser(sub, on) -> None:
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
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="run the shards on a Dask cluster: a scheduler's address (tcp://host:8786), or local:N for N "
                        "worker processes here; with --shards and --out (the parts go to OUT.parts/, then are merged)")
    p.add_argument("--shards", type=int, default=None, help="with --dask: how many shards (default: 4 per worker)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that decode while the model runs (default: cores - 1, at most 4; 0: none)")
    p.add_argument("--batch", type=int, default=None, help="images per forward pass (default 32; 256 on a GPU)")
    p.add_argument("--site", metavar="SITE.json",
                   help="the site verdict of `cxr site-check FOLDER --out SITE.json` (shards then agree), instead of "
                        "deciding it from the first 256 films")
    p.add_argument("--site-check", choices=("on", "off"), default="on",
                   help="off: no site check (rows read ok even where the films differ from the database)")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge(args)
    if args.dask:
        return _on_dask(args)
    from cxr.assess import predict, results
    from cxr.data import walk
    from cxr.model import registry, site_check

    shard = walk.parse_shard(args.shard)
    pred = predict.load(args.model, args.config)
    print(f"backend: {pred.fast.backend.name} ({pred.fast.backend.reason})", file=sys.stderr)
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


def _site_check_parser(sub, on) -> None:
    p = sub.add_parser("site-check", parents=[on], help="do a folder's films come from the database the model describes? "
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


def _site_check(args: argparse.Namespace) -> int:
    """`cxr site-check FOLDER`: the verdict on a folder; its metrics when labelled; a report; a profile."""
    from cxr.assess import predict, site_folder
    from cxr.core.files import write_json
    from cxr.model import registry, site_check

    if args.measure:
        from cxr.report import site_record

        record = site_record.site_record(args.config, remake=True, progress=True)
        print(site_record.false_alarm_table(record).to_string())
        print(site_record.power_table(record).to_string())
        print(f"wrote {args.config.reports_dir / 'site_check.json'}")
        return 0
    if not args.folder:
        raise ValueError("cxr site-check needs FOLDER (the site's films), or --measure")
    pred = predict.load(args.model, args.config)
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
        from cxr.core.metrics import operating_point_table

        print(site_folder.metrics_table(found).to_string())
        if found.get("operating_points"):
            print("\nat the operating points chosen on the database's validation split:")
            print(operating_point_table(found["operating_points"], where="site").to_string())
    print("\n" + site_check.advice(v))
    if args.out:
        write_json(site_check.profile(v, registry.weights_digest(pred.checkpoint)), args.out)
        print(f"wrote {args.out}: pass it to cxr predict --site {args.out} (every shard then uses this verdict)")
    if args.report:
        from cxr.report import site_report

        curve = site_report.adaptation_curve(args.folder, site, pred)
        out = site_report.write(args.report, site, found, pred, curve)
        print(f"wrote {out} (print it to PDF with: chromium --headless --print-to-pdf=site.pdf {out})")
    print("Research use only; not for clinical use.")
    return 0


def _backends_parser(sub, on) -> None:
    p = sub.add_parser("backends", parents=[on],
                       help="which backends run the model here, and the one --backend picks (makes its ONNX file once)")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.set_defaults(func=_backends)


def _backends(args: argparse.Namespace) -> int:
    """`cxr backends`: every backend's state here, and what --backend (default auto) chose and why."""
    from cxr.assess import predict
    from cxr.model import backends

    pred = predict.load(args.model, args.config)
    for name in ("torch", *backends.PREFERENCE):
        print(f"{name:12s} {'installed' if backends.installed(name) else 'not installed'}")
    chosen = pred.fast.backend
    print(f"--backend {args.config.backend}: {chosen.name} ({chosen.reason})")
    return 0


def _given_verdict(args: argparse.Namespace, digest: str):
    """The site verdict the command line fixes: --site-check off, or a site profile (--site)."""
    from cxr.model import site_check

    if args.site_check == "off":
        return site_check.Verdict(site_check.UNCHECKED, 0, reference="turned off (--site-check off)")
    if args.site:
        return site_check.read_profile(args.site, digest)
    return None


def _on_dask(args: argparse.Namespace) -> int:
    """`cxr predict PATHS --dask SCHEDULER --out OUT`: the shards on a Dask cluster, then the merge."""
    from cxr.cli import cluster

    if not args.out:
        raise ValueError("--dask needs --out (the merged results; the parts go to OUT.parts/)")
    if args.shard:
        raise ValueError("--dask makes the shards itself: leave out --shard")
    flags = {f: getattr(args, f.lstrip("-").replace("-", "_")) for f in cluster.PASSED_ON}
    options = [x for f, v in flags.items() if v not in (None, "") for x in (f, str(v))]
    parts = Path(args.out + ".parts")
    with cluster.client_for(args.dask) as client:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        shards = args.shards or 4 * workers
        print(f"{shards} shards on {workers} Dask workers ({args.dask}); parts in {parts}/", file=sys.stderr)
        done = cluster.predict_on(client, args.paths, shards, parts, options, profile=args.config.profile)
    return _merge(argparse.Namespace(merge=args.out, paths=[d["part"] for d in done]))


def _merge(args: argparse.Namespace) -> int:
    """`cxr predict --merge OUT PART...`: shard parts into one file, every file once, or say what is wrong."""
    from cxr.assess import results
    from cxr.data import walk

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


def add(sub, on) -> None:
    """Add this group's commands to `cxr`'s sub-parsers (`on`: the options of commands that run a model)."""
    _predict_parser(sub, on)
    _site_check_parser(sub, on)
    _backends_parser(sub, on)
