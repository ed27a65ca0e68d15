"""Agreement before speed: does a backend (`cxr.model.backends`) give the model's calls?

Each backend runs the model on the profile's test split (and its validation split, for the
out-of-distribution flag rate) beside PyTorch in float32, and is held to `TARGETS`: the same call
on at least 99.5% of test films, test accuracy within 0.3 points, COVID-19 sensitivity within 0.5
points, the out-of-distribution flag on about 1% of validation (the rate it was fitted to flag),
and the site check's verdict on the test split unchanged. A backend whose features differ would
need the OOD statistics and the site check refitted; `features_max_relative` says whether they do.
The full-profile record is `reports/backends.json` (`benchmarks/backends.py`).
"""
from __future__ import annotations

import numpy as np

from cxr.core.config import CLASSES, Config
from cxr.core.metrics import accuracy_from_proba, class_sensitivity, temper
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model import backends, checkpoints, ood, site_check
from cxr.model.registry import Model

#: what a backend must keep (points are percentage points)
TARGETS = {"call_agreement_at_least": 0.995, "accuracy_within_points": 0.3, "covid_sensitivity_within_points": 0.5,
           "ood_flag_rate_within": (0.005, 0.02)}


def outputs(run, meta: dict, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Tempered probabilities and pooled features of `pixels` through `run` (a `backends.runner`)."""
    out = checkpoints.forward(run, pixels, meta["input_size"], ("proba", "features"))
    return {"proba": temper(out["proba"], float(meta.get("temperature", 1.0))), "features": out["features"]}


def measure(model: Model, config: Config, names=("onnxruntime", "openvino")) -> dict:
    """Every installed backend of `names` against PyTorch on the test split (calls, accuracy,
    COVID-19 sensitivity, probabilities, features, the site verdict) and the validation split (the
    OOD flag rate); each with `passes` against `TARGETS`."""
    network, meta = model.loaded
    root, table = load_table(config)
    pixels = load_pixels(root, table, checkpoints.pixel_config(meta, config), progress=False)
    rows = {s: np.flatnonzero((table.split == s).to_numpy()) for s in ("test", "val")}
    y = table.label.map(CLASSES.index).to_numpy()[rows["test"]]
    px = {s: np.asarray(pixels[r]) for s, r in rows.items()}
    check = site_check.unpack(meta.get("site_check"))

    def run(name):
        runner = backends.runner(network, meta, model.checkpoint, config.replace(backend=name))
        out = {s: outputs(runner, meta, px[s]) for s in px}
        t = out["test"]
        record = {"backend": backends.name_of(runner), "accuracy": accuracy_from_proba(y, t["proba"]),
                  "covid_sensitivity": class_sensitivity(y, t["proba"])["COVID"]}
        if meta.get("ood"):
            record["ood_flag_rate_val"] = float(ood.flagged(meta["ood"], ood.score(meta["ood"], out["val"]["features"])).mean())
        if check is not None:
            calls = t["proba"].argmax(1)
            v = site_check.judge_scores(check, site_check.film_scores(check, t["features"], calls), calls)
            record["site_verdict_test"], record["site_mean_rank_test"] = v.verdict, v.record()["mean_rank"]
        return record, t

    ref, ref_out = run("torch")
    result = {"test_images": int(len(y)), "val_images": int(len(rows["val"])), "targets": TARGETS, "torch": ref,
              "backends": {}}
    for name in names:
        if not backends.installed(name):
            result["backends"][name] = {"installed": False}
            continue
        rec, out = run(name)
        rec |= {"installed": True,
                "call_agreement": float(np.mean(out["proba"].argmax(1) == ref_out["proba"].argmax(1))),
                "calls_differing": int(np.sum(out["proba"].argmax(1) != ref_out["proba"].argmax(1))),
                "probability_max_difference": float(np.abs(out["proba"] - ref_out["proba"]).max()),
                "features_max_relative": float(np.abs(out["features"] - ref_out["features"]).max()
                                               / (np.abs(ref_out["features"]).max() + 1e-6)),
                "accuracy_points": 100 * (rec["accuracy"] - ref["accuracy"]),
                "covid_sensitivity_points": 100 * (rec["covid_sensitivity"] - ref["covid_sensitivity"])}
        rec["passes"] = passes(rec, ref)
        result["backends"][name] = rec
    return result


def passes(rec: dict, ref: dict) -> bool:
    """Whether a backend's record meets `TARGETS` (against PyTorch's record `ref`)."""
    ok = (rec["call_agreement"] >= TARGETS["call_agreement_at_least"]
          and abs(rec["accuracy_points"]) <= TARGETS["accuracy_within_points"]
          and abs(rec["covid_sensitivity_points"]) <= TARGETS["covid_sensitivity_within_points"])
    if "ood_flag_rate_val" in rec:
        low, high = TARGETS["ood_flag_rate_within"]
        ok &= low <= rec["ood_flag_rate_val"] <= high or abs(rec["ood_flag_rate_val"] - ref["ood_flag_rate_val"]) < 1e-9
    if "site_verdict_test" in rec:
        ok &= rec["site_verdict_test"] == ref["site_verdict_test"]
    return bool(ok)
