"""Each chapter's words about the final model's records: the executive summary's sentences, the
external chapter's tables and sentences, the training sentence. Chosen from the numbers; nothing here
computes a result (the records do, in `cxr.report.records`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.assess.audit import lung_reading
from cxr.core.book import interval, moved_to, pct, share_word
from cxr.core.config import CLASSES
from cxr.core.targets import LUNGS_ONLY_GAP, OUTSIDE_TARGETS
from cxr.report import outside_experiment, speed_facts
from cxr.roi.format import money


def _lung_text(occlusion: dict | None) -> dict[str, str]:
    targets = {"lungs_hidden_target": pct(OUTSIDE_TARGETS["lungs_hidden_sensitivity"], digits=0),
               "lungs_only_gap": f"{100 * LUNGS_ONLY_GAP:.0f}"}
    if not occlusion or "lungs_hidden_sensitivity" not in occlusion:
        return {k: "not measured" for k in ("lungs_hidden_covid", "lungs_hidden_lung_opacity", "lungs_hidden_auc",
                                            "lungs_only", "lungs_as_is", "lungs_reading")} | targets
    r = lung_reading(occlusion)
    return {"lungs_hidden_covid": pct(r["lungs_hidden_covid"]), "lungs_hidden_lung_opacity": pct(r["lungs_hidden_lung_opacity"]),
            "lungs_hidden_auc": f"{r['lungs_hidden_auc']:.3f}", "lungs_only": pct(r["lungs_only"]),
            "lungs_as_is": pct(r["as_is"]), "lungs_reading": r["text"]} | targets


def roi_reason(roi: dict) -> str:
    """Why the default site's net value has its sign, from the numbers: what the AI costs, what it
    saves, and the input that moves the result most (the top of the tornado)."""
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
    t = {
        "accuracy": pct(record["accuracy"], record["accuracy_ci"]),
        "macro_auc": interval(record["macro_auc"], record["macro_auc_ci"], 1, 3),
        "covid_sensitivity": pct(record["covid_sensitivity"], record["covid_sensitivity_ci"]),
        "covid_counts": "{} of {}".format(*record["covid_sensitivity_counts"]),
        "test_images": f"{record['test_images']:,}",
        "model_kind": record["model_kind"],
        "twin_agreement": pct(record["twin_agreement"]) if record["twins"] else "not measured (no audit twins)",
        "twins": f"{record['twins']:,}",
        **_lung_text(record.get("occlusion")),
        "ships_why": outside_experiment.summary(outside_experiment.read(), record.get("model_sha256")),
        "roi_site": record["roi"]["site"],
        "roi_operating_point": record["roi"]["operating_point"],
    }
    t |= speed_facts.glue_names(speed_facts.facts(record))  # every speed the page may quote, each named
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
    twins_after = (ad or {}).get("twin_agreement_after")
    t["adapt_twins"] = (f"; the price is agreement on the audit twins, which falls from "
                        f"{pct(ad['twin_agreement_before'])} to {pct(twins_after)}" if twins_after is not None else "")
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


def external_tables(external: dict, evaluation: dict) -> dict:
    """The external-validation chapter's tables: per class beside the database test split (with
    image- and patient-level intervals), per collection, and the confusion matrix."""
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


def training_text(training: tuple | None, model) -> str:
    """Chapter 03's sentence on how the model was trained (`registry.Model.training()`)."""
    if training is None and model.meta().get("members"):
        return (f"The file {model.checkpoint.name} ({model.name}) holds two networks and carries neither run's "
                "training history, so this build cannot show them; `make reproduce` retrains both on this machine, "
                "and each run's folder keeps its history (history.csv).")
    if training is None:
        return (f"The file {model.checkpoint.name} ({model.name}) does not carry its run's training history, so "
                "this build cannot show it; `make reproduce` retrains the recipe on this machine and builds this "
                "chapter from that run, history included.")
    history, summary = training
    return (f"The report's rule kept epoch {summary['best_epoch']} of {len(history)}. Training took "
            f"{summary['train_wall_seconds'] / 60:.1f} min on the machine that trained it, "
            f"{summary['activation_cache_seconds'] / 60:.1f} min of it for the frozen-layer cache.")


def original_words(original: dict, twin_target: float) -> dict[str, str]:
    """The original project's headline numbers and the twin target, as the summary quotes them."""
    return {"orig_accuracy": f"{100 * original['accuracy']:.1f}%", "orig_macro_auc": f"{original['macro_auc']:.3f}",
            "orig_covid_sensitivity": f"{100 * original['per_class']['COVID']['sensitivity']:.1f}%",
            "twin_target": f"{100 * twin_target:.0f}%"}


def evaluation_words(s: dict) -> dict[str, str]:
    """Chapter 04's headline numbers from the evaluation record: the test images, the temperature,
    the accuracy and its counts, and the macro ROC-AUC. The accuracy and the AUC are the summary's
    facts under the summary's names, so they read the same on both pages (`summary_text`)."""
    return {"test_n": f"{s['n']:,}", "temperature": f"{s['temperature']:.3f}",
            "accuracy": pct(s["accuracy"], s["accuracy_ci"]), "accuracy_counts": f"{s['correct']:,} of {s['n']:,}",
            "macro_auc": interval(s["macro_auc"], s["macro_auc_ci"], 1, 3)}


def _card_shortcuts(figures: dict | None) -> dict[str, str]:
    if not figures:
        return {"shortcut figures (card)": "not recorded"}
    found = figures["sensitivity"]  # `cxr.assess.shortcuts.figures`, as `cxr export` puts them on the card
    return {"with the lungs hidden, COVID-19 / Lung Opacity found (card)":
            f"{pct(found['COVID'])} / {pct(found['Lung_Opacity'])}",
            "with the lungs hidden, COVID-19 vs Normal AUC (card)": f"{figures['covid_vs_normal_auc']:.3f}"}


def model_card_facts(meta: dict, path: Path) -> pd.DataFrame:
    """Chapter 08: what the shipped file says of itself (its card), one fact a row."""
    card, test = meta["card"], meta["card"]["test_split"]
    twins = card.get("twin_agreement")
    facts = {"file": f"{path.name}, {path.stat().st_size / 1e6:.1f} MB, {meta.get('precision')}",
             "exported from run": meta.get("source_run"),
             "test accuracy (card)": pct(test["accuracy"], test["accuracy_ci"]),
             "twin agreement (card)": f"{100 * twins['agreement']:.1f}%" if twins else "not recorded",
             **_card_shortcuts(card.get("shortcut_figures")),
             "operating points": ", ".join(meta.get("operating_points") or {}),
             "intended use": card["intended_use"], "known limits": card["known_limits"],
             "clinical use": card["not_for_clinical_use"]}
    return pd.Series(facts, name="").to_frame()


def precision_words(check: dict | None) -> str:
    """Chapter 08's sentence on the half-precision check (`records.precision_check`)."""
    if check is None:
        return "not made here: the shipped model came from another run than this profile's final model"
    return (f"the largest difference is {check['largest_difference_points']:.2f} points (allowed "
            f"{check['allowed_points']}); accuracy {100 * check['shipped_accuracy']:.2f}% in half precision against "
            f"{100 * check['full_accuracy']:.2f}% in full precision")
