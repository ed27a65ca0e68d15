"""Shortcut measures a reader can trust (issue 38): what a model still finds with the lung fields
hidden, per class, and whether its call follows the lungs or their surroundings when the lungs of
one film are placed into a film of another class.

With the lungs hidden, a model that reads the lungs cannot find COVID-19 or Lung Opacity: the
share of those films it still finds (`lungs_hidden`) is the share it finds by something else (the
hospital, the processing, the patient's build). A balanced accuracy over all four classes hid that
cause: children's Viral Pneumonia films stay recognisable by anatomy outside the lungs, and grey
lungs look clear, so Normal stays Normal. COVID-19 against Normal AUC with the lungs hidden is 0.5
when nothing outside the lungs tells them apart.

The lung transplant (`transplant`) puts the lung fields of a donor film into the lung box of a host
film of another class (every class of the database comes from another source copy, see its
README), aligned by the two lung masks' boxes, with the donor's lung intensities matched to the
host's lungs (mean and spread), so the test asks about the lungs' content, not their brightness.
"""
from __future__ import annotations

import cv2
import numpy as np

from cxr.assess.explain import occlude
from cxr.core import metrics
from cxr.core.config import CLASSES
from cxr.data import segmenter
from cxr.data.lung_crop import box
from cxr.data.preprocess import load_pixels
from cxr.data.splits import load_table
from cxr.model import checkpoints

#: the shortcut figures: the classes a model should not find with the lungs hidden
SHORTCUT_CLASSES = ("COVID", "Lung_Opacity")
#: donor class -> host class: the lungs of the first placed into films of the second
TRANSPLANT_PAIRS = (("COVID", "Normal"), ("Normal", "COVID"), ("Lung_Opacity", "Normal"), ("Normal", "Lung_Opacity"))


def lungs_hidden(proba_hidden: np.ndarray, y: np.ndarray) -> dict:
    """From a model's probabilities on films with their lung fields hidden (`explain.occlude`):
    the sensitivity of every class, and COVID-19 against Normal ROC-AUC on P(COVID-19) among the
    COVID-19 and Normal films (0.5: no cue outside the lungs)."""
    y, p = np.asarray(y), np.asarray(proba_hidden)
    return {"images": int(len(y)), "sensitivity": metrics.class_sensitivity(y, p),
            "covid_vs_normal_auc": metrics.covid_vs_normal_auc(y, p)}


def transplant(donor: np.ndarray, donor_mask: np.ndarray, host: np.ndarray, host_mask: np.ndarray,
               feather: float = 1.5) -> np.ndarray:
    """The host film with the donor's lung fields in place of its own.

    The donor's lung box (the box around its mask) is resized onto the host's lung box; inside that
    box, wherever either film has lung (the host's mask or the moved donor mask), the donor's pixels
    replace the host's, with the edge feathered by a Gaussian of `feather` pixels. Nothing outside
    the host's lung box changes.

    Brightness is carried over relative to each film's own surroundings of the lungs (the lung box
    outside the mask: mediastinum, heart, chest wall): the donor's lungs keep their density against
    their own surroundings, and take the host's exposure (the surroundings' mean and spread). An
    opacity is lungs denser, so brighter, than they should be against the rest of the chest; matching
    the donor's lungs to the host's lungs would erase the very sign of COVID-19 and Lung Opacity."""
    donor, host = np.asarray(donor), np.asarray(host)
    dm, hm = np.asarray(donor_mask, bool), np.asarray(host_mask, bool)
    hy0, hy1, hx0, hx1 = box(hm, 0.0)
    dy0, dy1, dx0, dx1 = box(dm, 0.0)
    size = (hx1 - hx0, hy1 - hy0)
    patch = cv2.resize(donor[dy0:dy1, dx0:dx1].astype(np.float32), size, interpolation=cv2.INTER_AREA)
    moved = cv2.resize(dm[dy0:dy1, dx0:dx1].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    region = moved | hm[hy0:hy1, hx0:hx1]
    target = host[hy0:hy1, hx0:hx1].astype(np.float32)
    ref_d, ref_h = _surroundings(donor[dy0:dy1, dx0:dx1], dm[dy0:dy1, dx0:dx1]), _surroundings(target, hm[hy0:hy1, hx0:hx1])
    scale = float(np.clip(max(ref_h.std(), 1.0) / max(ref_d.std(), 1.0), 0.5, 2.0))
    patch = (patch - ref_d.mean()) * scale + ref_h.mean()
    alpha = region.astype(np.float32)
    if feather > 0:
        alpha = np.maximum(alpha, cv2.GaussianBlur(alpha, (0, 0), feather))
    out = host.astype(np.float32).copy()
    out[hy0:hy1, hx0:hx1] = alpha * patch + (1 - alpha) * target
    return np.clip(np.rint(out), 0, 255).astype(host.dtype)


def _surroundings(box_pixels: np.ndarray, box_mask: np.ndarray) -> np.ndarray:
    """The pixels of a lung box outside the lungs (the whole box where the mask fills it)."""
    px = np.asarray(box_pixels, np.float32)
    out = px[~np.asarray(box_mask, bool)]
    return out if out.size else px.ravel()


def transplant_pairs(labels: np.ndarray, usable: np.ndarray, per_pair: int, seed: int = 0) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """For each of `TRANSPLANT_PAIRS`: (donor class, host class, donor rows, host rows), `per_pair`
    films each (fewer where a class has fewer usable films), drawn at random (seeded) among the
    films whose lung mask passed its check (`usable`)."""
    rng = np.random.default_rng(seed)
    labels, usable = np.asarray(labels), np.asarray(usable, bool)
    out = []
    for donor, host in TRANSPLANT_PAIRS:
        d = np.flatnonzero((labels == CLASSES.index(donor)) & usable)
        h = np.flatnonzero((labels == CLASSES.index(host)) & usable)
        n = min(per_pair, len(d), len(h))
        out.append((donor, host, rng.choice(d, n, replace=False), rng.choice(h, n, replace=False)))
    return out


def transplant_summary(probas: dict[str, np.ndarray], pairs: dict[str, tuple[str, str]]) -> dict:
    """From a model's probabilities on the composites of each pair (key -> (donor class, host
    class)): how often the call is the donor's class (it follows the lungs), the host's (it follows
    the surroundings) or another; per pair and over all pairs together."""
    rows, hits = {}, np.zeros(3)
    for key, p in probas.items():
        donor, host = pairs[key]
        calls = np.asarray(p).argmax(1) if len(p) else np.zeros(0, int)
        if not len(calls):
            rows[key] = {"donor": donor, "host": host, "films": 0}
            continue
        lungs, around = int((calls == CLASSES.index(donor)).sum()), int((calls == CLASSES.index(host)).sum())
        rows[key] = {"donor": donor, "host": host, "films": int(len(calls)), "follows_lungs": lungs / len(calls),
                     "follows_surroundings": around / len(calls), "other": 1 - (lungs + around) / len(calls)}
        hits += (lungs, around, len(calls))
    overall = {"films": int(hits[2]), "follows_lungs": hits[0] / hits[2], "follows_surroundings": hits[1] / hits[2],
               "other": 1 - (hits[0] + hits[1]) / hits[2]} if hits[2] else {"films": 0}
    return {"pairs": rows, "overall": overall}


def composites(films: np.ndarray, masks: np.ndarray, labels: np.ndarray, usable: np.ndarray,
               per_pair: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]]]:
    """The transplanted films of every pair ("<donor> lungs in <host>" -> films) and each key's
    (donor class, host class)."""
    out, pairs = {}, {}
    for donor, host, d, h in transplant_pairs(labels, usable, per_pair, seed):
        key = f"{donor} lungs in {host}"
        out[key] = (np.stack([transplant(films[i], masks[i], films[j], masks[j]) for i, j in zip(d, h)])
                    if len(d) else np.zeros((0, *np.asarray(films).shape[1:]), np.uint8))
        pairs[key] = (donor, host)
    return out, pairs


def transplant_test(predict, films: np.ndarray, masks: np.ndarray, labels: np.ndarray, usable: np.ndarray,
                    per_pair: int = 100, seed: int = 0) -> dict:
    """The lung-transplant test of `predict` (whole films -> probabilities; it applies the model's
    own input, such as its lung crop) on films of `TRANSPLANT_PAIRS` (`transplant_summary`)."""
    made, pairs = composites(films, masks, labels, usable, per_pair, seed)
    return transplant_summary({k: predict(v) if len(v) else np.zeros((0, len(CLASSES))) for k, v in made.items()}, pairs)


def figures(model, config) -> dict:
    """The shortcut figures of a model (a `registry.Model`) on the profile's test split, as its card carries them: the
    films preprocessed as the model was trained, the lung fields of that input hidden
    (`segmenter.lung_fields`, `explain.occlude`), and `lungs_hidden` of its probabilities."""
    runner, meta = model.runner, model.loaded[1]
    root, table = load_table(config)
    rows = table.index[table.split == "test"].to_numpy()
    pixels = np.asarray(load_pixels(root, table, checkpoints.pixel_config(meta, config), progress=False)[rows])
    lungs, replaced = segmenter.lung_fields(pixels)
    proba = metrics.temper(checkpoints.predict(runner, occlude(pixels, lungs, keep=False), meta["input_size"],
                                               progress=False), float(meta.get("temperature", 1.0)))
    out = lungs_hidden(proba, table.label.map(CLASSES.index).to_numpy()[rows])
    return out | {"masks_replaced": replaced, "measured_on": "the test split, lung fields hidden by mean grey"}
