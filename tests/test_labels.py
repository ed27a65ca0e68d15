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
    # a caption says what the figure shows and, in a sentence of its own, what to look at
    assert page_check.caption_problems(["Fig. 3 Images per class. Look at the smallest bars.",
                                        "Fig. 4 Net value (a line: compare it with zero)."]) == []
    assert len(page_check.caption_problems(["Fig. 5 Loss per epoch; the dotted line marks the epoch kept.",
                                            "Fig. 6 The outlook of the site, compared with the database."])) == 2


def test_a_figure_with_text_too_small_for_the_page_is_refused():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pytest

    from cxr.core import book

    ok, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot([0, 1], [0, 1])
    ax.set_title("ten points", fontsize=10)
    ax.tick_params(labelsize=10)
    assert book.smallest_text_px(ok) == pytest.approx(10 / 72 * 100, rel=0.01)  # not shrunk: under 660 px wide
    book.legible("ok", ok)
    wide, axes = plt.subplots(1, 8, figsize=(20, 3), dpi=100)  # shrunk about three times on the page
    for a in axes:
        a.plot([0, 1], [0, 1])
        a.tick_params(labelsize=8)
    assert book.smallest_text_px(wide) < 5
    with pytest.raises(ValueError, match="smallest text would be"):
        book.legible("wide", wide)
    plt.close("all")


def test_a_figure_that_shows_a_code_name_is_refused():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pytest

    from cxr.core import book

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(["COVID-19", "Lung Opacity"], [1, 2])
    ax.set_title("called Normal", fontsize=10)
    ax.tick_params(labelsize=10)
    ax.set_xlabel("COVID-19-1.png and Lung_Opacity-12.png (the database's file names)", fontsize=10)
    book.legible("labels", fig)
    ax.set_title("true Lung_Opacity\ncalled Normal", fontsize=10)
    with pytest.raises(ValueError, match="Lung_Opacity \\(say Lung Opacity\\)"):
        book.legible("code names", fig)
    plt.close("all")


def test_an_image_panel_without_axes_is_judged_by_the_text_it_shows():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cxr.core import book

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(np.zeros((8, 8)))
    ax.tick_params(labelsize=4)  # ticks that are never drawn...
    ax.axis("off")
    ax.set_title("a film", fontsize=12)  # ...and the title a reader reads
    assert book.smallest_text_px(fig) > 12 / 72 * 100 * 0.99
    plt.close(fig)
