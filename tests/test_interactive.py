"""Chapter 01's data explorer: plotly, drawn from the book's own plotly.js, never a CDN."""
import numpy as np
import pandas as pd

from cxr.core.config import CLASSES
from cxr.report import interactive


def _films(n=50):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"label": np.repeat(CLASSES, n), "chain": "png", "split": "train",
                          "file": [f"{c}/images/{c}-{i}.png" for c in CLASSES for i in range(n)]})
    stats = pd.DataFrame({"mean": rng.uniform(0, 255, len(table)), "hf_energy": rng.uniform(0, 9, len(table)),
                          "black_share": rng.uniform(0, 1, len(table))})
    return table, stats


def test_the_sample_keeps_at_most_its_share_of_each_class_with_the_readers_labels():
    table, stats = _films()
    sample = interactive.explorer_sample(table, stats, per_class=20, seed=0)
    assert sample["class"].value_counts().to_dict() == {"COVID-19": 20, "Lung Opacity": 20, "Normal": 20,
                                                        "Viral Pneumonia": 20}
    assert sample.file.str.contains("/").sum() == 0  # the file's name, not its path
    assert sample.equals(interactive.explorer_sample(table, stats, per_class=20, seed=0))  # seeded


def test_the_figure_needs_no_network_and_says_what_it_shows():
    table, stats = _films()
    fig = interactive.explorer(interactive.explorer_sample(table, stats, per_class=10))
    page = interactive.html_of(fig, "x", "Scatter plot of 40 films")
    assert interactive.MARKER in page and 'aria-label="Scatter plot of 40 films"' in page
    assert "<script src" not in page and "cdn.plot.ly" not in page  # plotly.js comes from the book's _static
    assert {t.name for t in fig.data} == {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"}
    assert interactive.plotly_js_path().stat().st_size > 1_000_000


def test_the_roc_explorer_gives_each_points_threshold_on_hover():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 3000)
    p = rng.dirichlet(np.ones(4), 3000)
    p[np.arange(3000), y] += rng.uniform(0, 1, 3000)
    p /= p.sum(1, keepdims=True)
    per_class = {name: {"auc": roc_auc_score(y == c, p[:, c])} for c, name in enumerate(CLASSES)}
    fig = interactive.roc(y, p, per_class)
    curves = [t for t in fig.data if t.showlegend is not False]
    assert len(curves) == len(CLASSES)
    for c, t in enumerate(curves):
        assert len(t.x) <= interactive.CURVE_POINTS and t.x[0] == 0 and t.x[-1] == 1  # thinned, ends kept
        thresholds = np.asarray(t.customdata)[:, 0].astype(float)
        assert np.all(np.diff(thresholds) <= 0) and thresholds.max() <= 1  # falling along the curve
        auc = float(t.name.split("AUC ")[1].rstrip(")"))
        assert auc == round(roc_auc_score(y == c, p[:, c]), 3)
        assert "threshold" in t.hovertemplate


def test_the_tornado_explorer_names_each_end_in_its_unit():
    from cxr.roi import cases, inputs, uncertainty
    from cxr.roi.format import money

    perf = inputs.Performance("argmax", "abnormal", 0.9, 0.9, 90, 10, 180, 20, "test")
    tor = uncertainty.tornado(cases.preset("default"), perf)
    fig = interactive.tornado(tor, money)
    low, high = fig.data
    assert list(low.y) == list(tor.input) and np.allclose(np.asarray(low.base) + np.asarray(low.x), tor["net at low"])
    shown = dict(zip(tor.input, np.asarray(high.customdata)[:, 0]))
    assert shown["AI specificity"].endswith("%") and shown["AI price per study"].startswith("$")
    assert shown["AI price per study"].endswith("/study") and shown["reading time without AI"].endswith(" s/study")
