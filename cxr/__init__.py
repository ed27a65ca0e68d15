"""cxr: classify chest X-rays into COVID-19, Lung Opacity, Normal and Viral Pneumonia, honestly."""
from .runtime import tune_malloc

__version__ = "0.1.0"
MALLOC_TUNED = tune_malloc()
