"""`cxr training-log`: the training histories behind a shipped file that carries none (the file of
two networks, `cxr export --whole-and-lungs`), as the committed record `reports/training_log.json`.

The shipped file holds the whole-film and the lung-crop networks but neither run's history. The
runs that retrain them (`registry.retrained_runs`: `cxr train`, `cxr train --lungs crop`) keep
theirs; this record copies each run's history and summary, with whether its network came back bit
for bit (`registry.reproduce_check`). Chapter 03 shows them when its model file carries no history,
and says of each whether it is the shipped network's own run or a retraining whose weights differ.
"""
from __future__ import annotations

import pandas as pd

from cxr.core import records
from cxr.core.config import Config
from cxr.model import registry

NAME = "training_log.json"
#: the networks of a shipped file, in the order `registry.retrained_runs` gives their runs
MEMBERS = ("whole", "lungs")
#: each network as the page names it, and as a sentence names its run ("the whole-film network's run")
LABELS = {"whole": "whole film", "lungs": "lung crop"}
ADJECTIVES = {"whole": "whole-film", "lungs": "lung-crop"}


def make(config: Config) -> dict:
    """The record: each retrained run's history and summary, by network, and whether the network it
    gives is the shipped one bit for bit; keyed by the shipped file's weight digest."""
    runs = registry.retrained_runs(config)
    check = registry.reproduce_check(config)
    networks = check.get("networks") or {}
    out = {"profile": config.profile, "shipped_from": check["shipped_from"], "shipped_sha256": check["shipped_sha256"],
           "command": "cxr training-log", "networks": {}}
    for member, run in zip(MEMBERS, runs):
        equal = networks[member]["equal"] if member in networks else check["weights_equal"]
        out["networks"][member] = {"run": run.name, "bitwise_equal": bool(equal),
                                   "history": run.history.to_dict("records"), "summary": run.summary}
    return out


def write(config: Config) -> dict:
    """Make the record and write it to the profile's reports folder (the committed one in the full profile)."""
    return records.write(make(config), NAME, config)


def read_for(model: registry.Model) -> dict | None:
    """The committed record when it describes `model`'s weights (the shipped file), else None."""
    rec = records.read(NAME)
    return rec if rec is not None and rec.get("shipped_sha256") == model.digest else None


def title(member: str, entry: dict) -> str:
    """A network's history as the page titles it: which network, which run, and whether it is the shipped one."""
    said = ("the shipped network's run, bit for bit" if entry["bitwise_equal"] else
            "a retraining of the recipe; its weights differ from the shipped network's")
    return f"{LABELS.get(member, member)}: {entry['run']} ({said})"


def shown(rec: dict) -> list[tuple[str, tuple[pd.DataFrame, dict]]]:
    """(title, (history, summary)) for each network of the record, as `plots.training_history` draws them."""
    return [(title(m, e), (pd.DataFrame(e["history"]), e["summary"])) for m, e in rec["networks"].items()]


def text(rec: dict) -> str:
    """Chapter 03's sentence on the histories it shows from the record."""
    parts = []
    for m, e in rec["networks"].items():
        s = e["summary"]
        which = "the shipped network bit for bit" if e["bitwise_equal"] else "retrained: not the shipped weights"
        parts.append(f"the {ADJECTIVES.get(m, m)} network's run ({e['run']}, {which}) kept epoch {s['best_epoch']} of "
                     f"{len(e['history'])} and took {s['train_wall_seconds'] / 60:.1f} min on the machine that trained it")
    return ("The shipped file carries no training history, so these are the histories of the runs that retrain "
            f"it ({rec['command']}, reports/{NAME}): " + "; ".join(parts) + ".")
