"""Figures for the report: small functions that take data and return a matplotlib Figure."""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cxr.assess.explain import overlay
from cxr.core import book, labels, metrics
from cxr.core.book import marked
from cxr.core.config import CLASSES
from cxr.model.site_check import shown

PALETTE = {"COVID": "#d62728", "Lung_Opacity": "#ff7f0e", "Normal": "#2ca02c", "Viral Pneumonia": "#1f77b4"}


def style() -> None:
    """One look for every figure in the book."""
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
                         "figure.autolayout": True, "font.size": 10})


def counts_bar(table: pd.DataFrame, by: str = "label", hue: str | None = "split", title: str = "") -> plt.Figure:
    """Bar chart of image counts per `by` (stacked by `hue`), with the totals written on the bars."""
    counts = table.groupby([by, hue]).size().unstack(fill_value=0) if hue else table[by].value_counts().to_frame()
    counts = labels.readable(counts)  # the classes as a reader names them
    fig, ax = plt.subplots(figsize=(7, 3.2))
    counts.plot.barh(stacked=True, ax=ax, width=0.7)
    for i, total in enumerate(counts.sum(1)):
        ax.text(total, i, f" {total:,}", va="center")
    ax.set_xlabel("images")
    ax.set_ylabel("")
    ax.set_title(title)
    ax.set_xlim(0, counts.sum(1).max() * 1.15)
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 6,
               size: float = 1.9, suptitle: str = "", cmap: str = "gray", heat_scale: bool = False) -> plt.Figure:
    """Images in a grid, each titled; `heat_scale`: the panels carry heat maps (`explain.overlay`), and
    the figure ends with the colour scale they share."""
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fontsize = readable_points(ncols * size)
    bar_rows = [0.12] if heat_scale else []  # a row under the panels for the colour scale
    fig = plt.figure(figsize=(ncols * size, nrows * size * 1.08 + (0.9 if heat_scale else 0)))
    grid = fig.add_gridspec(nrows + len(bar_rows), ncols, height_ratios=[1] * nrows + bar_rows)
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(ncols)] for r in range(nrows)])
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img, cmap=cmap, vmin=0, vmax=255 if img.dtype == np.uint8 else None)
        if titles is not None:
            ax.set_title(titles[i], fontsize=fontsize)
    if suptitle:
        fig.suptitle(suptitle)
    if heat_scale:
        heat_colour_scale(fig, fig.add_subplot(grid[nrows, max(0, ncols // 2 - 2):min(ncols, ncols // 2 + 2 + ncols % 2)]),
                          fontsize)
    return fig


#: what a heat map's colour says (`explain.overlay`: each map scaled to its own maximum, jet colours)
HEAT_SCALE_LABEL = "map weight, scaled per image (blue: none, red: the map's maximum)"


def heat_colour_scale(fig: plt.Figure, cax, fontsize: float) -> None:
    """The colour scale of `explain.overlay`'s heat maps, drawn as a horizontal bar in the axes `cax`."""
    from matplotlib import cm, colors

    bar = fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="jet"), cax=cax, orientation="horizontal")
    bar.set_ticks([0, 0.5, 1])
    bar.ax.tick_params(labelsize=fontsize)
    bar.set_label(HEAT_SCALE_LABEL, fontsize=fontsize)


#: the regions of `audit`'s energy table, as the page names them
REGIONS = {"lung": "lung fields", "border": "border strip", "corners": "corners"}


def energy_shares(by_class: pd.DataFrame, area_row: str = "share of image area") -> plt.Figure:
    """Chapter 05's Grad-CAM energy by region: for each class (rows of `by_class`, but "all"), the share
    of its maps' energy in the lung fields, the border strip and the corners; each region's share of the
    image (the row `area_row`) is a black tick, so a bar past its tick means the maps favour the region."""
    area = by_class.loc[area_row]
    shares = by_class.drop(index=[area_row, "all"], errors="ignore")
    regions = [r for r in REGIONS if r in shares.columns]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    h = 0.8 / max(1, len(shares))
    for k, (name, row) in enumerate(shares.iterrows()):
        ax.barh(np.arange(len(regions)) + (k - (len(shares) - 1) / 2) * h, row[regions].to_numpy(float), height=h,
                label=labels.label(name), color=PALETTE.get(name))
    for j, r in enumerate(regions):
        ax.plot([area[r], area[r]], [j - 0.45, j + 0.45], color="black", lw=2.5)
    ax.plot([], [], color="black", lw=2.5, label="share of the image")
    ax.set_yticks(range(len(regions)), [REGIONS[r] for r in regions])
    ax.invert_yaxis()
    ax.set_xlabel("share of Grad-CAM energy (bars) and of the image (ticks)")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def tornado(tor: pd.DataFrame) -> plt.Figure:
    """Chapter 07's tornado (`roi.uncertainty.tornado`'s table): each input's bars run from the site's
    net value to the value with the input at its low (red) and its high (blue) end."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    base = tor.base.iloc[0] / 1e3
    for i, (_, row) in enumerate(tor.iterrows()):
        ax.barh(i, row["net at low"] / 1e3 - base, left=base, color="#c44e52", label="input at its low end" if i == 0 else None)
        ax.barh(i, row["net at high"] / 1e3 - base, left=base, color="#4c72b0",
                label="input at its high end" if i == 0 else None)
    ax.set_yticks(range(len(tor)), tor.input)
    ax.invert_yaxis()
    ax.axvline(base, color="k", lw=1)
    ax.set(xlabel="net annual value ($K)", title="default site: what moves the net value")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def reliability_diagram(y: np.ndarray, series: dict[str, np.ndarray], bins: int = 15) -> plt.Figure:
    """A reliability diagram: for each named set of probabilities, accuracy against mean confidence per
    bin (its ECE in the legend), over a panel of how many films each bin holds, so a bin of a few films
    reads as the noise it is and an empty bin as empty."""
    fig, (ax, below) = plt.subplots(2, 1, figsize=(5.5, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    width = 1 / bins / (len(series) + 1)
    lo = 1.0
    for k, (name, q) in enumerate(series.items()):
        rel = metrics.reliability(y, q, bins=bins)
        shown_bins = rel.dropna()
        lo = min(lo, float(shown_bins.confidence.min()), float(shown_bins.accuracy.min()))
        line, = ax.plot(shown_bins.confidence, shown_bins.accuracy, "o-",
                        label=f"{name}: ECE {100 * metrics.ece(y, q):.2f}%")
        below.bar(rel.lo + (k + 0.5) * width, rel.n, width=width, align="edge", color=line.get_color())
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    lo = max(0.0, lo - 0.05)  # every point in view, on both axes
    ax.set(ylabel="accuracy in bin", xlim=(lo, 1.01), ylim=(lo, 1.01))
    ax.legend()
    below.set_yscale("symlog", linthresh=10)
    below.set(xlabel="confidence (mean in bin for the points)", ylabel="films in bin")
    return fig


def boxplots(df: pd.DataFrame, columns: Sequence[str], by: str, order: Sequence[str] | None = None,
             titles: Sequence[str] | None = None) -> plt.Figure:
    """One box plot per column, grouped by `by`, two to a row (so the labels stay readable at a
    page's width)."""
    order = list(order) if order is not None else sorted(df[by].unique())
    ncols = min(2, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(columns):]:
        ax.axis("off")
    for ax, col, title in zip(axes.flat, columns, titles or columns):
        data = [df.loc[df[by] == g, col].dropna().to_numpy() for g in order]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(order) + 1), [str(g).replace("_", " ").replace(" ", "\n", 1) for g in order],
                      fontsize=9)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def readable_points(width_in: float, px: float = book.SMALLEST_TEXT_PX + 0.5) -> float:
    """The font size (points) that shows at least `px` pixels high once a figure `width_in` inches
    wide is scaled to the page's figure column (`book.FIGURE_COLUMN_PX`); never under 8 points."""
    return float(max(8.0, np.ceil(px * 72 * width_in / book.FIGURE_COLUMN_PX)))


def hist_by(values: dict[str, np.ndarray], bins=40, xlabel: str = "", title: str = "",
            density: bool = True, vlines: dict[str, float] | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, v in values.items():
        ax.hist(v, bins=bins, alpha=0.5, density=density, label=f"{name} (n={len(v):,})")
    for name, x in (vlines or {}).items():
        ax.axvline(x, color="k", ls="--", lw=1)
        ax.text(x, ax.get_ylim()[1] * 0.95, f" {name}", fontsize=8, va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density" if density else "count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def confusion(cm: np.ndarray, classes=CLASSES, normalise: bool = False, title: str = "", ax=None) -> plt.Figure:
    """Confusion matrix (rows: true class) as counts or row-normalised percentages."""
    cm = np.asarray(cm)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 4))
    m = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    for i in range(len(classes)):
        for j in range(len(classes)):
            txt = f"{100 * m[i, j]:.1f}%" if normalise else f"{cm[i, j]:,}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=9,
                    color="white" if m[i, j] > (0.5 if normalise else m.max() / 2) else "black")
    short = [c.replace("Viral Pneumonia", "Viral Pn.").replace("Lung_Opacity", "Lung Op.") for c in classes]
    ax.set_xticks(range(len(classes)), short, rotation=30)
    ax.set_yticks(range(len(classes)), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    ax.set_title(title)
    return fig or ax.figure


def outline(gray: np.ndarray, mask: np.ndarray, colour=(255, 40, 40)) -> np.ndarray:
    """A region's outline drawn on a grey image (RGB uint8)."""
    import cv2

    rgb = np.repeat(np.asarray(gray)[..., None], 3, axis=2).copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, colour, 1)
    return rgb


def prediction_panel(gray: np.ndarray, row: dict, cam: np.ndarray, neighbours: Sequence[tuple[np.ndarray, str]],
                     title: str = "") -> plt.Figure:
    """One prediction as a reader sees it, large enough to read at a page's width: on top the
    image, its Grad-CAM overlay and the four probabilities with the decision and the
    out-of-distribution score; below, the most similar training images with their labels."""
    k = max(len(neighbours), 3)
    fig = plt.figure(figsize=(7.0, 5.2))
    grid = fig.add_gridspec(2, k * 2, height_ratios=[1.15, 1])
    top = [fig.add_subplot(grid[0, 0:2]), fig.add_subplot(grid[0, 2:4]), fig.add_subplot(grid[0, 4:])]
    top[0].imshow(gray, cmap="gray")
    title = labels.prose(title)
    top[0].set_title(title or "image", fontsize=10)
    top[1].imshow(overlay(gray, cam))
    top[1].set_title("Grad-CAM", fontsize=10)
    probs = [row[c] for c in CLASSES]
    ax = top[2]
    ax.barh(range(len(CLASSES)), probs, color=[PALETTE[c] for c in CLASSES])
    ax.set_yticks(range(len(CLASSES)), [c.replace("Viral Pneumonia", "Viral Pn.").replace("_", " ") for c in CLASSES],
                  fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=9)
    if str(row.get("status", "")).startswith("warning: out"):  # the verdict first: no call to trust
        ax.set_title(f"not like the training films\n(out-of-distribution score {row['ood_score']:.2f});\n"
                     f"it would be called {labels.label(row['decision'])}", fontsize=9, color="#b00020")
    else:
        ax.set_title(f"called {labels.label(row['decision'])}\nout-of-distribution score {row['ood_score']:.2f}", fontsize=10)
    for j, (img, label) in enumerate(neighbours):
        nb = fig.add_subplot(grid[1, 2 * j:2 * j + 2])
        nb.imshow(img, cmap="gray")
        nb.set_title(f"similar training film:\n{labels.prose(label)}", fontsize=9)
        nb.axis("off")
    for a in top[:2]:
        a.axis("off")
    fig.tight_layout()
    return fig


def validation_curve(record: dict | None) -> plt.Figure:
    """The recorded ResNet50 run's validation checks (`resnet50_record`): accuracy and macro AUC
    against the epochs seen; a figure that says so when there is no record."""
    fig, ax = plt.subplots(figsize=(7, 3))
    if not record or not record.get("curve"):
        ax.text(0.5, 0.5, "no recorded run for this build's data\n(python benchmarks/resnet50.py)", ha="center",
                va="center", fontsize=11)
        ax.axis("off")
        return fig
    epochs = [h["epochs_seen"] for h in record["curve"]]
    ax.plot(epochs, [h["val_accuracy"] for h in record["curve"]], marker="o", ms=3, label="validation accuracy")
    ax.plot(epochs, [h["val_macro_auc"] for h in record["curve"]], marker="s", ms=3, label="validation macro AUC")
    ax.set(xlabel="epochs seen", ylim=(0, 1.02), title=f"ResNet50 at {record['budget']['input_size']} px, "
           f"from {'random' if 'random' in str(record.get('weights_origin')) else 'ImageNet'} weights")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def panel_alt(row: dict, title: str, neighbours: Sequence[tuple[np.ndarray, str]]) -> str:
    """What a prediction panel shows, in words (its alt text)."""
    probs = ", ".join(f"{labels.label(c)} {row[c]:.2f}" for c in CLASSES)
    return labels.prose(f"{title}: the film, its Grad-CAM map, and the model's probabilities ({probs}); called "
                        f"{labels.label(row['decision'])}, out-of-distribution score {row['ood_score']:.2f}. The most "
                        f"similar training films are labelled " + ", ".join(label for _, label in neighbours) + ".")


def pareto(record: dict, floor: float | None = None, target: float | None = None) -> plt.Figure:
    """Every run of a comparison record (`cxr.assess.audit.compare`): twin agreement against the lowest
    per-class sensitivity, on validation (open) and test (filled), the external accuracy in each
    label, the chosen run starred, and the targets as dashed lines."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(record["runs"]):
        c = colours[k % len(colours)]
        v, t = r["val"], r["test"]
        ax.plot([v["lowest_sensitivity"], t["lowest_sensitivity"]], [v["twin_agreement"], t["twin_agreement"]],
                color=c, lw=0.8, alpha=0.5)
        ax.scatter(v["lowest_sensitivity"], v["twin_agreement"], s=50, facecolors="none", edgecolors=c)
        chosen = r["run"] == record.get("chosen")
        ax.scatter(t["lowest_sensitivity"], t["twin_agreement"], s=160 if chosen else 50, color=c,
                   marker="*" if chosen else "o", zorder=3)
        ext = f", external {100 * r['external']['accuracy']:.0f}%" if "external" in r else ""
        ax.annotate(marked(f"{r['name']}{ext}", "chosen") if chosen else f"{r['name']}{ext}", (t["lowest_sensitivity"], t["twin_agreement"]),
                    textcoords="offset points", xytext=(6, -10 - 4 * (k % 2)), fontsize=8, color=c)
    floor = floor if floor is not None else min(record["targets"]["sensitivity_floors"].values())
    target = target if target is not None else record["targets"]["twin_agreement"]
    ax.axhline(target, ls="--", color="grey", lw=0.8)
    ax.axvline(floor, ls="--", color="grey", lw=0.8)
    # the lines' names sit outside the plotting area, where no point can cover them
    ax.text(1.01, target, f"twin target\n{100 * target:.0f}%", transform=ax.get_yaxis_transform(), va="center",
            ha="left", fontsize=8, color="dimgrey")
    ax.text(floor, 1.01, f"sensitivity floor {100 * floor:.0f}%", transform=ax.get_xaxis_transform(), va="bottom",
            ha="center", fontsize=8, color="dimgrey")
    ax.set_xlabel("lowest per-class sensitivity (open: validation, filled: test)")
    ax.set_ylabel("twin agreement")
    return fig


def learning_curve(summary: pd.DataFrame) -> plt.Figure:
    """Site adaptation (`cxr.assess.adapt.curve_summary`): the site's false-COVID rate with its interval
    per number of local films and method (left); database accuracy, COVID-19 sensitivity and
    external accuracy (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    small = readable_points(9)
    base = summary[summary.method == "none"]
    for method, g in summary[summary.method != "none"].groupby("method", sort=False):
        g = pd.concat([base, g]).sort_values("local films")
        x = g["local films"].to_numpy()
        line, = axes[0].plot(x, g["site false-COVID %"], "o-", label=method)
        axes[0].fill_between(x, g["site CI low %"], g["site CI high %"], color=line.get_color(), alpha=0.15)
        axes[1].plot(x, g["database accuracy %"], "o-", color=line.get_color(), label=f"{method}: database accuracy")
        axes[1].plot(x, g["COVID sensitivity %"], "s--", color=line.get_color(), label=f"{method}: database COVID-19 sensitivity")
        if g["external accuracy %"].notna().any():
            axes[1].plot(x, g["external accuracy %"], "^:", color=line.get_color(), label=f"{method}: external accuracy")
    axes[0].set(xlabel="local normal films adapted on", ylabel="% of held-out site normals called COVID-19", ylim=(0, 100))
    axes[0].legend(title="method")
    axes[1].set(xlabel="local normal films adapted on", ylabel="share of films (%)", ylim=(0, 100))
    axes[1].legend(fontsize=small, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)  # below the panel, off the lines
    return fig


def site_check(record: dict) -> plt.Figure:
    """The site check (`cxr.report.site_record`): the share of folders flagged against folder size, for
    folders drawn from the database (top, the false alarms, with the 2% target) and for folders
    of a shift made from database films and of the outside sets (bottom, the power, with 95%).
    Stacked, so the labels stay legible in the book's column and at a phone's width."""
    fig, axes = plt.subplots(2, 1, figsize=(7, 9), sharex=True)
    for ax, groups, target, title in (
            (axes[0], record["database"], 2, "folders from the database: false alarms"),
            (axes[1], record["database_made_shift"] | record["outside"], 95, "folders from elsewhere: power")):
        for name, rows in groups.items():
            rows = [r for r in rows if not r.get("too_few")]
            if rows:
                ax.plot([r["films"] for r in rows], [100 * r["rate"] for r in rows], "o-", ms=5,
                        label=textwrap.fill(labels.prose(shown(name)), 45))
        ax.axhline(target, color="grey", ls="--", lw=1)
        ax.set(xscale="log", ylabel="% of folders flagged", title=title, ylim=(-3, 103))
        ax.set_xticks([10, 25, 50, 100, 200], ["10", "25", "50", "100", "200"])
        ax.tick_params(labelbottom=True)
        ax.axvline(record["min_films"], color="grey", ls=":", lw=1)
        if ax.get_legend_handles_labels()[0]:  # a small data profile may have no folder large enough
            ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    axes[1].set_xlabel("films in the folder")
    return fig


def summary_accuracy(original: float, database: float, external: float | None) -> plt.Figure:
    """The executive summary's bars: the original project's accuracy, this model's on the database
    test split and (when measured) on radiographs from outside the database."""
    bars = {"original project\n(its own test split)": original, "this model,\ndatabase test split": database}
    if external is not None:
        bars["this model, radiographs\nfrom outside the database"] = external
    fig, ax = plt.subplots(figsize=(6, 3.4))  # legible at a phone's width too
    ax.barh(list(bars), [100 * v for v in bars.values()], color=["#999999", "#4c72b0", "#c44e52"][:len(bars)])
    for i, v in enumerate(bars.values()):
        ax.text(100 * v + 1, i, f"{100 * v:.1f}%", va="center", fontsize=12)
    ax.invert_yaxis()
    ax.set(xlim=(0, 118), xlabel="accuracy (%)", title="Four-class accuracy:\nwhere the numbers come from matters")
    ax.tick_params(labelsize=11)
    return fig


def age_trend(trend) -> plt.Figure:
    """Chapter 01's age probe (`cxr.data.age.normal_trend`): each Normal film's child-likeness in
    database-number order, its rolling mean, and the change point."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.scatter(trend.numbers, trend.scores, s=2, alpha=0.3, label="one Normal image")
    ax.plot(trend.numbers, pd.Series(trend.scores).rolling(51, center=True, min_periods=5).mean(), color="k",
            label="rolling mean (51 images)")
    ax.set_xlabel("database number (Normal-<n>.png)")
    ax.set_ylabel("child-likeness score")
    ax.legend(loc="center right")
    if trend.found:
        ax.axvline(trend.numbers[trend.k], color="r", ls="--")
    return fig


def enhancement_examples(examples: dict[str, np.ndarray], variants: dict) -> plt.Figure:
    """Chapter 02: one film per class through each enhancement (`variants`: name -> function), each
    beside its histogram."""
    fig, axes = plt.subplots(len(examples), 2 * len(variants), figsize=(10, 1.9 * len(examples)))
    fontsize = readable_points(10)
    for r, (c, g) in enumerate(examples.items()):
        for k, (name, f) in enumerate(variants.items()):
            out = f(g)
            axes[r, 2 * k].imshow(out, cmap="gray", vmin=0, vmax=255)
            axes[r, 2 * k].axis("off")
            axes[r, 2 * k].set_title(f"{c.replace('_', ' ')}\n{name}" if k == 0 else name, fontsize=fontsize)
            axes[r, 2 * k + 1].tick_params(labelsize=fontsize)
            axes[r, 2 * k + 1].hist(out.ravel(), bins=64, range=(0, 255), color="gray")
            axes[r, 2 * k + 1].set_yticks([])
    fig.tight_layout()
    return fig


def training_history(training) -> plt.Figure:
    """Chapter 03: the run's losses and validation metrics by epoch, the epoch kept marked. `training`
    is a run's (history, summary), or a list of (title, (history, summary)), one row each (the
    networks of a file of two, `training_log.shown`); a model file without any says so in its place."""
    rows = training if isinstance(training, list) else [("", training)]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.2 * len(rows) + 0.3 * (len(rows) > 1)), squeeze=False)
    for (title, run), (left, right) in zip(rows, axes):
        if run is None:
            for ax in (left, right):
                ax.text(0.5, 0.5, "no training history\nin this model file", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
            continue
        hist, summary = run
        left.plot(hist.epoch, hist.train_loss, "o-", label="train (augmented, weighted)")
        left.plot(hist.epoch, hist.val_loss, "o-", label="validation")
        left.set_xlabel("epoch"); left.set_ylabel("cross-entropy"); left.legend()
        right.plot(hist.epoch, hist.val_accuracy, "o-", label="accuracy")
        right.plot(hist.epoch, hist.val_balanced_accuracy, "o-", label="balanced accuracy")
        right.plot(hist.epoch, hist.val_macro_auc, "o-", label="macro AUC")
        right.set_xlabel("epoch"); right.set_title("validation"); right.legend()
        for ax in (left, right):
            ax.axvline(summary["best_epoch"], color="k", ls=":", lw=1)
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        if title:
            left.set_title(textwrap.fill(title, 60), loc="left", fontsize=readable_points(10))
    return fig


def roc_pr(y: np.ndarray, p: np.ndarray, per_class: dict) -> plt.Figure:
    """Chapter 04: each class's ROC and precision-recall curves one-vs-rest, with the operating
    point of the argmax decision (`per_class`: the evaluation record's), and the ROC's top-left corner."""
    curves = metrics.one_vs_rest_curves(y, p)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    small = readable_points(9)
    inset = axes[0].inset_axes([0.45, 0.35, 0.5, 0.35])
    for name in CLASSES:
        m, c = per_class[name], curves[name]
        colour = PALETTE[name]
        axes[0].plot(c["fpr"], c["tpr"], label=f"{labels.label(name)} (AUC {m['auc']:.3f})", color=colour)
        axes[0].plot(1 - m["specificity"], m["sensitivity"], "o", color=colour)
        axes[1].plot(c["recall"], c["precision"], label=f"{labels.label(name)} (AP {m['pr_auc']:.3f})", color=colour)
        axes[1].plot(m["sensitivity"], m["ppv"], "o", color=colour)
        inset.plot(c["fpr"], c["tpr"], color=colour)
    axes[0].plot([0, 1], [0, 1], "k:", lw=1)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axes[1].set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="precision-recall")
    axes[0].legend(fontsize=small, loc="lower right")
    axes[1].legend(fontsize=small, loc="lower left")
    inset.set_xlim(0, 0.1); inset.set_ylim(0.85, 1.0); inset.set_title("top-left corner", fontsize=small)
    inset.tick_params(labelsize=small)
    return fig


def benchmark_curves(bench: dict | None) -> plt.Figure:
    """Chapter 03: validation accuracy against training wall time, per approach (the training
    benchmark's record; an empty frame when there is none)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, curve in (bench or {}).get("curves", {}).items():
        ax.plot(np.array(curve["wall_seconds"]) / 60, curve["val_accuracy"], "o-", label=name)
    ax.axhline(0.9, color="k", ls=":", lw=1)
    ax.set_xlabel("training wall time (min)"); ax.set_ylabel("validation accuracy")
    if bench:
        ax.legend()
    return fig
