"""A trained model: its checkpoint format, loading, calibrated batched prediction, and the model
that ships with the package.

A checkpoint is a plain dict of tensors and JSON-like metadata, so `torch.load(...,
weights_only=True)` reads it without unpickling code: ``format``, ``arch``, ``classes``,
``input_size``, ``config`` (the training config), ``model`` (the weights), ``temperature``
(fitted on validation) and, for an exported model, ``precision``, ``operating_points`` and
``card``. `train`, `evaluate`, `explain`, `report` and `predict` all load and run models through
this module; it imports none of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxr.core.config import CLASSES, Config, display_path
from cxr.core.files import save_state
from cxr.core.metrics import operating_point_rules, temper
from cxr.core.runtime import autocast, device, model_device, show_progress, to_numpy
from cxr.data.preprocess import PARAMS
from cxr.model import whole_and_lungs
from cxr.model.architectures import efficientnet_lite0, for_inference, resnet50
from cxr.model.features import to_tensor

CHECKPOINT_FORMAT = "cxr-checkpoint-1"

def save_checkpoint(path: Path, model: torch.nn.Module, arch: str, config: Config, **extra) -> None:
    """Weights and plain metadata only, so `torch.load(..., weights_only=True)` can read it."""
    state = {"format": CHECKPOINT_FORMAT, "arch": arch, "classes": list(CLASSES),
             "input_size": config.input_size, "config": json.loads(json.dumps(config.to_dict())),
             "model": model.state_dict(), **extra}
    save_state(path, state)


def half(weights: dict) -> dict:
    """Weights as `cxr export` ships them: every floating-point tensor in half precision."""
    return {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}


def build_model(arch: str, pretrained: bool = False, state: dict | None = None) -> torch.nn.Module:
    """The network of an architecture, empty or (`pretrained`) with ImageNet weights; `state`: the
    checkpoint's metadata, for an architecture built from it (`whole_and_lungs`)."""
    if arch == "efficientnet_lite0":
        return efficientnet_lite0(pretrained=pretrained)
    if arch == "resnet50":
        return resnet50(pretrained=pretrained)[0]
    if arch == whole_and_lungs.ARCH:
        state = state or {}
        return whole_and_lungs.WholeAndLungs(float(state.get("margin", 0.1)),
                                             tuple(state.get("seg_widths", whole_and_lungs.segmenter.WIDTHS)))
    raise ValueError(f"unknown architecture {arch!r}")


def read_checkpoint(path: str | Path) -> dict:
    """A cxr checkpoint's contents, loaded with `weights_only=True` (never unpickles code): the one
    check that a file is a readable cxr checkpoint of this project's classes, with a clear message."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a cxr checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
                         "use checkpoint.pt from a run folder made by `cxr train`.")
    if list(state.get("classes", [])) != list(CLASSES):
        raise ValueError(f"{path} predicts classes {state.get('classes')}, not {list(CLASSES)}.")
    return state


def load_model(path: str | Path, on: str = "auto") -> tuple[torch.nn.Module, dict]:
    """A model from a cxr checkpoint, in eval mode, on device `on` (`runtime.device`: "auto", "cpu"
    or "cuda"; a command passes its configuration's `device`), and the checkpoint's metadata.

    Loads with `weights_only=True` (never unpickles code) and says clearly what is wrong with a
    file that is not a cxr checkpoint.
    """
    path = Path(path)
    state = read_checkpoint(path)
    model = build_model(state["arch"], pretrained=False, state=state)
    weights = state["model"]
    if state.get("precision") == "float16":  # an exported model: stored in half precision, run in float32
        weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit architecture {state['arch']!r}: {e}") from e
    meta = {k: v for k, v in state.items() if k != "model"}
    return model.eval().to(device(on), memory_format=torch.channels_last), meta


@torch.inference_mode()
def forward(model: torch.nn.Module, pixels: np.ndarray, size: int, outputs=("proba",), batch: int = 64,
            progress: bool = False, desc: str = "predict") -> dict[str, np.ndarray]:
    """The one batched forward pass of a trained model over preprocessed uint8 images (N, S, S):
    the outputs asked for, "proba" (class probabilities (N, 4), before temperature scaling) and
    "features" (the pooled last feature map (N, 1280) of an EfficientNet-Lite0), from one pass.
    `model` may be a runtime from `cxr.model.backends.runner`, whose `run_batch` gives a batch's
    logits and pooled features."""
    runtime = getattr(model, "run_batch", None)
    if runtime is None:
        model = for_inference(model, len(pixels), batch)
        dev = model_device(model)
    out = {k: [] for k in outputs}
    for i in tqdm(range(0, len(pixels), batch), desc=desc, disable=not show_progress(progress)):
        if runtime is not None:
            logits, pooled = (torch.from_numpy(a) for a in runtime(pixels[i:i + batch]))
        else:
            x = to_tensor(pixels[i:i + batch], size, dev)
            with autocast(dev):
                if "features" in outputs:
                    fmap = model.features(x)
                    pooled = fmap.float().mean((2, 3))
                    logits = model.head(fmap) if "proba" in outputs else None
                else:
                    logits = model(x)
        if "features" in outputs:
            out["features"].append(to_numpy(pooled))
        if "proba" in outputs:
            out["proba"].append(to_numpy(logits.float().softmax(1)))
    empty = {"proba": (0, len(CLASSES)), "features": (0, 1280)}
    return {k: np.concatenate(v) if v else np.zeros(empty[k], np.float32) for k, v in out.items()}


def predict(model: torch.nn.Module, pixels: np.ndarray, size: int, batch: int = 64, progress: bool = True,
            desc: str = "predict") -> np.ndarray:
    """Class probabilities (N, 4) for preprocessed uint8 images (N, S, S)."""
    return forward(model, pixels, size, ("proba",), batch, progress, desc)["proba"]


def calibrated(model: torch.nn.Module, meta: dict, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
    """Temperature-scaled class probabilities (the checkpoint's temperature, 1 if it has none)."""
    return temper(predict(model, pixels, meta["input_size"], progress=progress), float(meta.get("temperature", 1.0)))


def pixel_config(meta: dict, config: Config) -> Config:
    """The preprocessing a checkpoint's model was trained with (image size, CLAHE, gamma), in the
    profile, cache and runs folders of `config`: the one way to rebuild it from a checkpoint."""
    trained_with = meta.get("config", {})
    return config.replace(**{k: trained_with[k] for k in PARAMS if k in trained_with})


# --------------------------------------------------------------------------- the shipped model
def export(checkpoint: str | Path, out: str | Path, evaluation: dict | None = None, external: dict | None = None,
           audit: dict | None = None, ood: dict | None = None, training: dict | None = None,
           shortcut_figures: dict | None = None) -> Path:
    """Write `checkpoint` as a shippable model: weights in half precision, the temperature, the operating points chosen
    on validation (from `evaluation`, a `cxr evaluate --split test` record of the same model), the
    out-of-distribution statistics (`cxr.model.ood.fit`), the training history and summary (`training`:
    {"history": rows, "summary": done.json}) and a model card with the measured results (with the
    shortcut figures, `shortcuts.figures`, when given)."""
    state = dict(read_checkpoint(checkpoint))
    state["model"] = half(state["model"])
    state["precision"] = "float16"
    # a shipped file measured again keeps the run it came from and the history it carries; the whole
    # film and its lungs came from two runs, which its members name
    members = state.get("members") or {}
    state["source_run"] = state.get("source_run") or (
        whole_and_lungs.source_runs(members) if members else Path(checkpoint).parent.name)
    if training is not None:
        state["training"] = json.loads(json.dumps(training))
    # the shipped file names no folder of the machine that exported it
    state["config"] = {k: display_path(v) if k in ("cache_dir", "runs_dir") else v for k, v in state["config"].items()}
    if evaluation is not None:

        state["operating_points"] = operating_point_rules(evaluation.get("operating_points", {}))
    if ood is not None:
        state["ood"] = ood
    state["card"] = json.loads(json.dumps(model_card(state, evaluation, external, audit, shortcut_figures)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state(out, state)
    return out


def kind(meta: dict) -> str:
    """What a checkpoint's model is, in a phrase for prose ("a partly fine-tuned EfficientNet-Lite0")."""
    if meta.get("arch") == whole_and_lungs.ARCH:
        return ("two partly fine-tuned EfficientNet-Lite0 networks in one file, one reading the whole film and one "
                "the box around its lungs, their temperature-scaled logits averaged")
    config = meta.get("config") or {}
    net = {"efficientnet_lite0": "EfficientNet-Lite0", "resnet50": "ResNet50"}.get(meta.get("arch"), str(meta.get("arch")))
    how = {"linear": "a frozen {} with a linear head", "resnet50": "a fully fine-tuned {}"}.get(
        config.get("approach"), "a partly fine-tuned {}").format(net)
    lungs = config.get("lungs", "none")
    return how + ("" if lungs == "none" else " reading only the lungs" if "mask" in lungs else " reading the box around the lungs")


def model_card(state: dict, evaluation: dict | None, external: dict | None, audit: dict | None,
               shortcut_figures: dict | None = None) -> dict:
    """What a user of the shipped model must know, with the measured numbers."""
    def headline(rec):
        if rec is None:
            return None
        return {"images": rec["n"], "accuracy": rec["accuracy"], "accuracy_ci": rec["accuracy_ci"],
                "macro_auc": rec["macro_auc"], "macro_auc_ci": rec["macro_auc_ci"],
                "sensitivity": {c: m["sensitivity"] for c, m in rec["per_class"].items()},
                "sensitivity_ci": {c: m["sensitivity_ci"] for c, m in rec["per_class"].items()},
                "specificity": {c: m["specificity"] for c, m in rec["per_class"].items()}}

    lungs = (state.get("config") or {}).get("lungs", "none")
    seen = {"none": "the whole film", "crop": "the box around both lungs (the lung segmenter's mask, widened 10%)",
            "mask": "the whole film, blanked outside the lungs", "crop+mask": "the lungs alone, cropped and blanked"}[lungs]
    model = f"{state['arch']}, {state['input_size']} px grey input ({seen}), four classes: {', '.join(CLASSES)}"
    if state["arch"] == whole_and_lungs.ARCH:
        model = (f"two EfficientNet-Lite0 and the lung segmenter in one file: the whole film and the box around both "
                 f"lungs (the segmenter's mask, widened {100 * float(state.get('margin', 0.1)):.0f}%, cropped inside "
                 f"the model), {state['input_size']} px grey input, the mean of the two models' temperature-scaled "
                 f"logits; four classes: {', '.join(CLASSES)}")
    return {
        "model": model,
        "training_data": "COVID-19 Radiography Database (Chowdhury et al. 2020; Rahman et al. 2021), development copy, "
                         "duplicate-aware 70/15/15 split (data/splits.csv), audit twins of training originals added",
        "confounds": "each class came from its own hospitals and its own processing chain; Viral Pneumonia (and part "
                     "of Normal) are children aged 1-5, the other classes adults",
        "test_split": headline(evaluation),
        "external_radiographs": headline(external),
        "twin_agreement": audit,
        # what the model still finds with the lungs hidden: COVID-19 and Lung Opacity found there are found by
        # something other than the lungs (issue 38)
        "shortcut_figures": shortcut_figures,
        "temperature": state.get("temperature"),
        "intended_use": "research and teaching on this database; reproducing the report",
        "known_limits": "fails on radiographs from outside the database (most are called COVID-19); not validated "
                        "on any hospital's own films; no paediatric/adult distinction; frontal views only",
        "not_for_clinical_use": "Not a medical device. Do not use it to make or support clinical decisions.",
    }
