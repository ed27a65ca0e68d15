"""The floor every layer stands on: the configuration and the four classes, atomic file writes, where
models run, the metrics, the targets, and how the book words a number. Imports nothing of cxr."""
