"""Judging a model: evaluation on a labelled folder, the shortcut audit, explanations, clinical
statements, predictions on a hospital's films and their results file, adaptation to a site, and the
site check of a folder. Imports the layers below it (core, data, model, train)."""
