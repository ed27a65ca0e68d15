"""`cxr predict`: the model on new radiographs, file by file, never a crashed batch.

Files are found by `walk` (nested folders, extensionless DICOM) and read by `reading` (images and
DICOM, any problem a status), in worker processes that overlap decoding with inference; rows come
out in the walk's order whatever the number of workers. Each file gets the four calibrated
probabilities, a decision (the most probable class, or a named operating point of the evaluation
such as ``covid@95``), an out-of-distribution score, a status, and optionally a Grad-CAM overlay.
Nothing of a DICOM header goes into the output; paths are shown relative to the given folder.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr.assess.explain import cam_maps, overlay
from cxr.assess.results import COLUMNS
from cxr.core.config import CLASSES, Config
from cxr.core.files import ensure
from cxr.core.metrics import task_scores, temper
from cxr.core.runtime import model_device, show_progress
from cxr.data import segmenter, walk
from cxr.data.preprocess import preprocess
from cxr.data.reading import IGNORED, OK, Read, read_file
from cxr.model import backends, checkpoints, ood, registry, site_check

OOD = "warning: out of distribution"
SITE_KEY = "_site"  # a row's call and site-check scores, for the verdict; never written out


# --------------------------------------------------------------------------- predicting
def decide(proba: np.ndarray, operating_point: str | None, points: dict | None) -> list[str]:
    """The decision for each row: the most probable class, or a named operating point's call."""
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

    @cached_property
    def site(self) -> dict | None:
        """The site check's references (`site_check`), None when the model carries none."""
        return site_check.unpack(self.meta.get("site_check"))

    @cached_property
    def fast(self):
        """What runs the batches (`backends.runner`, made once): the configuration's backend, or
        the network with its batch norms folded; Grad-CAM still uses `model`."""
        return backends.runner(self.model, self.meta, self.checkpoint, self.config)


def default_model() -> Path:
    """The shipped model: it carries the operating points and the out-of-distribution statistics."""
    return registry.shipped().checkpoint


def load(checkpoint: str | Path | None, config: Config) -> Predictor:
    """The model to predict with: `checkpoint`, else `default_model()`, on `config`'s device and with
    the preprocessing it was trained with (`checkpoints.pixel_config`)."""
    checkpoint = Path(checkpoint) if checkpoint else default_model()
    model, meta = checkpoints.load_model(checkpoint, config.device)
    return Predictor(model, meta, checkpoints.pixel_config(meta, config), checkpoint)


def default_workers() -> int:
    """Processes that decode while the model runs: one core is left to the model."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def default_batch(model) -> int:
    """Images per forward pass: larger on a GPU."""
    return 256 if model_device(model).type == "cuda" else 32


@dataclass
class Loaded:
    """One file after reading and preprocessing (in a worker): the model's input, or why there is none."""
    item: walk.Item
    read: Read
    pixels: np.ndarray | None


def load_items(items: list[walk.Item], config) -> list[Loaded]:
    """Read and preprocess a batch of files: what each worker process does."""
    out = []
    for it in items:
        r = read_file(it.path, it.shown, it.named)
        pixels = None
        if r.image is not None:
            try:
                pixels = preprocess(r.image, config, r.notes)
            except Exception as e:  # noqa: BLE001 - a file preprocessing cannot handle gets a status, the run goes on
                r.status = f"error: cannot preprocess ({type(e).__name__}: {e})"
        r.image = None  # only the model's input travels back
        out.append(Loaded(it, r, pixels))
    return out


def _worker_init(parent: int, forked: bool) -> None:
    import cv2

    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported there (a lung model's segmenter)
    if not forked:  # a forked worker has the parent's one thread already (see _Pool); asking again hangs there
        cv2.setNumThreads(1)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(1)
    die_with(parent)


def die_with(parent: int) -> None:
    """A worker ends when the run that started it is killed (even with SIGKILL), instead of waiting
    for work forever: Linux's parent-death signal."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the run died before the signal was armed
        os._exit(1)


def loaded_batches(batches: Iterator[list[walk.Item]], config, workers: int) -> Iterator[list[Loaded]]:
    """Batches read and preprocessed, in the order given. With workers, the first batch is read here
    (a first row at once, while the workers start) and the rest in `workers` processes, at most two
    batches per worker in flight, so memory does not grow with the number of files. A file that
    kills its reader (a decoder crash) costs that file only."""
    first = next(batches, None)
    if first is None:
        return
    if workers <= 0:
        yield load_items(first, config)
        for b in batches:
            yield load_items(b, config)
        return

    pool = _Pool(workers)
    try:
        pending = deque()
        for b in batches:
            pending.append((b, pool.submit(b, config)))
            if len(pending) >= 2 * workers:
                break
        yield load_items(first, config)
        while pending:
            b, fut = pending.popleft()
            try:
                done = fut.result()
            except BrokenProcessPool:
                pool.restart()
                done = [x for it in b for x in pool.alone(it, config)]
                pending = deque((pb, pool.submit(pb, config)) for pb, _ in pending)
            nxt = next(batches, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(nxt, config)))
            yield done
    finally:
        pool.close()


class _Pool:
    """Worker processes forked from this one on Linux (the way torch's DataLoader starts its
    workers: no script or notebook is imported again, and they start in milliseconds); spawned
    elsewhere. One core's threads each.

    OpenCV's thread pool does not survive a fork: a forked child that touches it (even to set
    its size) waits forever for threads that were not copied. So while workers may be forked,
    this process runs OpenCV on one thread (no pool), and gets its own number back at `close`."""
    def __init__(self, workers: int):
        import cv2

        self.forked = sys.platform.startswith("linux")
        self.ctx = mp.get_context("fork" if self.forked else "spawn")
        self.cv_threads = cv2.getNumThreads()
        if self.forked:
            cv2.setNumThreads(1)
        self.workers = workers
        self.pool = self._new(workers)

    def _new(self, n: int):
        return ProcessPoolExecutor(n, mp_context=self.ctx, initializer=_worker_init,
                                   initargs=(os.getpid(), self.forked))

    def submit(self, items, config):
        return self.pool.submit(load_items, items, config)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new(self.workers)

    def alone(self, item: walk.Item, config) -> list[Loaded]:
        """One file in a process of its own."""
        one = self._new(1)
        try:
            return one.submit(load_items, [item], config).result()
        except BrokenProcessPool:
            return [Loaded(item, Read(item.shown, None, "error: reading this file crashed its reader process "
                                                        "(a decoder fault)", []), None)]
        finally:
            one.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        import cv2

        self.pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(self.cv_threads)


def _batched(items: Iterable, n: int) -> Iterator[list]:
    batch = []
    for it in items:
        batch.append(it)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Counts:
    """What a streaming run did, for its summary line."""
    tally: walk.Tally = field(default_factory=walk.Tally)
    rows: int = 0
    skipped: int = 0
    errors: int = 0


def stream(paths: Iterable[str | Path], pred: Predictor, threshold: str | None = None, cam_dir=None,
           batch: int | None = None, workers: int | None = None, shard: tuple[int, int] | None = None,
           done=None, counts: Counts | None = None, progress: bool = True) -> Iterator[list[dict]]:
    """Rows for the files under `paths`, a batch at a time, in the walk's order: files in `done`
    (a `results.Done`) are skipped, files that are not images counted in `counts.tally`."""
    if threshold and threshold != "argmax":
        decide(np.zeros((0, len(CLASSES))), threshold, pred.points)  # an unknown name is a usage error, at once
    counts = counts if counts is not None else Counts()
    batch, workers = batch or default_batch(pred.model), default_workers() if workers is None else workers

    def todo():
        for it in walk.items(paths, shard, counts.tally):
            if done is not None and done.has(it.shown, it.size, it.mtime_ns):
                counts.skipped += 1
                continue
            yield it

    bar = tqdm(desc="predict", unit="file", disable=not show_progress(progress))
    for loaded in loaded_batches(_batched(todo(), batch), pred.config, workers):
        good = [x for x in loaded if x.pixels is not None]
        predicted = iter(predict_pixels(pred, [x.read for x in good], np.stack([x.pixels for x in good]), threshold,
                                        cam_dir) if good else [])
        rows = []
        for x in loaded:
            if x.pixels is not None:
                row = next(predicted)
            elif x.read.status == IGNORED and not x.item.named:
                counts.tally.ignore(x.item.shown)
                continue
            else:
                status = x.read.status if x.read.status != IGNORED else "error: not an image (" + x.read.notes[0] + ")"
                row = _row(x.read.file, status, x.read.notes)
            rows.append(row | {"bytes": x.item.size, "modified_ns": x.item.mtime_ns})
        bar.update(len(loaded))
        yield from _counted(rows, counts)
    bar.close()
    problems = [_row(p, "error: no such file or folder") for p in counts.tally.missing]
    if shard is None:
        problems += [_row(str(p), "error: no images in this folder (" + ", ".join(sorted(walk.IMAGE_EXTS | walk.DICOM_EXTS))
                          + ", or DICOM without an extension)") for p, n in counts.tally.per_root.items() if n == 0]
    problems = [r | {"bytes": -1, "modified_ns": -1} for r in problems
                if done is None or not done.has(r["file"], -1, -1)]
    yield from _counted(problems, counts)


def site_checked(batches: Iterable[list[dict]], pred: Predictor, verdict=None, first: int | None = None,
                 on_verdict=None) -> Iterator[list[dict]]:
    """The rows of `stream` under the site check: the verdict is decided from the first `first`
    films that reach the model (all of them when there are fewer), before any row comes out, and
    `on_verdict(verdict)` is called with it; when it is `site-shift`, every row whose status is
    `ok` reads `site-shift`. A `verdict` given (a resumed run's, a shared site profile's, or the
    check turned off) is used as it is. Rows are held until the verdict: a run killed before it
    has written none."""
    first = site_check.FIRST_FILMS if first is None else first
    if verdict is None and pred.site is None:  # nothing to check against: rows go out at once
        verdict = _decided(judge_rows(pred, []), on_verdict)
    held, films = [], 0
    for rows in batches:
        if verdict is None:
            held.extend(rows)
            films += sum(SITE_KEY in r for r in rows)
            if films < first:
                continue
            verdict = _decided(judge_rows(pred, held, first), on_verdict)
            rows, held = held, []
        yield _marked(rows, verdict)
    if verdict is None:
        verdict = _decided(judge_rows(pred, held), on_verdict)
        if held:
            yield _marked(held, verdict)


def judge_rows(pred: Predictor, rows: list[dict], limit: int | None = None):
    """The site verdict on the films among `rows` that reached the model (the first `limit` of them)."""
    got = [r[SITE_KEY] for r in rows if SITE_KEY in r][:limit]
    scores = list(np.asarray([s for _, s in got], np.float64).T) if got else None
    return site_check.judge_scores(pred.site, scores, np.array([c for c, _ in got], int))


def _decided(verdict, on_verdict):
    if on_verdict is not None:
        on_verdict(verdict)
    return verdict


def _marked(rows: list[dict], verdict) -> list[dict]:
    shift = verdict is not None and verdict.shifted
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != SITE_KEY}
        if shift and r["status"] == OK:
            r["status"] = site_check.SHIFT  # the status of a row that would read ok, in a folder the check flags
        out.append(r)
    return out


def _counted(rows: list[dict], counts: Counts) -> Iterator[list[dict]]:
    if rows:
        counts.rows += len(rows)
        counts.errors += sum(r["status"].startswith("error") for r in rows)
        yield rows


def predict_paths(paths: list[str | Path], pred: Predictor,
                  threshold: str | None = None, cam_dir: str | Path | None = None, batch: int | None = None,
                  progress: bool = True, workers: int = 0) -> pd.DataFrame:
    """One row per input as a table (for a few files; an archive goes through `stream` and
    `results.Writer`): file, status, probabilities, decision, OOD score, notes, CAM file."""
    rows = [r for b in stream(paths, pred, threshold, cam_dir, batch, workers, progress=progress) for r in b]
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["checkpoint"] = str(pred.checkpoint)
    out.attrs["ood_threshold"] = pred.ood["threshold"] if pred.ood else math.nan
    return out


def predict_images(pred: Predictor, reads: list[Read], threshold: str | None = None, cam_dir=None) -> list[dict]:
    """Rows for images already read (grey arrays of any size)."""
    pixels = np.stack([preprocess(r.image, pred.config, r.notes) for r in reads])
    return predict_pixels(pred, reads, pixels, threshold, cam_dir)


def predict_pixels(pred: Predictor, reads: list[Read], pixels: np.ndarray, threshold: str | None = None,
                   cam_dir=None) -> list[dict]:
    """Rows for preprocessed images (the model's input), one per read."""
    stats = pred.ood
    site = None
    if (stats or pred.site) and hasattr(pred.model, "head"):  # one forward pass for all
        raw, feats = ood.proba_and_features(pred.fast, pixels, pred.size)
        proba = temper(raw, float(pred.meta.get("temperature", 1.0)))
        scores = ood.score(stats, feats) if stats else np.full(len(reads), np.nan)
        if pred.site:
            site = np.stack(site_check.film_scores(pred.site, feats, proba.argmax(1)), 1)
    else:
        proba = checkpoints.calibrated(pred.fast, pred.meta, pixels)
        scores = np.full(len(reads), np.nan)
    decisions = decide(proba, threshold, pred.points)
    cams = _cams(pred.model, pixels, pred.size, reads, cam_dir) if cam_dir else [""] * len(reads)
    rows = []
    for i, (r, p, s, d, cam) in enumerate(zip(reads, proba, scores, decisions, cams)):
        status = OOD if stats and s > stats["threshold"] else OK
        modality = [n for n in r.notes if n.startswith("DICOM modality")]
        if not stats:
            r.notes.append("no out-of-distribution statistics in this model (cxr export adds them)")
        row = _row(r.file, "warning: " + modality[0] if modality else status, r.notes, p, d, s, cam)
        if site is not None and not modality:  # what the site check reads (not a column of the results)
            row[SITE_KEY] = (int(p.argmax()), site[i])
        rows.append(row)
    return rows


def _row(file: str, status: str, notes: list[str] = (), proba=None, decision: str = "", score: float = math.nan,
         cam: str = "") -> dict:
    row = {"file": file, "status": status, "decision": decision, "ood_score": float(score),
           "notes": "; ".join(notes), "cam": cam}
    row.update({c: (float(proba[i]) if proba is not None else math.nan) for i, c in enumerate(CLASSES)})
    return row


def _cams(model, pixels: np.ndarray, size: int, reads: list[Read], cam_dir) -> list[str]:
    """A Grad-CAM overlay per image, with the lung fields' outline (the lung segmenter's masks of the
    model's own input, `segmenter.lung_fields`) drawn in cyan so a reader sees whether the heat lies
    in the lungs; in `cam_dir` mirroring the input tree (files of the same name in different folders,
    as a PACS export has, do not overwrite each other)."""
    import cv2

    cam_dir = Path(cam_dir)
    maps = cam_maps(model, pixels, size)
    lungs, _ = segmenter.lung_fields(pixels)
    names = []
    for r, g, m, lung in zip(reads, pixels, maps, lungs):
        name = Path(r.file).with_name(Path(r.file).stem + "_gradcam.png").as_posix()
        target = cam_dir / name
        ensure(target.parent)
        picture = np.ascontiguousarray(overlay(g, m))
        contours, _ = cv2.findContours(lung.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (0, 230, 255), 1)
        cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        names.append(name)
    return names


def exit_code(rows: pd.DataFrame) -> int:
    """0 when every file was read, 1 when some were not."""
    return 1 if rows.status.str.startswith("error").any() else 0


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
