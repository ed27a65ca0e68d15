"""Site adaptation: what a hospital's own labelled films can fix (`cxr adapt`).

The model's backbone stays as it is; what changes is its last layer, the map from the 1280
pooled features to the four classes. Two methods, from the simplest up:

* ``prior``: the four class biases only (a recalibration of the class priors), refitted on the
  database's training images and the local films together;
* ``head``: the whole last layer, refitted on the same rows, pulled towards the shipped weights.

Both keep the database in the fit (its training split, every class weighted equally) with the
local films as a group of equal weight, so what the model knew is kept while the site's films
stop being called something else; for the same reason a folder of one class (a site's normals)
is enough. The adapted model is a checkpoint like the shipped one, with
its temperature refitted and its operating points re-chosen on the database's validation split,
and a model card that says what it was adapted on. `learning_curve` measures what a number of
local films buys: on held-out films of the site, on the database's test split and on the external
radiographs.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cxr.assess.audit import load_twins
from cxr.core import metrics
from cxr.core.book import interval, moved_to
from cxr.core.config import CLASSES, Config, cache_key
from cxr.core.files import save_state, sha256_of
from cxr.core.metrics import wilson
from cxr.data.labelled import list_labelled, read_labelled
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model import site_check
from cxr.model import backends
from cxr.model.checkpoints import pixel_config, read_checkpoint
from cxr.model.features import pixels_key
from cxr.model.ood import pooled_features

METHODS = ("prior", "head")
MIN_LOCAL = 5  # fewer local films than this are not enough to adapt on


@dataclass
class Local:
    """A site's labelled films: pooled features, labels (class indices), file names and what was skipped."""
    features: np.ndarray
    y: np.ndarray
    files: list[str]
    skipped: pd.DataFrame


def _read_folder(folder: Path, config: Config) -> tuple[np.ndarray, np.ndarray, list[str], pd.DataFrame]:
    """Preprocessed images and labels of a labelled folder (database layout); unreadable files are skipped."""
    files, skipped = list_labelled(folder)
    files, pixels, skipped = read_labelled(folder, files, skipped, config, purpose="to adapt on")
    return pixels, np.array(files.label.map(CLASSES.index)), files.file.tolist(), skipped


def local_films(folder: str | Path, model, meta: dict, config: Config) -> Local:
    """The site's films as the model sees them (pooled features of its backbone), read with the
    preprocessing the model was trained with, in `config`'s folders."""
    cfg = pixel_config(meta, config)
    pixels, y, files, skipped = _read_folder(Path(folder), cfg)
    return Local(pooled_features(model, pixels, meta["input_size"]), y, files, skipped)


def database_features(checkpoint: str | Path, config: Config, progress: bool = False) -> dict:
    """Pooled features and labels of the database's train, val and test splits under the model of
    `checkpoint`, cached on disk (keyed by the checkpoint's bytes, the images and the code)."""
    model, meta = backends.load(checkpoint, config)
    root, table = load_table(config)
    pixels = load_pixels(root, table, pixel_config(meta, config),
                         progress=progress)
    key = cache_key(["pooled", sha256_of(checkpoint), pixels_key(pixels)], "pooled")
    path = Path(config.cache_dir) / f"pooled-{key}.npz"
    if not path.exists():
        feats = pooled_features(model, np.asarray(pixels), meta["input_size"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, feats=feats)
        tmp.replace(path)
    feats = np.load(path)["feats"]
    y = table.label.map(CLASSES.index).to_numpy()
    return {s: (feats[(table.split == s).to_numpy()], y[(table.split == s).to_numpy()]) for s in ("train", "val", "test")}


def _head(state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return state["model"]["_fc.weight"].float(), state["model"]["_fc.bias"].float()


def proba(weight: torch.Tensor, bias: torch.Tensor, feats: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of a last layer on pooled features."""
    with torch.no_grad():
        logits = torch.from_numpy(np.asarray(feats, np.float32)) @ weight.T + bias
        return (logits / temperature).softmax(1).numpy()


def fit_head(weight: torch.Tensor, bias: torch.Tensor, db: tuple[np.ndarray, np.ndarray], local: tuple[np.ndarray, np.ndarray],
             method: str = "head", local_weight: float = 1.0, pull: float = 1e-3, steps: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Refit the last layer (`head`) or its biases only (`prior`) on the database rows (each class
    weighted equally) and the local rows (as one group of weight `local_weight`), with an L2 pull
    of strength `pull` towards the starting weights. Full-batch L-BFGS; deterministic."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    x_db, y_db = torch.from_numpy(np.asarray(db[0], np.float32)), torch.from_numpy(np.asarray(db[1]))
    x_lo, y_lo = torch.from_numpy(np.asarray(local[0], np.float32)), torch.from_numpy(np.asarray(local[1]))
    counts = torch.bincount(y_db, minlength=len(CLASSES)).float()
    w_db = torch.where(counts > 0, 1.0 / (len(CLASSES) * counts.clamp_min(1)), torch.zeros_like(counts))[y_db]
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    w = w0.clone().requires_grad_(method == "head")
    b = b0.clone().requires_grad_(True)
    params = [b] + ([w] if method == "head" else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.cross_entropy(x_db @ w.T + b, y_db, reduction="none") * w_db).sum()
        if len(y_lo):
            loss = loss + local_weight * F.cross_entropy(x_lo @ w.T + b, y_lo)
        loss = loss + pull * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def adapt(checkpoint: str | Path, local_dir: str | Path, out: str | Path, method: str = "head", *,
          config: Config, progress: bool = False) -> dict:
    """Adapt the model of `checkpoint` to a site from its labelled films in `local_dir`; write the
    adapted model to `out`. Returns what was done and measured (on the database's test split)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    model, meta = backends.load(checkpoint, config)
    local = local_films(local_dir, model, meta, config)
    if len(local.y) < MIN_LOCAL:
        raise ValueError(f"Only {len(local.y)} usable films in {local_dir}: adapting needs at least {MIN_LOCAL}.")
    db = database_features(checkpoint, config, progress=progress)
    state = dict(read_checkpoint(checkpoint))
    w0, b0 = _head(state)
    w, b = fit_head(w0, b0, db["train"], (local.features, local.y), method=method)
    y_val, p_val = db["val"][1], proba(w, b, db["val"][0])
    temperature = metrics.fit_temperature(y_val, p_val)
    dtype = state["model"]["_fc.weight"].dtype
    state["model"] = dict(state["model"]) | {"_fc.weight": w.to(dtype), "_fc.bias": b.to(dtype)}
    state["temperature"] = temperature
    points = metrics.choose_operating_points(y_val, metrics.temper(p_val, temperature))
    state["operating_points"] = metrics.operating_point_rules(points)
    counts = {CLASSES[k]: int(n) for k, n in enumerate(np.bincount(local.y, minlength=len(CLASSES))) if n}
    y_test, p_test = db["test"][1], metrics.temper(proba(w, b, db["test"][0]), temperature)
    s = metrics.summary(y_test, p_test, n_boot=200, seed=config.seed)
    state["adapted"] = {"method": method, "site_folder": Path(local_dir).name, "films": counts,
                        "from": Path(checkpoint).name, "files_sha256": hashlib.sha256(
                            "\n".join(sorted(local.files)).encode()).hexdigest()}
    card = dict(state.get("card") or {})
    card["adapted"] = (f"Last layer refitted ({method}) on {sum(counts.values())} local films of "
                       f"{Path(local_dir).name} ({', '.join(f'{c} {n}' for c, n in counts.items())}) together "
                       f"with the database's training split. Database test accuracy after adaptation: "
                       f"{100 * s['accuracy']:.1f}%. Check it on held-out local films before use.")
    state["card"] = card
    state["site_check"] = site_check.pack(adapted_check(state, db, w, b, local.features))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state(out, state)
    local_p = proba(w, b, local.features, temperature)
    return {"out": str(out), "method": method, "films": counts, "skipped": local.skipped.to_dict("records"),
            "temperature": temperature, "database_test_accuracy": s["accuracy"],
            "database_test_sensitivity": {c: s["per_class"][c]["sensitivity"] for c in CLASSES},
            "local_fit_accuracy": float(np.mean(local_p.argmax(1) == local.y))}


def site_check_for(db: dict, w: torch.Tensor, b: torch.Tensor, space: dict | None = None, *others: dict) -> dict:
    """The site check a model with last layer (`w`, `b`) carries: the feature space (`space`, else
    fitted on the training split of `db`), the validation split ranked by this layer's calls as the
    database's reference, and any `others`."""
    space = space if space is not None else site_check.fit(*db["train"])
    calls = proba(w, b, db["val"][0]).argmax(1)
    return site_check.database_reference(space, db["val"][0], calls, *others)


def adapted_check(state: dict, db: dict, w: torch.Tensor, b: torch.Tensor, site_features: np.ndarray) -> dict:
    """The site check an adapted model carries: the database's reference ranked by its new calls
    (in the space of the model it came from), and the films it was adapted on as a second
    reference, so the same site's other films pass and another site's still do not."""
    old = site_check.unpack(state.get("site_check"))
    space = old["space"] if old else site_check.fit(*db["train"])
    return site_check_for(db, w, b, space, site_check.site_reference(space, site_check.ADAPTED, site_features))


# --------------------------------------------------------------------------- the learning curve
def _site_rates(p: np.ndarray, y: np.ndarray) -> dict:
    covid, normal = CLASSES.index("COVID"), CLASSES.index("Normal")
    m = y == normal
    return {"normals": int(m.sum()), "called_covid": int((p.argmax(1)[m] == covid).sum()),
            "called_normal": int((p.argmax(1)[m] == normal).sum())}


def learning_curve(checkpoint: str | Path, site_dir: str | Path, sizes=(0, 25, 50, 100, 150), draws: int = 3,
                   methods=METHODS, external_dir: str | Path | None = None, *, config: Config,
                   seed: int = 0) -> dict:
    """What `n` local normals buy, for each n in `sizes` and each method: `draws` random draws of n
    films from the site folder to adapt on, the rest of the folder as the local test. Measured per
    draw: the site's false-COVID rate on its held-out films, database test accuracy and per-class
    sensitivity, and accuracy on the external radiographs (never used to choose anything)."""
    model, meta = backends.load(checkpoint, config)
    site = local_films(site_dir, model, meta, config)
    normal = CLASSES.index("Normal")
    pool = np.flatnonzero(site.y == normal)
    if len(pool) < max(sizes) + 1:
        raise ValueError(f"{site_dir} has {len(pool)} normal films; the curve needs more than {max(sizes)}.")
    db = database_features(checkpoint, config)
    ext = local_films(external_dir, model, meta, config) if external_dir and Path(external_dir).is_dir() else None
    twins = _twin_features(model, meta, config)
    w0, b0 = _head(read_checkpoint(checkpoint))
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for draw in range(draws if n else 1):
            chosen = rng.choice(pool, n, replace=False) if n else np.zeros(0, int)
            held = np.setdiff1d(np.arange(len(site.y)), chosen)
            for method in (methods if n else ("none",)):
                if n:
                    w, b = fit_head(w0, b0, db["train"], (site.features[chosen], site.y[chosen]), method=method)
                else:
                    w, b = w0, b0
                row = {"films": int(n), "draw": draw, "method": method}
                row |= _site_rates(proba(w, b, site.features[held]), site.y[held])
                p_test = proba(w, b, db["test"][0])
                row["database_accuracy"] = metrics.accuracy_from_proba(db["test"][1], p_test)
                row |= {f"database_sensitivity_{c}": v for c, v in metrics.class_sensitivity(db["test"][1], p_test).items()}
                if twins is not None:  # does the refitted layer still ignore the processing chain?
                    row["twin_agreement"] = float(np.mean(proba(w, b, twins[0]).argmax(1) == proba(w, b, twins[1]).argmax(1)))
                if ext is not None:
                    p_ext = proba(w, b, ext.features)
                    row["external_accuracy"] = float(np.mean(p_ext.argmax(1) == ext.y))
                    row |= {f"external_{k}": v for k, v in _site_rates(p_ext, ext.y).items()}
                rows.append(row)
    table = pd.DataFrame(rows)
    return {"checkpoint": Path(checkpoint).name, "site": Path(site_dir).name, "site_films": int(len(site.y)),
            "sizes": list(sizes), "draws": draws, "methods": list(methods), "seed": seed,
            "external": Path(external_dir).name if ext is not None else None, "rows": table.to_dict("records")}


def _twin_features(model, meta: dict, config: Config):
    """Pooled features of the audit twins of validation and test originals and of their originals
    (None without twins)."""
    twins = load_twins(pixel_config(meta, config)).only("val", "test")
    if not len(twins):
        return None
    return (pooled_features(model, twins.orig_px, meta["input_size"]), pooled_features(model, twins.twin_px, meta["input_size"]))


def curve_summary(curve: dict) -> pd.DataFrame:
    """Per method and number of films: the site's false-COVID rate (pooled over draws, Wilson
    interval), database test accuracy and lowest per-class sensitivity, and external accuracy (means over draws)."""
    t = pd.DataFrame(curve["rows"])
    out = []
    for (method, n), g in t.groupby(["method", "films"], sort=False):
        k, m = int(g.called_covid.sum()), int(g.normals.sum())
        lo, hi = wilson(k, m)
        sens = g[[f"database_sensitivity_{c}" for c in CLASSES]].mean()
        out.append({"method": method, "local films": int(n), "draws": len(g),
                    "site false-COVID %": 100 * k / m if m else math.nan, "site CI low %": 100 * lo, "site CI high %": 100 * hi,
                    "database accuracy %": 100 * g.database_accuracy.mean(),
                    **{f"{c} sensitivity %": 100 * sens[f"database_sensitivity_{c}"] for c in CLASSES},
                    "external accuracy %": 100 * g.external_accuracy.mean() if "external_accuracy" in g else math.nan,
                    "twin agreement %": 100 * g.twin_agreement.mean() if "twin_agreement" in g else math.nan})
    order = {m: i for i, m in enumerate(("none",) + METHODS)}
    return pd.DataFrame(out).sort_values(["method", "local films"], key=lambda c: c.map(order) if c.name == "method" else c,
                                         kind="stable").reset_index(drop=True)


def curve_table(summary: pd.DataFrame) -> pd.DataFrame:
    """`curve_summary` as the page shows it: one interval column for the site, the database's
    accuracy and COVID-19 sensitivity, external accuracy and twin agreement (narrow enough for the page)."""
    def cell(v):
        return "n/a" if v != v else f"{v:.1f}"

    return pd.DataFrame({
        "method": summary["method"], "local films": summary["local films"], "draws": summary["draws"],
        "site false-COVID %": [interval(r["site false-COVID %"], (r["site CI low %"], r["site CI high %"]), 1)
                               for _, r in summary.iterrows()],
        "database accuracy %": summary["database accuracy %"].map(cell),
        "database COVID-19 sensitivity %": summary["COVID sensitivity %"].map(cell),
        "external accuracy %": summary["external accuracy %"].map(cell),
        "twin agreement %": summary["twin agreement %"].map(cell)}).set_index(["method", "local films"])


def curve_words(summary: pd.DataFrame, films: int = 25) -> dict[str, str]:
    """The sentences of the learning curve that state a direction, chosen from the numbers: what
    re-estimating the priors and refitting the last layer on `films` local normals do to the site's
    false alarms, to COVID-19 sensitivity on the database and to the other hospitals' films."""
    def row(method, n):
        r = summary[(summary.method == method) & ((summary["local films"] == n) if method != "none" else True)]
        return r.iloc[0] if len(r) else None

    none, prior, head = row("none", 0), row("prior", films), row("head", films)
    out = {"prior_words": "Re-estimating the priors alone was not measured.",
           "ext_words": "Its effect at the other hospitals was not measured."}
    if none is None:
        return out

    def went(col, r):
        return f"{moved_to(none[col] / 100, r[col] / 100)} {r[col]:.1f}%"

    if prior is not None:
        out["prior_words"] = (f"Re-estimating the priors alone, the share of the site's normals called COVID-19 "
                              f"{went('site false-COVID %', prior)}, and COVID-19 sensitivity on the database "
                              f"{went('COVID sensitivity %', prior)} (from {none['COVID sensitivity %']:.1f}%).")
    if head is not None and head["external accuracy %"] == head["external accuracy %"]:
        out["ext_words"] = (f"At the hospitals of the external radiographs, accuracy {went('external accuracy %', head)} "
                            f"after adapting on {films} films (from {none['external accuracy %']:.1f}%).")
    return out


def curve_text(summary: pd.DataFrame) -> dict[str, str]:
    """The numbers the chapter's sentences quote (glued), from `curve_summary`; "not measured" where
    a method or size is missing."""
    t = {}
    for _, r in summary.iterrows():
        tag = f"{r['method']}_{int(r['local films'])}" if r["method"] != "none" else "none"
        t[f"site_{tag}"] = interval(r["site false-COVID %"], (r["site CI low %"], r["site CI high %"]), 1, unit="%")
        t[f"db_{tag}"] = f"{r['database accuracy %']:.1f}%"
        t[f"covid_{tag}"] = f"{r['COVID sensitivity %']:.1f}%"
        t[f"ext_{tag}"] = f"{r['external accuracy %']:.1f}%" if r["external accuracy %"] == r["external accuracy %"] else "not measured"
        t[f"twins_{tag}"] = f"{r['twin agreement %']:.1f}%" if r["twin agreement %"] == r["twin agreement %"] else "not measured"
    draws = summary.loc[summary.method != "none", "draws"]
    t["site_draws"] = f"{int(draws.max())}" if len(draws) else "0"
    t |= curve_words(summary)
    for method in ("none",) + tuple(f"{m}_{n}" for m in METHODS for n in (25, 50, 100, 150)):
        for k in ("site", "db", "covid", "ext", "twins"):
            t.setdefault(f"{k}_{method}", "not measured")
    return t
