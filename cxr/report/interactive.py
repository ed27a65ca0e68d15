"""Figures a reader explores rather than looks at (plotly), working in the static book offline and in
JupyterLab alike. `show` displays a figure as two outputs in one: HTML that draws it with the
plotly.js the book serves from its own `_static` (never a CDN: book/_ext copies the file that the
installed plotly package carries, and adds it only to pages that hold such a figure), and plotly's
own JSON, which JupyterLab renders itself.

`explorer` is chapter 01's data explorer: every film of a sample as a point of two image
statistics, by class and processing chain, with its file name on hover. `roc` is chapter 04's ROC
curves with each point's probability threshold on hover; `tornado` is chapter 07's, with each
input's low and high values on hover.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core import labels, metrics
from cxr.core.config import CLASSES
from cxr.report.plots import PALETTE
from cxr.roi.format import format_input

#: the plotly.js file the book serves (book/_ext copies it into the site's _static)
PLOTLY_JS = "cxr-plotly.min.js"
#: the class of every interactive figure's box; book/_ext adds plotly.js to the pages that hold one
MARKER = "cxr-plotly"
#: a class's colour in every interactive figure: the static figures' (`plots.PALETTE`), by the class's label
COLOURS = {labels.CLASS_LABELS[c]: PALETTE[c] for c in CLASSES}
#: the most points a curve keeps (an even thinning), so a page stays light
CURVE_POINTS = 400


def plotly_js_path() -> Path:
    """plotly.js as the installed plotly package carries it (no download)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def html_of(fig, div_id: str, alt: str) -> str:
    """The figure as an HTML block that draws itself with the page's plotly.js; `alt` says in words
    what it shows (read by a screen reader, and shown where scripts do not run)."""
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return (f'<div class="{MARKER}" role="figure" aria-label="{html.escape(alt, quote=True)}">{body}'
            f'<noscript>{html.escape(alt)}</noscript></div>')


def show(fig, div_id: str, alt: str) -> None:
    """Display the figure for the static book (HTML) and for JupyterLab (plotly's JSON)."""
    from IPython.display import display

    display({"text/html": html_of(fig, div_id, alt), "application/vnd.plotly.v1+json": fig.to_plotly_json()},
            raw=True)


def explorer_sample(table: pd.DataFrame, stats: pd.DataFrame, per_class: int = 600, seed: int = 0) -> pd.DataFrame:
    """Up to `per_class` films of each class (drawn with `seed`), with the statistics the explorer
    plots and the labels a reader reads."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.permutation(np.flatnonzero(table.label.to_numpy() == c))[:per_class] for c in CLASSES])
    rows.sort()
    return pd.DataFrame({
        "class": table.label.iloc[rows].map(labels.label).to_numpy(),
        "processing chain": table.chain.iloc[rows].to_numpy(),
        "split": table.split.iloc[rows].to_numpy(),
        "file": table.file.iloc[rows].map(lambda f: Path(f).name).to_numpy(),
        "mean grey level": stats["mean"].iloc[rows].to_numpy().round(1),
        "fine-detail energy": stats["hf_energy"].iloc[rows].to_numpy().round(2),
        "share of black pixels": stats["black_share"].iloc[rows].to_numpy().round(3),
    })


def explorer(sample: pd.DataFrame):
    """Chapter 01's explorer: fine-detail energy against mean grey level, a point per film, coloured
    by class; hover gives the file, its chain and split; clicking a class in the legend hides it."""
    import plotly.express as px

    fig = px.scatter(sample, x="mean grey level", y="fine-detail energy", color="class",
                     color_discrete_map=COLOURS, category_orders={"class": list(COLOURS)},
                     hover_data={"file": True, "processing chain": True, "split": True,
                                 "share of black pixels": True}, opacity=0.6, height=460)
    fig.update_traces(marker={"size": 5})
    fig.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10}, font={"size": 13},
                      legend={"title": "class (click to hide)"}, template="plotly_white")
    return fig


def _thin(n: int, keep: int = CURVE_POINTS) -> np.ndarray:
    """Indices of an even thinning of n points to at most `keep`, the first and last kept."""
    return np.unique(np.linspace(0, n - 1, min(n, keep)).round().astype(int))


def roc(y: np.ndarray, p: np.ndarray, per_class: dict):
    """Chapter 04's ROC curves, one class against the rest, to explore: hovering a point gives the
    probability threshold that makes it and the sensitivity and specificity there; the class's AUC is
    in the legend, from the evaluation record (`per_class`), as in the static figure (`plots.roc_pr`)."""
    import plotly.graph_objects as go

    curves = metrics.one_vs_rest_curves(y, p)
    fig = go.Figure()
    for c, name in enumerate(CLASSES):
        cv = curves[name]
        k = _thin(len(cv["fpr"]))
        fig.add_trace(go.Scatter(
            x=cv["fpr"][k], y=cv["tpr"][k], mode="lines", name=f"{labels.label(name)} (AUC {per_class[name]['auc']:.3f})",
            line={"color": PALETTE[name]}, customdata=np.stack([cv["threshold"][k], 1 - cv["fpr"][k]], axis=1),
            hovertemplate=("threshold %{customdata[0]:.3f}<br>sensitivity %{y:.1%}<br>specificity "
                           "%{customdata[1]:.1%}<extra>" + labels.label(name) + "</extra>")))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                             hoverinfo="skip", showlegend=False))
    fig.update_layout(xaxis={"title": "1 - specificity", "range": [-0.01, 1]},
                      yaxis={"title": "sensitivity", "range": [0, 1.01]}, height=460, template="plotly_white",
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, font={"size": 13},
                      legend={"title": {"text": "class (click to hide; drag to zoom)", "side": "top"},
                              "orientation": "h", "y": -0.2})
    return fig


def tornado(tor: pd.DataFrame, money) -> object:
    """Chapter 07's tornado (`roi.uncertainty.tornado`'s table) to explore: each input's bars run from
    the site's net value to the value with the input at its low (red) and its high (blue) end; hovering
    a bar gives that end's input value and net value (`money` formats the net values)."""
    import plotly.graph_objects as go

    base = float(tor.base.iloc[0])
    fig = go.Figure()
    for end, colour in (("low", "#c44e52"), ("high", "#4c72b0")):
        net = tor[f"net at {end}"].to_numpy(float)
        shown = [format_input(v, unit) for v, unit in zip(tor[end], tor.unit)]
        fig.add_trace(go.Bar(
            y=tor.input, x=net - base, base=base, orientation="h", name=f"input at its {end} end",
            marker={"color": colour}, customdata=np.stack([shown, [money(v) for v in net]], axis=1),
            hovertemplate="%{y}: %{customdata[0]}<br>net annual value %{customdata[1]}<extra></extra>"))
    fig.add_vline(x=base, line={"color": "black", "width": 1})
    fig.update_layout(barmode="overlay", height=80 + 34 * len(tor), template="plotly_white", font={"size": 13},
                      yaxis={"autorange": "reversed"}, xaxis={"title": "net annual value ($)"},
                      margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend={"orientation": "h", "y": -0.2})
    return fig
