"""Augmentation that suits radiographs (Albumentations).

No horizontal flip: it puts the heart on the patient's right, mimicking dextrocardia, which almost
no real film shows. Geometry changes stay small (a few degrees, a few percent), as patient positioning varies that much.

`harmonise=True` adds the processing shortcut's antidote: every class, not only Lung Opacity,
is sometimes passed through a simulated other processing chain (intensity range compressed with
the black level lifted, resampled through another size, JPEG re-compressed), and sometimes
contrast-stretched, blurred or given noise, so that processing traces stop predicting the class.
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


class ProcessingChain(A.ImageOnlyTransform):
    """Simulate another copy's processing: y = a*x + b, resample through `size` with a little blur,
    JPEG at `quality`, and back.

    The defaults cover the Lung Opacity copy measured in chapter 05 (about y = 0.63 x + 35, 299 px,
    JPEG quality about 75).
    """
    def __init__(self, contrast=(0.55, 1.0), black=(0.0, 45.0), size=(240, 320), quality=(55, 92), p: float = 0.5):
        super().__init__(p=p)
        self.contrast, self.black, self.size, self.quality = contrast, black, size, quality

    def get_params_dependent_on_data(self, params, data):
        return {"a": self.py_random.uniform(*self.contrast), "b": self.py_random.uniform(*self.black),
                "s": self.py_random.randint(*self.size), "q": self.py_random.randint(*self.quality),
                "sigma": self.py_random.uniform(0.0, 0.8)}

    def apply(self, img, a=1.0, b=0.0, s=299, q=75, sigma=0.0, **params):
        h, w = img.shape[:2]
        x = np.clip(img.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
        x = cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA if s < w else cv2.INTER_CUBIC)
        if sigma > 0.05:  # another copy's resampling leaves another blur
            x = cv2.GaussianBlur(x, (0, 0), sigma)
        ok, enc = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        x = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED) if ok else x
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA if s > w else cv2.INTER_CUBIC).reshape(img.shape)

    def get_transform_init_args_names(self):
        return ("contrast", "black", "size", "quality")


def train_augment(harmonise: bool = True, seed: int = 0) -> A.Compose:
    """The training augmentation; deterministic for a given seed and order of calls."""
    steps = [
        A.Affine(rotate=(-8, 8), scale=(0.92, 1.08), translate_percent=(-0.05, 0.05),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.RandomGamma(gamma_limit=(85, 115), p=0.3),
    ]
    if harmonise:
        steps += [
            ProcessingChain(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=(0.0, 0.35), p=0.25),  # stretch
            A.GaussianBlur(sigma_limit=(0.3, 1.0), blur_limit=0, p=0.15),
            A.GaussNoise(std_range=(0.005, 0.02), p=0.15),
        ]
    return A.Compose(steps, seed=seed)


def augment_batch(images: np.ndarray, transform: A.Compose) -> np.ndarray:
    """Apply `transform` to each (H, W) uint8 image of a batch."""
    return np.stack([transform(image=np.asarray(im))["image"] for im in images])


class Collimation(A.ImageOnlyTransform):
    """Dark or bright bands along one to four edges, as a collimator or a scanner's frame leaves."""
    def __init__(self, width=(0.01, 0.08), p: float = 0.5):
        super().__init__(p=p)
        self.width = width

    def get_params_dependent_on_data(self, params, data):
        return {"edges": [self.py_random.random() < 0.5 for _ in range(4)],
                "w": [self.py_random.uniform(*self.width) for _ in range(4)],
                "value": self.py_random.choice([0, self.py_random.randint(180, 255)])}

    def apply(self, img, edges=(), w=(), value=0, **params):
        out = img.copy()
        h, wd = img.shape[:2]
        for side, (on, frac) in enumerate(zip(edges, w)):
            if not on:
                continue
            k = max(1, int(round(frac * (h if side < 2 else wd))))
            sl = [(slice(0, k), slice(None)), (slice(h - k, h), slice(None)),
                  (slice(None), slice(0, k)), (slice(None), slice(wd - k, wd))][side]
            out[sl] = value
        return out

    def get_transform_init_args_names(self):
        return ("width",)


class Marker(A.ImageOnlyTransform):
    """A burned-in marker ("L", "R", "AP", "PORTABLE", a date) in a random corner."""
    TEXTS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", "12/03")

    def get_params_dependent_on_data(self, params, data):
        h, w = params["shape"][:2]
        return {"text": self.py_random.choice(self.TEXTS), "scale": self.py_random.uniform(0.3, 0.9),
                "x": self.py_random.choice([0.03, 0.6]) * w, "y": self.py_random.choice([0.12, 0.95]) * h,
                "value": self.py_random.randint(200, 255), "thick": self.py_random.randint(1, 2)}

    def apply(self, img, text="L", scale=0.5, x=0.0, y=0.0, value=255, thick=1, **params):
        out = np.ascontiguousarray(img.copy())
        cv2.putText(out, text, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, int(value), thick, cv2.LINE_AA)
        return out


def hospital_chain(seed: int = 0) -> A.Compose:
    """Another hospital's processing, broadly: the paired 'chain view' of the consistency loss.

    Always one simulated processing chain (wider than the Lung Opacity copy's: intensity map,
    resampling through 160-360 px with blur, JPEG quality 40-95), and at random what else differs
    between sites: gamma, histogram equalisation (CLAHE), edge enhancement, noise, collimation
    bands and burned-in markers. None of it is specific to one class's chain.
    """
    return A.Compose([
        ProcessingChain(contrast=(0.5, 1.1), black=(0.0, 50.0), size=(160, 360), quality=(40, 95), p=1.0),
        A.RandomGamma(gamma_limit=(70, 140), p=0.5),
        A.CLAHE(clip_limit=(1.0, 2.5), tile_grid_size=(8, 8), p=0.15),
        A.Sharpen(alpha=(0.1, 0.3), lightness=(1.0, 1.0), p=0.15),
        A.GaussNoise(std_range=(0.005, 0.03), p=0.3),
        Collimation(p=0.2),
        Marker(p=0.3),
    ], seed=seed)
