"""Augmentation that suits radiographs (Albumentations).

No horizontal flip: it moves the heart to the right, which no real PA/AP film shows. Geometry
changes stay small (a few degrees, a few percent), as patient positioning varies that much.

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
