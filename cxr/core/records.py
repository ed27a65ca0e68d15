"""The one record helper. A record is a JSON file in the reports folder, named for what it holds
(`evaluation.json`); it states the reference it was made from (the model's weight digest, the
data's digest, the record version, and whatever else decides it), is reused while that reference
still holds, and is written atomically. Every record of the package goes through here."""
from __future__ import annotations

import json
from pathlib import Path

from cxr.core.config import Config, repo_root
from cxr.core.files import write_json

#: the reference keys that name a model, its data and the record recipe (`registry.Model.ref`)
MODEL_KEYS = ("model_sha256", "data_sha256", "records_version")


def path(name: str, config: Config | None = None) -> Path:
    """Where the record `name` lives: the profile's reports folder (`Config.reports_dir`), or the
    committed `reports/` when no profile is given (the benchmarks' records, made in the full profile)."""
    return (config.reports_dir if config is not None else repo_root() / "reports") / name


def _located(where: str | Path, config: Config | None) -> Path:
    """A record given by its path, or by its name (`path`)."""
    return Path(where) if isinstance(where, Path) or "/" in str(where) else path(str(where), config)


def read(where: str | Path, config: Config | None = None) -> dict | None:
    """The record (a name, or a path), or None when there is none."""
    p = _located(where, config)
    return json.loads(p.read_text()) if p.exists() else None


def holds(record: dict | None, reference: dict) -> bool:
    """Whether `record` states every key of `reference` with the same value."""
    return record is not None and all(record.get(k) == v for k, v in reference.items())


def fresh(where: str | Path, reference: dict, config: Config | None = None) -> dict | None:
    """The record while it was made from `reference`, else None (then it is made again)."""
    record = read(where, config)
    return record if holds(record, reference) else None


def write(record: dict, where: str | Path, config: Config | None = None) -> dict:
    """Write the record atomically, and give it back."""
    write_json(record, _located(where, config))
    return record
