"""Training: one module per approach (linear probe, fine-tuned EfficientNet-Lite0, the original
project's ResNet50), the run folder they share, and the lung segmenter's training. Imports cxr.core,
cxr.data and cxr.model."""
