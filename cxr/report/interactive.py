"""Figures a reader explores rather than looks at (plotly), working in the static book offline and in
JupyterLab alike. `show` displays a figure as two outputs in one: HTML that draws it with the
plotly.js the book serves from its own `_static` (never a CDN: book/_ext copies the file that the
installed plotly package carries, and adds it only to pages that hold such a figure), and plotly's
own JSON, which JupyterLab renders itself.

`explorer` is chapter 01's data explorer: every film of a sample as a point of two image
statistics, by class and processing chain, with its file name on hover.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.core import labels
from cxr.core.config import CLASSES

#: the plotly.js file the book serves (book/_ext copies it into the site's _static)
PLOTLY_JS = "cxr-plotly.min.js"
#: the class of every interactive figure's box; book/_ext adds plotly.js to the pages that hold one
MARKER = "cxr-plotly"
#: a class's colour in every interactive figure (matplotlib's first four, as the static figures)
COLOURS = dict(zip((labels.CLASS_LABELS[c] for c in CLASSES), ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")))


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

