"""Chapter 08's browser panel, without a browser: what the page is given (the ONNX file's own
metadata, the operating point it shows), the panel's HTML (its script inline, nothing from another
site) and the still for print, computed as `cxr predict` computes it. tests/test_book.py runs the
panel in Chromium against `cxr predict`."""
from __future__ import annotations

import re

import numpy as np
from test_predict import model_file  # noqa: F401 - a fixture

from conftest import synthetic_xray
from cxr.assess import predict
from cxr.core.config import get_config
from cxr.model import backends
from cxr.report import browser_demo


def test_the_page_gets_the_onnx_files_metadata_and_the_operating_point(model_file, tmp_path):  # noqa: F811
    config = get_config("smoke", cache_dir=tmp_path)
    meta = browser_demo.model_json(backends.onnx_file(model_file, config))
    assert meta["classes"] == ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
    assert meta["preprocessing"]["image_size"] and meta["ood"]["threshold"] > 0 and meta["min_side"] == 64
    assert browser_demo.OPERATING_POINT in meta["operating_points"]
    assert meta["book_operating_point"] == browser_demo.OPERATING_POINT
    assert meta["labels"] == ["COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"]
    assert meta["ood_warning"] == browser_demo.OOD_WARNING


def test_the_panel_carries_its_script_and_a_still_of_cxr_predicts_answer(model_file):  # noqa: F811
    pred = predict.load(model_file, get_config("smoke", backend="torch"))
    film = synthetic_xray(3, 128)
    still = browser_demo.still(pred, film, "film.png")
    row = predict.predict_images(pred, [predict.Read("film.png", film, predict.OK, [])])[0]
    assert still["call"] == row["decision"] and np.isclose(still["proba"][0], row["COVID"])
    assert still["operating_point"] in ("COVID-19", "not COVID-19")
    page = browser_demo.html(still)
    assert 'id="cxr-try-file"' in page and browser_demo.SCRIPT.read_text()[:200] in page
    assert "cxr-try-still" in page and "film.png" in page and "Lung_Opacity" not in page
    assert not re.search(r"https?://", page), "the panel must fetch nothing from another site"
