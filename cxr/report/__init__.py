"""The report's records and words: the final model's records and each chapter's text, the experiment
records (enhancement, comparisons, ResNet50 baseline, lung models, lung masks, site check), plots,
and the exported model. Imports every layer below it."""
