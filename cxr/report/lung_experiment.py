"""A model that reads the lungs against one that reads the whole film (issue 25): every measure
side by side on the same splits (`measure`), one record (`reports/lung_model.json`, `cxr
lung-compare`), and the choice of which ships by `targets.choose_input`, a rule that reads
validation numbers only. The external radiographs and the outside hospital's normal films are
measured and reported; the rule never sees them.

The lung fields of the occlusion pair and of the Grad-CAM energy are the lung segmenter's masks
of each model's own input (`segmenter.lung_fields`, as in the shortcut audit); a mask that fails
the check is replaced by the mean of the masks that pass, and the record counts how often.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr.assess import audit, explain
from cxr.assess.evaluate import evaluate_folder, headline
from cxr.assess.explain import occlusion
from cxr.core import metrics, records, targets
from cxr.core.book import interval, marked, pct
from cxr.core.config import CLASSES, Config
from cxr.core.files import write_json
from cxr.core.metrics import proportion
from cxr.data import segmenter
from cxr.data.dataset import external_dir, site_dir
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model import checkpoints
from cxr.model.registry import weights_digest


def occlusion_pair(predict, pixels: np.ndarray, y: np.ndarray, lungs: np.ndarray) -> dict:
    """Accuracy and balanced accuracy as is, with the lungs hidden and with only the lungs shown
    (`explain.occlusion`, flat)."""
    return {f"{name.replace(' ', '_')}_{m.replace(' ', '_')}": v for name, row in occlusion(predict, pixels, y, lungs).items()
            for m, v in row.items() if m in ("accuracy", "balanced accuracy")}


def _folder_numbers(folder: Path | None, checkpoint: Path, config: Config) -> dict | None:
    if folder is None or not Path(folder).is_dir():
        return None
    return headline(evaluate_folder(folder, checkpoint, progress=False, n_boot=1000, seed=config.seed, config=config))


def measure(checkpoint: str | Path, config: Config, name: str | None = None,
            progress: bool = False) -> dict:
    """Every measure of the comparison for one model, on the profile's data: validation (what the
    rule reads), test, the twins, the occlusion pair and Grad-CAM energy with real lung masks, the
    external radiographs and the outside hospital's normal films (reported only)."""
    checkpoint = Path(checkpoint)
    model, meta = checkpoints.load_model(checkpoint, config.device)
    size, temperature = meta["input_size"], float(meta.get("temperature", 1.0))
    pcfg = checkpoints.pixel_config(meta, config)
    root, table = load_table(config)
    pixels = load_pixels(root, table, pcfg, progress=progress)
    y_all = table.label.map(CLASSES.index).to_numpy()

    def predict(px):
        return metrics.temper(checkpoints.predict(model, px, size, progress=False), temperature)

    seg = segmenter.load()[0]
    twins = audit.load_twins(pcfg, root)
    row = {"name": name or checkpoint.stem, "checkpoint": str(checkpoint), "input": pcfg.lungs,
           "model_sha256": weights_digest(checkpoint)}
    for split in ("val", "test"):
        rows = table.index[table.split == split].to_numpy()
        px, y = np.asarray(pixels[rows]), y_all[rows]
        p = predict(px)
        s = metrics.summary(y, p, n_boot=1000 if not config.smoke else 100, seed=config.seed)
        lungs, replaced = segmenter.lung_fields(px, seg)
        tw = audit.twin_check(predict, twins, splits=(split,))
        row[split] = {
            "images": int(len(rows)), "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
            "balanced_accuracy": metrics.balanced_accuracy(y, p),
            "macro_auc": s["macro_auc"], "macro_auc_ci": s["macro_auc_ci"],
            "sensitivity": {c: s["per_class"][c]["sensitivity"] for c in CLASSES},
            "covid_sensitivity_ci": s["per_class"]["COVID"]["sensitivity_ci"],
            "twin_agreement": tw["agreement"], "twins": tw["n"],
            "occlusion": occlusion_pair(predict, px, y, lungs), "masks_replaced": replaced}
    sample = audit.map_sample(table, config)
    cams = explain.cam_maps(model, pixels[sample], size, method="GradCAM")
    lungs, _ = segmenter.lung_fields(pixels[sample], seg)
    energy = explain.energy_table(cams, lungs, table.label.iloc[sample])
    row["cam_energy"] = {"images": int(len(sample)), "lung": float(energy.lung.mean()),
                         "border": float(energy.border.mean()), "lung_area": float(energy.lung_area.mean()),
                         "lung_by_class": energy.groupby("label").lung.mean().to_dict()}
    row["external"] = _folder_numbers(external_dir(), checkpoint, config)
    site = _folder_numbers(site_dir(), checkpoint, config)
    if site is not None:

        pr = proportion(site["normals_called_covid"], site["normals"])
        site |= {"false_covid": pr["value"], "false_covid_ci": pr["ci"]}
    row["site_before_adaptation"] = site
    return row


def rule_numbers(row: dict) -> dict:
    """What `targets.choose_input` may read of a row: its validation numbers only."""
    v = row["val"]
    return {"twin_agreement": v["twin_agreement"], "sensitivity": v["sensitivity"],
            "balanced_accuracy": v["balanced_accuracy"],
            "lungs_hidden_balanced_accuracy": v["occlusion"]["lungs_hidden_balanced_accuracy"]}


def comparison(rows: list[dict], profile: str) -> dict:
    """The record of the profile's models: every model's row and the one the rule chooses."""
    chosen = targets.choose_input([rule_numbers(r) for r in rows]) if rows else None
    return {"profile": profile, "rule": targets.choose_input.__doc__.strip().split("\n\n")[0],
            "rule_reads": "validation: twin agreement, sensitivity floors, lungs-hidden balanced accuracy, balanced accuracy",
            "targets": {"lungs_hidden_balanced_max": targets.LUNGS_HIDDEN_MAX, "lungs_only_gap": targets.LUNGS_ONLY_GAP,
                        "twin_agreement": targets.TWIN_AGREEMENT},
            "models": rows, "chosen": rows[chosen]["name"] if rows else None, "command": "cxr lung-compare"}


def record(models: dict[str, str | Path], config: Config, out: str | Path | None = None) -> dict:
    """`cxr lung-compare`: measure each named model, choose, and write the record."""
    rec = comparison([measure(path, config, name) for name, path in models.items()], config.profile)
    if out:
        write_json(rec, out)
    return rec


def table(rec: dict) -> pd.DataFrame:
    """The record as the book shows it: one row per measure, one column per model (test split
    unless the row says otherwise; intervals are 95%)."""
    cols = {}
    for r in rec["models"]:
        t, v = r["test"], r["val"]
        ext, site = r.get("external"), r.get("site_before_adaptation")
        o = t["occlusion"]
        cols[marked(r["name"], "chosen") if r["name"] == rec["chosen"] else r["name"]] = {
            "input": r["input"],
            "test accuracy": pct(t["accuracy"], t["accuracy_ci"]),
            "macro AUC": interval(t["macro_auc"], t["macro_auc_ci"], 1, 3),
            "COVID-19 sensitivity": pct(t["sensitivity"]["COVID"], t["covid_sensitivity_ci"]),
            "twin agreement (test twins)": pct(t["twin_agreement"]),
            "balanced accuracy as is": pct(o["as_is_balanced_accuracy"]),
            "lungs hidden (balanced)": pct(o["lungs_hidden_balanced_accuracy"]),
            "lungs only (balanced)": pct(o["lungs_only_balanced_accuracy"]),
            "Grad-CAM energy in the lungs": pct(r["cam_energy"]["lung"]),
            "external accuracy": pct(ext["accuracy"], ext["accuracy_ci"]) if ext else "not measured",
            "external normals called COVID-19": f"{ext['normals_called_covid']} of {ext['normals']}" if ext else "not measured",
            "site normals called COVID-19": pct(site["false_covid"], site["false_covid_ci"]) if site else "not measured",
            "validation: lungs hidden (balanced)": pct(v["occlusion"]["lungs_hidden_balanced_accuracy"]),
            "validation: twin agreement": pct(v["twin_agreement"]),
            "validation: balanced accuracy": pct(v["balanced_accuracy"]),
        }
    return pd.DataFrame(cols)


def target_check(row: dict) -> pd.DataFrame:
    """One model against every target of issue 25: its value, the target, met or missed, and by
    how much (in points, or films for the normals called COVID-19)."""
    t, ext = row["test"], row.get("external")
    o = t["occlusion"]
    T = targets.LUNG_MODEL
    lines = [("lungs hidden (balanced accuracy)", o["lungs_hidden_balanced_accuracy"], targets.LUNGS_HIDDEN_MAX, "at most"),
             ("lungs only, below as is (points)", o["as_is_balanced_accuracy"] - o["lungs_only_balanced_accuracy"],
              targets.LUNGS_ONLY_GAP, "at most"),
             ("test accuracy", t["accuracy"], T["test accuracy"], "at least"),
             ("COVID-19 sensitivity", t["sensitivity"]["COVID"], T["COVID-19 sensitivity"], "at least"),
             ("macro AUC", t["macro_auc"], T["macro AUC"], "at least"),
             ("twin agreement", t["twin_agreement"], T["twin agreement"], "at least")]
    if ext:
        lines += [("external accuracy", ext["accuracy"], T["external accuracy"], "at least"),
                  ("external normals called COVID-19", ext["normals_called_covid"], T["external normals called COVID-19"],
                   "at most")]
    out = []
    for name, value, target, how in lines:
        films = name.startswith("external normals")
        met = value <= target + 1e-9 if how == "at most" else value >= target - 1e-9
        gap = abs(value - target)
        out.append({"measure": name, "value": f"{value}" if films else (f"{value:.3f}" if name == "macro AUC" else pct(value)),
                    "target": f"{how} {target}" if films else f"{how} " + (f"{target}" if name == "macro AUC" else pct(target, digits=0)),
                    "verdict": "met" if met else "missed by " + (f"{gap:g} films" if films else
                                                                  f"{gap:.3f}" if name == "macro AUC" else f"{100 * gap:.1f} points")})
    return pd.DataFrame(out).set_index("measure")


def verdict(rec: dict) -> str:
    """What the comparison says, in words chosen from its numbers: which model the rule chose, and
    for each lung model how the occlusion pair, the external normals and the database accuracy moved
    against the whole-film model."""
    rows = {r["name"]: r for r in rec["models"]}
    whole = next((r for r in rec["models"] if r["input"] == "none"), None)
    parts = [f"By that rule (validation numbers only), {rec['chosen']} was chosen"
             + (", so the whole-film model kept shipping then." if rows[rec["chosen"]]["input"] == "none" else
                ", so the lung model was the one to ship then.")]
    if whole is None:
        return parts[0]
    w = whole["test"]
    for r in rec["models"]:
        if r["input"] == "none":
            continue
        t = r["test"]
        d_acc = 100 * (t["accuracy"] - w["accuracy"])
        hid, w_hid = t["occlusion"]["lungs_hidden_balanced_accuracy"], w["occlusion"]["lungs_hidden_balanced_accuracy"]
        moved = "falls" if d_acc < 0 else "rises" if d_acc > 0 else "stays"
        text = (f"{r['name']}: with the lungs hidden its balanced accuracy is {pct(hid)} (whole film {pct(w_hid)}), "
                f"and its test accuracy {moved}" + (f" by {abs(d_acc):.1f} points" if d_acc else "") +
                f" ({pct(t['accuracy'])} against {pct(w['accuracy'])})")
        ext, w_ext = r.get("external"), whole.get("external")
        if ext and w_ext:
            text += (f"; outside the database it calls {ext['normals_called_covid']} of {ext['normals']} normal films "
                     f"COVID-19 (whole film {w_ext['normals_called_covid']}) and its accuracy is {pct(ext['accuracy'])} "
                     f"(whole film {pct(w_ext['accuracy'])})")
        parts.append(text + ".")
    return " ".join(parts)


def summary(rec: dict | None) -> str:
    """One sentence for the executive summary: what giving a model only the lungs did to the
    lungs-hidden measure, and which model the rule kept, in words chosen from the record."""
    if rec is None:
        return "No model shown only the lungs has been measured yet (cxr lung-compare)."
    lung = [r for r in rec["models"] if r["input"] != "none"]
    if not lung:
        return "No model shown only the lungs is in the comparison record."
    best = min(lung, key=lambda r: r["test"]["occlusion"]["lungs_hidden_balanced_accuracy"])
    hid = best["test"]["occlusion"]["lungs_hidden_balanced_accuracy"]
    met = hid <= targets.LUNGS_HIDDEN_MAX + 1e-9
    names = " and ".join(f"{r['name']} ({r['input']})" for r in lung)
    chosen = next(r for r in rec["models"] if r["name"] == rec["chosen"])
    where = " on the full data" if rec.get("profile") == "full" else ""
    return (f"Models shown only the lungs were trained with the same recipe ({names}; measured by cxr lung-compare{where}); "
            f"the lowest of their "
            f"lungs-hidden balanced accuracies is {pct(hid)} ({best['name']}), "
            + ("within" if met else "above") + f" the {pct(targets.LUNGS_HIDDEN_MAX, digits=0)} target, so "
            + ("giving a model only the lungs made it need them" if met else
               "giving a model only the lungs did not make it need them")
            + f". The rule, on validation numbers only, kept {'the whole-film model' if chosen['input'] == 'none' else chosen['name']}.")


#: names an earlier `cxr lung-compare` gave a model, and the name it has now: "(shipped)" was true
#: when the record was made, and is not a name (the whole-film model no longer ships)
RENAMED = {"whole film (shipped)": "whole film"}


def read(path: str | Path | None = None) -> dict | None:
    """The committed record (`reports/lung_model.json`), or None; models named as `RENAMED` says."""
    rec = records.read(Path(path) if path else "lung_model.json")
    if rec is not None:
        for r in rec["models"]:
            r["name"] = RENAMED.get(r["name"], r["name"])
        rec["chosen"] = RENAMED.get(rec["chosen"], rec["chosen"])
    return rec
