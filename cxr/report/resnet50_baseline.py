"""The original project's model, fairly trained (issue 26): the recipe of the recorded run
(`recipe`: `cxr train --approach resnet50` with a step budget and resolution that fit about 90
minutes on two CPU cores) and its record, `reports/resnet50.json` (`make`, written by
`benchmarks/resnet50.py`): budget, validation curve, test metrics with intervals on the whole test
split, wall time, machine, and its Grad-CAM maps of the images chapter 05 draws. Chapters 03 and 05
read it (`read`) while it names the data they are built on.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import pandas as pd

from cxr.core import metrics, records
from cxr.core.book import pct
from cxr.core.config import CLASSES, Config, repo_root
from cxr.core.files import write_json
from cxr.core.runtime import device
from cxr.model import registry
from cxr.model.registry import data_ref
from cxr.report import comparisons


def recipe(config: Config, steps: int = 1400, size: int = 128) -> Config:
    """The recorded run's config: the full profile's ResNet50 recipe with `steps` steps of 32 at
    `size` px, checked on the fixed validation subset every 100 steps, and predicting the whole test split."""
    return config.replace(resnet_steps=steps, input_size=size, resnet_test_subset=10 ** 9)


def make(run, config: Config, command: str = "python benchmarks/resnet50.py", note: str = "") -> dict:
    """The record of a finished ResNet50 run (a `registry.Run`)."""
    import torch


    history = run.history.to_dict("records")
    y, p = run.proba("test")  # the whole test split, as the run predicted it
    s = metrics.summary(y, p, n_boot=1000, seed=config.seed)
    best = max(history, key=lambda h: h["val_accuracy"]) if history else None
    final = registry.final_model(config)
    return {
        **data_ref(config), "run": run.name, "model_sha256": registry.weights_digest(run.checkpoint),
        "command": command, "note": note,
        "budget": {"input_size": config.input_size, "steps": run.summary.get("steps"),
                   "batch_size": config.resnet_batch_size, "learning_rate": config.resnet_lr,
                   "epochs": run.summary.get("epochs"), "images_seen": run.summary.get("images_seen"),
                   "schedule": "AdamW, cosine decay over the steps", "validation_check": (
                       f"every 100 steps on a fixed stratified subset of {config.resnet_val_subset} validation images")},
        "weights_origin": run.summary.get("weights_origin"),
        "curve": [{k: h[k] for k in ("step", "epochs_seen", "train_loss", "val_accuracy", "val_macro_auc", "wall_seconds")}
                  for h in history],
        "best_check": best, "still_improving": still_improving(history),
        "test": {"images": s["n"], "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                 "balanced_accuracy": metrics.balanced_accuracy(y, p),
                 "macro_auc": s["macro_auc"], "macro_auc_ci": s["macro_auc_ci"],
                 "per_class": {c: {k: s["per_class"][c][k] for k in ("sensitivity", "sensitivity_ci", "specificity")}
                               for c in CLASSES}},
        "answers": comparisons.answer_shares(y, p),
        "train_wall_seconds": run.summary.get("train_wall_seconds"),
        "safety_stop_fired": run.summary.get("safety_stop_fired"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "device": str(device(config.device)), "torch": torch.__version__},
        "resnet50_maps": comparisons.resnet_maps(final, run, config),  # read by comparisons.map_of
    }



def still_improving(history: list[dict], last: int = 3, margin: float = 0.01) -> bool:
    """Whether validation accuracy was still rising at the end: the best of the last `last` checks
    beats the best before them by more than `margin`."""
    acc = [h["val_accuracy"] for h in history]
    if len(acc) <= last:
        return True
    return max(acc[-last:]) > max(acc[:-last]) + margin


def write(record: dict, path: str | Path) -> Path:
    write_json(record, path)
    return Path(path)


def read(config: Config, path: str | Path | None = None) -> dict | None:
    """The recorded run (`reports/resnet50.json`) while it was made on this profile's data, else None
    (a smoke build, or another split: the chapters then show the comparison record's short run)."""
    path = Path(path) if path else repo_root() / "reports" / "resnet50.json"
    ref = data_ref(config)
    return records.fresh(path, {k: ref[k] for k in ("data_sha256", "records_version")})


def text(record: dict | None, original_accuracy: float) -> dict[str, str]:
    """Chapter 03's sentences on the recorded run, chosen from its numbers (glued)."""
    if record is None:
        none = "Not recorded for this build's data: run `python benchmarks/resnet50.py` (about 75 min on two cores)."
        return {"fair_budget": none, "fair_result": "", "fair_curve": ""}
    b, t, best = record["budget"], record["test"], record["best_check"]
    minutes = record["train_wall_seconds"] / 60
    rate = (b["images_seen"] / record["train_wall_seconds"]) if record["train_wall_seconds"] else float("nan")
    budget = (f"The run: {b['steps']:,} steps of {b['batch_size']} images at {b['input_size']} px ({b['epochs']:.1f} "
              f"epochs of the training split, {b['schedule']}), {minutes:.0f} min of training at {rate:.1f} images/s "
              f"on {record['machine']['cores']} cores ({record['machine']['device']}), from {record['weights_origin']}."
              + (f" {record['note']}" if record.get("note") else ""))
    diff = 100 * (t["accuracy"] - original_accuracy)
    side = "above" if diff > 0 else "below" if diff < 0 else "level with"
    result = (f"On the whole test split ({t['images']:,} images) it reaches accuracy {pct(t['accuracy'], t['accuracy_ci'])}, "
              f"macro ROC-AUC {t['macro_auc']:.3f} and COVID-19 sensitivity {pct(t['per_class']['COVID']['sensitivity'])}: "
              f"{abs(diff):.1f} points {side} the original project's {pct(original_accuracy)} (which fine-tuned ImageNet "
              f"weights at 224 px, on its own split).")
    curve = (f"Its best validation check was at step {best['step']:,} ({pct(best['val_accuracy'])}); "
             + ("validation accuracy was still rising at the end, so a longer budget would likely gain more."
                if record["still_improving"] else
                "validation accuracy had stopped improving by the end of the budget."))
    return {"fair_budget": budget, "fair_result": result, "fair_curve": curve}


def shown(record: dict | None, compared: dict) -> str:
    """Which ResNet50 chapter 05's maps are of, in words."""
    if record is not None:
        b, t = record["budget"], record["test"]
        return (f"chapter 03's recorded run ({b['epochs']:.1f} epochs at {b['input_size']} px, test accuracy "
                f"{pct(t['accuracy'])})")
    short = compared["models"]["resnet50"]["budget"]
    return (f"the comparison record's short run ({short['steps']} steps, test accuracy {pct(short['test_accuracy'])}): "
            "with no recorded run for this build's data, its maps show what Grad-CAM draws for a network that has "
            "trained for minutes, not where a trained ResNet50 looks")


def table(record: dict):
    """The recorded run's test metrics per class, with 95% intervals."""
    t = record["test"]
    rows = {c: {"sensitivity": pct(m["sensitivity"], m["sensitivity_ci"]), "specificity": pct(m["specificity"])}
            for c, m in t["per_class"].items()}
    rows["all classes"] = {"sensitivity": f"accuracy {pct(t['accuracy'], t['accuracy_ci'])}",
                           "specificity": f"macro AUC {t['macro_auc']:.3f}"}
    return pd.DataFrame(rows).T


def headline(record: dict) -> str:
    t, b = record["test"], record["budget"]
    return (f"ResNet50 ({record['weights_origin']}), {b['steps']} steps of {b['batch_size']} at {b['input_size']} px "
            f"({b['epochs']:.1f} epochs, {record['train_wall_seconds'] / 60:.0f} min): test accuracy "
            f"{pct(t['accuracy'], t['accuracy_ci'])}, macro AUC {t['macro_auc']:.3f}, COVID-19 sensitivity "
            f"{pct(t['per_class']['COVID']['sensitivity'])}")
