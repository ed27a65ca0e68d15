"""What every chapter does first, and the few records the chapters show as they stand (the
benchmarks' and the model card's), so that no notebook reads a file of `reports/` itself."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.assess import explain, predict, results, site_folder
from cxr.core import book, labels, records, runtime
from cxr.core.config import CLASSES, Config, get_config
from cxr.core.files import working_dir
from cxr.data import preprocess
from cxr.data.reading import OK, Read
from cxr.model import checkpoints, ood
from cxr.report import browser_demo, comparisons, plots


def start(profile: str | None = None) -> Config:
    """A chapter's first cell: one look for the figures, the CPU tuned for model passes, and the
    configuration resolved, once, here (`$CXR_PROFILE`); every call below takes it. A profile other
    than the report's (full) says so on the page: its numbers are not the report's. Every table the
    chapter shows is shown with the reader's labels (`labels.readable`): the page reads
    "Lung Opacity", never the code's name for it."""
    plots.style()
    show_tables_labelled()
    runtime.tune_malloc()  # keep freed memory in the process: CNN passes on the CPU run about 3x faster
    config = get_config(profile)
    if config.profile != "full":
        print(config.describe())
    return config


def show_tables_labelled() -> None:
    """Show every DataFrame in this kernel with the reader's labels (as HTML and as text). Outside
    IPython nothing changes."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    pd.set_option("display.max_colwidth", None)  # a cell shows its whole text, wrapped, never cut with "..."
    formatters["text/html"].for_type(pd.DataFrame, lambda df: labels.readable(df)._repr_html_())
    formatters["text/plain"].for_type(pd.DataFrame, lambda df, p, cycle: p.text(repr(labels.readable(df))))


#: the training settings chapter 03 shows, as a reader names them
TRAINING_SETTINGS = {"input_size": "input size (px)", "train_from_block": "first EfficientNet-Lite0 block trained",
                     "views": "views of each image per epoch", "epochs": "epochs (at most)",
                     "patience": "early-stopping patience (epochs)", "batch_size": "batch size", "lr": "learning rate",
                     "weight_decay": "weight decay", "harmonise": "harmonisation (chapter 05)",
                     "consistency": "consistency loss weight", "clahe": "CLAHE (chapter 02)"}


def training_settings(config: Config) -> pd.DataFrame:
    """The recipe's settings as a table with the reader's names ("yes"/"no" for a switch)."""
    def shown(v):
        return ("yes" if v else "no") if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)

    return pd.DataFrame({"setting": list(TRAINING_SETTINGS.values()),
                         "value": [shown(getattr(config, k)) for k in TRAINING_SETTINGS]}).set_index("setting")


def benchmark() -> dict | None:
    """`reports/benchmark.json` (`benchmarks/train_speed.py`), or None when it was never made."""
    return records.read("benchmark.json")


def benchmark_table(bench: dict | None) -> tuple[pd.DataFrame | None, str]:
    """Chapter 03: the training benchmark as a table, and when and how it was made; (None, how to
    make it) when it is missing."""
    if bench is None:
        return None, "not yet: reports/benchmark.json is missing; run `python benchmarks/train_speed.py`"
    columns = {"train_wall_seconds": "training (s)", "train_images_per_second": "training images/s",
               "time_to_90_val_accuracy_s": "time to 90% val accuracy (s)",
               "inference_images_per_second": "model alone, batch 64 (images/s)", "test_accuracy": "test accuracy",
               "peak_rss_mb": "peak memory (MB)"}
    table = (pd.DataFrame(bench["approaches"]).T.reindex(columns=list(columns)).rename(columns=columns)
             .astype(float).round(3))
    return table, f"{bench['created'][:10]} with `{bench['command']}`"


def predict_speed_table() -> tuple[pd.DataFrame | None, str]:
    """Chapter 08: `reports/predict_speed.json` (`benchmarks/predict_speed.py`) as a table, and when
    and how it was made; (None, how to make it) when it is missing."""
    speed = records.read("predict_speed.json")
    if speed is None:
        return None, "not yet: reports/predict_speed.json is missing; run python benchmarks/predict_speed.py"
    t = speed["targets"]
    table = pd.DataFrame({
        "one image, end to end": f"{speed['single_image_ms']['median']:.0f} ms (target {t['single_image_ms']} ms)",
        "one image with Grad-CAM": f"{speed['single_image_with_gradcam_ms']['median']:.0f} ms (target "
                                   f"{t['single_image_with_gradcam_ms']} ms)",
        "a folder of test images": f"{speed['folder']['images_per_second']:.0f} images/s ({speed['folder']['images']} images)",
    }, index=["median"]).T
    return table, f"{speed['created'][:10]} with {speed['command']} ({speed['threads']} threads)"


def backends_table() -> tuple[pd.DataFrame | None, str]:
    """Chapter 08: `reports/backends.json` (`benchmarks/backends.py`) as a table (one row per backend:
    the model alone, `cxr predict` end to end on the largest archive, peak memory, agreement with
    PyTorch on the test split), and a sentence on what `auto` chose, when and how it was measured."""
    rec = records.read("backends.json")
    if rec is None:
        return None, "not yet: reports/backends.json is missing; run python benchmarks/backends.py"
    n = rec["default_end_to_end_files"]
    ends = {r["backend"]: r for r in rec["end_to_end"] if r["files"] == n}
    agree = rec["agreement"]["backends"]
    names = {"torch eager": "PyTorch, as trained", "torch": "PyTorch (torch)", "onnxruntime": "ONNX Runtime",
             "openvino": "OpenVINO"}
    rows = {}
    for s in rec["model_alone"]:
        if "images_per_second" not in s:
            continue
        b, a = s["backend"], agree.get(s["backend"], {})
        rows[names.get(b, b)] = {
            "model alone (images/s)": round(s["images_per_second"]),
            "against PyTorch as trained": f"{s['over_torch_eager']:.2f}x",
            f"cxr predict, {n:,} files (images/s)": round(ends[b]["images_per_second"]) if b in ends else "",
            "peak memory (MB)": round(ends[b]["peak_memory_mb"]) if b in ends else "",
            "test calls as PyTorch's": (f"{a['call_agreement']:.1%} ({a['calls_differing']} differ)" if a.get("installed")
                                        else "the reference" if b.startswith("torch") else "not installed")}
    flags = ", ".join(f for f in rec["cpu_flags"] if f.startswith(("avx", "amx")) or "vnni" in f or "bf16" in f)
    # a glued sentence is plain text: no Markdown in it
    said = (f"The default (auto) chose {names.get(rec['default'], rec['default'])} here ({rec['default_reason']}). "
            f"Measured {rec['created'][:10]} with {rec['command']} on {rec['cores']} cores of an {rec['machine']} "
            f"({flags}); the model alone: batches of 32 preprocessed films; end to end: cxr predict on an archive "
            f"tree, the site check on.")
    return pd.DataFrame(rows).T, said


def segmenter_words(seg: dict | None, audit: dict) -> dict[str, str]:
    """Chapter 05's sentences on the lung segmenter: its held-out Dice (`seg`, its record while it
    describes the shipped weights), its speed and size (`reports/segmenter_speed.json`), and where
    the audit's lung fields came from (`audit`, the audit record)."""
    if seg is None:
        out = {k: "not recorded for the shipped weights (run cxr segmenter)"
               for k in ("seg_dice", "seg_held_out", "seg_failed", "seg_target")}
    else:
        h, split = seg["held_out"], seg["split"]
        out = {"seg_dice": book.interval(h["dice_mean"], h["dice_patient_mean_ci"], scale=1, digits=3),
               "seg_held_out": f"{split['held_out_images']} films of {split['held_out_patients']} patients",
               "seg_failed": f"{h['failed']} of {split['held_out_images']}",
               "seg_target": "met" if h["dice_mean"] >= seg["target_dice"] else "missed"}
    speed = records.read("segmenter_speed.json")
    if speed is not None:
        out |= {"seg_ms": f"{speed['segment_ms_per_image']['median']:.1f} ms",
                "seg_mb": f"{speed['weights_bytes'] / 1e6:.1f} MB",
                "seg_speed_target": "within" if speed["within_target"] else "over"}
    else:
        out |= {k: "not measured (python benchmarks/segmenter_speed.py)" for k in ("seg_ms", "seg_mb", "seg_speed_target")}
    return out | {"region_sources": " and ".join(f"the {v} for {n:,}" for v, n in audit["lung_sources"].items() if n),
                  "lung_share": book.pct(audit["lung_area_fraction"])}


def cam_gallery(model, pixels, size: int, table: pd.DataFrame, cases: list[tuple[int, str]], resnet: dict):
    """Chapter 05's maps: for each case (a table row and "correct" or "wrong"), the film, the final
    model's map by each method, and the ResNet50's stored map of the same film (`resnet`: the
    record that holds them). Returns (images, titles) for `plots.image_grid`."""
    idx = np.array([i for i, _ in cases])
    maps = {m: explain.cam_maps(model, pixels[idx], size, method=m) for m in explain.METHODS}
    called = checkpoints.predict(model, pixels[idx], size, progress=False).argmax(1)
    imgs, titles = [], []
    for k, (i, kind) in enumerate(cases):
        g = np.asarray(pixels[i])
        imgs.append(g)
        titles.append(f"{labels.label(table.label[i])} ({kind})\ncalled {labels.label(CLASSES[called[k]])}")
        for m in explain.METHODS:
            imgs.append(explain.overlay(g, maps[m][k]))
            titles.append(f"final: {m}")
        theirs = comparisons.map_of(resnet, table.file[i], g.shape[-1])  # at the image's size
        imgs.append(explain.overlay(g, theirs) if theirs is not None else g)
        titles.append("ResNet50: GradCAM" if theirs is not None else "ResNet50: no map in the record")
    return imgs, titles


class Neighbours:
    """Films the model has seen, to show beside a prediction: their pooled features, pixels and labels."""

    def __init__(self, pred: predict.Predictor, pixels, rows: np.ndarray, labels):
        self.pred, self.pixels, self.rows, self.labels = pred, pixels, rows, labels
        self.features = ood.pooled_features(pred.fast, np.asarray(pixels[rows]), pred.size)

    def of(self, g: np.ndarray, k: int = 3) -> list[tuple[np.ndarray, str]]:
        near = predict.nearest(self.features, ood.pooled_features(self.pred.fast, g[None], self.pred.size), k)[0]
        return [(np.asarray(self.pixels[self.rows[j]]), self.labels[self.rows[j]]) for j in near]


def show_prediction(pred: predict.Predictor, gray: np.ndarray, title: str, neighbours: Neighbours) -> None:
    """Chapter 08's panel for one film, as `cxr predict` sees it: the probabilities and call, the
    Grad-CAM map, and the most similar training films; shown with alt text that says what it shows."""
    row = predict.predict_images(pred, [Read(title, gray, OK, [])])[0]
    g = preprocess.preprocess(gray, pred.config)
    cam = explain.cam_maps(pred.model, g[None], pred.size)[0]
    near = neighbours.of(g)
    book.image(plots.prediction_panel(g, row, cam, near, title), alt=plots.panel_alt(row, title, near))


def gallery_picks(tested: pd.DataFrame, table: pd.DataFrame) -> list[tuple[int, str]]:
    """Chapter 08's test films: per class, the first the model gets right and the first it misses
    (rows of `table`, with a title), from its test predictions (`tested`)."""
    row_of = pd.Series(table.index, index=table.file)
    picks = []
    for c in CLASSES:
        mine = tested.label == c
        picks += [(int(row_of[f]), f"true {labels.label(c)}: correct") for f in tested.file[mine & (tested.pred == c)][:1]]
        picks += [(int(row_of[f]), f"true {labels.label(c)}: missed") for f in tested.file[mine & (tested.pred != c)][:1]]
    return picks


def site_demo(command, site: Path, films: int) -> None:
    """Chapter 08's demonstration of the site check: `films` of an outside hospital's normal films
    in a folder of their own, run through `cxr predict` (`command`: the command line's `main`, run
    from the folder's parent so the page shows the paths a user types), and what it wrote: the first
    rows and the site verdict in the run record."""
    from IPython.display import display

    demo = site_folder.sample_folder(site, films, Path(tempfile.mkdtemp()) / "one_site")
    print(f"cxr predict one_site --out results.csv, on {len(list(demo.iterdir()))} of the outside hospital's normal films:")
    with working_dir(demo.parent):
        command(["predict", "one_site", "--out", "results.csv", "--workers", "0"])
    out = demo.parent / "results.csv"
    display(results.read(out)[["file", "status", "decision", "COVID", "Normal"]].head(6).round(3))
    print("site verdict in results.csv.run.json:", results.read_run(out)["site"]["verdict"])


def browser_panel(pred: predict.Predictor, pixels: np.ndarray, table: pd.DataFrame):
    """Chapter 08's browser panel (`browser_demo.html`), with the still of the first test film for print."""
    from IPython.display import HTML

    first = int(np.flatnonzero((table.split == "test").to_numpy())[0])
    example = browser_demo.still(pred, np.asarray(pixels[first]), Path(table.file[first]).name)
    book.glue("try_point", browser_demo.OPERATING_POINT)
    return HTML(browser_demo.html(example))
