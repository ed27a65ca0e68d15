"""`cxr predict`: the model on new radiographs, file by file, never a crashed batch.

Reads PNG, JPEG, TIFF and BMP (8- or 16-bit, grey, RGB or RGBA) and DICOM (rescale
slope/intercept, VOI LUT or window, MONOCHROME1 inverted; compressed transfer syntaxes where a
decoder is installed). Each file gets the four calibrated probabilities, a decision (the most
probable class, or a named operating point of the evaluation such as ``covid@95``), an
out-of-distribution score, a status, and optionally a Grad-CAM overlay. Nothing of a DICOM header
goes into the output beyond the file name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .classes import CLASSES
from .images import IMAGE_EXTS, ImageError, decode_gray

DICOM_EXTS = {".dcm", ".dicom"}
MAX_PIXELS = 64_000_000  # larger images are refused before decoding (8000 x 8000)
RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "PX"}
OK, OOD = "ok", "warning: out of distribution"


@dataclass
class Read:
    """One input file after reading: the grey image, or why there is none, and notes."""

    file: str
    image: np.ndarray | None
    status: str
    notes: list[str]


# --------------------------------------------------------------------------- reading
def is_dicom(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in DICOM_EXTS or head[128:132] == b"DICM"


def read_dicom(path: Path) -> tuple[np.ndarray, list[str]]:
    """A DICOM radiograph as 8-bit grey; ImageError says why not."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable DICOM gets one clear status
        raise ImageError(f"not a readable DICOM file ({type(e).__name__})") from e
    if "PixelData" not in ds:
        raise ImageError("DICOM file with no pixel data")
    notes = []
    modality = str(ds.get("Modality", "") or "")
    if modality and modality not in RADIOGRAPH_MODALITIES:
        notes.append(f"DICOM modality {modality}: not a radiograph")
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing decoders and broken pixel data alike
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        first = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
        raise ImageError(f"cannot decode the DICOM pixel data ({name}): {first}. For compressed files install a "
                         "decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg") from e
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
        notes.append("multi-frame DICOM: first frame used")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3:  # colour DICOM (a photo, a secondary capture)
        arr = arr[..., :3].astype(np.float64).mean(2)
        notes.append(f"{photometric} DICOM converted to grey")
    else:
        arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds)
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr
            notes.append("MONOCHROME1 inverted")
    arr = np.asarray(arr, np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise ImageError("blank DICOM image (all pixels equal)")
    gray = np.round((arr - lo) / (hi - lo) * 255).astype(np.uint8)
    data, info = _reencode(gray)
    return data, notes + info["notes"]


def _reencode(gray: np.ndarray) -> tuple[np.ndarray, dict]:
    """Through the same size checks as any other image."""
    import cv2

    ok, png = cv2.imencode(".png", gray)
    return decode_gray(png.tobytes())


def read_file(path: Path, shown: str) -> Read:
    """Read one file; any problem becomes the status, never an exception."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as e:
        return Read(shown, None, f"error: unreadable ({e.strerror or e})", [])
    try:
        if is_dicom(path, head):
            image, notes = read_dicom(path)
            return Read(shown, image, OK, notes)
        if not head:
            raise ImageError("empty file")
        _check_size(path)
        image, info = decode_gray(path.read_bytes())
        return Read(shown, image, OK, info["notes"])
    except ImageError as e:
        return Read(shown, None, f"error: {e}", [])
    except (OSError, MemoryError) as e:
        return Read(shown, None, f"error: unreadable ({e})", [])


def _check_size(path: Path) -> None:
    """Refuse huge images from their header, before decoding them."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with a clear message
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not something PIL knows: let the decoder say what it is
        return
    if w * h > MAX_PIXELS:
        raise ImageError(f"too large ({w}x{h}); at most {MAX_PIXELS // 1_000_000} million pixels: downsample it first")


def expand(paths: list[str | Path]) -> tuple[list[tuple[Path, str]], list[Read]]:
    """Files to read (with the name to show) and a row for each path that gives none."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS | DICOM_EXTS)
            if not found:
                problems.append(Read(str(p), None, "error: no images in this folder "
                                                   f"({', '.join(sorted(IMAGE_EXTS | DICOM_EXTS))})", []))
            files += [(f, str(f.relative_to(p.parent))) for f in found]
        elif p.is_file():
            files.append((p, p.name))
        else:
            problems.append(Read(str(p), None, "error: no such file or folder", []))
    return files, problems


# --------------------------------------------------------------------------- predicting
def decide(proba: np.ndarray, operating_point: str | None, points: dict | None) -> list[str]:
    """The decision for each row: the most probable class, or a named operating point's call."""
    from .metrics import task_scores

    if not operating_point or operating_point == "argmax":
        return [CLASSES[i] for i in proba.argmax(1)]
    if not points or operating_point not in points:
        raise ValueError(f"--threshold {operating_point}: this model has no such operating point"
                         + (f" (it has: argmax, {', '.join(points)})" if points else
                            "; only the exported model carries them (cxr export)"))
    op = points[operating_point]
    _, score = task_scores(op["task"], np.zeros(len(proba), int), proba)
    yes, no = ("COVID-19", "not COVID-19") if op["task"] == "covid" else ("abnormal", "normal")
    return [yes if s >= op["threshold"] else no for s in score]


@dataclass
class Predictor:
    """A loaded model with what prediction needs: preprocessing config, OOD statistics, operating points."""

    model: object
    meta: dict
    config: object
    checkpoint: Path

    @property
    def size(self) -> int:
        return self.meta["input_size"]

    @property
    def ood(self) -> dict | None:
        return self.meta.get("ood")

    @property
    def points(self) -> dict | None:
        return self.meta.get("operating_points")


def default_model() -> Path:
    """The shipped model: it carries the operating points and the out-of-distribution statistics."""
    from . import registry

    return registry.shipped().checkpoint


def load(checkpoint: str | Path | None = None) -> Predictor:
    """The model to predict with: `checkpoint`, else `default_model()`."""
    from . import checkpoints
    from .config import get_config

    checkpoint = Path(checkpoint) if checkpoint else default_model()
    model, meta = checkpoints.load_model(checkpoint)
    return Predictor(model, meta, checkpoints.pixel_config(meta, get_config("full")), checkpoint)


def predict_paths(paths: list[str | Path], checkpoint: str | Path | Predictor | None = None,
                  threshold: str | None = None, cam_dir: str | Path | None = None, batch: int = 32,
                  progress: bool = True) -> pd.DataFrame:
    """One row per input: file, status, probabilities, decision, OOD score (and the CAM file)."""
    from tqdm.auto import tqdm

    from .runtime import show_progress

    pred = checkpoint if isinstance(checkpoint, Predictor) else load(checkpoint)
    if threshold and threshold != "argmax":
        decide(np.zeros((0, len(CLASSES))), threshold, pred.points)  # an unknown name is a usage error, at once
    files, problems = expand(paths)
    rows = [_row(r) for r in problems]
    bar = tqdm(total=len(files), desc="predict", unit="file", disable=not show_progress(progress and len(files) > 1))
    for start in range(0, len(files), batch):
        reads = [read_file(p, shown) for p, shown in files[start:start + batch]]
        good = [r for r in reads if r.image is not None]
        if good:
            rows += predict_images(pred, good, threshold, cam_dir)
        rows += [_row(r) for r in reads if r.image is None]
        bar.update(len(reads))
    bar.close()
    out = pd.DataFrame(rows, columns=["file", "status", *CLASSES, "decision", "ood_score", "notes", "cam"])
    out.attrs["checkpoint"] = str(pred.checkpoint)
    out.attrs["ood_threshold"] = pred.ood["threshold"] if pred.ood else math.nan
    return out


def predict_images(pred: Predictor, reads: list[Read], threshold: str | None = None, cam_dir=None) -> list[dict]:
    """Rows for images already read (grey arrays of any size)."""
    from . import checkpoints, ood
    from .preprocess import preprocess

    from .metrics import temper

    pixels = np.stack([preprocess(r.image, pred.config, r.notes) for r in reads])
    stats = pred.ood
    if stats and hasattr(pred.model, "head"):  # one forward pass for both
        raw, feats = ood.proba_and_features(pred.model, pixels, pred.size)
        proba = temper(raw, float(pred.meta.get("temperature", 1.0)))
        scores = ood.score(stats, feats)
    else:
        proba = checkpoints.calibrated(pred.model, pred.meta, pixels)
        scores = np.full(len(reads), np.nan)
    decisions = decide(proba, threshold, pred.points)
    cams = _cams(pred.model, pixels, pred.size, reads, cam_dir) if cam_dir else [""] * len(reads)
    rows = []
    for r, p, s, d, cam in zip(reads, proba, scores, decisions, cams):
        status = OOD if stats and s > stats["threshold"] else OK
        modality = [n for n in r.notes if n.startswith("DICOM modality")]
        if not stats:
            r.notes.append("no out-of-distribution statistics in this model (cxr export adds them)")
        rows.append(_row(r, "warning: " + modality[0] if modality else status, p, d, s, cam))
    return rows


def _row(r: Read, status: str | None = None, proba=None, decision: str = "", score: float = math.nan,
         cam: str = "") -> dict:
    row = {"file": r.file, "status": status or r.status, "decision": decision, "ood_score": float(score),
           "notes": "; ".join(r.notes), "cam": cam}
    row.update({c: (float(proba[i]) if proba is not None else math.nan) for i, c in enumerate(CLASSES)})
    return row


def _cams(model, pixels: np.ndarray, size: int, reads: list[Read], cam_dir) -> list[str]:
    import cv2

    from .explain import cam_maps
    from .plots import overlay

    cam_dir = Path(cam_dir)
    cam_dir.mkdir(parents=True, exist_ok=True)
    maps = cam_maps(model, pixels, size)
    names = []
    for r, g, m in zip(reads, pixels, maps):
        name = Path(r.file).stem + "_gradcam.png"
        cv2.imwrite(str(cam_dir / name), cv2.cvtColor(overlay(g, m), cv2.COLOR_RGB2BGR))
        names.append(name)
    return names


def exit_code(rows: pd.DataFrame) -> int:
    """0 when every file was read, 1 when some were not."""
    return 1 if rows.status.str.startswith("error").any() else 0


def write(rows: pd.DataFrame, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(rows.to_json(orient="records", indent=1))
    else:
        rows.to_csv(out, index=False)
    return out


# --------------------------------------------------------------------------- for the chapter
def nearest(train_features: np.ndarray, features: np.ndarray, k: int = 3) -> np.ndarray:
    """Indices of the `k` training images most similar to each row (cosine similarity of features)."""
    a = np.asarray(train_features, np.float64)
    b = np.asarray(features, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.argsort(-(b @ a.T), axis=1)[:, :k]


def non_chest_images(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Pictures that are not chest radiographs, from what installs offline: scikit-image's sample
    images and synthetic patterns (grey, at least `size` px a side)."""
    import cv2
    from skimage import data as samples

    out = {}
    for name in ("astronaut", "camera", "coins", "coffee", "chelsea", "moon", "page", "text", "rocket", "horse",
                 "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "clock",
                 "logo", "cell", "checkerboard"):
        try:
            img = getattr(samples, name)()
        except Exception:  # noqa: BLE001 - a sample whose file is not installed is left out
            continue
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 3:
            img = cv2.cvtColor(img[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
        img = np.asarray(img, np.float64)
        img = np.round(255 * (img - img.min()) / max(img.max() - img.min(), 1e-9)).astype(np.uint8)
        out[f"scikit-image: {name}"] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out["pattern: noise"] = rng.integers(0, 256, (size, size)).astype(np.uint8)
    out["pattern: gradient"] = (255 * xx).astype(np.uint8)
    out["pattern: stripes"] = (127.5 + 127.5 * np.sin(2 * np.pi * 12 * xx)).astype(np.uint8)
    out["pattern: rings"] = (127.5 + 127.5 * np.sin(2 * np.pi * 10 * np.hypot(xx - 0.5, yy - 0.5))).astype(np.uint8)
    out["pattern: squares"] = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2 * 255).astype(np.uint8)
    out["pattern: disc"] = (255 * (np.hypot(xx - 0.5, yy - 0.5) < 0.3)).astype(np.uint8)
    return out
