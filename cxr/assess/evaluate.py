"""`cxr evaluate`: run a model on any labelled folder (the Kaggle layout) and evaluate it.

Reads and preprocesses every file (unusable ones are listed with the reason and skipped),
predicts through `cxr.model.checkpoints`, and scores with `cxr.core.metrics`; with `--split test` it also
chooses the deployment operating points on the folder's validation split, and with
`--thresholds` it applies those of another record. Writes a JSON record, a text summary and the
per-file predictions.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import CLASSES, Config, display_path
from cxr.core.files import write_csv, write_json, write_text
from cxr.core.metrics import (by_group, choose_operating_points, confusion_matrix, ece, measure_operating_points,
                              operating_point_rules, patient_level, summary, temper)
from cxr.data.labelled import list_labelled, read_labelled
from cxr.data.splits import load_split
from cxr.model.checkpoints import pixel_config, predict
from cxr.model.registry import Model, at, default_checkpoint


def evaluate_folder(data_dir: str | Path, checkpoint: str | Path | Model | None = None, out: str | Path | None = None,
                    progress: bool = True, n_boot: int = 1000, seed: int = 0, split: str | None = None, *,
                    config: Config, thresholds_from: str | Path | dict | None = None, stamp: dict | None = None) -> dict:
    """Run a model on any folder in the Kaggle layout and evaluate it against the folder labels.

    Labels come from the class folder names (<class>/images/*.png|jpg, or <class>/*.png|jpg).
    Unreadable or unusable files are reported in "skipped" and the rest is evaluated. Writes
    `out` (JSON), a text summary next to it (.txt) and per-file predictions (.csv) when `out`
    is given. Probabilities are temperature-scaled with the checkpoint's temperature, if any.
    `split` ('train', 'val' or 'test') keeps only that split's files of the folder's split file
    (in the profile of `config`).

    Operating points (`OPERATING_POINTS`) are always chosen on a validation split and measured
    here unchanged: with `split="test"` the folder's own validation split is predicted and used;
    otherwise `thresholds_from` (an evaluation record, or its path, made with `--split test`)
    supplies them; with neither, the record has no operating points. A folder with a
    `manifest.csv` that has a `collection` column is also evaluated per collection.
    """
    data_dir = Path(data_dir)
    list_labelled(data_dir)  # a missing folder fails here, before any model is loaded
    points = _thresholds_record(thresholds_from) if thresholds_from is not None else None
    found = checkpoint if isinstance(checkpoint, Model) else at(checkpoint or default_checkpoint(config), config)
    checkpoint = found.checkpoint
    model, meta = found.runner, found.loaded[1]
    cfg = pixel_config(meta, config)
    temperature = float(meta.get("temperature", 1.0))
    sp = load_split(data_dir, config, create=False) if split else None

    def run_on(which: str | None):
        files, skipped = list_labelled(data_dir)
        if which:
            files = files[files.file.isin(set(sp.file[sp.split == which]))].reset_index(drop=True)
            skipped = skipped[skipped.file.isin(set(sp.file))].reset_index(drop=True)
        files, raw, skipped = _predict_files(data_dir, files, skipped, model, meta, cfg, progress)
        return files, raw, skipped

    files, raw, skipped = run_on(split)
    proba = temper(raw, temperature)
    y = files.label.map(CLASSES.index).to_numpy()
    s = summary(y, proba, n_boot=n_boot, seed=seed)
    result = {
        "data": display_path(data_dir), "split": split, "checkpoint": display_path(checkpoint),
        "model_sha256": found.digest, "temperature": temperature,
        **{k: s[k] for k in ("n", "correct", "accuracy", "accuracy_ci", "macro_auc", "macro_auc_ci")},
        "ece": ece(y, proba), "ece_uncalibrated": ece(y, raw),
        "per_class": {c: {k: v for k, v in m.items()} for c, m in s["per_class"].items()},
        "confusion": confusion_matrix(y, proba.argmax(1)).tolist(),
        "skipped": skipped.to_dict("records"),
    }
    if split == "test":
        vfiles, vraw, _ = run_on("val")
        points = choose_operating_points(vfiles.label.map(CLASSES.index).to_numpy(), temper(vraw, temperature))
        result["operating_points_chosen_on"] = "the validation split of the same folder"
    elif points is not None:
        result["operating_points_chosen_on"] = f"the validation split of {points['data']} (from {points['source']})"
        if points["checkpoint"] not in (str(checkpoint), display_path(checkpoint)):
            result["operating_points_warning"] = (f"the thresholds were chosen for {points['checkpoint']}, "
                                                  f"not for this model ({display_path(checkpoint)})")
        points = points["operating_points"]
    if points is not None:
        measured = measure_operating_points(points, y, proba, label="measured")
        result["operating_points"] = measured
    manifest = _manifest(data_dir)
    if manifest is not None:
        files = files.merge(manifest, on="file", how="left")
        patients = None
        if "patient_id" in files:  # ids are unique within a collection only
            patients = (files.get("collection", pd.Series("", index=files.index)).fillna("").astype(str) + ":" +
                        files.patient_id.fillna("").astype(str)).where(files.patient_id.fillna("") != "", "").to_numpy()
            result["patient_level"] = patient_level(y, proba.argmax(1), patients, seed=seed)
        if "collection" in files:
            result["by_collection"] = by_group(files.collection.fillna("unknown").to_numpy(), y, proba, patients)
    result |= stamp or {}  # what names the record's model and data (`registry.Model.ref`), when a record asks
    if out:
        out = Path(out)
        write_json(result, out)
        write_text(format_summary(result), out.with_suffix(".txt"))
        pred = files.assign(**{c: proba[:, i] for i, c in enumerate(CLASSES)}, pred=[CLASSES[i] for i in proba.argmax(1)])
        write_csv(pred, out.with_suffix(".csv"))
    return result


def headline(ev: dict) -> dict:
    """An evaluation record's headline as the summary and the lung comparison quote it: images,
    accuracy with its interval (over patients when the folder names them), the normal films and
    how many of them, and of all films, are called COVID-19."""
    confusion = np.asarray(ev["confusion"])
    normal, covid = CLASSES.index("Normal"), CLASSES.index("COVID")
    pl = ev.get("patient_level") or {}
    return {"images": ev["n"], "accuracy": ev["accuracy"], "accuracy_ci": pl.get("accuracy_ci", ev["accuracy_ci"]),
            "interval": "patients" if pl else "images", "patients": pl.get("patients"),
            "normals": int(confusion[normal].sum()), "normals_called_covid": int(confusion[normal, covid]),
            "called_covid": int(confusion[:, covid].sum())}


def _predict_files(data_dir: Path, files: pd.DataFrame, skipped: pd.DataFrame, model, meta: dict, cfg,
                   progress: bool) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Read, preprocess and predict (raw probabilities) the listed files; unusable ones go to `skipped`."""
    files, pixels, skipped = read_labelled(data_dir, files, skipped, cfg, progress)
    return files, predict(model, pixels, meta["input_size"], progress=progress), skipped

def _manifest(data_dir: Path) -> pd.DataFrame | None:
    """The folder's manifest.csv (file, collection, patient id), if it has one."""
    path = data_dir / "manifest.csv"
    if not path.exists():
        return None
    m = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "file" not in m:
        return None
    m = m.rename(columns={"patientid": "patient_id"})
    keep = [c for c in ("file", "collection", "patient_id") if c in m]
    return m[keep]


def _thresholds_record(source: str | Path | dict) -> dict:
    """Operating points chosen on validation, from an evaluation record (made with --split test)."""
    if isinstance(source, dict):
        record, name = source, "the given record"
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"No evaluation record at {path}: write it with `cxr evaluate --data DATASET "
                                    f"--split test --out {path}`.")
        record, name = json.loads(path.read_text()), str(path)
    if "operating_points" not in record or record.get("split") != "test":
        raise ValueError(f"{name} has no operating points chosen on validation: make it with "
                         "`cxr evaluate --data DATASET --split test --out FILE`.")
    points = operating_point_rules(record["operating_points"])
    return {"operating_points": points, "checkpoint": record.get("checkpoint"), "data": record.get("data"),
            "source": name}


def format_summary(r: dict) -> str:
    """A short plain-text summary of an evaluate_folder result."""
    def pct(v, ci):
        return f"{100 * v:5.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if not math.isnan(v) else "  n/a"
    where = r["data"] + (f" (split: {r['split']})" if r.get("split") else "")
    lines = [f"cxr evaluate: {where}", f"model: {r['checkpoint']}",
             f"images: {r['n']} evaluated, {len(r['skipped'])} skipped",
             f"accuracy {pct(r['accuracy'], r['accuracy_ci'])}   macro ROC-AUC {r['macro_auc']:.4f} "
             f"[{r['macro_auc_ci'][0]:.4f}, {r['macro_auc_ci'][1]:.4f}]   ECE {100 * r['ece']:.1f}%", "",
             f"{'class':<16}{'n':>6}  {'sensitivity':<24}{'specificity':<24}{'PPV':>7}{'NPV':>7}{'AUC':>8}"]
    for c, m in r["per_class"].items():
        lines.append(f"{c:<16}{m['n']:>6}  {pct(m['sensitivity'], m['sensitivity_ci']):<24}"
                     f"{pct(m['specificity'], m['specificity_ci']):<24}{100 * m['ppv']:6.1f}%{100 * m['npv']:6.1f}%"
                     f"{m['auc']:8.4f}")
    if r.get("operating_points"):
        lines += ["", f"operating points (thresholds chosen on {r['operating_points_chosen_on']}):"]
        for name, op in r["operating_points"].items():
            m = op["measured"]
            lines.append(f"  {name:<12} threshold {op['threshold']:.4f}   sensitivity "
                         f"{pct(m['sensitivity']['value'], m['sensitivity']['ci'])} ({m['tp']}/{m['tp'] + m['fn']})   "
                         f"specificity {pct(m['specificity']['value'], m['specificity']['ci'])} ({m['tn']}/{m['tn'] + m['fp']})")
        if r.get("operating_points_warning"):
            lines.append(f"  warning: {r['operating_points_warning']}")
    if r.get("patient_level"):
        pl = r["patient_level"]
        lines += ["", f"patient-level intervals ({pl['patients']} patients, {pl['method']}): accuracy "
                      f"{pct(pl['accuracy'], pl['accuracy_ci'])}; sensitivity " +
                  ", ".join(f"{c} {pct(m['sensitivity'], m['sensitivity_ci']).strip()} ({m['patients']} patients)"
                            for c, m in pl["per_class"].items())]
    for g, m in r.get("by_collection", {}).items():
        who = f", {m['patients']} patients" if m.get("patients") else ""
        lines.append(f"collection {g}: {m['n']} images{who}, accuracy {pct(m['accuracy']['value'], m['accuracy']['ci'])}; "
                     "predicted " + ", ".join(f"{c} {k}" for c, k in m["predicted"].items()))
    if r["skipped"]:
        lines += ["", "skipped:"] + [f"  {s['file']}: {s['reason']}" for s in r["skipped"][:50]]
        if len(r["skipped"]) > 50:
            lines.append(f"  ... and {len(r['skipped']) - 50} more (see the JSON)")
    lines.append("\nResearch use only; not for clinical use.")
    return "\n".join(lines)
