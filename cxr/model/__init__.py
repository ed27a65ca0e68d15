"""The model: architectures, pooled features, checkpoints (loading, calibration, operating points), the
registry of runs and the shipped model, test-time augmentation, inference speed, and the statistics
that say a film or a folder is not the database's (out-of-distribution score, site check). Imports
cxr.core and cxr.data."""
