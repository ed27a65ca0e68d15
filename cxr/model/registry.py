"""Which trained model is which: the one module that finds, loads and names trained models.

* **Runs.** A training run lives in ``runs/<approach>-<profile>-<key>``; its key (`run_key`) is the
  approach, the config fields it reads, the data and the recipe's explicit version
  (`config.VERSIONS`). `find_run` looks a run up by its key and never trains: a missing run raises
  `MissingModel`, whose message names the command that makes it.
* **The final model.** `final_model` is what the book and the records use: the model shipped in
  ``cxr/weights/`` (the default), or, with ``CXR_MODEL=retrained`` (`make reproduce`), the
  profile's runs trained on this machine, made into the file `cxr export` would ship (`retrained`).
* **Comparison runs.** The "before" model (the recipe without harmonisation), the frozen-feature
  linear head and the ResNet50 baseline: `comparison_run(name, config)`.
* **Names.** A model is named in records by the SHA-256 of its weights (`weights_digest`: the
  tensors only, so metadata such as the model card never renames it) and, for people, by the run
  it came from.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core.config import CLASSES, NOT_KEYED, VERSIONS, Config, cache_key
from cxr.core.files import save_state, write_csv
from cxr.data import segmenter
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model import backends, whole_and_lungs
from cxr.model.checkpoints import CHECKPOINT_FORMAT, half, load_model, pixel_config, predict, read_checkpoint
from cxr.model.features import pixels_key

SHIPPED = Path(__file__).parents[1] / "weights" / "cxr-efficientnet-lite0.pt"
MODEL_ENV = "CXR_MODEL"
SOURCES = ("shipped", "retrained")


class MissingModel(FileNotFoundError):
    """A record needs a trained model that is not there; the message names the command that makes it."""


# --------------------------------------------------------------------------- run identity
# The config fields an approach does not read: a run's key leaves them out, so changing the
# ResNet50 baseline's budget renames no fine-tuning run. Every other field is in the key (a new
# field is in every approach's key until it is listed here).
FINETUNE_FIELDS = ("batch_size", "epochs", "patience", "lr", "train_from_block", "views", "consistency")
RESNET_FIELDS = ("resnet_steps", "resnet_batch_size", "resnet_lr", "resnet_val_subset", "resnet_test_subset")
PATH_FIELDS = NOT_KEYED
NOT_READ = {"finetune": RESNET_FIELDS,
            "linear": RESNET_FIELDS + FINETUNE_FIELDS + ("weight_decay", "wall_budget_s", "harmonise"),
            "resnet50": FINETUNE_FIELDS + ("harmonise",)}
APPROACHES = tuple(NOT_READ)


def rows_digest(table: pd.DataFrame) -> str:
    """The data a run trains and is measured on: every row's file, split and SHA-256."""
    return hashlib.sha256("\n".join("\0".join(r) for r in table[["file", "split", "sha256"]].itertuples(index=False))
                          .encode()).hexdigest()


def data_ref(config: Config) -> dict:
    """How a record names the data it was made from: the profile and the digest of its split table
    (`rows_digest`), and the version of the record code (`VERSIONS["records"]`). A record is reused
    only for the same model, the same data and the same version."""
    return {"profile": config.profile, "data_sha256": rows_digest(load_table(config)[1]),
            "records_version": VERSIONS["records"]}


def run_key(config: Config, approach: str, table: pd.DataFrame) -> str:
    """A run's identity: the approach, the config fields it reads, the data and the approach's
    explicit recipe version. No source text is in it: the code's hash is written to the run's
    config.json as provenance only."""
    if approach not in NOT_READ:
        raise ValueError(f"approach must be one of {APPROACHES}")
    fields = [k for k in config.to_dict() if k not in NOT_READ[approach] + PATH_FIELDS]
    return cache_key([approach, config.key(*fields), rows_digest(table)], approach)[:12]


def run_path(approach: str, config: Config, table: pd.DataFrame | None = None) -> Path:
    """The folder of the run of `approach` under `config` (finished or not)."""
    if table is None:

        _, table = load_table(config)
    return Path(config.runs_dir) / f"{approach}-{config.profile}-{run_key(config, approach, table)}"


@dataclass
class Run:
    """A finished training run."""
    path: Path
    config: dict
    history: pd.DataFrame
    summary: dict

    def predictions(self, split: str) -> pd.DataFrame:
        return pd.read_csv(self.path / f"predictions_{split}.csv", keep_default_na=False)

    def proba(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels as class indices, probabilities) of a split."""
        p = self.predictions(split)
        return p.label.map(CLASSES.index).to_numpy(), p[list(CLASSES)].to_numpy()

    def saved_proba(self, split: str, files) -> np.ndarray | None:
        """The run's saved probabilities of `split` when they cover exactly `files`, row for row, else None."""
        p = self.predictions(split)
        return p[list(CLASSES)].to_numpy(np.float32) if p.file.tolist() == list(files) else None

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def name(self) -> str:
        return self.path.name


def prediction_frame(table: pd.DataFrame, rows: np.ndarray, proba: np.ndarray) -> pd.DataFrame:
    """A run's predictions file: file, label, one probability column per class, pred."""
    df = table.loc[rows, ["file", "label"]].reset_index(drop=True)
    df[list(CLASSES)] = proba
    df["pred"] = [CLASSES[i] for i in np.asarray(proba).argmax(1)]
    return df


def write_predictions(path: Path, split: str, table: pd.DataFrame, rows: np.ndarray, proba: np.ndarray) -> None:
    """`predictions_<split>.csv` in the run folder `path`."""
    write_csv(prediction_frame(table, rows, proba), Path(path) / f"predictions_{split}.csv")


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "done.json").exists():
        raise FileNotFoundError(f"{path} is not a finished run (no done.json).")
    return Run(path, json.loads((path / "config.json").read_text()),
               pd.read_csv(path / "history.csv"), json.loads((path / "done.json").read_text()))


# what makes each run: the recipe's changes to the profile's config, and the command
COMPARISONS = {
    "final": ("finetune", {}, "cxr train"),
    "before": ("finetune", {"harmonise": False}, "cxr train --no-harmonise"),
    "linear": ("linear", {}, "cxr train --approach linear"),
    "resnet50": ("resnet50", {}, "cxr train --approach resnet50"),
    "lung-crop": ("finetune", {"lungs": "crop"}, "cxr train --lungs crop"),
    "lung-crop+mask": ("finetune", {"lungs": "crop+mask"}, "cxr train --lungs crop+mask"),
    # issue 38's own candidates for the outside: the lung crop with less fine texture, and the whole
    # film with every film's contrast equalised
    "lung-crop-128": ("finetune", {"lungs": "crop", "input_size": 128}, "cxr train --lungs crop --input-size 128"),
    "clahe": ("finetune", {"clahe": True}, "cxr train --clahe"),
}


#: the runs `make reproduce` trains
REPRODUCED = ("final", "before", "linear", "resnet50")


def find_run(name: str, config: Config) -> Run:
    """The finished run `name` (a key of COMPARISONS) of the profile; never trains.

    Raises MissingModel, naming the command that makes the run, when it is not there."""
    approach, changes, command = COMPARISONS[name]
    path = run_path(approach, config.replace(**changes))
    if not (path / "done.json").exists():
        profile = "" if config.profile == "full" else f" --profile {config.profile}"
        raise MissingModel(f"The {name} model of the {config.profile} profile ({path.name}) has not been trained "
                           f"here: make it with `{command.replace('cxr', 'cxr' + profile, 1)}`"
                           f"{' or `make reproduce`' if config.profile == 'full' and name in REPRODUCED else ''}.")
    return load_run(path)


def comparison_run(name: str, config: Config | None = None) -> Run:
    """One of the report's comparison runs ("before", "linear", "resnet50"); see `find_run`."""
    if name == "final" or name not in COMPARISONS:
        raise ValueError(f"comparison runs are {', '.join(k for k in COMPARISONS if k != 'final')}")
    return find_run(name, config)


# --------------------------------------------------------------------------- model names
def weights_digest(checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint's weights: every tensor's name, dtype, shape and bytes, in name order.
    Metadata (temperature, model card, operating points) is not in it. Computed once per file
    version in a process (a file is known by its path, size and modification time)."""
    st = Path(checkpoint).stat()
    return _digest(str(Path(checkpoint).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return state_digest(read_checkpoint(path)["model"])


def state_digest(weights: dict) -> str:
    import torch

    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Model:
    """A trained model as the report uses it: its checkpoint, its weight digest, the run it came
    from (a name for people) and where it was found ("shipped" or "retrained")."""
    checkpoint: Path
    digest: str
    name: str
    source: str
    run: Run | None = None
    data: Config | None = None  # the profile whose split `predictions` reads, and the device it runs on

    def _config(self) -> Config:
        if self.data is None:
            raise ValueError(f"{self.name} was found without a configuration: pass one to registry.final_model, "
                             "shipped or at")
        return self.data

    @cached_property
    def loaded(self):
        """(network, metadata): the model loaded once, in eval mode, on its configuration's device;
        every measure of the same `Model` uses this one."""
        return load_model(self.checkpoint, self._config().device)

    @cached_property
    def runner(self):
        """What runs this model's batches (`backends.runner` for the configuration's backend), made once."""
        network, meta = self.loaded
        return backends.runner(network, meta, self.checkpoint, self._config())

    @property
    def config(self) -> dict:
        """The training config the model was trained with (as a run's config.json)."""
        return self.run.config if self.run is not None else self.meta().get("config", {})

    @property
    def summary(self) -> dict:
        """The summary (done.json) of the run the model came from; empty when it is not known."""
        training = self.training()
        return training[1] if training else {}

    @cached_property
    def ref(self) -> dict:
        """How a record names this model, and the data it was measured on (`data_ref`); worked out
        once per model (it digests the whole split table), however many records ask."""
        return {"model_sha256": self.digest, "model": self.name, "model_source": self.source} | data_ref(self.data)

    def meta(self) -> dict:
        state = read_checkpoint(self.checkpoint)
        return {k: v for k, v in state.items() if k != "model"}

    def training(self) -> tuple[pd.DataFrame, dict] | None:
        """The training history (one row per validation) and the summary (done.json) of the run
        this model came from: the run's own files, or what the exported file carries; None when
        neither is here (a file exported before checkpoints carried them)."""
        if self.run is not None:
            return self.run.history, self.run.summary
        t = self.meta().get("training")
        return (pd.DataFrame(t["history"]), t["summary"]) if t else None

    def proba(self, split: str, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(labels, uncalibrated probabilities) of a split of the profile's table, as a run saves them."""
        p = self.predictions(split, progress)
        return p.label.map(CLASSES.index).to_numpy(), p[list(CLASSES)].to_numpy()

    def predictions(self, split: str, progress: bool = False) -> pd.DataFrame:
        """The model's probabilities on a split (file, label, one column per class, pred): the run's
        own file when the run is at hand and covers the split, else computed once and cached (keyed by
        the weights and the images)."""
        config = self._config()
        root, table = load_table(config)
        rows = table.index[table.split == split].to_numpy()
        if self.run is not None:
            saved = self.run.predictions(split)
            if saved.file.tolist() == table.file[rows].tolist():
                return saved

        model, meta = self.loaded
        pixels = load_pixels(root, table, pixel_config(meta, config), progress=progress)
        key = cache_key([self.digest, pixels_key(pixels), rows_digest(table.loc[rows])], "predictions")
        path = Path(config.cache_dir) / f"predictions-{key}.csv"
        if path.exists():
            return pd.read_csv(path, keep_default_na=False)
        proba = predict(self.runner, pixels[rows], meta["input_size"], progress=progress, desc=f"predict {split}")
        df = prediction_frame(table, rows, proba)

        write_csv(df, path)
        return df


def shipped(config: Config | None = None) -> Model:
    """The model that ships with the package (its predictions read `config`'s data)."""
    if not SHIPPED.exists():
        raise MissingModel(f"The shipped model {SHIPPED.name} is missing from cxr/weights/: restore it from git, "
                           "or train and export one with `cxr train` then `cxr export`.")

    state = read_checkpoint(SHIPPED)
    return Model(SHIPPED, weights_digest(SHIPPED), state.get("source_run") or SHIPPED.name, "shipped", data=config)


def at(checkpoint: str | Path, config: Config, name: str | None = None, source: str = "file") -> Model:
    """The model in any cxr checkpoint file (an exported file, a run's, one being made), named by its
    weights' digest, to be measured with `config`."""
    checkpoint = Path(checkpoint)
    return Model(checkpoint, weights_digest(checkpoint), name or checkpoint.parent.name or checkpoint.stem, source,
                 data=config)


def whole_and_lungs_file(config: Config, whole: str | Path | None = None, lungs: str | Path | None = None) -> Path:
    """The whole-film and lung-crop models in one file (`cxr.model.whole_and_lungs`), made once in
    the cache from their weights and the shipped segmenter's (default: the shipped model and the
    profile's lung-crop run, which must have been trained: MissingModel names the command)."""
    import torch

    whole = Path(whole) if whole else whole_film(config)
    lungs = Path(lungs) if lungs else find_run("lung-crop", config).checkpoint
    seg = segmenter.SHIPPED
    key = cache_key([weights_digest(whole), weights_digest(lungs), hashlib.sha256(seg.read_bytes()).hexdigest()],
                    "whole_and_lungs")
    path = Path(config.cache_dir) / f"whole-and-lungs-{key}.pt"
    if not path.exists():
        named = [read_checkpoint(p) for p in (whole, lungs)]
        for state, p in zip(named, (whole, lungs)):  # a run's checkpoint is named by its run folder
            state["source_run"] = state.get("source_run") or p.parent.name
        state = whole_and_lungs.combine(*named, torch.load(seg, map_location="cpu", weights_only=True))
        save_state(path, {"format": CHECKPOINT_FORMAT, **state, "members": state["members"] | {
            "whole": state["members"]["whole"] | {"model_sha256": weights_digest(whole)},
            "lungs": state["members"]["lungs"] | {"model_sha256": weights_digest(lungs)}}})
    return path


def whole_and_lungs_model(config: Config, whole: str | Path | None = None, lungs: str | Path | None = None) -> Path:
    """The whole film and its lungs as one model: the shipped file when it is one and no member is
    given (the model users run, measured as shipped), else `whole_and_lungs_file`."""
    if whole is None and lungs is None and two_in_one(shipped(config).checkpoint):
        return SHIPPED
    return whole_and_lungs_file(config, whole, lungs)


def whole_film(config: Config) -> Path:
    """The whole-film model: the shipped file when it is one, else the whole-film member of the
    shipped whole film and its lungs, written once to the cache as a checkpoint of its own."""
    if not two_in_one(shipped(config).checkpoint):
        return SHIPPED
    state = read_checkpoint(SHIPPED)
    path = Path(config.cache_dir) / f"whole-film-{weights_digest(SHIPPED)[:16]}.pt"
    if not path.exists():
        save_state(path, whole_and_lungs.member(state, "whole"))
    return path


def from_run(run: Run, config: Config | None = None, source: str = "retrained") -> Model:
    return Model(run.checkpoint, weights_digest(run.checkpoint), run.name, source, run, data=config)


def model_source(source: str | None = None) -> str:
    source = source or os.environ.get(MODEL_ENV) or "shipped"
    if source not in SOURCES:
        raise ValueError(f"{MODEL_ENV}={source!r}: use one of {', '.join(SOURCES)}.")
    return source


def final_model(config: Config, source: str | None = None) -> Model:
    """The report's final model: the shipped one (default), or with `source="retrained"` (or
    ``CXR_MODEL=retrained``) the profile's retrained runs as `cxr export` would ship them
    (`retrained`), which must have been trained (`cxr train`, and `cxr train --lungs crop` when the
    shipped file is the whole film and its lungs)."""
    if model_source(source) == "shipped":
        st = SHIPPED.stat() if SHIPPED.exists() else None
        key = (id(config), str(SHIPPED), st and (st.st_size, st.st_mtime_ns))
        if key not in _FINAL:
            _FINAL[key] = (config, shipped(config))  # the config is held, so its id is not reused
        return _FINAL[key][1]
    return retrained(config)


def two_in_one(checkpoint: str | Path) -> bool:
    """Whether a cxr checkpoint is the whole film and its lungs in one file (`cxr.model.whole_and_lungs`)."""
    return read_checkpoint(checkpoint).get("arch") == whole_and_lungs.ARCH


def retrained_runs(config: Config) -> list[Run]:
    """The profile's runs that retrain what ships: the final run, and the lung-crop run when the
    shipped file is the whole film and its lungs (`cxr train`, `cxr train --lungs crop`)."""
    runs = [find_run("final", config)]
    if two_in_one(SHIPPED):
        runs.append(find_run("lung-crop", config))
    return runs


def retrained(config: Config) -> Model:
    """The profile's retrained model as `cxr export` would ship it, made by the steps that made the
    shipped file: the final run in half precision (`as_exported`); when the shipped file is the
    whole film and its lungs, that half-precision whole-film model and the retrained lung-crop run
    combined (`whole_and_lungs_file`), then in half precision. A retraining that reproduces every
    member bit for bit then gives the shipped digest."""
    runs = retrained_runs(config)
    whole = as_exported(runs[0], config)
    if len(runs) == 1:
        return whole
    combined = whole_and_lungs_file(config, whole.checkpoint, runs[1].checkpoint)
    path = Path(config.cache_dir) / f"half-{combined.stem}.pt"
    if not path.exists():
        state = dict(read_checkpoint(combined))
        state["model"] = half(state["model"])
        state["precision"] = "float16"
        state["source_run"] = whole_and_lungs.source_runs(state["members"])
        save_state(path, state)
    # no run: its predictions are the combined file's own, never a member run's
    return Model(path, weights_digest(path), " + ".join(r.name for r in runs), "retrained", data=config)


def as_exported(run: Run, config: Config) -> Model:
    """A run's model as `cxr export` would ship it: its weights in half precision (a file in the
    cache, made once per checkpoint), with the run's history and predictions. A retrained model that
    reproduces the shipped one bit for bit then has the shipped model's digest, and every record of
    the shipped model describes it."""
    path = Path(config.cache_dir) / f"half-{run.name}.pt"
    if not path.exists() or path.stat().st_mtime_ns < run.checkpoint.stat().st_mtime_ns:
        state = dict(read_checkpoint(run.checkpoint))
        state["model"] = half(state["model"])
        state["precision"] = "float16"
        state["source_run"] = run.name
        save_state(path, state)
    return Model(path, weights_digest(path), run.name, "retrained", run, data=config)


#: the shipped model as each configuration found it in this process: loaded, hashed and its data
#: digested once per chapter or command, however many records ask for it
_FINAL: dict[tuple, tuple[Config, Model]] = {}


def default_checkpoint(config: Config) -> Path:
    """What `cxr evaluate` and `cxr adapt` use without --model: `final_model`'s file."""
    return final_model(config).checkpoint


def reference_digest() -> str | None:
    """The shipped model's weight digest (what `make reproduce` compares a retrained model with)."""
    return shipped().digest if SHIPPED.exists() else None


# --------------------------------------------------------------------------- reproducing the shipped model
def reproduce_check(config: Config) -> dict:
    """Whether the profile's retrained runs give the shipped model's weights: made into the file
    `cxr export` would ship (`retrained`), against the shipped weights, bit for bit (the calls are
    compared by `cxr.assess.reproduction.record`)."""
    ship, model = shipped(config), retrained(config)
    rec = {"profile": config.profile, "retrained_run": model.name,
           "retrained_runs": [r.name for r in retrained_runs(config)], "retrained_sha256_half": model.digest,
           "shipped_sha256": ship.digest, "shipped_from": ship.name, "weights_equal": model.digest == ship.digest}
    a, b = member_digests(ship.checkpoint), member_digests(model.checkpoint)
    if a and b:  # a file of several networks: which of them came back bit for bit
        rec["networks"] = {k: {"shipped_sha256": a[k], "retrained_sha256": b.get(k), "equal": a[k] == b.get(k)}
                           for k in a}
    return rec


def member_digests(path: str | Path) -> dict[str, str] | None:
    """The weight digests of the networks in a file of several (`whole_and_lungs`), by member; None
    for a file of one network."""
    members = read_checkpoint(path).get("members")
    return {k: m.get("model_sha256") for k, m in members.items()} if members else None
