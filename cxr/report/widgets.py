"""Chapter 08's interactive viewer, for JupyterLab: pick a test film or upload one, and see the
model's panel for it (`chapter.show_prediction`). The book shows the static gallery instead."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.assess.predict import Predictor
from cxr.core import labels
from cxr.data.reading import read_file
from cxr.report.chapter import Neighbours, show_prediction


def prediction_explorer(pred: Predictor, pixels, table: pd.DataFrame, rows: np.ndarray, neighbours: Neighbours):
    """A dropdown of the films at `rows` of `table` and an upload button (PNG, JPEG, TIFF, DICOM);
    the chosen film's panel shows below them."""
    import ipywidgets as widgets
    from IPython.display import display

    choice = widgets.Dropdown(options=[(f"{labels.label(table.label[i])}: {table.file[i].split('/')[-1]}", int(i)) for i in rows],
                              description="test image")
    upload = widgets.FileUpload(accept=".png,.jpg,.jpeg,.tif,.tiff,.dcm", multiple=False, description="or upload")
    shown = widgets.Output()

    def on_choice(change):
        with shown:
            shown.clear_output(wait=True)
            show_prediction(pred, np.asarray(pixels[choice.value]), table.file[choice.value].split("/")[-1], neighbours)

    def on_upload(change):
        for item in upload.value:
            path = Path(tempfile.mkdtemp()) / item["name"]
            path.write_bytes(bytes(item["content"]))
            read = read_file(path, item["name"])
            with shown:
                shown.clear_output(wait=True)
                print(read.status) if read.image is None else show_prediction(pred, read.image, item["name"], neighbours)

    choice.observe(on_choice, "value")
    upload.observe(on_upload, "value")
    display(widgets.VBox([widgets.HBox([choice, upload]), shown]))
    on_choice(None)
