"""The shortcut audit of a trained run, as one record (`reports/explain.json`, `cxr audit`).

Does the model read the lungs, or the processing and the hospital? The audit measures:

* twin agreement: the audit twins (a main-set radiograph passed through another processing
  chain) should get their original's prediction; judged on twins of validation and test
  originals, never trained on, and reported against `targets.TWIN_AGREEMENT`;
* how visible the chain is (a probe on frozen ImageNet features);
* where Grad-CAM's energy falls (lung field, border frame, corners), whether the maps depend on
  the trained weights (randomisation check) and whether they are faithful (ROAD);
* accuracy with the lung field hidden, and with everything else hidden;
* against a "before" run (the same recipe without harmonisation), what the mitigation costs.

`compare` puts several runs side by side on validation and test (twins, lowest sensitivity,
external accuracy) and marks the one `targets.choose` picks from their validation numbers.
`chapter 05` shows what these functions compute; it computes nothing of its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr.assess import explain
from cxr.assess.shortcuts import SHORTCUT_CLASSES
from cxr.assess.evaluate import evaluate_folder
from cxr.core import metrics, records, targets
from cxr.core.config import CLASSES, VERSIONS, Config
from cxr.core.runtime import show_progress
from cxr.data import segmenter
from cxr.data.dataset import find_dataset
from cxr.data.preprocess import load_pixels
from cxr.data.scanning import main_subset, scan
from cxr.data.splits import load_audit, load_table
from cxr.model import backends, checkpoints, features


# --------------------------------------------------------------------------- twins
def twin_agreement(pred_orig: np.ndarray, pred_twin: np.ndarray) -> dict:
    """How often a twin gets its original's prediction, and how often it drifts to Lung Opacity."""
    lo = CLASSES.index("Lung_Opacity")
    n = len(pred_orig)
    return {"n": int(n), "agreement": float(np.mean(pred_orig == pred_twin)) if n else float("nan"),
            "to_lung_opacity": float(np.mean((pred_twin == lo) & (pred_orig != lo))) if n else float("nan")}


@dataclass
class Twins:
    """The audit twins with their originals' pixels; `split` is the original's split."""
    twins: pd.DataFrame
    originals: pd.DataFrame
    twin_px: np.ndarray
    orig_px: np.ndarray

    @property
    def split(self) -> np.ndarray:
        return self.twins.twin_split.to_numpy()

    def only(self, *splits: str) -> "Twins":
        keep = np.isin(self.split, splits)
        return Twins(self.twins[keep].reset_index(drop=True), self.originals[keep].reset_index(drop=True),
                     self.twin_px[keep], self.orig_px[keep])

    def __len__(self) -> int:
        return len(self.twins)


def load_twins(config: Config, root: str | Path | None = None) -> Twins:
    """Every audit twin of the dataset whose original is in the main set, with both images preprocessed."""
    root = Path(root) if root else find_dataset()
    twins = load_audit(config, root)
    main = main_subset(scan(root, config, progress=False))[0].set_index("file")
    twins = twins[twins.twin_file.isin(main.index)].reset_index(drop=True)
    originals = main.loc[twins.twin_file].reset_index()
    return Twins(twins, originals, np.asarray(load_pixels(root, twins, config, progress=False)),
                 np.asarray(load_pixels(root, originals, config, progress=False)))


def twin_check(predict, twins: Twins, splits=("val", "test")) -> dict:
    """Twin agreement of `predict` (images -> class probabilities) on the twins of originals in `splits`."""
    t = twins.only(*splits)
    if not len(t):
        return twin_agreement(np.zeros(0, int), np.zeros(0, int))
    return twin_agreement(np.asarray(predict(t.orig_px)).argmax(1), np.asarray(predict(t.twin_px)).argmax(1))


def predictor(model, size: int):
    """images -> probabilities for a loaded cxr model."""
    return lambda px: checkpoints.predict(model, px, size, progress=False)


def chain_probe_auc(features_orig: np.ndarray, features_twin: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC-AUC of a logistic regression telling twins from their originals.

    Both images of a pair always fall in the same fold, so the probe cannot match pairs.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(features_orig)
    fold = np.random.default_rng(seed).integers(0, folds, n)
    X = np.concatenate([features_orig, features_twin])
    y = np.r_[np.zeros(n), np.ones(n)]
    f = np.r_[fold, fold]
    score = np.zeros(2 * n)
    for k in range(folds):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        clf.fit(X[f != k], y[f != k])
        score[f == k] = clf.predict_proba(X[f == k])[:, 1]
    return float(roc_auc_score(y, score))


# --------------------------------------------------------------------------- one run, the whole audit
@dataclass
class Audit:
    """The record, and what the chapter draws from (maps, regions, per-image tables)."""
    record: dict
    details: dict = field(default_factory=dict)


def run_numbers(run, model, size: int, twins: Twins) -> dict:
    """A run's test numbers and twin agreement, as the before/after comparison shows them."""
    y, p = run.proba("test")
    s = metrics.summary(y, p, n_boot=200, seed=0)
    held = twin_check(predictor(model, size), twins)
    train_twins = twin_check(predictor(model, size), twins, splits=("train",))
    return {"run": run.name, "test_accuracy": s["accuracy"], "test_macro_auc": s["macro_auc"],
            "sensitivity": {c: s["per_class"][c]["sensitivity"] for c in CLASSES},
            "twin_agreement": held["agreement"], "twin_to_lung_opacity": held["to_lung_opacity"], "twins": held["n"],
            "twin_agreement_train_twins": train_twins["agreement"]}


def map_sample(table: pd.DataFrame, config: Config, n_maps: int | None = None) -> np.ndarray:
    """The test images whose saliency maps the audit computes (sorted table rows, fixed by the seed)."""
    test = table.index[table.split == "test"].to_numpy()
    n_maps = min(len(test), n_maps or (400 if not config.smoke else 24))
    return np.sort(np.random.default_rng(config.seed).choice(test, n_maps, replace=False))


def sample_predictions(run, table: pd.DataFrame, sample: np.ndarray) -> np.ndarray:
    """The predicted class of each sampled row, from the model's test predictions."""
    saved = run.predictions("test").set_index("file")
    return saved.loc[table.file[sample], list(CLASSES)].to_numpy().argmax(1)


def cam_cases(sample: np.ndarray, y: np.ndarray, pred: np.ndarray) -> list[tuple[int, str]]:
    """The images chapter 05 draws maps of: per class, the first sampled image the model gets right
    and the first it gets wrong (table rows, with "correct" or "wrong")."""
    cases = []
    for c in range(len(CLASSES)):
        cases += [(int(i), "correct") for i in sample[(y == c) & (pred == c)][:1]]
        cases += [(int(i), "wrong") for i in sample[(y == c) & (pred != c)][:1]]
    return cases


def shortcut_audit(run, config: Config, before=None, n_maps: int | None = None,
                   progress: bool = False) -> Audit:
    """The shortcut audit of `run` (a `registry.Model` or finished finetune run), against `before`
    (a run of the same recipe without harmonisation, or its `run_numbers` already measured) when given."""
    root, table = load_table(config)
    model, meta = checkpoints.load_model(run.checkpoint, config.device)
    config = checkpoints.pixel_config(meta, config)  # every image below is preprocessed as the model was trained
    pixels = load_pixels(root, table, config, progress=False)
    fast = backends.runner(model, meta, run.checkpoint, config)  # the bulk predictions; Grad-CAM uses `model`
    size = meta["input_size"]
    bar = tqdm(total=7, desc="shortcut audit", disable=not show_progress(progress))
    test = table.index[table.split == "test"].to_numpy()
    sample = map_sample(table, config, n_maps)
    n_maps = len(sample)
    y_all = table.label.map(CLASSES.index).to_numpy()
    pred_s = sample_predictions(run, table, sample)

    # the lung fields: the segmenter's masks (a failed one replaced by the mean of those that passed)
    seg = segmenter.load()[0]
    lungs_s, replaced_s = segmenter.lung_fields(pixels[sample], seg)
    bar.update()

    gradcam = explain.cam_maps(model, pixels[sample], size, method="GradCAM")
    energy = explain.energy_table(gradcam, lungs_s, table.label.iloc[sample])
    by_class = energy.groupby("label")[["lung", "border", "corners"]].mean()
    by_class.loc["all"] = energy[["lung", "border", "corners"]].mean()
    area = {"lung": float(lungs_s.mean()), "border": float(explain.border_region(size).mean()),
            "corners": float(explain.corner_region(size).mean())}
    by_class.loc["share of image area"] = [area["lung"], area["border"], area["corners"]]
    bar.update()

    randomised = explain.randomise_last_stages(model, from_block=11, seed=config.seed)
    random_maps = explain.cam_maps(randomised, pixels[sample], size, targets=list(pred_s), method="GradCAM")
    similarity = explain.map_similarity(gradcam, random_maps)
    bar.update()

    n_road = min(len(sample), 60 if not config.smoke else 6)
    road = explain.road_scores(model, pixels[sample[:n_road]], size, gradcam[:n_road], list(pred_s[:n_road]), seed=config.seed)
    random_cam = np.random.default_rng(config.seed).random(gradcam[:n_road].shape).astype(np.float32)
    road_random = explain.road_scores(model, pixels[sample[:n_road]], size, random_cam, list(pred_s[:n_road]), seed=config.seed)
    bar.update()

    test_px = np.asarray(pixels[test])
    test_lungs, replaced_test = segmenter.lung_fields(test_px, seg)
    y_test = y_all[test]
    # the images as they are: the run's own test predictions (the same model on the same images) when
    # they cover the test split row for row
    saved = run.predictions("test")
    as_is = (saved[list(CLASSES)].to_numpy(np.float32) if saved.file.tolist() == table.file[test].tolist() else None)

    def predict(px):
        if as_is is not None and px is test_px:
            return as_is
        return checkpoints.predict(fast, px, size, progress=False)

    occlusion = explain.occlusion(predict, test_px, y_test, test_lungs)
    bar.update()

    twins = load_twins(config, root)
    probe = math.nan
    if len(twins) >= 10:
        f_orig = features.embed(twins.orig_px, config, size=size, progress=False)
        f_twin = features.embed(twins.twin_px, config, size=size, progress=False)
        probe = chain_probe_auc(f_orig, f_twin, seed=config.seed)
    bar.update()

    after = run_numbers(run, fast, size, twins)
    before_numbers = before if isinstance(before, dict) else None  # measured already (the comparison record)
    if before is not None and before_numbers is None:
        b_model, b_meta = backends.load(before.checkpoint, config)
        before_numbers = run_numbers(before, b_model, b_meta["input_size"], twins)
    bar.update()
    bar.close()

    record = {
        "profile": config.profile, "run": run.name, "model_sha256": getattr(run, "digest", None),
        "audit_version": VERSIONS["audit"],
        "twin_agreement": after["twin_agreement"], "twin_to_lung_opacity": after["twin_to_lung_opacity"],
        "twins_evaluated": after["twins"], "twins_evaluated_from": "originals in the val and test splits",
        "twin_agreement_train_twins": after["twin_agreement_train_twins"],
        # None when the model file does not say (the shipped file carries no run summary)
        "train_twins_used_in_training": (None if (n := run.summary.get("train_twins")) is None else int(n)),
        "probe_auc": probe,
        "cam_energy_in_lung": {c: float(by_class.loc[c, "lung"]) for c in CLASSES if c in by_class.index},
        "cam_energy_in_border": {c: float(by_class.loc[c, "border"]) for c in CLASSES if c in by_class.index},
        "lung_area_fraction": area["lung"], "border_area_fraction": area["border"],
        "randomisation_similarity": float(np.nanmean(similarity)) if np.isfinite(similarity).any() else math.nan,
        "randomisation_similarity_metric": "mean Spearman rank correlation, trained vs last-stages-randomised Grad-CAM",
        "road_combined": {"gradcam": float(road.mean()), "random_map": float(road_random.mean()), "images": int(n_road)},
        "occlusion": {"lungs_hidden_accuracy": occlusion["lungs hidden"]["accuracy"],
                      "lungs_only_accuracy": occlusion["lungs only"]["accuracy"],
                      "as_is_accuracy": occlusion["as is"]["accuracy"],
                      "lungs_hidden_balanced_accuracy": occlusion["lungs hidden"]["balanced accuracy"],
                      "lungs_only_balanced_accuracy": occlusion["lungs only"]["balanced accuracy"],
                      "as_is_balanced_accuracy": occlusion["as is"]["balanced accuracy"],
                      # the shortcut figures (issue 38): what the model still finds with the lungs hidden
                      "lungs_hidden_sensitivity": {c: occlusion["lungs hidden"][f"{c} sensitivity"] for c in CLASSES},
                      "lungs_hidden_covid_vs_normal_auc": occlusion["lungs hidden"]["COVID vs Normal AUC"]},
        "after_mitigation": {k: after[k] for k in ("test_accuracy", "test_macro_auc", "sensitivity")},
        "before_mitigation": ({k: before_numbers[k] for k in ("run", "twin_agreement", "twin_to_lung_opacity",
                                                              "test_accuracy", "test_macro_auc", "sensitivity")}
                              if before_numbers else None),
        "targets": {"twin_agreement": targets.TWIN_AGREEMENT, "sensitivity_floors": targets.SENSITIVITY_FLOORS},
        "verdicts": targets.verdicts(after["twin_agreement"], after["sensitivity"]),
        "n_map_images": int(n_maps),
        # what chapter 05 shows beyond the headline numbers, so that it reads them instead of
        # auditing again (`view`)
        "map_images": {"files": table.file[sample].tolist(), "predicted": [CLASSES[k] for k in pred_s]},
        "randomisation_similarity_per_image": [float(v) for v in similarity],
        "lung_field": "the lung segmenter's masks (cxr.data.segmenter.lung_fields)",
        "lung_sources": {"segmenter": int(len(sample) - replaced_s), "mean of the passing masks": replaced_s},
        "lung_sources_test": {"segmenter": int(len(test) - replaced_test), "mean of the passing masks": replaced_test},
        "energy_by_class": by_class.to_dict(orient="index"),
        "occlusion_by_class": occlusion,
        "twins_total": len(twins),
        "runs": {"after: final model": _flat(after),
                 **({"before: no harmonisation": _flat(before_numbers)} if before_numbers else {})},
        "command": "cxr audit --out reports/explain.json",
    }
    details = {"sample": sample, "pred": pred_s, "lungs": lungs_s, "gradcam": gradcam,
               "random_maps": random_maps, "energy": energy, "road": road, "road_random": road_random,
               "twins": twins}
    return Audit(record, details)


#: the record keys `view` reads (a record made before they were added is audited again)
VIEW_KEYS = ("map_images", "randomisation_similarity_per_image", "lung_field", "lung_sources", "energy_by_class",
             "occlusion_by_class", "twins_total", "runs")


def view(record: dict, model, size: int, table: pd.DataFrame, pixels, config: Config,
         n_shown: int = 4) -> dict:
    """What chapter 05 draws, from an audit record (`shortcut_audit`) and the images: the map sample
    and its predictions, the tables, and the maps of the first `n_shown` sampled
    images (trained and randomised; recomputed, as the audit computed them). Nothing of the audit is
    measured again."""
    row_of = pd.Series(table.index, index=table.file)
    maps = record["map_images"]
    sample = row_of.loc[maps["files"]].to_numpy()
    pred = np.array([CLASSES.index(c) for c in maps["predicted"]])
    shown = sample[:n_shown]
    randomised = explain.randomise_last_stages(model, from_block=11, seed=config.seed)
    test = table.index[table.split == "test"].to_numpy()
    return {
        "sample": sample, "pred": pred,
        "gradcam": explain.cam_maps(model, pixels[shown], size, method="GradCAM"),
        "random_maps": explain.cam_maps(randomised, pixels[shown], size, targets=list(pred[:n_shown]), method="GradCAM"),
        "similarity": np.asarray(record["randomisation_similarity_per_image"], float),
        "lung_sources": record["lung_sources"],
        "energy_by_class": pd.DataFrame(record["energy_by_class"]).T[["lung", "border", "corners"]],
        "occlusion": pd.DataFrame(record["occlusion_by_class"]).T,
        "test_lungs": segmenter.lung_fields(pixels[test[:6]])[0],
        "n_twins": record["twins_total"],
        "runs": runs_table(record["runs"]),
    }


def runs_table(runs: dict) -> pd.DataFrame:
    """The audited runs side by side as the page shows them: counts as counts, AUCs to three
    places, every other figure (a share) as a percentage."""
    def shown(key: str, v) -> str:
        if v is None:
            return "n/a"
        if key.startswith("twins"):
            return f"{int(v):,}"
        return f"{v:.3f}" if "auc" in key else f"{100 * v:.1f}%"

    return pd.DataFrame({name: {k: shown(k, v) for k, v in numbers.items()} for name, numbers in runs.items()})


def lung_reading(occlusion: dict) -> dict:
    """What the occlusion pair (the record's `occlusion`) says about whether a model reads the lungs,
    in words chosen from the numbers: it needs the lungs when, with them hidden, it finds at most
    `targets.OUTSIDE_TARGETS["lungs_hidden_sensitivity"]` of the COVID-19 films and of the Lung
    Opacity films (the shortcut figures); the lungs are enough when, with only them shown, its
    balanced accuracy is within `targets.LUNGS_ONLY_GAP` of its balanced accuracy as is."""
    found = occlusion["lungs_hidden_sensitivity"]
    shortcut = max(found[c] for c in SHORTCUT_CLASSES)
    only, as_is = occlusion["lungs_only_balanced_accuracy"], occlusion["as_is_balanced_accuracy"]
    needs = shortcut <= targets.OUTSIDE_TARGETS["lungs_hidden_sensitivity"] + 1e-9  # at the target counts as meeting it
    enough = as_is - only <= targets.LUNGS_ONLY_GAP + 1e-9
    words = {(False, False): "it does not need the lungs, and the lungs alone are not enough for it: something "
                             "outside them still tells it COVID-19 or Lung Opacity",
             (False, True): "it can read the lungs, but it does not need them: something outside the lungs also "
                            "tells it COVID-19 or Lung Opacity",
             (True, False): "it needs the lungs, but also what lies around them",
             (True, True): "it needs the lungs, and they are enough: what it uses lies inside them"}
    return {"lungs_hidden_covid": found["COVID"], "lungs_hidden_lung_opacity": found["Lung_Opacity"],
            "lungs_hidden_auc": occlusion["lungs_hidden_covid_vs_normal_auc"], "lungs_only": only, "as_is": as_is,
            "needs_lungs": needs, "lungs_enough": enough, "text": words[(needs, enough)]}


def _flat(numbers: dict) -> dict:
    out = {k: v for k, v in numbers.items() if k not in ("sensitivity", "run")}
    return out | {f"{c} sensitivity": v for c, v in numbers["sensitivity"].items()}


# --------------------------------------------------------------------------- several runs: choosing one
def run_row(run, twins: Twins, config: Config, external_dir: str | Path | None = None, name: str | None = None) -> dict:
    """One run's numbers for the comparison: validation (what the rule may use) and test and
    external (reported, never used to choose)."""
    model, meta = backends.load(run.checkpoint, config)
    predict = predictor(model, meta["input_size"])
    row = {"run": run.name, "name": name or run.name, "config": {
        k: run.config.get(k) for k in ("harmonise", "consistency", "epochs", "views", "lr", "seed")}}
    for split in ("val", "test"):
        y, p = run.proba(split)
        sens = metrics.class_sensitivity(y, p)
        tw = twin_check(predict, twins, splits=(split,))
        row[split] = {"accuracy": metrics.accuracy_from_proba(y, p), "balanced_accuracy": metrics.balanced_accuracy(y, p),
                      "sensitivity": sens, "lowest_sensitivity": float(np.nanmin(list(sens.values()))),
                      "twin_agreement": tw["agreement"], "twins": tw["n"]}
    if external_dir is not None and Path(external_dir).is_dir():

        ext = evaluate_folder(external_dir, run.checkpoint, progress=False, n_boot=200, config=config)
        row["external"] = {"accuracy": ext["accuracy"], "n": ext["n"]}
    return row


def choose_row(rows: list[dict]) -> int:
    """The rule, on validation numbers only (`targets.choose`)."""
    return targets.choose([{"twin_agreement": r["val"]["twin_agreement"], "sensitivity": r["val"]["sensitivity"],
                            "balanced_accuracy": r["val"]["balanced_accuracy"]} for r in rows])


def compare(runs: dict, config: Config, external_dir: str | Path | None = None) -> dict:
    """Every run side by side, and the one the rule chooses from their validation numbers."""
    twins = load_twins(config)
    rows = [run_row(r, twins, config, external_dir, name) for name, r in runs.items()]
    chosen = choose_row(rows) if rows else None
    return {"profile": config.profile, "rule": "targets.choose on validation numbers and twins of validation originals",
            "targets": {"twin_agreement": targets.TWIN_AGREEMENT, "sensitivity_floors": targets.SENSITIVITY_FLOORS},
            "runs": rows, "chosen": rows[chosen]["run"] if rows else None}


def comparison_table(record: dict) -> pd.DataFrame:
    """The comparison record as a table a reader can scan (percentages)."""
    out = []
    for r in record["runs"]:
        out.append({"run": r["name"], "chosen": "yes" if r["run"] == record["chosen"] else "",
                    "val twin agreement %": 100 * r["val"]["twin_agreement"],
                    "val lowest sensitivity %": 100 * r["val"]["lowest_sensitivity"],
                    "test twin agreement %": 100 * r["test"]["twin_agreement"],
                    "test lowest sensitivity %": 100 * r["test"]["lowest_sensitivity"],
                    "test accuracy %": 100 * r["test"]["accuracy"],
                    "external accuracy %": 100 * r["external"]["accuracy"] if "external" in r else math.nan})
    return pd.DataFrame(out).set_index("run")


def sweep(config: Config, final: str | None = None, fallback: dict | None = None) -> dict | None:
    """The comparison chapter 05 shows: `<reports>/mitigation.json` (every run tried, written by
    `cxr audit --compare RUN ... --out reports/mitigation.json`) when it exists and names the final
    model's run `final`, else `fallback` (the before/after comparison of the comparison record). A
    record made before the final model existed (another recipe, another build) does not describe it."""
    record = records.read("mitigation.json", config)
    return record if record is not None and final in {row["run"] for row in record["runs"]} else fallback
