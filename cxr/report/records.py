"""The records the book states, each made by one function from the profile's final model.

* `evaluation_record`: the database test split, with the operating points chosen on validation
  (`cxr evaluate --split test`), in `<reports>/evaluation.json`;
* `external_record`: the radiographs from outside the database (`../shared/cxr-external-dev`),
  with the same operating points, in `<reports>/external.json`;
* `twin_audit`: how often the model's answer survives a change of processing chain;
* `executive_summary`: the headline numbers of the executive summary, in `<reports>/summary.json`.

`<reports>` is `Config.reports_dir` (`reports/` for the full profile). Every record names its model
by the SHA-256 of its weights (`model_sha256`, from `cxr.model.registry`) and is reused while that is the
final model's, else made again. No record function trains: the model comes from the registry.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.assess import adapt, audit, predict
from cxr.assess.evaluate import evaluate_folder, headline
from cxr.core import metrics, records as stored
from cxr.core.config import CLASSES, VERSIONS, Config, display_path
from cxr.core.files import write_json
from cxr.core.metrics import proportion, temper
from cxr.data import walk
from cxr.data.dataset import external_dir, find_dataset, site_dir
from cxr.data.preprocess import load_pixels
from cxr.data.reading import OK, Read, read_file
from cxr.data.splits import load_table
from cxr.model import checkpoints, registry
from cxr.model.checkpoints import load_model
from cxr.model.ood import pooled_features, score
from cxr.model.registry import Model, shipped, weights_digest
from cxr.model.speed import inference_speed
from cxr.report import comparisons
from cxr.roi import cases as roi_cases, inputs as roi_inputs, uncertainty


def final_model(config: Config):
    """The model every record of the profile is made from (`registry.final_model`: the shipped one
    by default); never trains. A missing model raises `registry.MissingModel` with the command."""
    return registry.final_model(config)


def _fresh(path: Path, model) -> dict | None:
    """The record at `path` if it was made from `model` (a `registry.Model`) on the same data: the
    same weights and the same split table (`Model.ref`)."""
    return stored.fresh(path, {k: model.ref[k] for k in stored.MODEL_KEYS})


def evaluation_record(config: Config, remake: bool = False) -> dict:
    """The test-split evaluation of the final model, with operating points chosen on validation."""
    model = final_model(config)
    path = config.reports_dir / "evaluation.json"
    if not remake and (record := _fresh(path, model)) is not None and "operating_points" in record:
        return record
    return evaluate_folder(find_dataset(), model.checkpoint, out=path, split="test", config=config, progress=False,
                           n_boot=1000 if not config.smoke else 200, seed=config.seed, stamp=model.ref)


def external_record(config: Config, remake: bool = False) -> dict | None:
    """The final model on the external radiographs, at the operating points of `evaluation_record`
    (None when no external set is at hand)."""
    data = external_dir()
    if data is None:
        return None
    model = final_model(config)
    path = config.reports_dir / "external.json"
    if not remake and (record := _fresh(path, model)) is not None:
        return record
    return evaluate_folder(data, model.checkpoint, out=path, progress=False, n_boot=1000 if not config.smoke else 200,
                           seed=config.seed, config=config, thresholds_from=evaluation_record(config), stamp=model.ref)


def twin_audit(config: Config, model: registry.Model | None = None) -> dict:
    """Twin agreement of the final model (or `model`, a `registry.Model`) on the audit twins whose
    originals are in the validation or test split (never trained on): the share of twins that get
    their original's prediction."""
    found = model or final_model(config)
    meta = found.loaded[1]
    return audit.twin_check(audit.predictor(found.runner, meta["input_size"]),
                            audit.load_twins(checkpoints.pixel_config(meta, config)))


def audit_record(config: Config):
    """The shortcut audit of the final model against the "before" model (`audit.shortcut_audit`;
    the before model's numbers come from the comparison record): the record and what chapter 05
    draws (`audit.view`). The record is `<reports>/explain.json` (`audit_numbers`). Never trains: a
    missing comparison record stops with the command that makes it."""
    model = final_model(config)
    record = audit_numbers(config)
    net, meta = checkpoints.load_model(model.checkpoint, config.device)
    root, table = load_table(config)
    pixels = load_pixels(root, table, checkpoints.pixel_config(meta, config), progress=False)
    return audit.Audit(record, audit.view(record, net, meta["input_size"], table, pixels, config))


def audit_numbers(config: Config) -> dict:
    """The shortcut audit's record of the final model (`audit.shortcut_audit`): `<reports>/explain.json`
    while it names this model and data, else audited again and written there. Never trains."""
    model = final_model(config)
    path = config.reports_dir / "explain.json"
    record = _fresh(path, model)
    if record is None or record.get("audit_version") != VERSIONS["audit"] or not all(k in record for k in audit.VIEW_KEYS):
        before = comparisons.comparison_record(config)["models"]["before"]["numbers"]  # `make comparisons`
        record = audit.shortcut_audit(model, config, before=before).record | model.ref
        write_json(record, path)
    return record


def roi_summary(evaluation: dict, external: dict | None, preset: str = "default", n: int = 2000,
                seed: int = 0) -> dict:
    """The net annual value of a preset site under the database and the external performance."""
    site = roi_cases.preset(preset)
    out = {"site": site.name, "operating_point": site.operating_point}
    for name, rec in (("database", evaluation), ("external", external)):
        if rec is None:
            continue
        perf = roi_inputs.performance(rec, site.operating_point)
        r, u = roi_cases.at_site(site, perf, n=n, seed=seed)
        top = uncertainty.tornado(site, perf, seed=seed).iloc[0]
        out[name] = {"sensitivity": perf.sensitivity, "specificity": perf.specificity,
                     "net_annual_value": r["net_annual_value"], "staff_cost_saved": r["staff_cost_saved"],
                     "ai_cost": r["ai_cost"], "median": u["median"], "interval90": u["interval90"],
                     "p_positive": u["p_positive"],
                     "driver": {"input": top["input"], "low": float(top["low"]), "high": float(top["high"]),
                                "net_at_low": float(top["net at low"]), "net_at_high": float(top["net at high"])}}
    out["use_cases"] = len(roi_cases.ORIGINAL_CLAIMS)
    out["money_claims"] = sum(1 for c in roi_cases.ORIGINAL_CLAIMS.values() if c.get("value") is not None)
    return out


def performance_sets(config: Config) -> dict:
    """The final model's performance at every operating point, on the database test split and (when
    at hand) the external radiographs: what the ROI model reads (`roi_inputs.performance_sets`)."""
    records = {"database test split": evaluation_record(config)}
    if (external := external_record(config)) is not None:
        records["external radiographs"] = external
    return roi_inputs.performance_sets(records)


def use_case_record(config: Config) -> dict:
    """The five use cases under the final model's measured performance (`roi_cases.use_cases`),
    written to `<reports>/business.json`."""
    cases = roi_cases.use_cases(performance_sets(config), n=2000, seed=config.seed)
    roi_cases.write_record(cases, config.reports_dir / "business.json")
    return cases


def executive_summary(config: Config) -> dict:
    """The executive summary's numbers for the profile's final model, in `<reports>/summary.json`
    (reused while it names this model and data)."""
    final = final_model(config)
    path = config.reports_dir / "summary.json"
    if ((record := _fresh(path, final)) is not None and record.get("occlusion") == audit_numbers(config)["occlusion"]
            and "driver" in record["roi"].get("database", {})
            and "twin_agreement_after" in (record.get("adaptation") or {"twin_agreement_after": None})
            and "model_kind" in record):
        return record
    ev = evaluation_record(config)
    ext = external_record(config)
    twins = twin_audit(config)
    model, meta = checkpoints.load_model(final.checkpoint, config.device)
    speed = inference_speed(model, meta["input_size"])
    covid = ev["per_class"]["COVID"]
    record = {
        "profile": config.profile, **final.ref, "model_kind": checkpoints.kind(meta),
        "test_images": ev["n"], "accuracy": ev["accuracy"], "accuracy_ci": ev["accuracy_ci"],
        "macro_auc": ev["macro_auc"], "macro_auc_ci": ev["macro_auc_ci"],
        "covid_sensitivity": covid["sensitivity"], "covid_sensitivity_ci": covid["sensitivity_ci"],
        "covid_sensitivity_counts": [covid["tp"], covid["tp"] + covid["fn"]],
        "twin_agreement": twins["agreement"], "twins": twins["n"],
        "occlusion": audit_numbers(config)["occlusion"],
        "inference_ms_per_image": 1000.0 / speed["images_per_second"],
        "inference": {k: speed[k] for k in ("images_per_second", "batch", "size", "threads")},
        "roi": roi_summary(ev, ext),
    }
    if ext is not None:

        record["external"] = headline(ext)
    curve = adaptation_record(config)
    if curve is not None:

        t = adapt.curve_summary(curve)
        none, head = t[t.method == "none"].iloc[0], t[(t.method == "head") & (t["local films"] == 25)]
        if len(head):
            head = head.iloc[0]
            record["adaptation"] = {"site": curve["site"], "films": 25,
                                    "false_covid_before": none["site false-COVID %"] / 100,
                                    "false_covid_after": head["site false-COVID %"] / 100,
                                    "false_covid_after_ci": [head["site CI low %"] / 100, head["site CI high %"] / 100],
                                    "database_accuracy_after": head["database accuracy %"] / 100,
                                    "database_covid_sensitivity_after": head["COVID sensitivity %"] / 100,
                                    "twin_agreement_before": none["twin agreement %"] / 100,
                                    "twin_agreement_after": head["twin agreement %"] / 100}
    write_json(record, path)
    return record


def adaptation_record(config: Config, remake: bool = False) -> dict | None:
    """The site-adaptation learning curve of the shipped model on the site folder (`site_dir`),
    in `<reports>/adaptation.json`; reused while the shipped model is the same file. None when no
    site folder is at hand."""
    site = site_dir()
    if site is None:
        return None
    model = registry.shipped(config)
    path = config.reports_dir / "adaptation.json"
    if not remake and (record := _fresh(path, model)) is not None:
        return record
    record = adapt.learning_curve(model.checkpoint, site, sizes=(0, 25, 50, 100, 150), draws=3,
                                  external_dir=external_dir(), config=config, seed=config.seed) | model.ref
    record["command"] = "cxr.report.records.adaptation_record (chapter 06); one site: cxr adapt --data FOLDER"
    write_json(record, path)
    return record


def model_names(config: Config) -> dict[str, str]:
    """Which model each of chapter 06's results is of, where two are in play: the external
    headline is the final model of this build, the adaptation curve the shipped model's."""
    final, ship = final_model(config), registry.shipped(config)
    same = final.digest == ship.digest
    return {"final_model": f"{final.name} ({final.source}, weights {final.digest[:12]})",
            "shipped_model": f"{ship.name} (shipped, weights {ship.digest[:12]})",
            "models_same": ("the same model, so every number in this chapter is of one model" if same else
                            "two models: the headline and the tables above are the retrained model's, the learning "
                            "curve the shipped model's")}


def test_predictions(config: Config) -> pd.DataFrame:
    """The shipped model's calibrated probabilities on the test split (file, label, one column per
    class, pred): the per-image file of the evaluation record (`<reports>/evaluation.csv`) when the
    final model is the shipped one, else computed (and cached) by the registry."""
    ship = registry.shipped(config)
    if final_model(config).digest == ship.digest:
        evaluation_record(config)  # made (or checked fresh) with its per-image file
        return pd.read_csv(config.reports_dir / "evaluation.csv", keep_default_na=False)
    p = ship.predictions("test")
    proba = temper(p[list(CLASSES)].to_numpy(), float(ship.meta().get("temperature", 1.0)))
    return p.assign(**{c: proba[:, i] for i, c in enumerate(CLASSES)}, pred=[CLASSES[i] for i in proba.argmax(1)])


def shipped_model(config: Config | None = None) -> Path:
    """The model that ships with the package (`cxr/weights/`): the file chapter 08 describes."""
    return registry.shipped(config).checkpoint


def ood_record(config: Config, checkpoint: str | Path | None = None) -> dict:
    """How often the out-of-distribution flag fires: on the database's test split, on the external
    radiographs (per class) and on pictures that are not chest radiographs, in `<reports>/ood.json`
    (reused while it names this model and data); `scores` holds every score, for plots."""
    ship = shipped(config)
    checkpoint = Path(checkpoint or ship.checkpoint)
    model = ship if checkpoint.resolve() == ship.checkpoint.resolve() else Model(
        checkpoint, weights_digest(checkpoint), checkpoint.name, "given", data=config)
    path = config.reports_dir / "ood.json"
    if (record := _fresh(path, model)) is not None and "scores" in record:
        return record | {"scores": {k: np.asarray(v, float) for k, v in record["scores"].items()}}
    pred = predict.load(checkpoint, config)
    stats = pred.ood
    if stats is None:
        raise ValueError(f"{pred.checkpoint} has no out-of-distribution statistics: export it with `cxr export`.")
    root, table = load_table(config)
    test = table[table.split == "test"].reset_index(drop=True)
    scores = {"database test split": score(stats, pooled_features(pred.fast, np.asarray(
        load_pixels(root, test, pred.config, progress=False)), pred.size))}
    data = external_dir()
    if data is not None:
        reads = [r for r in (read_file(it.path, it.shown, it.named) for it in walk.items([data])) if r.image is not None]
        rows = predict.predict_images(pred, reads)
        for r, row in zip(reads, rows):
            key = f"external: {Path(r.file).parts[1]}"
            scores.setdefault(key, [])
            scores[key].append(row["ood_score"])
    others = predict.non_chest_images()
    rows = predict.predict_images(pred, [Read(k, v, OK, []) for k, v in others.items()])
    scores["not chest radiographs"] = [r["ood_score"] for r in rows]
    scores = {k: np.asarray(v, float) for k, v in scores.items()}
    groups = {}
    for k, v in scores.items():
        p = proportion(int((v > stats["threshold"]).sum()), len(v))
        groups[k] = {"n": p["n"], "flagged": p["k"], "rate": p["value"], "rate_ci": p["ci"],
                     "median_score": float(np.median(v)) if len(v) else math.nan}
    record = {"checkpoint": Path(pred.checkpoint).name, "source_run": pred.meta.get("source_run"), **model.ref,
              "threshold": stats["threshold"], "flag_rate_target": stats["flag_rate"], "groups": groups,
              "not_chest_flagged": [k for k, r in zip(others, rows) if r["status"] == predict.OOD],
              # every score, for the chapter's histogram (a fresh record is read, not measured again)
              "scores": {k: [round(float(x), 5) for x in v] for k, v in scores.items()}}
    write_json(record, path)
    return record | {"scores": scores}


def metric_differences(full: dict, shipped: dict) -> dict:
    """Shipped minus full-precision: accuracy and each class's sensitivity and specificity, in points."""
    d = {"accuracy": 100 * (shipped["accuracy"] - full["accuracy"])}
    for c, m in full["per_class"].items():
        for k in ("sensitivity", "specificity"):
            d[f"{c} {k}"] = 100 * (shipped["per_class"][c][k] - m[k])
    return d


def precision_check(config: Config) -> dict | None:
    """The shipped (half-precision) model against the full-precision model it was exported from, on
    the test split, in `<reports>/shipped.json`: the record of this shipped file when there is one,
    else measured when what it was made from is on this machine (the final run, `cxr train`; for
    the whole film and its lungs, the lung-crop run, `cxr train --lungs crop`), else None."""
    shipped = registry.shipped(config)
    if (record := _fresh(config.reports_dir / "shipped.json", shipped)) is not None:
        return record
    try:
        if registry.two_in_one(shipped.checkpoint):  # the one file it was exported from, remade from its members
            lungs = registry.find_run("lung-crop", config)
            if shipped.meta()["members"]["lungs"].get("source_run") != lungs.name:
                return None
            source, name = registry.whole_and_lungs_file(config, None, lungs.checkpoint), shipped.meta().get("source_run")
        else:
            run = registry.find_run("final", config)
            if shipped.meta().get("source_run") != run.name:
                return None
            source, name = run.checkpoint, run.name
    except registry.MissingModel:
        return None
    full = evaluate_folder(find_dataset(), source, split="test", config=config, progress=False, n_boot=200)
    small = evaluation_record(config) if registry.model_source() == "shipped" else evaluate_folder(
        find_dataset(), shipped.checkpoint, split="test", config=config, progress=False, n_boot=200)
    diffs = metric_differences(full, small)
    record = {"run": name, "size_mb": shipped.checkpoint.stat().st_size / 1e6, **shipped.ref,
              "precision": shipped.meta().get("precision"),
              "differences_points": diffs, "largest_difference_points": max(abs(v) for v in diffs.values()),
              "allowed_points": 0.2, "shipped_accuracy": small["accuracy"], "full_accuracy": full["accuracy"]}
    write_json(record, config.reports_dir / "shipped.json")
    return record


def training_record(run, command: str, on: str = "auto") -> dict:
    """The reports/training.json record of a finished run (test metrics recomputed from its predictions;
    its inference speed measured on device `on`)."""
    y, p = run.proba("test")
    s = metrics.summary(y, p, n_boot=1000, seed=run.config.get("seed", 0))
    model, meta = load_model(run.checkpoint, on)
    speed = inference_speed(model, meta["input_size"])
    return {
        "profile": run.config["profile"],
        "approach": run.config.get("approach"),
        "run": run.name, "model_sha256": weights_digest(run.checkpoint),
        "history": run.history.to_dict("records"),
        "test": {"n": s["n"], "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                 "macro_auc": s["macro_auc"], "macro_auc_ci": s["macro_auc_ci"],
                 "per_class": {c: {k: s["per_class"][c][k] for k in
                                   ("n", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "auc")}
                               for c in CLASSES}},
        "val": run.summary["val"],
        "train_wall_seconds": run.summary["train_wall_seconds"],
        "epochs": run.summary.get("epochs"),
        "best_epoch": run.summary.get("best_epoch"),
        "inference_images_per_second": speed["images_per_second"],
        "inference": speed,
        "input_size": meta["input_size"],
        "config": {k: display_path(v) if k in ("cache_dir", "runs_dir") else v for k, v in run.config.items()},
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
