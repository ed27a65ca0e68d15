"""Choosing the model for hospitals it has never seen (issue 38): every candidate measured the same
way, one record (`reports/outside.json`, `cxr outside-compare`) and the choice by
`targets.choose_for_outside`, a rule committed before any candidate was measured.

The rule reads database validation (the floors) and one outside hospital's normal films
(../shared/cxr-site-normal: the share called COVID-19). The external radiographs
(../shared/cxr-external-dev) and every test-split number are reported, never given to the rule.

A candidate is one model or the average of several models' probabilities (`CANDIDATES`). Every
model gets its own input from the same whole films, as `cxr predict` gives it (`model_inputs`: the
lung crop by the segmenter's mask where the model was trained on it, CLAHE where it was), so the
shortcut measures (`cxr.assess.shortcuts`) hide the same lung fields from every candidate and give
every candidate the same transplanted films.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cxr.assess import audit, shortcuts
from cxr.assess.explain import occlude
from cxr.core import metrics, records, targets
from cxr.core.book import marked, pct
from cxr.core.config import CLASSES, Config, cache_key, display_path
from cxr.core.files import ensure_dir, write_json
from cxr.data import lung_crop, lung_masks, segmenter
from cxr.data.dataset import external_dir, site_dir
from cxr.data.labelled import list_labelled, read_labelled
from cxr.data.preprocess import enhance, load_pixels, resize
from cxr.data.splits import load_table
from cxr.model import backends, checkpoints
from cxr.model.registry import rows_digest, weights_digest
from cxr.report.site_report import LABELS

#: the candidates: name -> (the models whose probabilities it averages, by `cxr.model.registry`
#: COMPARISONS name, "shipped", or "whole-and-lungs" (`registry.whole_and_lungs_file`); what it tries). Issue 38 asked for the first three; the last two
#: are this project's own ideas aimed at the outside.
CANDIDATES = {
    "whole film": (("shipped",), "the whole-film model, 224 px: the model that shipped before this comparison"),
    "lung crop": (("lung-crop",), "the box around both lungs, as the segmenter draws them"),
    "average of the two": (("whole-and-lungs",), "the whole-film and lung-crop models in one file, which finds the "
                           "lungs itself and averages the two models' calibrated scores; no training"),
    "lung crop, 128 px": (("lung-crop-128",), "the lung crop seen at 128 px: less of the fine texture that "
                          "scanners, resampling and JPEG leave"),
    "whole film, CLAHE": (("clahe",), "the whole film with every film's contrast equalised (CLAHE), in training "
                          "and in prediction: less of the exposure and contrast that differ between hospitals"),
}
#: films per transplant pair (`shortcuts.TRANSPLANT_PAIRS`), from the test split
PER_PAIR = 100


@dataclass
class Member:
    """One model of a candidate: what runs it, its preprocessing and its temperature."""
    name: str
    checkpoint: Path
    runner: object
    size: int
    temperature: float
    pixels: Config  # the preprocessing it was trained with (`checkpoints.pixel_config`)

    def proba(self, inputs: np.ndarray) -> np.ndarray:
        return metrics.temper(checkpoints.predict(self.runner, inputs, self.size, progress=False), self.temperature)


def load_member(name: str, checkpoint: str | Path, config: Config) -> Member:
    runner, meta = backends.load(checkpoint, config)
    return Member(name, Path(checkpoint), runner, int(meta["input_size"]), float(meta.get("temperature", 1.0)),
                  checkpoints.pixel_config(meta, config))


@dataclass
class Films:
    """Whole films (N, S, S) with their lung masks: `masks` as the segmenter draws them, `fields`
    as every measurement hides them (`segmenter.lung_fields`: a failed mask replaced by the mean
    mask), and whether each mask passed its check."""
    films: np.ndarray
    masks: np.ndarray
    fields: np.ndarray
    usable: np.ndarray


def films_with_masks(films: np.ndarray, seg) -> Films:
    """Whole films with their lung masks by the segmenter `seg` and the lung fields every measure
    hides (`segmenter.fields_of`)."""
    films = np.asarray(films)
    masks = np.stack(segmenter.segment(seg, films)) if len(films) else np.zeros(films.shape, bool)
    fields, usable = segmenter.fields_of(masks)
    return Films(films, masks, fields, usable)


def model_inputs(f: Films, pixels: Config) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs from whole films, as `preprocess.preprocess` makes them (the lung input by
    the film's own mask, or the whole film where the mask is too little to crop to; resized;
    enhanced), and the lung fields carried to the same place (for hiding them)."""
    size = pixels.image_size
    out, lungs = np.empty((len(f.films), size, size), np.uint8), np.empty((len(f.films), size, size), bool)
    for i, (g, m, field) in enumerate(zip(f.films, f.masks, f.fields)):
        g, field = np.asarray(g), field.astype(np.uint8)
        if pixels.lungs != "none" and lung_masks.status(m) not in lung_crop.WHOLE_FILM:
            g = lung_crop.apply(g, m, pixels.lungs, pixels.lung_margin)
            field = lung_crop.apply(field, m, pixels.lungs, pixels.lung_margin)
        out[i] = enhance(resize(g, size), pixels)
        lungs[i] = cv2.resize(field, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out, lungs


def _folder(folder: Path | None, pixels: Config) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, inputs) of a labelled folder as `cxr evaluate` reads it, or None when absent."""
    if folder is None or not Path(folder).is_dir():
        return None
    files, skipped = list_labelled(folder)
    files, px, _ = read_labelled(folder, files, skipped, pixels)
    return files.label.map(CLASSES.index).to_numpy(), px


def member_outputs(member: Member, data: dict, config: Config) -> dict[str, np.ndarray]:
    """Every probability the measures need from one model, on the shared films of `data`."""
    out = {}
    for split in ("val", "test"):
        x, lungs = model_inputs(data[split], member.pixels)
        out[split] = member.proba(x)
        if split == "test":
            out["test lungs hidden"] = member.proba(occlude(x, lungs, keep=False))
        for kind in ("originals", "twins"):
            out[f"{split} {kind}"] = member.proba(model_inputs(data[f"{split} {kind}"], member.pixels)[0])
    out["transplant"] = {k: member.proba(model_inputs(f, member.pixels)[0]) for k, f in data["transplant"].items()}
    for where, folder in (("external", external_dir()), ("site", site_dir())):
        read = _folder(folder, member.pixels)
        out[where] = None if read is None else member.proba(read[1])
        data.setdefault(f"{where} labels", None if read is None else read[0])
    return out


def cached_outputs(checkpoint: Path, data: dict, config: Config) -> dict:
    """`member_outputs` of one checkpoint, computed once per weights, data and code version and
    kept in the cache (plain arrays, `np.load` without pickle), so that a candidate trained later
    does not measure the others again."""
    digest = weights_digest(checkpoint)
    _, table = load_table(config)
    key = cache_key([digest, rows_digest(table), PER_PAIR, config.seed, external_dir() and str(external_dir()),
                     site_dir() and str(site_dir())], "outside")
    path = Path(config.cache_dir) / f"outside-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
        out = {"transplant": {}}
        for k, v in flat.items():
            if k.startswith("transplant/"):
                out["transplant"][k.split("/", 1)[1]] = v
            elif k.endswith(" labels"):
                data.setdefault(k, v)
            else:
                out[k] = v
        for where in ("external", "site"):
            out.setdefault(where, None)
            data.setdefault(f"{where} labels", None)
        return out
    out = member_outputs(load_member(checkpoint.parent.name or checkpoint.stem, checkpoint, config), data, config)
    flat = {k: v for k, v in out.items() if k != "transplant" and v is not None}
    flat |= {f"transplant/{k}": v for k, v in out["transplant"].items()}
    flat |= {f"{w} labels": data[f"{w} labels"] for w in ("external", "site") if data.get(f"{w} labels") is not None}
    ensure_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **flat)
    tmp.replace(path)
    return out


def shared_films(config: Config, per_pair: int = PER_PAIR, progress: bool = False) -> dict:
    """The whole films every candidate is measured on: validation and test with their lung masks,
    the audit twins of their originals, and the transplanted test films (model independent)."""
    whole = config.replace(lungs="none", clahe=False, gamma=None)
    root, table = load_table(config)
    pixels = load_pixels(root, table, whole, progress=progress)
    y = table.label.map(CLASSES.index).to_numpy()
    seg = segmenter.load()[0]
    twins = audit.load_twins(whole, root)
    data = {}
    for split in ("val", "test"):
        rows = table.index[table.split == split].to_numpy()
        data[split], data[f"{split} labels"] = films_with_masks(pixels[rows], seg), y[rows]
        t = twins.only(split)
        data[f"{split} originals"], data[f"{split} twins"] = films_with_masks(t.orig_px, seg), films_with_masks(t.twin_px, seg)
    test = data["test"]
    made, data["transplant pairs"] = shortcuts.composites(test.films, test.masks, data["test labels"], test.usable,
                                                          per_pair, config.seed)
    data["transplant"] = {k: films_with_masks(v, seg) for k, v in made.items()}
    return data


def candidate_row(name: str, outputs: list[dict], data: dict, config: Config) -> dict:
    """One candidate's numbers from its models' outputs (averaged where it has several)."""
    def avg(key):
        parts = [o[key] for o in outputs]
        if any(p is None for p in parts):
            return None
        if isinstance(parts[0], dict):
            return {k: np.mean([p[k] for p in parts], 0) for k in parts[0]}
        return np.mean(parts, 0)

    n_boot = 100 if config.smoke else 1000
    row = {"name": name}
    for split in ("val", "test"):
        y, p = data[f"{split} labels"], avg(split)
        s = metrics.summary(y, p, n_boot=n_boot, seed=config.seed)
        tw = audit.twin_agreement(avg(f"{split} originals").argmax(1), avg(f"{split} twins").argmax(1))
        row[split] = {"images": int(len(y)), "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                      "balanced_accuracy": metrics.balanced_accuracy(y, p), "macro_auc": s["macro_auc"],
                      "sensitivity": {c: s["per_class"][c]["sensitivity"] for c in CLASSES},
                      "covid_sensitivity_ci": s["per_class"]["COVID"]["sensitivity_ci"],
                      "twin_agreement": tw["agreement"], "twins": tw["n"]}
    row["lungs_hidden"] = shortcuts.lungs_hidden(avg("test lungs hidden"), data["test labels"])
    row["transplant"] = shortcuts.transplant_summary(avg("transplant"), data["transplant pairs"])
    covid, normal = CLASSES.index("COVID"), CLASSES.index("Normal")
    for where in ("external", "site"):
        p, y = avg(where), data.get(f"{where} labels")
        if p is None:
            row[where] = None
            continue
        calls = p.argmax(1)
        normals, covids = y == normal, y == covid
        row[where] = {"images": int(len(y)), "accuracy": metrics.accuracy(y, calls),
                      "normals": int(normals.sum()), "normals_called_covid": int((calls[normals] == covid).sum()),
                      "covid": int(covids.sum()), "covid_found": int((calls[covids] == covid).sum())}
        if normals.any():
            pr = metrics.proportion(row[where]["normals_called_covid"], int(normals.sum()))
            row[where] |= {"normals_called_covid_share": pr["value"], "normals_called_covid_ci": pr["ci"]}
    return row


def rule_numbers(row: dict) -> dict:
    """What `targets.choose_for_outside` may read of a row: validation numbers and the outside
    hospital's normals called COVID-19; never a test or external number."""
    v, site = row["val"], row.get("site")
    return {"accuracy": v["accuracy"], "sensitivity": v["sensitivity"], "twin_agreement": v["twin_agreement"],
            "balanced_accuracy": v["balanced_accuracy"],
            "site_normal_called_covid": site.get("normals_called_covid_share") if site else None}


def record(models: dict[str, Path], config: Config, out: str | Path | None = None,
           candidates: dict = CANDIDATES, progress: bool = False) -> dict:
    """`cxr outside-compare`: measure every candidate whose models are all in `models` (name ->
    checkpoint), choose by the rule, and write the record."""
    data = shared_films(config, progress=progress)
    outputs, found = {}, {}
    for name, checkpoint in models.items():
        outputs[name] = cached_outputs(Path(checkpoint), data, config)
        found[name] = {"checkpoint": display_path(checkpoint), "model_sha256": weights_digest(checkpoint)}
    rows, left_out = [], {}
    for name, (members, tries) in candidates.items():
        missing = [m for m in members if m not in outputs]
        if missing:
            left_out[name] = f"not trained here: {', '.join(missing)}"
            continue
        rows.append(candidate_row(name, [outputs[m] for m in members], data, config)
                    | {"tries": tries, "models": {m: found[m] for m in members}})
    chosen = targets.choose_for_outside([rule_numbers(r) for r in rows]) if rows else None
    rec = {"profile": config.profile, "rule": targets.choose_for_outside.__doc__.strip().split("\n\n")[0],
           "floors": targets.OUTSIDE_FLOORS, "targets": targets.OUTSIDE_TARGETS, "transplant_per_pair": PER_PAIR,
           "candidates": rows, "left_out": left_out, "chosen": rows[chosen]["name"] if rows else None,
           "command": "cxr outside-compare"}
    if out:
        write_json(rec, out)
    return rec


def target_rows(row: dict) -> dict[str, tuple[float | int | None, str, bool | None]]:
    """Each target of issue 38 for one candidate: (value, shown value, met)."""
    T, t, ext, site, hid = targets.OUTSIDE_TARGETS, row["test"], row.get("external"), row.get("site"), row["lungs_hidden"]
    out = {}
    share = site.get("normals_called_covid_share") if site else None
    out["outside hospital's normals called COVID-19"] = (share, pct(share) if share is not None else "not measured",
                                                         None if share is None else share <= T["site_normal_called_covid"] + 1e-9)
    if ext:
        out["external normals called COVID-19"] = (ext["normals_called_covid"], f"{ext['normals_called_covid']} of {ext['normals']}",
                                                   ext["normals_called_covid"] <= T["external_normals_called_covid"])
        out["external COVID-19 found"] = (ext["covid_found"], f"{ext['covid_found']} of {ext['covid']}",
                                          ext["covid_found"] >= T["external_covid_found"])
    for c, label in (("COVID", "COVID-19"), ("Lung_Opacity", "Lung Opacity")):
        v = hid["sensitivity"][c]
        out[f"lungs hidden: {label} sensitivity"] = (v, pct(v), v <= T["lungs_hidden_sensitivity"] + 1e-9)
    out["test accuracy"] = (t["accuracy"], pct(t["accuracy"]), t["accuracy"] >= T["test_accuracy"] - 1e-9)
    v = t["sensitivity"]["COVID"]
    out["test COVID-19 sensitivity"] = (v, pct(v), v >= T["test_covid_sensitivity"] - 1e-9)
    return out


#: the tables' short names for the candidates and the targets (the record and the prose keep the long ones)
SHORT = {"average of the two": "average", "lung crop, 128 px": "crop, 128 px",
         "whole film, CLAHE": "CLAHE"}
SHORT_ROWS = {"outside hospital's normals called COVID-19": "site normals called COVID-19",
              "lungs hidden: COVID-19 sensitivity": "lungs hidden: COVID-19 found",
              "lungs hidden: Lung Opacity sensitivity": "lungs hidden: Lung Opacity found"}


def _column(rec: dict, r: dict, shipped_digest: str | None = None) -> str:
    """A candidate's short name, marked "shipped" when it is the model that ships and "chosen" when
    the rule chose it."""
    name = SHORT.get(r["name"], r["name"])
    if ships(r, shipped_digest):
        name = marked(name, "shipped")
    return marked(name, "chosen") if r["name"] == rec["chosen"] else name


def table(rec: dict, shipped_digest: str | None = None) -> pd.DataFrame:
    """The candidates against issue 38's targets: one row per target, one column per candidate, a
    missed target marked with a cross."""
    return pd.DataFrame({_column(rec, r, shipped_digest): {SHORT_ROWS.get(k, k): shown + ("" if met in (True, None) else " \u2717")
                                           for k, (_, shown, met) in target_rows(r).items()} for r in rec["candidates"]})


def measures(rec: dict, shipped_digest: str | None = None) -> pd.DataFrame:
    """The candidates' other shortcut measures and the validation numbers the rule reads."""
    cols = {}
    for r in rec["candidates"]:
        v, o = r["val"], r["transplant"]["overall"]
        col = {"lungs hidden: COVID vs Normal AUC": f"{r['lungs_hidden']['covid_vs_normal_auc']:.3f}"}
        if o.get("films"):
            col["transplant: follows the lungs"] = pct(o["follows_lungs"])
            col["transplant: follows the surroundings"] = pct(o["follows_surroundings"])
        col["validation accuracy"] = pct(v["accuracy"])
        col["validation COVID-19 / Lung Opacity"] = f"{pct(v['sensitivity']['COVID'])} / {pct(v['sensitivity']['Lung_Opacity'])}"
        col["validation twin agreement"] = pct(v["twin_agreement"])
        col["meets every floor"] = "yes" if targets.outside_key(rule_numbers(r))[0] else "no"
        cols[_column(rec, r, shipped_digest)] = col
    return pd.DataFrame(cols)


def read(path: str | Path | None = None) -> dict | None:
    """The committed record (`reports/outside.json`), or None."""
    return records.read(Path(path) if path else "outside.json")


def transplant_examples(config: Config, per_pair: int = 1) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(pair, donor, host, composite) for the first `per_pair` test films of each transplant pair,
    drawn as the record draws them (model independent), for the chapter's figure."""
    whole = config.replace(lungs="none", clahe=False, gamma=None)
    root, table = load_table(config)
    rows = table.index[table.split == "test"].to_numpy()
    f = films_with_masks(load_pixels(root, table, whole, progress=False)[rows], segmenter.load()[0])
    y = table.label.map(CLASSES.index).to_numpy()[rows]
    out = []
    for donor, host, d, h in shortcuts.transplant_pairs(y, f.usable, PER_PAIR, config.seed):
        for i, j in list(zip(d, h))[:per_pair]:
            out.append((f"{LABELS[donor]} lungs in a {LABELS[host]} film", f.films[i], f.films[j],
                        shortcuts.transplant(f.films[i], f.masks[i], f.films[j], f.masks[j])))
    return out


def verdict(rec: dict | None, shipped_digest: str | None = None) -> str:
    """What the comparison says, in words chosen from its numbers: the candidate the rule chose and
    why, and which of issue 38's targets it meets."""
    if rec is None or not rec.get("candidates"):
        return "No candidate has been measured yet: train them (cxr train --lungs crop, ...) and run cxr outside-compare."
    rows = {r["name"]: r for r in rec["candidates"]}
    chosen = rows[rec["chosen"]]
    meets = [n for n, r in rows.items() if targets.outside_key(rule_numbers(r))[0]]
    share = (chosen.get("site") or {}).get("normals_called_covid_share")
    text = (f"Of {len(rows)} candidates, {len(meets)} meet every floor on database validation"
            + (f" ({', '.join(meets)})" if meets and len(meets) < len(rows) else "") + "; "
            + (f"among them the rule chose {rec['chosen']}, which calls {pct(share)} of the outside hospital's "
               "normal films COVID-19" if share is not None and meets else f"the rule chose {rec['chosen']}") + ". ")
    checks = target_rows(chosen)
    missed = [f"{k} ({shown})" for k, (_, shown, met) in checks.items() if met is False]
    met = [k for k, (_, _, m) in checks.items() if m]
    text += (f"It meets {len(met)} of issue 38's {len(checks)} targets"
             + (f" and misses {len(missed)}: " + "; ".join(missed) if missed else ", all of them") + ".")
    later = shipping_words(rec, shipped_digest)
    return text + (" " + later if later else "")


NUMBERS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")


def ships(row: dict, shipped_digest: str | None) -> bool:
    """Whether a candidate is the shipped model: one model, with the shipped weights."""
    models = list(row.get("models", {}).values())
    return len(models) == 1 and shipped_digest is not None and models[0]["model_sha256"] == shipped_digest


def shipping_words(rec: dict, shipped_digest: str | None) -> str:
    """What the page says of whether the rule's choice is the model that ships."""
    rows = {r["name"]: r for r in rec["candidates"]}
    chosen = rows[rec["chosen"]]
    if ships(chosen, shipped_digest):
        return "It is the model that ships, and every chapter describes it."
    shipped = next((r for r in rec["candidates"] if ships(r, shipped_digest)), None)
    why = (" cxr predict, the site check, adaptation and the exported file each run one network per film, and an "
           "average of two networks that see different inputs has no path through them yet"
           if len(chosen.get("models", {})) > 1 else "")
    return (f"{rec['chosen'][:1].upper() + rec['chosen'][1:]} does not ship yet:{why or ' it has not been exported'}. Until it does, "
            + (f"{shipped['name']} ships, and every other chapter describes it." if shipped else
               "the shipped model is not among the candidates."))


def summary(rec: dict | None, shipped_digest: str | None = None) -> str:
    """The executive summary's paragraph on which model ships and why, in words chosen from the
    record (`shipped_digest`: the shipped model's weights, to say whether the rule's choice ships)."""
    if rec is None or not rec.get("candidates"):
        return "The candidates for the outside have not been measured yet (cxr outside-compare)."
    rows = {r["name"]: r for r in rec["candidates"]}
    chosen, whole = rows[rec["chosen"]], next(iter(rows.values()))

    def site(r):
        share = (r.get("site") or {}).get("normals_called_covid_share")
        return pct(share) if share is not None else "not measured"

    count = NUMBERS[len(rows)] if len(rows) < len(NUMBERS) else f"All {len(rows)}"
    text = (f"{count} candidate models were measured alike (cxr outside-compare). The rule that chooses the "
            "model to ship, committed before any of them was measured, keeps those that meet floors on database "
            "validation and then takes the one that calls the fewest of one outside hospital's normal films COVID-19. "
            f"It chose {chosen['name']} ({chosen['tries']}): it calls {site(chosen)} of that hospital's normal films "
            "COVID-19" + (f", against {site(whole)} for {whole['name']}" if chosen is not whole else "")
            + "; the choice was made on those films, so this figure flatters it.")
    ext, w_ext = chosen.get("external"), whole.get("external")
    if ext:
        text += (f" On the external radiographs, which no rule reads, it calls {ext['normals_called_covid']} of "
                 f"{ext['normals']} normal films COVID-19" + (f" ({whole['name']}: {w_ext['normals_called_covid']})"
                                                               if w_ext and chosen is not whole else "")
                 + f" and finds {ext['covid_found']} of {ext['covid']} COVID-19 films.")
    t = chosen["test"]
    hid = chosen["lungs_hidden"]["sensitivity"]
    text += (f" On the database's test split its accuracy is {pct(t['accuracy'])} and its COVID-19 sensitivity "
             f"{pct(t['sensitivity']['COVID'])}; with the lungs hidden it still finds {pct(hid['COVID'])} of COVID-19 "
             f"and {pct(hid['Lung_Opacity'])} of Lung Opacity films.")
    checks = target_rows(chosen)
    missed = [k for k, (_, _, met) in checks.items() if met is False]
    text += (f" It meets every one of the {len(checks)} targets set for it." if not missed else
             f" Of the {len(checks)} targets set for it, it misses {len(missed)}: {'; '.join(missed)}.")
    later = shipping_words(rec, shipped_digest)
    return text + (" " + later if later else "")
