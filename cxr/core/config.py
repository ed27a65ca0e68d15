"""The one configuration object, and the two profiles.

`full` is what the published book uses: every image. `smoke` is a small, fixed, stratified
sample of the same split that runs through the same code in a few minutes, so CI can run
every notebook. The profile comes from the environment variable ``CXR_PROFILE`` (default
``full``); every notebook prints it at the top.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("full", "smoke")

# The four classes, in the one order every model output, table and record uses.
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


def repo_root() -> Path:
    """The project folder: $CXR_HOME, else the checkout this package lives in, else the cwd."""
    if os.environ.get("CXR_HOME"):
        return Path(os.environ["CXR_HOME"]).resolve()
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def display_path(path: str | Path) -> str:
    """A path as records and pages show it: relative to the project folder when it lies inside it
    or beside it (`runs/...`, `../shared/...`), else its last part; never this machine's absolute path."""
    root = repo_root()
    for p in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for base, prefix in ((root, Path()), (root.parent, Path(".."))):
            for b in (Path(os.path.abspath(base)), Path(os.path.realpath(base))):
                try:
                    return str(prefix / p.relative_to(b))
                except ValueError:
                    continue
    return Path(path).name


@dataclass(frozen=True)
class Config:
    profile: str = "full"
    seed: int = 0
    # data and split
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)  # train, val, test
    near_duplicate_bits: int = 10  # candidate near duplicates: pHash Hamming distance at most this...
    near_duplicate_corr: float = 0.97  # ...and 32x32 thumbnails correlated at least this much
    smoke_per_class: dict[str, int] = field(default_factory=lambda: {"train": 40, "val": 15, "test": 15})
    # preprocessing
    image_size: int = 224  # size of the cached arrays
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    gamma: float | None = None
    # model and training
    input_size: int = 224
    batch_size: int = 64
    # with paired views each epoch passes every training image twice. 3 epochs from block 9 train in
    # about 19 min on two cores; the earlier 4 epochs from block 8 took about 25 for validation
    # metrics within the spread of its seeds; 2 epochs lost COVID-19 sensitivity and block 11
    # lost accuracy (reports/recipe_trials.json)
    epochs: int = 3
    patience: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    train_from_block: int = 9  # EfficientNet-Lite0 blocks before this stay frozen (their outputs are cached)
    views: int = 2  # views per training image in the frozen-layer cache (the image, an augmented copy)
    harmonise: bool = True  # simulated chains for every class, and real audit twins of training images
    # weight of the consistency loss between each training view and the same view through another
    # hospital's processing (augment.hospital_chain); 0 turns the paired views off
    consistency: float = 1.0
    # Training length is `epochs`; the wall budget is only a safety stop (the run reports it when
    # it fires), so the same command gives the same model on a slow machine and a fast one.
    wall_budget_s: float = 4 * 3600
    # the ResNet50 baseline's recipe (the original project's): full fine-tuning, online augmentation;
    # 20 steps of 32 images is about a sixteenth of an epoch, under 2 min on two CPU cores (with its
    # checks and test predictions, about 2.5): enough to show how far the recipe is from usable on a
    # CPU, which is all the report uses it for (60 steps, 7 min in all, reached 56% test accuracy)
    resnet_steps: int = 20
    resnet_batch_size: int = 32
    resnet_lr: float = 3e-4
    resnet_val_subset: int = 300  # validation images checked during ResNet50 training (a full pass is slow)
    resnet_test_subset: int = 600  # test images of its comparison row (stratified; the whole split takes 90 s)
    # the classifier's input (issue 25): "none" (the whole film), "crop" (the box around both lungs,
    # drawn by the lung segmenter, widened by `lung_margin` of its size on each side), "mask" (the
    # whole film with everything outside the lungs blanked) or "crop+mask"
    lungs: str = "none"
    lung_margin: float = 0.1
    # where models run: "auto" (CUDA when PyTorch sees a GPU, else the CPU), "cpu" or "cuda"; resolved
    # at the entry point (--device, else $CXR_DEVICE) and never part of a key
    device: str = "auto"
    # what runs the model's arithmetic in bulk prediction: "auto", "torch", "onnxruntime" or
    # "openvino" (`cxr.model.backends`); resolved at the entry point (--backend, else $CXR_BACKEND)
    # and never part of a key: every backend is held to PyTorch's probabilities (`backends.TOLERANCE`)
    backend: str = "auto"
    # where things go
    cache_dir: Path = field(default_factory=lambda: Path(os.environ.get("CXR_CACHE_DIR", repo_root() / ".cache")))
    runs_dir: Path = field(default_factory=lambda: Path(os.environ.get("CXR_RUNS_DIR", repo_root() / "runs")))

    @property
    def smoke(self) -> bool:
        return self.profile == "smoke"

    @property
    def reports_dir(self) -> Path:
        """Where this profile's records go: `reports/` (committed) for the full profile; for the
        smoke profile a folder in the cache, so a test run never overwrites the report's records."""
        return repo_root() / "reports" if not self.smoke else Path(self.cache_dir) / "reports-smoke"

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    def values(self, *names: str) -> dict:
        """The named fields and their values, as keys read them: a field added after runs and caches
        were made (`LATER_FIELDS`) is left out while it holds its default, so what was made before it
        keeps its key."""
        d = self.to_dict()
        return {k: d[k] for k in names if not (k in LATER_FIELDS and d[k] == LATER_FIELDS[k])}

    def key(self, *names: str) -> str:
        """A short hash of the named fields (all fields but paths when none are named)."""
        names = names or tuple(k for k in self.to_dict() if k not in NOT_KEYED)
        blob = json.dumps(self.values(*names), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe(self) -> str:
        what = ("smoke: a small fixed stratified sample, for CI; numbers here are NOT the report's results"
                if self.smoke else "full: every image of the dataset")
        return f"profile = {self.profile} ({what})"


#: the environment variable an entry point reads the device from when --device does not say
DEVICE_ENV = "CXR_DEVICE"
#: fields that say where things go or run, never what is made: no key reads them
NOT_KEYED = ("cache_dir", "runs_dir", "device", "backend")
#: the environment variable an entry point reads the backend from when --backend does not say
BACKEND_ENV = "CXR_BACKEND"
#: what may run a model in bulk (`cxr.model.backends`)
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: fields added after runs and caches existed, with the default that leaves their keys as they were
LATER_FIELDS = {"lungs": "none", "lung_margin": 0.1}
LUNG_INPUTS = ("none", "crop", "mask", "crop+mask")

SMOKE_OVERRIDES = dict(epochs=2, patience=2, views=2, input_size=128, batch_size=32, wall_budget_s=900,
                       resnet_steps=4, resnet_batch_size=16)


# The explicit version of every code path whose output is trained or cached. A key is made of
# the inputs and this number, never of the source text: editing a comment, a docstring or where a
# helper lives renames nothing. Bump a number by hand when that path's output changes;
# tests/test_keys.py fails when the smoke training path changes its weights without a bump.
VERSIONS = {
    "scan": 1,         # scanning.scan: the table of readable images and their thumbnails
    "pixels": 1,       # preprocess.load_pixels: reading, resizing and enhancing
    "features": 1,     # features.embed: ImageNet EfficientNet-Lite0 pooled features
    "activations": 1,  # train_finetune.frozen_activations: the frozen layers' output per augmented view
    "pooled": 1,       # adapt.pooled_split: a trained model's pooled features
    "predictions": 1,  # registry.Model.predictions: a model's probabilities on a split
    "linear": 1,       # train: the frozen-features + logistic-regression recipe
    "finetune": 1,     # train: the final model's recipe
    "resnet50": 1,     # train: the original project's recipe
    "segmenter": 1,    # segmenter_train: the lung segmenter's recipe
    "records": 1,      # report, comparisons: how a record in reports/ is computed from a model and the data
    "onnx": 1,         # backends.onnx_file: a model exported to ONNX (onnx_file.export)
    "audit": 3,        # audit.shortcut_audit: 3, lungs-hidden sensitivity per class and COVID-19 vs Normal AUC (2: segmenter masks)
    "whole_and_lungs": 2,  # registry.whole_and_lungs_file: the whole-film and lung-crop models in one file (2: members keep their config and run)
    "outside": 2,      # outside_experiment.cached_outputs: 2, the transplant keeps the donor's lung density against its surroundings
}


def source_hash(names: tuple[str, ...] | None = None) -> str:
    """Hash of the package's source files (all of them, or the named ones). Provenance only: it is
    written beside a run (config.json), never into a key."""
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parents[1].rglob("*.py")):
        if names is None or p.name in names:
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


#: the libraries whose code decides what is cached and trained (decoding, resizing, augmenting, the
#: arithmetic), each as the distributions that may provide it: every key reads their installed
#: versions, so a cache written under one OpenCV is never read under another (issue 38)
KEYED_LIBRARIES = {
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "pillow": ("pillow",),
    "torch": ("torch",),
    "albumentations": ("albumentations",),
}


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """The installed version of each of `KEYED_LIBRARIES` ("absent" where none is installed), read
    from the installed metadata without importing the libraries."""
    out = {}
    for name, dists in KEYED_LIBRARIES.items():
        for dist in dists:
            try:
                out[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            out[name] = "absent"
    return out


def cache_key(parts, path: str) -> str:
    """The one cache-key recipe: a hash of everything that decides a cached file's content, the
    inputs (`parts`, anything JSON can write), the explicit version of the code path that computes
    it (`path`, a name in VERSIONS) and the versions of the libraries that compute it
    (`library_versions`)."""
    if path not in VERSIONS:
        raise KeyError(f"no version for code path {path!r}: add it to cxr.core.config.VERSIONS")
    blob = json.dumps([parts, path, VERSIONS[path], library_versions()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_config(profile: str | None = None, **overrides) -> Config:
    """The configuration for `profile` (default: $CXR_PROFILE, else "full"), resolved once at an entry
    point (the command line, a notebook's first cell, a benchmark) and passed down from there. The
    device is `overrides["device"]`, else $CXR_DEVICE, else "auto"; the backend likewise
    (`overrides["backend"]`, else $CXR_BACKEND, else "auto")."""
    profile = profile or os.environ.get("CXR_PROFILE", "full")
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}: set CXR_PROFILE to one of {', '.join(PROFILES)}.")
    base = {"device": os.environ.get(DEVICE_ENV) or "auto", "backend": os.environ.get(BACKEND_ENV) or "auto"}
    base |= dict(SMOKE_OVERRIDES) if profile == "smoke" else {}
    base.update(overrides)
    return Config(profile=profile, **base)
