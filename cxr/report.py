"""The records the book states, each made by one function from the profile's final model.

* `evaluation_record`: the database test split, with the operating points chosen on validation
  (`cxr evaluate --split test`), in `<reports>/evaluation.json`;
* `external_record`: the radiographs from outside the database (`../shared/cxr-external-dev`),
  with the same operating points, in `<reports>/external.json`;
* `twin_audit`: how often the model's answer survives a change of processing chain;
* `executive_summary`: the headline numbers of the executive summary, in `<reports>/summary.json`.

`<reports>` is `Config.reports_dir` (`reports/` for the full profile). Every record names its model
by the SHA-256 of its weights (`model_sha256`, from `cxr.registry`) and is reused while that is the
final model's, else made again. No record function trains: the model comes from the registry.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .book import interval, pct
from .config import VERSIONS, Config, get_config
from .dataset import external_dir, site_dir
from .files import write_json

def final_model(config: Config | None = None):
    """The model every record of the profile is made from (`registry.final_model`: the shipped one
    by default); never trains. A missing model raises `registry.MissingModel` with the command."""
    from . import registry

    return registry.final_model(config or get_config())


def _fresh(path: Path, model) -> dict | None:
    """The record at `path` if it was made from `model` (a `registry.Model`) on the same data: the
    same weights and the same split table (`Model.ref`)."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    ref = model.ref
    return record if all(record.get(k) == ref[k] for k in ("model_sha256", "data_sha256", "records_version")) else None


def evaluation_record(config: Config | None = None, remake: bool = False) -> dict:
    """The test-split evaluation of the final model, with operating points chosen on validation."""
    from .dataset import find_dataset
    from .evaluate import evaluate_folder

    config = config or get_config()
    model = final_model(config)
    path = config.reports_dir / "evaluation.json"
    if not remake and (record := _fresh(path, model)) is not None and "operating_points" in record:
        return record
    record = evaluate_folder(find_dataset(), model.checkpoint, out=path, split="test", config=config, progress=False,
                             n_boot=1000 if not config.smoke else 200, seed=config.seed) | model.ref
    write_json(record, path)
    return record


def external_record(config: Config | None = None, remake: bool = False) -> dict | None:
    """The final model on the external radiographs, at the operating points of `evaluation_record`
    (None when no external set is at hand)."""
    from .evaluate import evaluate_folder

    config = config or get_config()
    data = external_dir()
    if data is None:
        return None
    model = final_model(config)
    path = config.reports_dir / "external.json"
    if not remake and (record := _fresh(path, model)) is not None:
        return record
    record = evaluate_folder(data, model.checkpoint, out=path, progress=False, n_boot=1000 if not config.smoke else 200,
                             seed=config.seed, thresholds_from=evaluation_record(config)) | model.ref
    write_json(record, path)
    return record


def twin_audit(config: Config | None = None, checkpoint: str | Path | None = None) -> dict:
    """Twin agreement of the final model (or the model at `checkpoint`) on the audit twins whose
    originals are in the validation or test split (never trained on): the share of twins that get
    their original's prediction."""
    from . import audit, checkpoints

    config = config or get_config()
    model, meta = checkpoints.load_model(checkpoint or final_model(config).checkpoint)
    return audit.twin_check(audit.predictor(model, meta["input_size"]), audit.load_twins(config))


def audit_record(config: Config | None = None):
    """The shortcut audit of the final model against the "before" model (`audit.shortcut_audit`;
    the before model's numbers come from the comparison record): the record and what chapter 05
    draws (`audit.view`). The record is `<reports>/explain.json` (`audit_numbers`). Never trains: a
    missing comparison record stops with the command that makes it."""
    from . import audit, checkpoints
    from .data import load_table
    from .preprocess import load_pixels

    config = config or get_config()
    model = final_model(config)
    record = audit_numbers(config)
    net, meta = checkpoints.load_model(model.checkpoint)
    root, table = load_table(config)
    pixels = load_pixels(root, table, config, progress=False)
    return audit.Audit(record, audit.view(record, net, meta["input_size"], table, pixels, config))


def audit_numbers(config: Config | None = None) -> dict:
    """The shortcut audit's record of the final model (`audit.shortcut_audit`): `<reports>/explain.json`
    while it names this model and data, else audited again and written there. Never trains."""
    from . import audit, comparisons

    config = config or get_config()
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
    from . import roi_cases, roi_inputs, roi_model, roi_uncertainty

    site = roi_cases.preset(preset)
    out = {"site": site.name, "operating_point": site.operating_point}
    for name, rec in (("database", evaluation), ("external", external)):
        if rec is None:
            continue
        perf = roi_inputs.performance(rec, site.operating_point)
        u = roi_uncertainty.psa(site, perf, n=n, seed=seed)
        r = roi_model.roi(site, perf)
        top = roi_uncertainty.tornado(site, perf, seed=seed).iloc[0]
        out[name] = {"sensitivity": perf.sensitivity, "specificity": perf.specificity,
                     "net_annual_value": r["net_annual_value"], "staff_cost_saved": r["staff_cost_saved"],
                     "ai_cost": r["ai_cost"], "median": u["median"], "interval90": u["interval90"],
                     "p_positive": u["p_positive"],
                     "driver": {"input": top["input"], "low": float(top["low"]), "high": float(top["high"]),
                                "net_at_low": float(top["net at low"]), "net_at_high": float(top["net at high"])}}
    out["use_cases"] = len(roi_cases.ORIGINAL_CLAIMS)
    out["money_claims"] = sum(1 for c in roi_cases.ORIGINAL_CLAIMS.values() if c.get("value") is not None)
    return out


def performance_sets(config: Config | None = None) -> dict:
    """The final model's performance at every operating point, on the database test split and (when
    at hand) the external radiographs: what the ROI model reads (`roi_inputs.performance_sets`)."""
    from . import roi_inputs

    config = config or get_config()
    records = {"database test split": evaluation_record(config)}
    if (external := external_record(config)) is not None:
        records["external radiographs"] = external
    return roi_inputs.performance_sets(records)


def use_case_record(config: Config | None = None) -> dict:
    """The five use cases under the final model's measured performance (`roi_cases.use_cases`),
    written to `<reports>/business.json`."""
    from . import roi_cases

    config = config or get_config()
    cases = roi_cases.use_cases(performance_sets(config), n=2000, seed=config.seed)
    roi_cases.write_record(cases, config.reports_dir / "business.json")
    return cases


def executive_summary(config: Config | None = None) -> dict:
    """The executive summary's numbers for the profile's final model, in `<reports>/summary.json`
    (reused while it names this model and data)."""
    from . import checkpoints
    from .speed import inference_speed

    config = config or get_config()
    final = final_model(config)
    path = config.reports_dir / "summary.json"
    if ((record := _fresh(path, final)) is not None and record.get("occlusion") == audit_numbers(config)["occlusion"]
            and "driver" in record["roi"].get("database", {})):
        return record
    ev = evaluation_record(config)
    ext = external_record(config)
    twins = twin_audit(config)
    model, meta = checkpoints.load_model(final.checkpoint)
    speed = inference_speed(model, meta["input_size"])
    covid = ev["per_class"]["COVID"]
    record = {
        "profile": config.profile, **final.ref,
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
        from .evaluate import headline

        record["external"] = headline(ext)
    curve = adaptation_record(config)
    if curve is not None:
        from . import adapt

        t = adapt.curve_summary(curve)
        none, head = t[t.method == "none"].iloc[0], t[(t.method == "head") & (t["local films"] == 25)]
        if len(head):
            head = head.iloc[0]
            record["adaptation"] = {"site": curve["site"], "films": 25,
                                    "false_covid_before": none["site false-COVID %"] / 100,
                                    "false_covid_after": head["site false-COVID %"] / 100,
                                    "false_covid_after_ci": [head["site CI low %"] / 100, head["site CI high %"] / 100],
                                    "database_accuracy_after": head["database accuracy %"] / 100,
                                    "database_covid_sensitivity_after": head["COVID sensitivity %"] / 100}
    write_json(record, path)
    return record


def _lung_text(occlusion: dict | None) -> dict[str, str]:
    from .audit import lung_reading
    from .targets import LUNGS_HIDDEN_MAX, LUNGS_ONLY_GAP

    if not occlusion or "lungs_hidden_balanced_accuracy" not in occlusion:
        return {k: "not measured" for k in ("lungs_hidden", "lungs_only", "lungs_as_is", "lungs_reading")} | {
            "lungs_hidden_target": pct(LUNGS_HIDDEN_MAX, digits=0), "lungs_only_gap": f"{100 * LUNGS_ONLY_GAP:.0f}"}
    r = lung_reading(occlusion)
    return {"lungs_hidden": pct(r["lungs_hidden"]), "lungs_only": pct(r["lungs_only"]), "lungs_as_is": pct(r["as_is"]),
            "lungs_reading": r["text"], "lungs_hidden_target": pct(LUNGS_HIDDEN_MAX, digits=0),
            "lungs_only_gap": f"{100 * LUNGS_ONLY_GAP:.0f}"}


def roi_reason(roi: dict) -> str:
    """Why the default site's net value has its sign, from the numbers: what the AI costs, what it
    saves, and the input that moves the result most (the top of the tornado)."""
    from .roi_format import money

    r = roi.get("database")
    if not r or "driver" not in r:
        return ""
    d = r["driver"]
    saves = r["staff_cost_saved"]
    lo, hi = sorted((d["net_at_low"], d["net_at_high"]))
    sign = "positive" if r["net_annual_value"] > 0 else "negative"
    crosses = "which would change its sign" if lo < 0 < hi else "which leaves its sign as it is"
    return (f"The value is {sign} because the AI costs {money(r['ai_cost'])} a year and "
            + (f"saves {money(saves)} of reading time" if saves >= 0 else f"adds {money(-saves)} of reading time")
            + f"; the input that moves it most is {d['input']} (over its range, the net value runs from {money(lo)} "
            f"to {money(hi)}, {crosses}).")


def summary_text(record: dict) -> dict[str, str]:
    """The executive summary's numbers as the page shows them (the page glues exactly these)."""
    from . import lung_model
    from .roi_format import money

    t = {
        "accuracy": pct(record["accuracy"], record["accuracy_ci"]),
        "macro_auc": interval(record["macro_auc"], record["macro_auc_ci"], 1, 3),
        "covid_sensitivity": pct(record["covid_sensitivity"], record["covid_sensitivity_ci"]),
        "covid_counts": "{} of {}".format(*record["covid_sensitivity_counts"]),
        "test_images": f"{record['test_images']:,}",
        "twin_agreement": pct(record["twin_agreement"]) if record["twins"] else "not measured (no audit twins)",
        "twins": f"{record['twins']:,}",
        **_lung_text(record.get("occlusion")),
        "lung_model": lung_model.summary(lung_model.read()),
        "inference_ms": f"{record['inference_ms_per_image']:.1f} ms",
        "roi_site": record["roi"]["site"],
        "roi_operating_point": record["roi"]["operating_point"],
    }
    for name in ("database", "external"):
        r = record["roi"].get(name)
        if r:
            t[f"roi_{name}"] = (f"{money(r['net_annual_value'])} a year (90% interval of the uncertainty analysis "
                                f"{money(r['interval90'][0])} to {money(r['interval90'][1])})")
            t[f"roi_{name}_p"] = f"{100 * r['p_positive']:.0f}%"
    t["roi_reason"] = roi_reason(record["roi"])
    n_cases, n_money = record["roi"].get("use_cases"), record["roi"].get("money_claims")
    t["roi_claims"] = (f"claims for its {n_cases} use cases ({n_money} of them in money)" if n_cases
                       else "claims for its use cases")
    ad = record.get("adaptation")
    t["adapt_before"] = pct(ad["false_covid_before"]) if ad else "not measured (no site folder: set CXR_SITE_DIR)"
    t["adapt_after"] = pct(ad["false_covid_after"], ad["false_covid_after_ci"]) if ad else "not measured"
    t["adapt_db_accuracy"] = pct(ad["database_accuracy_after"]) if ad else "not measured"
    t["adapt_db_covid"] = pct(ad["database_covid_sensitivity_after"]) if ad else "not measured"
    missing = "not measured (no external set found: set CXR_EXTERNAL_DIR)"
    for key in ("roi_database", "roi_database_p", "roi_external", "roi_external_p", "external_accuracy",
                "external_images", "external_normals_covid", "external_called_covid"):
        t.setdefault(key, missing)
    ext = record.get("external")
    if ext:
        t["external_accuracy"] = pct(ext["accuracy"], ext["accuracy_ci"])
        t["external_images"] = f"{ext['images']:,} radiographs" + (f" from {ext['patients']} patients" if ext.get("patients") else "")
        t["external_normals_covid"] = f"{ext['normals_called_covid']} of {ext['normals']}"
        t["external_called_covid"] = f"{ext['called_covid']} of {ext['images']}"
    return t


def adaptation_record(config: Config | None = None, remake: bool = False) -> dict | None:
    """The site-adaptation learning curve of the shipped model on the site folder (`site_dir`),
    in `<reports>/adaptation.json`; reused while the shipped model is the same file. None when no
    site folder is at hand."""
    from . import adapt, registry

    config = config or get_config()
    site = site_dir()
    if site is None:
        return None
    model = registry.shipped()
    path = config.reports_dir / "adaptation.json"
    if not remake and (record := _fresh(path, model)) is not None:
        return record
    record = adapt.learning_curve(model.checkpoint, site, sizes=(0, 25, 50, 100, 150), draws=3,
                                  external_dir=external_dir(), config=config, seed=config.seed) | model.ref
    record["command"] = "cxr.report.adaptation_record (chapter 06); one site: cxr adapt --data FOLDER"
    write_json(record, path)
    return record


def external_tables(external: dict, evaluation: dict) -> dict:
    """The external-validation chapter's tables: per class beside the database test split (with
    image- and patient-level intervals), per collection, and the confusion matrix."""
    import pandas as pd

    from .classes import CLASSES

    pl = external.get("patient_level") or {"per_class": {}}
    rows = []
    for c in CLASSES:
        e, d, p = external["per_class"][c], evaluation["per_class"][c], pl["per_class"].get(c, {})
        rows.append({"class": c, "database test: sensitivity %": interval(d["sensitivity"], d["sensitivity_ci"]),
                     "external: images (patients)": f"{e['n']} ({p.get('patients', 'n/a')})",
                     "external: sensitivity %, image CI": interval(e["sensitivity"], e["sensitivity_ci"]),
                     "external: sensitivity %, patient CI": interval(p.get("sensitivity"), p.get("sensitivity_ci")),
                     "external: specificity %": interval(e["specificity"], e["specificity_ci"])})
    collections = []
    for g, m in external.get("by_collection", {}).items():
        gp = m.get("patient_level") or {}
        collections.append({"collection": g, "images": m["n"], "patients": m.get("patients") or "n/a",
                            "accuracy %, patient CI": interval(m["accuracy"]["value"], gp.get("accuracy_ci", m["accuracy"]["ci"])),
                            **{f"called {c}": m["predicted"][c] for c in CLASSES}})
    cm = pd.DataFrame(external["confusion"], index=[f"true {c}" for c in CLASSES],
                      columns=[f"called {c}" for c in CLASSES])
    return {"per_class": pd.DataFrame(rows).set_index("class"),
            "by_collection": pd.DataFrame(collections).set_index("collection") if collections else pd.DataFrame(),
            "confusion": cm}


def external_text(external: dict, evaluation: dict) -> dict[str, str]:
    """The external-validation chapter's numbers as its sentences quote them (glued)."""
    from .classes import CLASSES

    pl = external.get("patient_level") or {}
    cm = np.asarray(external["confusion"])
    covid, normal, vp = (CLASSES.index(c) for c in ("COVID", "Normal", "Viral Pneumonia"))
    t = {"ext_images": f"{external['n']:,}", "ext_patients": f"{pl.get('patients', 'n/a')}",
         "ext_accuracy": pct(external["accuracy"], pl.get("accuracy_ci", external["accuracy_ci"])),
         "ext_accuracy_images_ci": pct(external["accuracy"], external["accuracy_ci"]),
         "db_accuracy": pct(evaluation["accuracy"], evaluation["accuracy_ci"]),
         "ext_called_covid": f"{int(cm[:, covid].sum())} of {int(cm.sum())}",
         "ext_normals_covid": f"{int(cm[normal, covid])} of {int(cm[normal].sum())}",
         "ext_vp_covid": f"{int(cm[vp, covid])} of {int(cm[vp].sum())}",
         "ext_vp_vp": f"{int(cm[vp, vp])} of {int(cm[vp].sum())}",
         "ext_covid_sensitivity": pct(external["per_class"]["COVID"]["sensitivity"],
                                       (pl.get("per_class", {}).get("COVID") or {}).get("sensitivity_ci")),
         "ext_normal_sensitivity": pct(external["per_class"]["Normal"]["sensitivity"],
                                        (pl.get("per_class", {}).get("Normal") or {}).get("sensitivity_ci"))}
    for g, m in external.get("by_collection", {}).items():
        t[f"ext_acc_{g}"] = pct(m["accuracy"]["value"], (m.get("patient_level") or {}).get("accuracy_ci"))
    return t | external_words(external, evaluation)


def external_words(external: dict, evaluation: dict) -> dict[str, str]:
    """The chapter's sentences that state a direction or a size, chosen from the numbers (so they
    hold whichever way the result falls): COVID-19 sensitivity beside what the model calls
    COVID-19, the confusion matrices' caption, and the readers' paragraphs."""
    from .book import moved_to, share_word
    from .classes import CLASSES

    cm, db = np.asarray(external["confusion"]), np.asarray(evaluation["confusion"])
    covid, normal = CLASSES.index("COVID"), CLASSES.index("Normal")
    n, called = int(cm.sum()), int(cm[:, covid].sum())
    normals, normals_covid = int(cm[normal].sum()), int(cm[normal, covid])
    ext_sens, db_sens = (r["per_class"]["COVID"]["sensitivity"] for r in (external, evaluation))
    covid_reading = (f"Outside the database COVID-19 sensitivity {moved_to(db_sens, ext_sens)} {pct(ext_sens)} (database {pct(db_sens)}). "
                     f"The model calls {share_word(called, n)} of the external films COVID-19 ({called} of {n}), "
                     f"and {share_word(normals_covid, normals)} of the normal films ({normals_covid} of {normals}); "
                     f"Normal sensitivity is {pct(external['per_class']['Normal']['sensitivity'])}.")
    if normals and 2 * normals_covid > normals:
        covid_reading += " So its COVID-19 sensitivity comes with calling COVID-19 where there is none."
    off = cm.copy()
    np.fill_diagonal(off, 0)
    wrong_true, wrong_pred = np.unravel_index(off.argmax(), off.shape)
    column = int(cm.sum(0).argmax())
    caption = (f"On the database the diagonal holds {pct(np.trace(db) / max(db.sum(), 1))} of the films; outside it "
               f"{pct(np.trace(cm) / max(n, 1))}, and the column with the most calls is {CLASSES[column]} "
               f"({int(cm[:, column].sum())} of {n}).")
    ext_acc, db_acc = external["accuracy"], evaluation["accuracy"]
    radiologist = (f"Outside the hospitals it was trained on, the model's accuracy {moved_to(db_acc, ext_acc, tol=0.01)} "
                   f"{pct(ext_acc)} "
                   f"(database {pct(db_acc)}). It calls {called} of {n} unfamiliar films COVID-19, {normals_covid} of "
                   f"{normals} normal ones among them.")
    engineer = (f"The most common error outside the database is {CLASSES[wrong_true]} called {CLASSES[wrong_pred]} "
                f"({int(off[wrong_true, wrong_pred])} of {int(cm[wrong_true].sum())} {CLASSES[wrong_true]} films)."
                if off.sum() else "The model makes no error on these films.")
    return {"ext_covid_reading": covid_reading, "ext_caption": caption, "ext_radiologist": radiologist,
            "ext_engineer": engineer}


def model_names(config: Config | None = None) -> dict[str, str]:
    """Which model each of chapter 06's results is of, where two are in play: the external
    headline is the final model of this build, the adaptation curve the shipped model's."""
    from . import registry

    config = config or get_config()
    final, ship = final_model(config), registry.shipped(config)
    same = final.digest == ship.digest
    return {"final_model": f"{final.name} ({final.source}, weights {final.digest[:12]})",
            "shipped_model": f"{ship.name} (shipped, weights {ship.digest[:12]})",
            "models_same": ("the same model, so every number in this chapter is of one model" if same else
                            "two models: the headline and the tables above are the retrained model's, the learning "
                            "curve the shipped model's")}


def test_predictions(config: Config | None = None) -> pd.DataFrame:
    """The shipped model's calibrated probabilities on the test split (file, label, one column per
    class, pred): the per-image file of the evaluation record (`<reports>/evaluation.csv`) when the
    final model is the shipped one, else computed (and cached) by the registry."""
    from . import registry
    from .classes import CLASSES
    from .metrics import temper

    config = config or get_config()
    ship = registry.shipped(config)
    if final_model(config).digest == ship.digest:
        evaluation_record(config)  # made (or checked fresh) with its per-image file
        return pd.read_csv(config.reports_dir / "evaluation.csv", keep_default_na=False)
    p = ship.predictions("test")
    proba = temper(p[list(CLASSES)].to_numpy(), float(ship.meta().get("temperature", 1.0)))
    return p.assign(**{c: proba[:, i] for i, c in enumerate(CLASSES)}, pred=[CLASSES[i] for i in proba.argmax(1)])


def shipped_model(config: Config | None = None) -> Path:
    """The model that ships with the package (`cxr/weights/`): the file chapter 08 describes."""
    from . import registry

    return registry.shipped().checkpoint


def export_model(run_path: str | Path, out: str | Path, config: Config | None = None) -> Path:
    """`cxr export`: a run's model (or an exported file, measured again) in half precision, with what the shipped file carries measured on
    the half-precision weights themselves (the model users run and every record describes): the
    operating points chosen on its validation predictions, the test and external numbers of its
    card, its twin agreement, its out-of-distribution statistics and the site check's reference;
    and the run's training history."""
    import tempfile

    from . import checkpoints, registry
    from .evaluate import evaluate_folder
    from .dataset import find_dataset
    from .ood import fit_on_split

    config = config or get_config("full")
    if Path(run_path).is_file():  # an exported file measured again (`cxr export --remeasure`): same weights
        checkpoint, name, training = Path(run_path), Path(run_path).stem, None
    else:
        run = registry.load_run(run_path)
        checkpoint, name = run.checkpoint, run.name
        training = {"history": run.history.to_dict("records"), "summary": run.summary}
    n_boot = 1000 if not config.smoke else 200
    with tempfile.TemporaryDirectory() as tmp:
        half = checkpoints.export(checkpoint, Path(tmp) / name / "checkpoint.pt", training=training)
        evaluation = evaluate_folder(find_dataset(), half, split="test", config=config, progress=False,
                                     n_boot=n_boot, seed=config.seed)
        data = external_dir()
        external = (evaluate_folder(data, half, progress=False, n_boot=n_boot, seed=config.seed,
                                    thresholds_from=evaluation) if data is not None else None)
        twins = twin_audit(config, half)
        audit = ({"agreement": twins["agreement"], "twins": twins["n"],
                  "twins_from": "originals in the validation and test splits"} if twins["n"] else None)
        model, meta = checkpoints.load_model(half)
        stats = fit_on_split(model, meta["input_size"], config)
    out = checkpoints.export(checkpoint, out, evaluation, external, audit, stats, training=training)
    from .site_record import attach

    return attach(out, config)  # the site check's reference, fitted on the exported weights' features


def ood_record(config: Config | None = None, checkpoint: str | Path | None = None) -> dict:
    """How often the out-of-distribution flag fires: on the database's test split, on the external
    radiographs (per class) and on pictures that are not chest radiographs, in `<reports>/ood.json`
    (reused while it names this model and data); `scores` holds every score, for plots."""
    from . import predict, walk
    from .data import load_table
    from .metrics import proportion
    from .ood import pooled_features, score
    from .preprocess import load_pixels
    from .reading import OK, Read, read_file
    from .registry import Model, shipped, weights_digest

    config = config or get_config()
    ship = shipped(config)
    checkpoint = Path(checkpoint or ship.checkpoint)
    model = ship if checkpoint.resolve() == ship.checkpoint.resolve() else Model(
        checkpoint, weights_digest(checkpoint), checkpoint.name, "given", data=config)
    path = config.reports_dir / "ood.json"
    if (record := _fresh(path, model)) is not None and "scores" in record:
        return record | {"scores": {k: np.asarray(v, float) for k, v in record["scores"].items()}}
    pred = predict.load(checkpoint)
    stats = pred.ood
    if stats is None:
        raise ValueError(f"{pred.checkpoint} has no out-of-distribution statistics: export it with `cxr export`.")
    root, table = load_table(config)
    test = table[table.split == "test"].reset_index(drop=True)
    scores = {"database test split": score(stats, pooled_features(pred.model, np.asarray(
        load_pixels(root, test, config, progress=False)), pred.size))}
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


def precision_check(config: Config | None = None) -> dict | None:
    """The shipped (half-precision) model against the full-precision run it was exported from, on
    the test split, in `<reports>/shipped.json`: the record of this shipped file when there is one,
    else measured when that run is on this machine (`cxr train` makes it), else None."""
    from . import registry
    from .evaluate import evaluate_folder
    from .dataset import find_dataset

    config = config or get_config()
    shipped = registry.shipped(config)
    if (record := _fresh(config.reports_dir / "shipped.json", shipped)) is not None:
        return record
    try:
        run = registry.find_run("final", config)
    except registry.MissingModel:
        return None
    if shipped.meta().get("source_run") != run.name:
        return None
    full = evaluate_folder(find_dataset(), run.checkpoint, split="test", config=config, progress=False, n_boot=200)
    small = evaluation_record(config) if registry.model_source() == "shipped" else evaluate_folder(
        find_dataset(), shipped.checkpoint, split="test", config=config, progress=False, n_boot=200)
    diffs = metric_differences(full, small)
    record = {"run": run.name, "size_mb": shipped.checkpoint.stat().st_size / 1e6, **shipped.ref,
              "precision": shipped.meta().get("precision"),
              "differences_points": diffs, "largest_difference_points": max(abs(v) for v in diffs.values()),
              "allowed_points": 0.2, "shipped_accuracy": small["accuracy"], "full_accuracy": full["accuracy"]}
    write_json(record, config.reports_dir / "shipped.json")
    return record


def training_text(training: tuple | None, model) -> str:
    """Chapter 03's sentence on how the model was trained (`registry.Model.training()`)."""
    if training is None:
        return (f"The file {model.checkpoint.name} ({model.name}) does not carry its run's training history, so "
                "this build cannot show it; `make reproduce` retrains the recipe on this machine and builds this "
                "chapter from that run, history included.")
    history, summary = training
    return (f"The report's rule kept epoch {summary['best_epoch']} of {len(history)}. Training took "
            f"{summary['train_wall_seconds'] / 60:.1f} min on the machine that trained it, "
            f"{summary['activation_cache_seconds'] / 60:.1f} min of it for the frozen-layer cache.")


def training_record(run, command: str) -> dict:
    """The reports/training.json record of a finished run (test metrics recomputed from its predictions)."""
    import time

    from . import metrics
    from .classes import CLASSES
    from .config import display_path
    from .registry import weights_digest
    from .speed import inference_speed
    from .checkpoints import load_model

    y, p = run.proba("test")
    s = metrics.summary(y, p, n_boot=1000, seed=run.config.get("seed", 0))
    model, meta = load_model(run.checkpoint)
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
