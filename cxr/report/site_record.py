"""How well the site check works: its false alarms on folders drawn from the database and its power
on folders from outside it, by folder size (`cxr site-check --measure`, `reports/site_check.json`).

* **False alarms** (what chose the level, the margin and the minimum): folders of the database's
  test split of every class mix (all classes, each class alone, the audit twins of test originals
  through another class's processing chain), and the same films as 12-bit DICOM at three times
  their size.
* **Power on the database's own films through another processing chain** (gamma, blur, JPEG,
  noise): a shift made from database films, so it could be used to choose the minimum folder size.
* **Power outside** (reporting only, chose nothing): `cxr-site-normal` and each collection of
  `cxr-external-dev`.
* **After adaptation**: the shipped model adapted (`cxr adapt`, last layer) on half of
  `cxr-site-normal`; the check on the other half of that hospital and on the external collections.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr.assess import adapt
from cxr.assess.adapt import proba
from cxr.assess.audit import load_twins
from cxr.core import records
from cxr.core.config import CLASSES, Config
from cxr.core.files import save_state, write_json
from cxr.core.metrics import wilson
from cxr.core.runtime import show_progress
from cxr.data.dataset import external_dir, site_dir
from cxr.data.images import read_gray
from cxr.data.preprocess import preprocess
from cxr.data.reading import read_file
from cxr.data.splits import load_table
from cxr.model import backends, registry, site_check
from cxr.model.checkpoints import pixel_config, read_checkpoint
from cxr.model.ood import pooled_features

SIZES = (10, 25, 50, 100, 200)
DRAWS = 200
RECORD_VERSION = 1


def flag_rates(check: dict, scores: list[np.ndarray], calls: np.ndarray, sizes=SIZES, draws: int = DRAWS,
               seed: int = 0, min_films: int = site_check.MIN_FILMS) -> list[dict]:
    """The share of random folders of each size (drawn without replacement from these films; one
    folder of all of them where there are fewer) that the check flags."""
    rng = np.random.default_rng(seed)
    calls = np.asarray(calls, int)
    per = [site_check.ranks(ref, s, calls) for ref, s in zip(check["references"], scores)]
    rows = []
    for n in sizes:
        whole = n >= len(calls)
        size = min(n, len(calls))
        if size < min_films:  # the check answers "too few films to tell": it flags none
            rows.append({"size": int(n), "films": int(size), "draws": 0, "flagged": 0, "rate": 0.0,
                         "rate_ci": [0.0, 0.0], "too_few": True})
            if whole:
                break
            continue
        flagged = 0
        k = 1 if whole else draws
        for _ in range(k):
            i = np.arange(len(calls)) if whole else rng.choice(len(calls), size, replace=False)
            p = max(site_check.folder_test(u[i], m[i])[2] for u, m in per)
            flagged += p < site_check.LEVEL
        rows.append({"size": int(n), "films": int(size), "draws": int(k), "flagged": int(flagged),
                     "rate": flagged / k, "rate_ci": list(wilson(flagged, k))})
        if whole:
            break
    return rows


def minimum_films(check: dict, scores: list[np.ndarray], calls: np.ndarray, draws: int = DRAWS, seed: int = 0,
                  power: float = 0.95) -> int | None:
    """The smallest folder that the check flags in at least `power` of draws, for a shift made from
    the database (the processing-chain folders): below it, a folder is too few films to tell."""
    for n in range(3, 51):
        rows = flag_rates(check, scores, calls, (n,), draws, seed, min_films=1)
        if rows and rows[0]["rate"] >= power:
            return n
    return None


def other_chain(gray: np.ndarray, seed: int) -> np.ndarray:
    """Another hospital's processing, made from a database film: gamma 1.3, a blur of 0.8 px,
    noise (sd 2 grey levels) and JPEG quality 40. A folder of database films through it is the
    shift that sets the minimum folder size; the outside sets chose nothing."""
    import cv2

    rng = np.random.default_rng(seed)
    x = (gray.astype(np.float32) / 255) ** 1.3
    x = cv2.GaussianBlur(x, (0, 0), 0.8)
    x = np.clip(x * 255 + rng.normal(0, 2, x.shape), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 40])
    return cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)


def as_dicom12(gray: np.ndarray, path: Path, scale: int = 3, name: str = "DOE^JANE") -> Path:
    """A film re-saved as a 12-bit DICOM at `scale` times its size (a hospital's container, the
    same picture), with a patient name in its header."""
    import cv2
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    big = cv2.resize(gray, (gray.shape[1] * scale, gray.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    px = np.round(big.astype(np.float64) / 255 * 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = name, "123456", "DX"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = px.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- the reference a model carries
def database_check(checkpoint, config: Config) -> dict:
    """The site check's database reference for the model of `checkpoint`: the feature space fitted
    on the training split, the validation split ranked by the model's calls."""
    db = adapt.database_features(checkpoint, config)
    return adapt.site_check_for(db, *adapt._head(read_checkpoint(checkpoint)))


def attach(checkpoint, config: Config | None = None) -> Path:
    """Write the database reference into `checkpoint` (its weights, and so its digest, unchanged)."""
    state = dict(read_checkpoint(checkpoint))
    state["site_check"] = site_check.pack(database_check(checkpoint, config))
    return save_state(Path(checkpoint), state)


# --------------------------------------------------------------------------- the record
def _database_made(model, meta: dict, config: Config, made: int, progress: bool) -> dict[str, np.ndarray]:
    """Pooled features of `made` test films (a seeded draw) made into other containers and chains:
    as 12-bit DICOM at three times their size (read back as cxr predict reads DICOM), and through
    `other_chain`."""
    cfg = pixel_config(meta, config)
    root, table = load_table(config)
    rows = np.flatnonzero((table.split == "test").to_numpy())
    rows = np.random.default_rng(config.seed).choice(rows, min(made, len(rows)), replace=False)
    dicom, chain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for j, i in enumerate(tqdm(rows, desc="database-made folders", disable=not show_progress(progress))):
            gray = read_gray(root / table.file.iloc[i])
            r = read_file(as_dicom12(gray, Path(tmp) / "film.dcm"), "film.dcm")
            dicom.append(preprocess(r.image, cfg))
            chain.append(preprocess(other_chain(gray, j), cfg))
    size = meta["input_size"]
    return {"dicom": pooled_features(model, np.stack(dicom), size), "chain": pooled_features(model, np.stack(chain), size)}


def _collections(folder: Path, files: list[str]) -> np.ndarray:
    """The collection of each external film (from the folder's manifest.csv; one name without it)."""
    path = folder / "manifest.csv"
    if not path.exists():
        return np.array([folder.name] * len(files))
    man = pd.read_csv(path, usecols=["file", "collection"])
    where = dict(zip(man.file, man.collection))
    return np.array([where.get(f, "unknown") for f in files])


def site_record(config: Config, remake: bool = False, progress: bool = False,
                draws: int = DRAWS, made: int = 300) -> dict:
    """`<reports>/site_check.json`: the check's false alarms and power by folder size (see the module
    docstring), for the shipped model; reused while it names this model, data and recipe. `made`:
    test films made into other containers and chains (all of them in the smoke profile)."""
    model_ref = registry.shipped(config)
    path = config.reports_dir / "site_check.json"
    key = model_ref.ref | {"record_version": RECORD_VERSION, "check_version": site_check.VERSION,
                           "level": site_check.LEVEL, "margin": site_check.MARGIN, "draws": draws,
                           "min_films": site_check.MIN_FILMS}
    if not remake and (old := records.fresh(path, key)) is not None:
        return old
    checkpoint = model_ref.checkpoint
    model, meta = backends.load(checkpoint, config)
    check = site_check.unpack(meta.get("site_check"))
    if check is None:
        raise ValueError(f"{checkpoint.name} carries no site reference: python -c 'from cxr import site_record; "
                         "site_record.attach(\"cxr/weights/cxr-efficientnet-lite0.pt\")'")
    state = read_checkpoint(checkpoint)
    head = adapt._head(state)

    def rates(chk, feats, seed=0):
        return _rates(chk, head, feats, draws, seed)

    db = adapt.database_features(checkpoint, config, progress=progress)
    test_f, test_y = db["test"]
    database = {"test split, all classes": rates(check, test_f)}
    for k, c in enumerate(CLASSES):
        database[f"test split, {c} only"] = rates(check, test_f[test_y == k], seed=k + 1)
    twins = load_twins(pixel_config(meta, config)).only("test")
    if len(twins):
        database["audit twins of test originals (another class's processing chain)"] = rates(
            check, pooled_features(model, twins.twin_px, meta["input_size"]), seed=5)
    dm = _database_made(model, meta, config, made, progress)
    database["test films as 12-bit DICOM at 3x their size"] = rates(check, dm["dicom"], seed=6)
    chain_calls = adapt.proba(*head, dm["chain"]).argmax(1)
    chain_scores = site_check.film_scores(check, dm["chain"], chain_calls)
    made_shift = {"test films through another processing chain (gamma 1.3, blur, noise, JPEG 40)":
                  flag_rates(check, chain_scores, chain_calls, (5, 10, 15, 20, 25, 50), draws, 7, min_films=1)}
    record = key | {"sizes": list(SIZES), "database": database, "database_made_shift": made_shift,
                    "minimum_films_measured": minimum_films(check, chain_scores, chain_calls, draws),
                    "outside": {}, "adapted": None}
    outside = {}
    site = site_dir()
    if site is not None:
        local = adapt.local_films(site, model, meta, config)
        outside["cxr-site-normal (one hospital's normals)"] = rates(check, local.features, seed=8)
    ext = external_dir()
    if ext is not None:
        films = adapt.local_films(ext, model, meta, config)
        coll = _collections(ext, films.files)
        for k, name in enumerate(sorted(set(coll))):
            outside[f"cxr-external-dev: {name}"] = rates(check, films.features[coll == name], seed=9 + k)
    record["outside"] = outside
    if site is not None and len(local.y) >= 40:
        record["adapted"] = _adapted_record(db, state, local, config, draws,
                                            films if ext else None, coll if ext else None)
    write_json(record, path)
    return record


def _rates(check: dict, head, feats: np.ndarray, draws: int, seed: int) -> list[dict]:
    """`flag_rates` of folders of these films, called by the last layer `head` (weight, bias)."""
    calls = proba(*head, feats).argmax(1)
    return flag_rates(check, site_check.film_scores(check, feats, calls), calls, SIZES, draws, seed)


def _adapted_record(db: dict, state: dict, local, config: Config, draws: int, films, coll) -> dict:
    """The shipped model (`state`) adapted on a seeded half of the site's films (last layer): the
    check on the site's other half, on the external collections and on the database's test split."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(local.y))
    fit_on, held = order[: len(order) // 2], order[len(order) // 2:]
    head = adapt.fit_head(*adapt._head(state), db["train"], (local.features[fit_on], local.y[fit_on]))
    check = adapt.adapted_check(state, db, *head, local.features[fit_on])

    def rates(feats, seed):
        return _rates(check, head, feats, draws, seed)

    out = {"adapted_on": int(len(fit_on)), "method": "head",
           "groups": {"cxr-site-normal: the other half (same hospital)": rates(local.features[held], 20),
                      "test split, all classes": rates(db["test"][0], 21)}}
    if films is not None:
        for k, name in enumerate(sorted(set(coll))):
            out["groups"][f"cxr-external-dev: {name}"] = rates(films.features[coll == name], 22 + k)
    return out


# --------------------------------------------------------------------------- tables for the book
def _cell(r: dict) -> str:
    if r.get("too_few"):
        return "too few to tell"
    return f"{100 * r['rate']:.1f}%" + (f" (all {r['films']})" if r["draws"] == 1 else "")


def _table(groups: dict) -> pd.DataFrame:
    sizes = sorted({r["size"] for g in groups.values() for r in g})
    rows = []
    for name, g in groups.items():
        by = {r["size"]: _cell(r) for r in g}
        rows.append({"folders of": site_check.shown(name)} | {f"{n} films": by.get(n, "") for n in sizes})
    return pd.DataFrame(rows).set_index("folders of")


def false_alarm_table(record: dict) -> pd.DataFrame:
    """Share of database folders flagged, by kind and size (the target: at most 2%)."""
    return _table(record["database"])


def power_table(record: dict) -> pd.DataFrame:
    """Share of folders flagged: the database-made shift and the outside sets, by size."""
    return _table(record["database_made_shift"] | record["outside"])


def adapted_table(record: dict) -> pd.DataFrame | None:
    return _table(record["adapted"]["groups"]) if record.get("adapted") else None


# --------------------------------------------------------------------------- words for the book
def _at(rows: list[dict], size: int) -> dict | None:
    """The row for folders of `size` films, or the one folder of all films where there were fewer."""
    for r in rows:
        if r.get("too_few"):
            continue
        if r["size"] == size or (r["draws"] == 1 and r["films"] < size):
            return r
    return None


def _rate(r: dict | None) -> str:
    if r is None:
        return "not measured (too few films)"
    return f"{100 * r['rate']:.0f}%" + (f" (one folder of all {r['films']})" if r["draws"] == 1 else "")


def worst_false_alarm(record: dict) -> float | None:
    rates = [r["rate"] for g in record["database"].values() for r in g if not r.get("too_few")]
    return max(rates) if rates else None


def words(record: dict, films: int = 25) -> dict[str, str]:
    """The sentences chapter 06 and the summary glue, chosen from the record's numbers."""
    worst = worst_false_alarm(record)
    out = {"sc_level": f"{record['level']}", "sc_margin": f"{record['margin']}", "sc_min": str(record["min_films"]),
           "sc_first": str(site_check.FIRST_FILMS),
           "sc_min_measured": str(record.get("minimum_films_measured")),
           "sc_worst": "no folder was large enough to draw" if worst is None else f"{100 * worst:.1f}%"}
    out["sc_false_verdict"] = ("none measured" if worst is None else
                               "meets the target of at most 2%" if worst <= 0.02 else
                               f"misses the target of at most 2% by {100 * (worst - 0.02):.1f} points")
    outside = record.get("outside", {})
    parts = []
    for name, rows in outside.items():
        r = _at(rows, films)
        met = r is not None and r["rate"] >= 0.95
        parts.append(f"{site_check.shown(name)}: {_rate(r)}" + ("" if r is None else " (target 95%: met)" if met else
                                               f" (target 95%: missed by {100 * (0.95 - r['rate']):.0f} points)"))
    out["sc_outside"] = "; ".join(parts) + "." if parts else "The outside sets were not at hand."
    site = next((rows for name, rows in outside.items() if name.startswith("cxr-site-normal")), None)
    ext = {name: rows for name, rows in outside.items() if name.startswith("cxr-external-dev")}
    flagged_site = _at(site, films) if site else None
    ext_rates = [r["rate"] for rows in ext.values() if (r := _at(rows, films)) is not None]
    sentence = "The site check"
    if flagged_site is not None:
        sentence += f" flags {_rate(flagged_site)} of folders of {films} normal films from the outside hospital"
    if ext_rates:
        lo, hi = min(ext_rates), max(ext_rates)
        span = f"{100 * lo:.0f}%" if lo == hi else f"{100 * lo:.0f}% to {100 * hi:.0f}%"
        sentence += (" and" if flagged_site is not None else " flags") + \
            f" {span} of folders of {films} from the external collections"
    if worst is not None:
        drawn = sum(r["draws"] for g in record["database"].values() for r in g)
        sentence += (f", and none of the {drawn:,} folders drawn from the database" if worst == 0 else
                     f", and at most {100 * worst:.1f}% of the folders drawn from the database")
    out["sc_summary"] = (sentence + ": a hospital's own folder tells it whether the book's numbers describe its films."
                         if sentence != "The site check" else "The site check was not measured in this build.")
    adapted = record.get("adapted")
    if adapted:
        g = adapted["groups"]
        same = next((rows for name, rows in g.items() if "same hospital" in name), None)
        others = [(_at(rows, films) or {}).get("rate") for name, rows in g.items() if name.startswith("cxr-external")]
        others = [r for r in others if r is not None]
        r = _at(same, films) if same else None
        out["sc_adapted"] = (
            f"After adapting on {adapted['adapted_on']} of its normal films, the check flags "
            f"{_rate(r)} of folders of {films} of that hospital's other normals"
            + (f", and still {100 * min(others):.0f}% to {100 * max(others):.0f}% of the external collections' folders"
               if others else "") + ".")
    else:
        out["sc_adapted"] = "The adapted model's check was not measured (no site folder)."
    return out
