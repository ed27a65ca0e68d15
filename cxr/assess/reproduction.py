"""Whether a retrained model reproduces the shipped one (issue 38), by a rule written down before
any retraining was judged by it:

- **reproduced, bit for bit**: the retrained weights, exported to half precision as `cxr export`
  does, equal the shipped weights;
- **reproduced**: at least `MIN_AGREEMENT` of the test split's calls agree, and no headline metric
  (test accuracy, each class's sensitivity) moves by more than its spread over the recipe's seeds
  (max minus min, `reports/seeds.json`, `benchmarks/seeds.py`);
- otherwise **not reproduced**, with the reasons.

Differences are paired (the same films): McNemar's exact test on the discordant films and a
Wald interval on the paired difference of proportions. The record names the machine (CPU model
and flags, threads, the library versions that decide the arithmetic), because bitwise equality
holds only on the kind of CPU that trained the shipped model.
"""
from __future__ import annotations

import os
import platform

import numpy as np
from scipy.stats import binomtest

from cxr.core import labels, records
from cxr.core.config import CLASSES, Config, library_versions
from cxr.core.metrics import Z95
from cxr.core.runtime import cpu_info
from cxr.model import registry

#: issue 38's target for `make reproduce` on two cores, in minutes
REPRODUCE_TARGET_MIN = 45
#: share of the test split's calls that must agree when the weights are not bitwise equal
MIN_AGREEMENT = 0.99
#: CPU flags that decide which kernels run (and so the order of floating-point sums)
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_tile")


def machine() -> dict:
    """The machine as far as it decides floating point: CPU model (name, family, model number,
    stepping), the flags of `FLAGS` it has, logical CPUs, PyTorch's threads and instruction set,
    and the library versions every key reads (`library_versions`)."""
    import torch

    info = cpu_info()
    flags = set(info.get("flags", "").split())
    return {"cpu": info.get("model name", platform.processor() or platform.machine()),
            "cpu_family_model_stepping": " ".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "flags": [f for f in FLAGS if f in flags], "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "libraries": library_versions() | {"torch_build": torch.__version__}}


def paired(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Two models' hits on the same films: each proportion, the difference (b minus a) with a 95%
    Wald interval for paired proportions, and McNemar's exact p-value on the discordant films."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = len(a)
    if n == 0:
        return {"films": 0, "a": float("nan"), "b": float("nan"), "difference": float("nan"),
                "ci": [float("nan"), float("nan")], "only_a": 0, "only_b": 0, "mcnemar_p": float("nan")}
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    diff = (only_b - only_a) / n
    se = np.sqrt(max(only_a + only_b - n * diff ** 2, 0.0)) / n
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"films": n, "a": float(a.mean()), "b": float(b.mean()), "difference": float(diff),
            "ci": [float(max(diff - Z95 * se, -1.0)), float(min(diff + Z95 * se, 1.0))], "only_a": only_a, "only_b": only_b,
            "mcnemar_p": float(p)}


def compare(y: np.ndarray, proba_shipped: np.ndarray, proba_retrained: np.ndarray) -> dict:
    """The shipped (a) and retrained (b) models on the same labelled films: the share of calls
    that agree, and accuracy and each class's sensitivity of both, paired (`paired`)."""
    y = np.asarray(y)
    ca, cb = np.asarray(proba_shipped).argmax(1), np.asarray(proba_retrained).argmax(1)
    out = {"films": int(len(y)), "calls_agreeing": float((ca == cb).mean()) if len(y) else float("nan"),
           "calls_differing": int((ca != cb).sum()), "metrics": {"test_accuracy": paired(ca == y, cb == y)}}
    for i, c in enumerate(CLASSES):
        rows = y == i
        out["metrics"][f"test_sensitivity_{c}"] = paired(ca[rows] == i, cb[rows] == i)
    return out


def seed_spread(seeds: dict | None) -> dict[str, float]:
    """Each headline metric's spread over the recipe's seeds (max minus min), from the seeds record."""
    spread = (seeds or {}).get("spread", {})
    return {k: float(v["max"] - v["min"]) for k, v in spread.items() if isinstance(v, dict) and "max" in v}


def verdict(weights_equal: bool, comparison: dict | None, spread: dict[str, float]) -> dict:
    """The rule of this module's docstring: {"reproduced": bool, "how": ..., "reasons": [...]}."""
    if weights_equal:
        return {"reproduced": True, "how": "bitwise", "reasons": ["the weights are equal bit for bit"]}
    if comparison is None:
        return {"reproduced": False, "how": "not compared", "reasons": ["the weights differ and no calls were compared"]}
    reasons, ok = [], True
    agree = comparison["calls_agreeing"]
    if not agree >= MIN_AGREEMENT:
        ok = False
        reasons.append(f"{100 * agree:.2f}% of calls agree, below {100 * MIN_AGREEMENT:.0f}%")
    for name, m in comparison["metrics"].items():
        if name not in spread:
            ok = False
            reasons.append(f"{name}: no seed spread to judge its move by (benchmarks/seeds.py)")
        elif abs(m["difference"]) > spread[name] + 1e-12:
            ok = False
            reasons.append(f"{name} moved by {100 * m['difference']:+.2f} points, more than its seed spread "
                           f"({100 * spread[name]:.2f})")
    if ok:
        reasons.append(f"{100 * agree:.2f}% of calls agree and no metric moved by more than its seed spread")
    return {"reproduced": ok, "how": "within the seed spread" if ok else "not reproduced", "reasons": reasons}


def record(config: Config, seconds: float | None = None) -> dict:
    """`cxr reproduced`: the profile's retrained model (`registry.retrained`) against the shipped one (weights,
    `registry.reproduce_check`), their calls and metrics on the test split with the largest
    difference of any class probability, the machine, the seed spreads and the verdict; `seconds`:
    how long `make reproduce` took to get here (retraining, the book), when it says."""
    rec = registry.reproduce_check(config)
    ship = registry.shipped(config)
    retrained = registry.retrained(config)
    a, b = ship.predictions("test"), retrained.predictions("test")
    if a.file.tolist() != b.file.tolist():
        raise ValueError("the shipped and retrained models' test predictions cover other films: run cxr train again")
    y = a.label.map(CLASSES.index).to_numpy()
    pa, pb = a[list(CLASSES)].to_numpy(), b[list(CLASSES)].to_numpy()
    rec["test"] = compare(y, pa, pb)
    rec["largest_probability_difference"] = float(np.abs(pa - pb).max()) if len(y) else 0.0
    seeds = records.read("seeds.json") if config.profile == "full" else None
    rec["seed_spread"] = {"spread": seed_spread(seeds), "from": "reports/seeds.json (benchmarks/seeds.py)",
                          "runs": [r["run"] for r in (seeds or {}).get("runs", [])]}
    walls = [r.summary.get("train_wall_seconds") for r in registry.retrained_runs(config)]
    rec["retrained_wall_seconds"] = None if None in walls else float(sum(walls))
    rec["machine"] = machine()
    if seconds is not None:
        rec["make_reproduce_seconds"] = float(seconds)
    rec["rule"] = __doc__.strip().split("\n\n")[1]
    rec["verdict"] = (verdict(rec["weights_equal"], rec["test"], rec["seed_spread"]["spread"]) if not config.smoke else
                      {"reproduced": None, "how": "not judged", "reasons": [
                          "the smoke profile trains another model than the shipped one (a sample of the films, "
                          "128 px): only the full profile's final run can reproduce it"]})
    return rec


def markdown(rec: dict, chapters: dict | None = None) -> str:
    """The record as the book's appendix shows it (book/reproduce.md, written by `cxr reproduced` in
    the full profile): the verdict, the calls, the times, and beside them what `make book`'s chapters
    take (`chapters`: reports/chapter_times.json)."""
    v, t, m = rec["verdict"], rec["test"], rec["machine"]
    said = {True: "reproduced", False: "not reproduced", None: "not judged"}[v["reproduced"]]
    rows = [("verdict", f"{said} ({v['how']}): " + "; ".join(v["reasons"])),
            ("weights, exported to half precision", "equal bit for bit" if rec["weights_equal"] else
             f"differ (largest class-probability difference {rec['largest_probability_difference']:.2g})"),
            ("test calls agreeing", f"{100 * t['calls_agreeing']:.2f}% ({t['calls_differing']} of {t['films']:,} differ)")]
    names = {"whole": "whole-film network", "lungs": "lung-crop network"}
    rows[2:2] = [(f"{names.get(k, k)}, its weights", "equal bit for bit" if n["equal"] else "differ")
                 for k, n in (rec.get("networks") or {}).items()]
    for name, d in t["metrics"].items():
        label = "test accuracy" if name == "test_accuracy" else name.replace("test_sensitivity_", "sensitivity, ").replace("_", " ")
        rows.append((label, f"shipped {100 * d['a']:.2f}%, retrained {100 * d['b']:.2f}%"))
    if rec.get("retrained_wall_seconds") is not None:
        rows.append(("retraining (`cxr train`" + (", `cxr train --lungs crop`" if len(rec.get("retrained_runs", [])) > 1 else "")
                     + ", the runs' own clocks)", f"{rec['retrained_wall_seconds'] / 60:.1f} min"))
    if "make_reproduce_seconds" in rec:
        rows.append(("`make reproduce` (retraining, the book from the retrained model, this record)",
                     f"{rec['make_reproduce_seconds'] / 60:.1f} min (target at most {REPRODUCE_TARGET_MIN} min)"))
    if chapters and chapters.get("chapters"):
        total = sum(c["seconds"] for c in chapters["chapters"].values())
        rows.append(("`make book`'s chapters, each alone in a fresh kernel (`benchmarks/chapters.py`)", f"{total / 60:.1f} min"))
    fms = dict(zip(("family", "model", "stepping"), m["cpu_family_model_stepping"].split()))
    rows.append(("machine", f"{m['cpu']} ({', '.join(f'{k} {v}' for k, v in fms.items())}), "
                            f"{m['logical_cpus']} logical CPUs, {m['torch_threads']} torch threads, "
                            + ", ".join(f"{labels.label(k)} {val}" for k, val in m["libraries"].items())))
    lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    runs = rec.get("retrained_runs") or [rec["retrained_run"]]
    return ("\n".join(lines) + f"\n\nThe retrained run{'s' if len(runs) > 1 else ''}: "
            + " and ".join(f"`{r}`" for r in runs) + f"; the shipped model: `{rec['shipped_from']}`.")
