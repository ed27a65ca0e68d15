"""The comparison record, `<reports>/comparisons.json` (`cxr compare`, run by `make comparisons`):
what the book shows of the report's comparison models beside the final one.

* chapter 03: the frozen-features linear head and the ResNet50 baseline against the final model
  on the test split (one row each), and test-time augmentation of the final model (kept only when
  validation says so);
* chapter 05: the "before" model (the same recipe without harmonisation) on the test split and
  the twins, the before/after comparison by the rule (`audit.compare`; shown when the record of
  every run tried, `reports/mitigation.json`, is absent), and the ResNet50's Grad-CAM maps of the
  images the chapter draws.

It is made once from the comparison runs, so a build of the book needs none of them: the record is
reused while it names the final model's weights and the data (`registry.Model.ref`) and, where the
runs are on this machine, those runs. Making it never trains: a missing run stops with the command.
"""
from __future__ import annotations

import math

import numpy as np

from cxr.assess import audit, explain
from cxr.core import metrics, records
from cxr.core.config import CLASSES, Config
from cxr.core.files import write_json
from cxr.data.dataset import external_dir
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model import backends, checkpoints, registry
from cxr.model.checkpoints import load_model
from cxr.model.speed import inference_speed
from cxr.model.tta import TTA_VIEWS, tta_predictions

COMMAND = "make comparisons (cxr train --no-harmonise; cxr train --approach linear; cxr train --approach resnet50; cxr compare)"
LABELS = {"linear": "frozen features + linear head", "final": "partial fine-tuning (final)",
          "resnet50": "ResNet50, original recipe"}
TTA_LABEL = "partial fine-tuning + TTA"
MAP_SIZE = 28  # the stored Grad-CAM maps (the networks' last maps are 7 x 7)


def record_path(config: Config):
    return config.reports_dir / "comparisons.json"


def comparison_record(config: Config, remake: bool = False) -> dict:
    """The comparison record of the profile: the stored one while it describes the final model, the
    data and the comparison runs at hand, else made from those runs (which must exist)."""
    final = registry.final_model(config)
    path = record_path(config)
    runs, missing = {}, None
    for name in ("linear", "resnet50", "before"):
        try:
            runs[name] = registry.comparison_run(name, config)
        except registry.MissingModel as err:
            missing = err
    record = records.read(path)
    if record is not None and not remake and describes(record, final, runs if missing is None else None):
        return record
    if missing is not None and record is not None and records.holds(record, {k: final.ref[k] for k in MODEL_DATA}):
        # the comparison runs are not here, but their numbers in the record are of the same data and
        # recipe: only what the final model decides is measured again
        record = for_final(record, final, config)
        write_json(record, path)
        return record
    if missing is not None:
        why = "is missing" if record is None else "was made from other data"
        raise registry.MissingModel(f"{path.name} {why}, and the comparison runs are not all here: {missing} "
                                    f"(`make comparisons` trains all three and writes the record).")
    record = make_record(final, runs, config)
    write_json(record, path)
    return record


#: the reference keys a record of the comparison models shares with any final model: the data and the record recipe
MODEL_DATA = ("data_sha256", "records_version")


def for_final(record: dict, final, config: Config) -> dict:
    """`record` made again for another final model without the comparison runs: the final model's
    row, its test-time augmentation and its row in the before/after comparison are measured; the
    comparison models' rows, the "before" model's numbers and row, and the ResNet50's stored maps
    are kept as they were measured from their runs (named in the record), on the same data. The
    record says which parts were kept (`kept_from`)."""
    y, p = final.proba("test")
    net, meta = load_model(final.checkpoint, config.device)
    speed = inference_speed(net, meta["input_size"])["images_per_second"]
    training = final.training()
    wall = training[1].get("train_wall_seconds", math.nan) if training else math.nan
    tta = tta_rows(final, config, y, p, wall, speed / TTA_VIEWS, tta_predictions)
    rows = []
    for row in record["rows"]:
        if row["approach"] == LABELS["final"]:
            rows += [metrics.comparison_row(LABELS["final"], y, p, wall, speed)] + tta["rows"]
        elif row["approach"] != TTA_LABEL:  # the earlier final model's TTA row goes
            rows.append(row)
    tta.pop("rows")
    models = dict(record["models"])
    models["final"] = {"run": final.name, "model_sha256": final.digest, "label": LABELS["final"],
                       "answers": answer_shares(y, p)}
    sweep = dict(record["sweep"])
    before = [r for r in sweep["runs"] if r["run"] == models["before"]["run"]]
    after = audit.run_row(final, audit.load_twins(config), config, external_dir(), "after: final model")
    sweep["runs"] = before + [after]
    sweep["chosen"] = sweep["runs"][audit.choose_row(sweep["runs"])]["run"]
    kept = {k: m["run"] for k, m in models.items() if k != "final"}
    return {**record, **final.ref, "rows": rows, "tta": tta, "models": models, "sweep": sweep,
            "kept_from": {"runs": kept, "earlier_final_model": record["models"]["final"]["run"],
                          "why": "the comparison runs were not on the machine that measured this final model; their "
                                 "numbers are those measured from them on the same data",
                          "resnet50_maps": "of the films the earlier final model's calls chose"}}


def provenance(record: dict) -> str:
    """Where the record's rows come from, in a sentence for the page (plain text)."""
    kept = record.get("kept_from")
    if not kept:
        return (f"Every row was measured for this final model from the runs the record names ({record['command']}).")
    runs = kept["runs"]
    return (f"The final model's row, its test-time augmentation and its row in the before/after comparison were "
            f"measured for this model; the linear head's, the ResNet50's and the before model's numbers are those "
            f"measured from their runs ({runs.get('linear')}, {runs.get('resnet50')}, {runs.get('before')}) on the "
            f"same data, when {kept['earlier_final_model']} was the final model, because those runs were not on the "
            f"machine that measured this one. Their inference speeds were measured then, in another process under "
            f"other load, so the table leaves speed out; chapter 08 times the shipped model. The ResNet50 maps are of the films that "
            f"earlier model's calls chose.")


def describes(record: dict, final, runs: dict | None) -> bool:
    """Whether `record` was made from `final` on the same data and (when given) from `runs`."""
    if not records.holds(record, {k: final.ref[k] for k in records.MODEL_KEYS}):
        return False
    return runs is None or all(record["models"].get(n, {}).get("run") == r.name for n, r in runs.items())


def make_record(final, runs: dict, config: Config) -> dict:
    training = final.training()
    final_wall = training[1].get("train_wall_seconds", math.nan) if training else math.nan
    models, rows = {}, []
    for name in ("linear", "final", "resnet50"):
        model = final if name == "final" else registry.from_run(runs[name], config, "comparison")
        y, p = model.proba("test")
        net, meta = load_model(model.checkpoint, config.device)
        speed = inference_speed(net, meta["input_size"])["images_per_second"]
        wall = final_wall if name == "final" else model.summary.get("train_wall_seconds", math.nan)
        rows.append(metrics.comparison_row(LABELS[name], y, p, wall, speed))
        models[name] = {"run": model.name, "model_sha256": model.digest, "label": LABELS[name],
                        "answers": answer_shares(y, p)}
        if name == "final":
            tta = tta_rows(final, config, y, p, wall, speed / TTA_VIEWS, tta_predictions)
            rows += tta.pop("rows")
    resnet = runs["resnet50"]
    models["resnet50"]["budget"] = {k: resnet.summary.get(k) for k in
                                    ("steps", "epochs", "train_wall_seconds", "weights_origin")} | {
        "batch_size": resnet.config.get("resnet_batch_size"), "test_images": resnet.summary.get("test", {}).get("n"),
        "test_accuracy": resnet.summary.get("test", {}).get("accuracy")}

    before = runs["before"]
    net, meta = backends.load(before.checkpoint, config)
    models["before"] = {"run": before.name, "model_sha256": registry.weights_digest(before.checkpoint),
                        "label": "before: no harmonisation",
                        "numbers": audit.run_numbers(before, net, meta["input_size"],
                                                      audit.load_twins(checkpoints.pixel_config(meta, config)))}

    sweep = audit.compare({"before: no harmonisation": before, "after: final model": final}, config,
                          external_dir=external_dir())
    return {**final.ref, "command": COMMAND, "rows": rows, "tta": tta, "models": models, "sweep": sweep,
            "resnet50_maps": resnet_maps(final, runs["resnet50"], config)}


def answer_shares(y: np.ndarray, p: np.ndarray) -> dict:
    """How often the model gives its commonest answer, against always answering the commonest class."""
    pred = np.bincount(p.argmax(1), minlength=len(CLASSES)) / len(y)
    truth = np.bincount(y, minlength=len(CLASSES)) / len(y)
    return {"commonest_answer": CLASSES[int(pred.argmax())], "commonest_answer_share": float(pred.max()),
            "commonest_class": CLASSES[int(truth.argmax())], "commonest_class_share": float(truth.max()),
            "images": int(len(y))}


def tta_rows(final, config: Config, y_test, p_test, wall: float, speed: float, tta_predictions) -> dict:
    """Test-time augmentation of the final model: kept only when its validation gain's interval is
    above zero; the test split is predicted with it only then."""
    y_val, p_val = final.proba("val")
    tta = tta_predictions(final, config, progress=False, splits=("val",))
    gain, ci = metrics.paired_difference(metrics.accuracy_from_proba, y_val, tta["val"], p_val, seed=config.seed)
    kept = bool(ci[0] > 0)
    verdict = metrics.difference_verdict("test-time augmentation", gain, ci) + (
        ": kept" if kept else ": not adopted, so the test split is not spent on it")
    rows = []
    if kept:
        p_tta = tta_predictions(final, config, progress=False, splits=("test",))["test"]
        rows.append(metrics.comparison_row(TTA_LABEL, y_test, p_tta, wall, speed))
    return {"val_gain": gain, "val_gain_ci": list(ci), "kept": kept, "verdict": verdict, "rows": rows}


def resnet_maps(final, resnet_run, config: Config) -> dict:
    """The ResNet50's Grad-CAM maps (MAP_SIZE px) of the images chapter 05 draws (`audit.cam_cases`)."""
    import cv2


    root, table = load_table(config)
    sample = audit.map_sample(table, config)
    pred = final.predictions("test").set_index("file").loc[table.file[sample], list(CLASSES)].to_numpy().argmax(1)
    y = table.label.map(CLASSES.index).to_numpy()[sample]
    idx = np.array([i for i, _ in audit.cam_cases(sample, y, pred)], dtype=int)
    net, meta = load_model(resnet_run.checkpoint, config.device)
    pixels = load_pixels(root, table, checkpoints.pixel_config(meta, config), progress=False)
    maps = explain.cam_maps(net, pixels[idx], meta["input_size"], method="GradCAM")
    small = [cv2.resize(m.astype(np.float32), (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA) for m in maps]
    return {"files": table.file[idx].tolist(), "size": MAP_SIZE,
            "maps": [np.round(m, 3).tolist() for m in small]}


def map_of(record: dict, file: str, size: int) -> np.ndarray | None:
    """The stored ResNet50 map of `file`, at `size` px; None when the record has none for it."""
    import cv2

    maps = record.get("resnet50_maps", {})
    if file not in maps.get("files", []):
        return None
    m = np.asarray(maps["maps"][maps["files"].index(file)], dtype=np.float32)
    return cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR).clip(0, 1)
