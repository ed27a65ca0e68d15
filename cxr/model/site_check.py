"""The site check: do a folder's films come from the database the book's numbers describe?

One film from another hospital looks like an ordinary chest radiograph (the per-image flag of
`cxr.model.ood` fires on few of them); a folder can tell. The check works on the films as the model sees
them, its pooled features, never on their container (bit depth, size, DICOM or JPEG):

1. **A score per film, conditional on the class the model calls it.** The distance of the film's
   features from the mean of the training films of that class, under a probabilistic PCA of the
   training features around their own class means (`fit`). Conditioning on the call keeps a
   folder of one class (a label shift) from looking like a site shift.
2. **A rank per film among reference films of the same call.** The reference is the database's
   validation split, which the model was not fitted on: `u` is the share of reference films of
   the same call that score lower. For films from the database `u` is uniform whatever the
   folder's class mix.
3. **One test per folder**: the folder's mean `u` against 1/2, one-sided, with the variance of a
   stratified Mann-Whitney statistic (the reference's own finite size included), and a margin:
   the check asks whether the folder sits more than `margin` above the reference, so a large
   folder is not flagged for a shift too small to matter (the database's own processing chains
   move it a little). Below `min_films` films it says "too few films to tell".

The level, the margin and the minimum were chosen on folders drawn from the database only
(`cxr site-check --measure` writes the record, `reports/site_check.json`); the outside sets
measure its power and chose nothing. A model adapted to a site (`cxr adapt`) carries a second
reference, the films it was adapted on: a folder passes when it fits either reference.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxr.core.config import CLASSES

VERSION = 1  # of the reference's recipe and the test; bumped by hand when either changes
LEVEL = 0.01  # one-sided level of the folder test
MARGIN = 0.1  # the shift of the mean rank (0.5 in the database) the check tolerates: the database's own
# films as 12-bit DICOM at three times their size sit at 0.56, the audit twins at 0.53
MIN_FILMS = 13  # fewer films than this: too few to tell (the smallest folder in which the database-made
# shift of `site_record` is caught in 95% of draws; reports/site_check.json measures it again)
FIRST_FILMS = 256  # cxr predict decides from the first films of its walk
MIN_STRATUM = 20  # a call with fewer reference films than this is ranked against the whole reference

DATABASE = "the database's validation split"  # the name of the reference every model carries
ADAPTED = "the films it was adapted on"  # the name of the reference `cxr adapt` adds
SHIFT, SAME, TOO_FEW, UNCHECKED = "site-shift", "as the database", "too few films to tell", "not checked"


# --------------------------------------------------------------------------- the reference
def fit(train: np.ndarray, train_y: np.ndarray, k: int = 64) -> dict:
    """The class means of the training features and a probabilistic PCA of the training features
    around them (the leading `k` directions with their own variances, the rest with their mean)."""
    x = np.asarray(train, np.float64)
    y = np.asarray(train_y)
    means = np.stack([x[y == c].mean(0) if (y == c).any() else x.mean(0) for c in range(len(CLASSES))])
    centred = x - means[y]
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2 / max(len(x) - len(CLASSES), 1)
    k = int(min(k, len(var) - 1))
    rest = float(var[k:].mean()) if len(var) > k else float(var[-1])
    return {"means": means.astype(np.float32), "components": vt[:k].astype(np.float32),
            "variances": var[:k].astype(np.float32), "rest_variance": max(rest, 1e-12)}


def distance(space: dict, features: np.ndarray, calls: np.ndarray, means: np.ndarray | None = None) -> np.ndarray:
    """Each film's distance from the mean of the class it is called (or from `means[call]`), under
    the reference's probabilistic PCA: sqrt(Mahalanobis^2 / dimensions)."""
    means = np.asarray(space["means"] if means is None else means, np.float64)
    x = np.asarray(features, np.float64) - means[np.asarray(calls, int)]
    comps = np.asarray(space["components"], np.float64)
    z = x @ comps.T
    residual = np.maximum((x * x).sum(1) - (z * z).sum(1), 0)
    d2 = (z * z / np.asarray(space["variances"], np.float64)).sum(1) + residual / float(space["rest_variance"])
    return np.sqrt(d2 / x.shape[1])


def reference(name: str, scores: np.ndarray, calls: np.ndarray, means: np.ndarray | None = None) -> dict:
    """A reference: the scores of films known to be of one distribution, kept per call (sorted)."""
    scores, calls = np.asarray(scores, np.float64), np.asarray(calls, int)
    ref = {"name": name, "films": int(len(scores)), "all": np.sort(scores).astype(np.float32),
           "by_call": {CLASSES[c]: np.sort(scores[calls == c]).astype(np.float32) for c in range(len(CLASSES))}}
    if means is not None:
        ref["means"] = np.asarray(means, np.float32)
    return ref


def database_reference(space: dict, val_features: np.ndarray, val_calls: np.ndarray, *others: dict) -> dict:
    """What a checkpoint carries (`meta["site_check"]`): the feature space (`fit` on the training
    split), the validation split ranked by the model's calls as the database's reference, and any
    `others` (a site's own, `site_reference`)."""
    return {"version": VERSION, "space": space, "references": [
        reference(DATABASE, distance(space, val_features, val_calls), val_calls), *others]}


def site_reference(space: dict, name: str, features: np.ndarray) -> dict:
    """A site's own reference (what `cxr adapt` adds): the mean of its films' features and, as the
    reference's scores, each film's distance from the mean of the others (leave one out), in one
    stratum whatever the model calls them."""
    x = np.asarray(features, np.float64)
    n = len(x)
    if n < 3:
        raise ValueError("A site reference needs at least 3 films.")
    loo = (x.sum(0)[None] - x) / (n - 1)
    zero = np.zeros(n, int)
    scores = np.concatenate([distance(space, x[i:i + 1], zero[:1], loo[i:i + 1]) for i in range(n)])
    ref = reference(name, scores, zero, np.repeat(x.mean(0)[None], len(CLASSES), 0))
    ref["by_call"] = {}  # one stratum: the site's films, whatever they are called
    return ref


# --------------------------------------------------------------------------- per film
def ranks(ref: dict, scores: np.ndarray, calls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each film's rank `u` among the reference's films of the same call (the share that score
    lower, ties counted half), and the size of the reference stratum it was ranked in."""
    scores, calls = np.asarray(scores, np.float64), np.asarray(calls, int)
    u, m = np.empty(len(scores)), np.empty(len(scores))
    for c in np.unique(calls):
        pool = np.asarray(ref["by_call"].get(CLASSES[c], ()), np.float64)
        if len(pool) < MIN_STRATUM:
            pool = np.asarray(ref["all"], np.float64)
        rows = calls == c
        lo = np.searchsorted(pool, scores[rows], "left")
        hi = np.searchsorted(pool, scores[rows], "right")
        u[rows] = (lo + hi) / 2 / len(pool)
        m[rows] = len(pool)
    return u, m


def film_scores(check: dict, features: np.ndarray, calls: np.ndarray) -> list[np.ndarray]:
    """Each film's score against each of the check's references (their means, the one space)."""
    return [distance(check["space"], features, calls, ref.get("means")) for ref in check["references"]]


# --------------------------------------------------------------------------- per folder
@dataclass
class Verdict:
    """The folder's verdict, its statistic and p-value, against the reference that fits it best."""
    verdict: str
    films: int
    mean_rank: float = math.nan
    z: float = math.nan
    p_value: float = math.nan
    reference: str = ""
    level: float = LEVEL
    margin: float = MARGIN
    min_films: int = MIN_FILMS
    calls: dict = field(default_factory=dict)

    @property
    def shifted(self) -> bool:
        return self.verdict == SHIFT

    def record(self) -> dict:
        return {"verdict": self.verdict, "films": self.films, "mean_rank": _num(self.mean_rank),
                "statistic": _num(self.z), "p_value": _num(self.p_value), "reference": self.reference,
                "level": self.level, "margin": self.margin, "min_films": self.min_films, "calls": self.calls,
                "test": "one-sided test that the films' mean rank among reference films of the same call exceeds "
                        f"0.5 + margin (stratified Mann-Whitney variance); version {VERSION}"}

    @classmethod
    def from_record(cls, r: dict) -> "Verdict":
        def num(v):
            return math.nan if v is None else float(v)

        return cls(r["verdict"], int(r["films"]), num(r.get("mean_rank")), num(r.get("statistic")),
                   num(r.get("p_value")), r.get("reference", ""), float(r.get("level", LEVEL)),
                   float(r.get("margin", MARGIN)), int(r.get("min_films", MIN_FILMS)), dict(r.get("calls", {})))


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def folder_test(u: np.ndarray, m: np.ndarray, margin: float = MARGIN) -> tuple[float, float, float]:
    """Mean rank, z and one-sided p-value of the hypothesis "mean rank <= 0.5 + margin". The
    variance is the stratified Mann-Whitney one: a film ranked among m reference films, n_s films
    of its stratum in the folder, adds (n_s + m + 1) / (12 m) to the variance of the sum."""
    from scipy.stats import norm

    u, m = np.asarray(u, np.float64), np.asarray(m, np.float64)
    n = len(u)
    if n == 0:
        return math.nan, math.nan, math.nan
    var = 0.0
    for size in np.unique(m):
        n_s = int((m == size).sum())  # films ranked against one pool (two pools of one size would merge)
        var += n_s * (n_s + size + 1) / (12 * size)
    mean = float(u.mean())
    z = (u.sum() - n * (0.5 + margin)) / math.sqrt(var)
    return mean, float(z), float(norm.sf(z))


def judge(check: dict | None, features: np.ndarray, calls: np.ndarray, level: float = LEVEL,
          margin: float = MARGIN, min_films: int = MIN_FILMS) -> Verdict:
    """The folder's verdict from its films' pooled features and calls (`judge_scores`)."""
    calls = np.asarray(calls, int)
    scores = film_scores(check, features, calls) if check is not None and len(calls) else None
    return judge_scores(check, scores, calls, level, margin, min_films)


def judge_scores(check: dict | None, scores: list[np.ndarray] | None, calls: np.ndarray, level: float = LEVEL,
                 margin: float = MARGIN, min_films: int = MIN_FILMS) -> Verdict:
    """The folder's verdict: `SHIFT` when it fits none of the check's references, `SAME` when it
    fits one, `TOO_FEW` below `min_films`, `UNCHECKED` when the model carries no reference.
    `scores`: the films' scores against each reference (`film_scores`)."""
    calls = np.asarray(calls, int)
    shares = {c: float(np.mean(calls == i)) if len(calls) else 0.0 for i, c in enumerate(CLASSES)}
    if check is None:
        return Verdict(UNCHECKED, len(calls), calls=shares)
    if len(calls) < min_films:
        return Verdict(TOO_FEW, len(calls), level=level, margin=margin, min_films=min_films, calls=shares)
    best = None
    for ref, s in zip(check["references"], scores):
        mean, z, p = folder_test(*ranks(ref, s, calls), margin)
        if best is None or p > best[3]:
            best = (ref["name"], mean, z, p)
    name, mean, z, p = best
    return Verdict(SHIFT if p < level else SAME, len(calls), mean, z, p, name, level, margin, min_films, shares)


# --------------------------------------------------------------------------- in a checkpoint
def _each(v, leaf):
    """`leaf` applied to every value inside nested dicts and lists."""
    if isinstance(v, dict):
        return {k: _each(x, leaf) for k, x in v.items()}
    if isinstance(v, list):
        return [_each(x, leaf) for x in v]
    return leaf(v)


def pack(check: dict) -> dict:
    """The check as a checkpoint stores it: tensors and plain values (loadable with weights_only=True)."""
    import torch

    return _each(check, lambda v: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)


def unpack(stored: dict | None) -> dict | None:
    """A checkpoint's check as arrays; None when it has none, or one of another version."""
    import torch

    if not stored or int(stored.get("version", -1)) != VERSION:
        return None
    return _each(stored, lambda v: v.numpy() if isinstance(v, torch.Tensor) else v)


# --------------------------------------------------------------------------- what it means
def advice(v: Verdict) -> str:
    """One paragraph: what the verdict means and what to do."""
    if v.verdict == SHIFT:
        return (f"Site check: these {v.films:,} films differ from the database the model was trained and measured on "
                f"(their mean rank among database films of the same call is {v.mean_rank:.2f}, where films of the "
                f"database sit at 0.50; p = {v.p_value:.1e}). The book's accuracy does not describe them, and the "
                "model's calls on them can be confidently wrong: at an outside hospital it called many normal films "
                "COVID-19. cxr predict marks every row that would read 'ok' as 'site-shift'. Before using its answers here, measure "
                "it on labelled films of this site (cxr site-check on a folder in the database layout gives the "
                "site's sensitivity and specificity) and adapt it to the site with cxr adapt.")
    if v.verdict == SAME:
        return (f"Site check: these {v.films:,} films look like the {v.reference.removeprefix('the ')} as the model "
                f"sees them (mean rank {v.mean_rank:.2f}; p = {v.p_value:.2f}). That is no proof the model works here: "
                "the check sees large shifts of exposure, processing and population, not every difference that "
                "matters. Validate on labelled local films before clinical research use.")
    if v.verdict == TOO_FEW:
        films = "1 film is" if v.films == 1 else f"{v.films} films are"
        return (f"Site check: {films} too few to tell whether this site's films come from the database the model "
                f"describes (it needs at least {v.min_films}). Run the check on a larger folder of this site's films "
                "(cxr site-check FOLDER --out site.json) and pass it with --site.")
    return "Site check: not done (this model carries no site reference, or the check was turned off)."


def shown(name: str) -> str:
    """A group's name as a reader meets it: class names as the book writes them, an external
    collection named as one (the record keeps the names it was measured under)."""
    for c in CLASSES:
        name = name.replace(f", {c} only", f", {c.replace('_', ' ')} only")
    return name.replace("cxr-external-dev: ", "external collection ")


# --------------------------------------------------------------------------- a site profile (shards agree)
PROFILE_KIND = "cxr site profile"


def profile(verdict: Verdict, model_sha256: str) -> dict:
    """What `cxr site-check --out` writes and `cxr predict --site` reads: the verdict and its model."""
    return {"kind": PROFILE_KIND, "version": VERSION, "model_sha256": model_sha256, "site": verdict.record()}


def read_profile(path, model_sha256: str) -> Verdict:
    """The verdict of a site profile, for the model of `model_sha256`; a clear error otherwise."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--site {path}: no such file; make it with cxr site-check FOLDER --out {path}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"--site {path}: not a site profile ({type(e).__name__}); make one with "
                         "cxr site-check FOLDER --out SITE.json") from e
    if not isinstance(record, dict) or record.get("kind") != PROFILE_KIND or "site" not in record:
        raise ValueError(f"--site {path}: not a site profile; make one with cxr site-check FOLDER --out SITE.json")
    if record.get("model_sha256") != model_sha256:
        raise ValueError(f"--site {path}: made with another model ({str(record.get('model_sha256'))[:12]}, this one "
                         f"{model_sha256[:12]}); run cxr site-check again with this --model")
    return Verdict.from_record(record["site"])
