"""How sure are we: the shipped recipe trained with several seeds, one record.

For each seed (the config's `seed`: batch order, augmentation draws, initial state of the
trained layers), train the final model's recipe (or reuse an identical finished run), then
measure test accuracy, per-class test sensitivity, twin agreement on the audit twins of
validation and test originals, and accuracy on the external radiographs. Writes the per-seed
numbers with their mean and spread (sample standard deviation, min, max) to reports/seeds.json.

    .venv/bin/python benchmarks/seeds.py                 # seeds 0 1 2, about 20 min per new run on 2 cores
    .venv/bin/python benchmarks/seeds.py --seeds 0 1     # fewer
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "reports" / "seeds.json"))
    args = ap.parse_args()

    from cxr.assess import audit
    from cxr.core.config import get_config
    from cxr.core.runtime import tune_malloc
    from cxr.data.dataset import external_dir
    from cxr.train import run as train

    tune_malloc()

    base = get_config("full")
    twins = audit.load_twins(base)
    rows = []
    for seed in args.seeds:
        print(f"== seed {seed}", flush=True)
        run = train.fit("finetune", base.replace(seed=seed), progress=False)
        row = audit.run_row(run, twins, external_dir(), name=f"seed {seed}")
        both = audit.twin_check(audit.predictor(*_model(run)), twins)
        row["twin_agreement_val_test"] = both["agreement"]
        row["seed"] = seed
        row["train_wall_seconds"] = run.summary["train_wall_seconds"]
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("run", "twin_agreement_val_test")} | {"test": row["test"]}), flush=True)
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python benchmarks/seeds.py " + " ".join(sys.argv[1:]),
              "recipe": {k: v for k, v in base.to_dict().items() if k not in ("cache_dir", "runs_dir", "seed")},
              "runs": rows, "spread": spread(rows)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(json.dumps(record["spread"], indent=1))
    return 0


def _model(run):
    from cxr.model import checkpoints

    model, meta = checkpoints.load_model(run.checkpoint)
    return model, meta["input_size"]


def spread(rows: list[dict]) -> dict:
    """Mean, sample standard deviation, min and max of each number over the seeds."""
    import numpy as np

    from cxr.core.config import CLASSES

    def stats(values):
        v = np.asarray(values, float)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}

    out = {"test_accuracy": stats([r["test"]["accuracy"] for r in rows]),
           "twin_agreement_val_test": stats([r["twin_agreement_val_test"] for r in rows]),
           **{f"test_sensitivity_{c}": stats([r["test"]["sensitivity"][c] for r in rows]) for c in CLASSES}}
    if all("external" in r for r in rows):
        out["external_accuracy"] = stats([r["external"]["accuracy"] for r in rows])
    return out


if __name__ == "__main__":
    sys.exit(main())
