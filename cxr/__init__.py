"""cxr: classify chest X-rays into COVID-19, Lung Opacity, Normal and Viral Pneumonia, honestly."""
__version__ = "0.1.0"
