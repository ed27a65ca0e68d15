"""`cxr` commands for making models: training, the shippable export, the lung segmenter, and whether a retrained model is the shipped one: each parser beside its handler.

The handlers import the package when they run, so that `cxr --help` does not load PyTorch."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from cxr.core.config import LUNG_INPUTS


def _train_parser(sub, on) -> None:
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
    p.add_argument("--input-size", type=int, help="the model's input size in pixels (default 224; 128 keeps less of "
                   "the fine texture that processing chains leave)")
    p.add_argument("--clahe", action="store_true", help="equalise every film's contrast (CLAHE) before the model "
                   "sees it, in training and in prediction alike")
    p.add_argument("--retrain", action="store_true", help="train again even if an identical run exists")
    p.add_argument("--report", help="also write a JSON report (e.g. reports/training.json)")
    p.add_argument("--command-line", help=argparse.SUPPRESS)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from cxr.train import run as train

    overrides = {k: v for k, v in dict(epochs=args.epochs, views=args.views, lr=args.lr, lungs=args.lungs,
                                                    input_size=args.input_size).items()
                 if v is not None}
    if args.no_harmonise:
        overrides["harmonise"] = False
    if args.clahe:
        overrides["clahe"] = True
    if args.budget_min is not None:
        overrides["wall_budget_s"] = args.budget_min * 60
    config = args.config.replace(**overrides)
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
        from cxr.core.files import write_json
        from cxr.report.records import training_record

        report = training_record(run, cmd, config.device)
        write_json(report, args.report)
        print(f"wrote {args.report} (inference {report['inference_images_per_second']:.0f} images/s)")
    return 0


def _export_parser(sub, on) -> None:
    p = sub.add_parser("export", parents=[on], help="write the shippable model (half precision, operating points, model card)")
    p.add_argument("--run", help="run folder (default: the full profile's final run)")
    p.add_argument("--out", help="file to write (default: the package's shipped model)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the shipped file again on its own weights and rewrite its card (no run needed)")
    p.add_argument("--onnx", metavar="FILE", help="write the shipped model (or --model's) as one ONNX file, with what "
                   "cxr predict needs in its metadata, to serve without cxr (ONNX Runtime, Triton)")
    p.add_argument("--model", help="with --onnx: the cxr model file to convert (default: the shipped one)")
    p.add_argument("--whole-and-lungs", action="store_true",
                   help="export the whole-film and lung-crop models as one file (cxr.model.whole_and_lungs): the "
                        "whole-film model (the shipped one, or --run's) and the full profile's lung-crop run")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from cxr.core.config import get_config
    from cxr.model import onnx_file, registry
    from cxr.report import export

    if args.onnx:
        out = onnx_file.export(args.model or registry.SHIPPED, args.onnx)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, float32, batch size free; metadata key 'cxr')")
        return 0

    full = get_config("full", device=args.config.device)  # the shipped model is the full profile's
    if args.remeasure:  # the shipped file's card, operating points and OOD statistics measured on its own weights
        out = export.export_model(registry.SHIPPED, registry.SHIPPED, full)
        print(f"measured {out} again on its own weights (weights unchanged: {registry.shipped(full).digest[:12]})")
        return 0
    if args.whole_and_lungs:
        whole = Path(args.run) / "checkpoint.pt" if args.run else None
        combined = registry.whole_and_lungs_file(full, whole)
        out = export.export_model(combined, args.out or registry.SHIPPED, full)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, half precision): the whole film and its lungs, "
              f"from {combined.name}")
        return 0
    run = Path(args.run) if args.run else registry.find_run("final", full).path
    if not (run / "checkpoint.pt").exists():
        raise registry.MissingModel(f"{run} has no checkpoint.pt: pass a finished run folder, or train one with `cxr train`.")
    out = export.export_model(run, args.out or registry.SHIPPED, full)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, half precision) from {run.name}")
    return 0


def _segmenter_parser(sub, on) -> None:
    p = sub.add_parser("segmenter", parents=[on], help="train the lung segmenter on cxr-lung-masks (patients held out)")
    p.add_argument("--data", help="the cxr-lung-masks folder (default: $CXR_LUNG_MASKS_DIR, else ../shared/cxr-lung-masks)")
    p.add_argument("--out", help="weights to write (default: the package's cxr/weights/lung_segmenter.pt)")
    p.add_argument("--record", help="record to write (default: reports/segmenter.json)")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_segmenter)


def _segmenter(args: argparse.Namespace) -> int:
    from cxr.core.config import repo_root
    from cxr.core.runtime import device
    from cxr.train import segmenter

    record = Path(args.record) if args.record else repo_root() / "reports" / "segmenter.json"
    r = segmenter.train(args.data, args.out, record, epochs=args.epochs, seed=args.seed, device=str(device()))
    h = r["held_out"]
    print(f"lung segmenter: held-out Dice {h['dice_mean']:.4f} (patient mean 95% interval "
          f"{h['dice_patient_mean_ci'][0]:.4f}-{h['dice_patient_mean_ci'][1]:.4f}; target {r['target_dice']}) on "
          f"{r['split']['held_out_images']} films of {r['split']['held_out_patients']} patients; "
          f"{h['failed']} masks failed the check; {r['weights_bytes'] / 1e6:.2f} MB; {r['wall_seconds'] / 60:.1f} min")
    print(f"wrote {r['weights']} and {record}")
    return 0


def _reproduced_parser(sub, on) -> None:
    p = sub.add_parser("reproduced", help="does the retrained final run give the shipped model? (make reproduce)")
    p.add_argument("--out", help="record to write (default: <reports>/reproduce.json)")
    p.add_argument("--bitwise", action="store_true",
                   help="only say whether the retrained weights are the shipped ones bit for bit (exit 0) or not "
                        "(exit 1); write nothing")
    p.add_argument("--since", type=float, metavar="EPOCH",
                   help="when make reproduce started (seconds since 1970): the record keeps how long it took")
    p.set_defaults(func=_reproduced)


def _reproduced(args: argparse.Namespace) -> int:
    from cxr.assess import reproduction
    from cxr.core.files import write_json

    config = args.config
    if args.bitwise:
        from cxr.model import registry

        equal = registry.reproduce_check(config)["weights_equal"]
        print("the retrained weights are the shipped ones bit for bit" if equal else
              "the retrained weights differ from the shipped ones")
        return 0 if equal else 1
    record = reproduction.record(config, None if args.since is None else time.time() - args.since)
    out = write_json(record, args.out or config.reports_dir / "reproduce.json")
    if not config.smoke and args.out is None:  # the book's appendix shows the full profile's record
        from cxr.core import records
        from cxr.core.config import repo_root

        (repo_root() / "book" / "reproduce.md").write_text(
            reproduction.markdown(record, records.read("chapter_times.json")) + "\n")
    t, v = record["test"], record["verdict"]
    if record["weights_equal"]:
        print(f"the retrained {record['retrained_run']} exports to the shipped weights bit for bit "
              f"(sha256 {record['shipped_sha256'][:16]})")
    else:
        print(f"the retrained {record['retrained_run']} differs from the shipped model ({record['shipped_from']}): "
              f"largest class-probability difference on the {t['films']:,} test images "
              f"{record['largest_probability_difference']:.2e}")
    print(f"calls agreeing on the test split: {100 * t['calls_agreeing']:.2f}% ({t['calls_differing']} of {t['films']:,} differ)")
    for name, m in t["metrics"].items():
        print(f"  {name}: shipped {100 * m['a']:.2f}%, retrained {100 * m['b']:.2f}%, difference "
              f"{100 * m['difference']:+.2f} points [{100 * m['ci'][0]:+.2f}, {100 * m['ci'][1]:+.2f}], "
              f"McNemar p {m['mcnemar_p']:.2g}")
    if "make_reproduce_seconds" in record:
        print(f"make reproduce took {record['make_reproduce_seconds'] / 60:.1f} min to get here (retraining, the book)")
    said = {True: "REPRODUCED", False: "NOT REPRODUCED", None: "NOT JUDGED"}[v["reproduced"]]
    print(f"{said} ({v['how']}): " + "; ".join(v["reasons"]))
    print(f"wrote {out}")
    return 0


def _training_log_parser(sub, on) -> None:
    p = sub.add_parser("training-log", help="the training histories of the runs that retrain the shipped file, for a "
                                            "file that carries none (writes <reports>/training_log.json)")
    p.set_defaults(func=_training_log)


def _training_log(args: argparse.Namespace) -> int:
    from cxr.core import records
    from cxr.report import training_log

    rec = training_log.write(args.config)
    for member, entry in rec["networks"].items():
        print(training_log.title(member, entry))
    print(f"wrote {records.path(training_log.NAME, args.config)}")
    return 0


def add(sub, on) -> None:
    """Add this group's commands to `cxr`'s sub-parsers (`on`: the options of commands that run a model)."""
    _train_parser(sub, on)
    _export_parser(sub, on)
    _segmenter_parser(sub, on)
    _reproduced_parser(sub, on)
    _training_log_parser(sub, on)
