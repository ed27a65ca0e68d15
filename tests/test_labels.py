"""The reader's labels for the code's names (cxr.core.labels)."""
import pandas as pd

from cxr.core import labels
from cxr.core.config import CLASSES


def test_every_class_has_a_label_without_code_marks():
    assert set(labels.CLASS_LABELS) == set(CLASSES)
    assert all("_" not in v for v in labels.CLASS_LABELS.values())
    assert all("_" not in v for v in labels.NAMES.values())


def test_prose_replaces_whole_code_names_only():
    text = "the most common error is Lung_Opacity called COVID (31 of 43 Lung_Opacity films)"
    assert labels.prose(text) == "the most common error is Lung Opacity called COVID (31 of 43 Lung Opacity films)"
    # a path keeps its folder's name
    assert labels.prose("../shared/cxr-radiography/Lung_Opacity/images") == "../shared/cxr-radiography/Lung_Opacity/images"
    assert labels.prose("Lung_Opacity/images/x.png") == "Lung_Opacity/images/x.png"
    assert labels.prose("collection covidnet_fig1_actualmed: 100%") == "collection Actualmed (COVID-Net): 100%"
    assert labels.prose("Normal films") == "Normal films"


def test_code_names_finds_what_prose_replaces():
    assert labels.code_names("twin_to_lung_opacity 0.02 and Lung_Opacity") == ["Lung_Opacity", "twin_to_lung_opacity"]
    assert labels.code_names(labels.prose("twin_to_lung_opacity 0.02 and Lung_Opacity")) == []


def test_readable_labels_index_columns_names_and_text_cells():
    t = pd.crosstab(pd.Series(["COVID", "Lung_Opacity"], name="label"), pd.Series(["a", "b"], name="chain"))
    r = labels.readable(t)
    assert list(r.index) == ["COVID-19", "Lung Opacity"] and r.index.name == "class"
    assert r.columns.name == "processing chain"
    cells = pd.DataFrame({"metric": ["Lung_Opacity sensitivity", "twin_agreement"], "value": [0.9, 0.97]})
    r = labels.readable(cells.set_index("metric"))
    assert list(r.index) == ["Lung Opacity sensitivity", "twin agreement"]
    assert list(labels.readable(pd.DataFrame({"x": ["Lung_Opacity", 3]})).x) == ["Lung Opacity", 3]
    multi = pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("Lung_Opacity", "n"), ("COVID", "n")]))
    assert list(labels.readable(multi).columns.get_level_values(0)) == ["Lung Opacity", "COVID-19"]
    # the table it was given is left as it was
    assert list(t.index) == ["COVID", "Lung_Opacity"]


def test_page_check_finds_what_a_reader_should_not_see():
    from cxr.report import page_check

    assert page_check.text_problems("Lung Opacity films, COVID-19 and make reproduce") == []
    found = " ".join(page_check.text_problems("the error is Lung_Opacity called COVID; see `cxr audit`; "
                                               "ed_triage pays; profile = full (full: every image)"))
    assert "Lung_Opacity (say Lung Opacity)" in found and "backtick" in found
    assert "ed_triage (say emergency department triage)" in found and "profile line" in found
    assert page_check.cell_problems(["96.6%", "0.995", "n/a", "-$104K", "−12", "10", "-0.5"]) == []
    assert len(page_check.cell_problems(["None", "nan", "-0.000", "+0.00 [+0.00, +0.00]", "-0"])) == 5
    assert page_check.alt_problems(["Validation accuracy against wall time", "the ROC curve"]) == []
    assert len(page_check.alt_problems(["", "../_images/fig_counts.png", "fig.png"])) == 3
