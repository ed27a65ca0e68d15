"""How the chapters show results as a report: numbers glued into sentences, numbered figures,
intervals that stay on one line, and the few words that state a direction or a size
(`share_word`, `moves`, `moved_to`), chosen from the numbers. The chapters call these; nothing here computes a result.

A sentence in a chapter quotes a number as {glue:text}`name`; the cell that computed it calls
`glue(name, text)`. A figure is glued with `figure(name, fig)` and placed by a
```{glue:figure} name``` block with its caption and label, so it is numbered and can be cited
from another chapter; the cell that draws it carries the `remove-output` tag, so the page shows
it once (JupyterLab shows it in the cell, as usual).
"""
from __future__ import annotations

import base64
import html
import io
import math

from cxr.core import labels

NBSP = "\u00a0"  # keeps "[97.2, 98.4]" on one line in the page


def interval(v: float | None, ci=None, scale: float = 100, digits: int = 1, unit: str = "") -> str:
    """'97.9 [97.2, 98.4]' (scale 100, 1 digit); 'n/a' for a missing value; the bracket never breaks."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    s = f"{scale * v:.{digits}f}{unit}"
    if ci is not None and ci[0] is not None and not any(isinstance(c, float) and math.isnan(c) for c in ci):
        s += f" [{scale * ci[0]:.{digits}f},{NBSP}{scale * ci[1]:.{digits}f}]"
    return s


def marked(name: str, note: str) -> str:
    """A name with a note in brackets, joined to a bracket it already ends with:
    "whole film (shipped)" and "chosen" give "whole film (shipped, chosen)", never "(shipped) (chosen)"."""
    return f"{name[:-1]}, {note})" if name.endswith(")") else f"{name} ({note})"


def pct(v: float | None, ci=None, digits: int = 1) -> str:
    """'97.9% [97.2, 98.4]': a share as a percentage, with its interval when given."""
    return interval(v, ci, 100, digits, "%")


def share_word(k: int, n: int) -> str:
    """How a sentence names k of n, chosen from the numbers: "all", "most" (over half), "half",
    "a minority" or "none"."""
    if n <= 0 or k <= 0:
        return "none"
    return "all" if k == n else "most" if 2 * k > n else "half" if 2 * k == n else "a minority"


def moves(before: float, after: float, tol: float = 0.0005) -> str:
    """The verb for a change from `before` to `after` (shares): "rises", "falls" or "stays"."""
    return "rises" if after > before + tol else "falls" if after < before - tol else "stays"


def moved_to(before: float, after: float, tol: float = 0.0005) -> str:
    """How a sentence leads into the new value: "rises to", "falls to" or "stays at" (`moves`)."""
    return {"rises": "rises to", "falls": "falls to", "stays": "stays at"}[moves(before, after, tol)]


def glue(name: str, value) -> None:
    """Make `value` (a number already formatted as text, or any object) quotable in the page. A
    glued text is shown as it is, not as Markdown, so its code marks (backticks) are dropped: the
    page shows make reproduce, not `make reproduce`. Its code names read as labels (`labels.prose`):
    "Lung Opacity", not Lung_Opacity."""
    from myst_nb import glue as _glue

    _glue(name, labels.prose(value.replace("`", "")) if isinstance(value, str) else value, display=False)


def glue_all(texts: dict) -> None:
    for name, value in texts.items():
        glue(name, value)


#: how wide a figure is shown at most in the book's column at a 1280 px window (sphinx-book-theme)
FIGURE_COLUMN_PX = 660
#: the smallest text a reader is asked to read in a figure, in CSS pixels as the page shows it
SMALLEST_TEXT_PX = 9.0


def visible_texts(fig) -> list:
    """The texts a figure shows once drawn (titles, labels, ticks, legends, annotations): visible and
    not empty, without the tick labels and axis labels of an axes drawn without axes (an image panel)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    hidden = set()
    for ax in fig.axes:
        if not ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                hidden |= {id(t) for t in axis.get_ticklabels(which="both")} | {id(axis.label), id(axis.offsetText)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def smallest_text_px(fig, column_px: float = FIGURE_COLUMN_PX, texts: list | None = None) -> float:
    """The smallest visible text of a figure in pixels as the page shows it: its font size, scaled
    as the saved image (tight box, at its dpi) is shrunk to fit `column_px`. `texts`: the figure's
    `visible_texts`, when the caller has them (they are read from the drawn figure)."""
    sizes = [t.get_fontsize() for t in (visible_texts(fig) if texts is None else texts)]
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width
    scale = min(1.0, column_px / (width_in * fig.dpi))
    return min(sizes) / 72 * fig.dpi * scale if sizes else float("inf")


def legible(name: str, fig, column_px: float = FIGURE_COLUMN_PX) -> None:
    """Refuse a figure whose smallest text the page would show under `SMALLEST_TEXT_PX`, or whose
    text shows a code name where its label belongs ("Lung_Opacity" for "Lung Opacity": `labels`)."""
    texts = visible_texts(fig)  # the figure drawn once, for both checks
    px = smallest_text_px(fig, column_px, texts)
    if px < SMALLEST_TEXT_PX:
        raise ValueError(f"figure {name}: its smallest text would be {px:.1f} px on the page (at least "
                         f"{SMALLEST_TEXT_PX:g}): make the figure narrower or its text larger")
    named = sorted({n for t in texts for n in labels.code_names(t.get_text())})
    if named:
        raise ValueError(f"figure {name} shows code names where a reader needs labels: "
                         + ", ".join(f"{n} (say {labels.label(n)})" for n in named))


def figure(name: str, fig) -> None:
    """Glue a figure for a numbered ```{glue:figure}``` block; shown once, not again at the cell's end.
    A figure whose text the page would show too small to read is refused (`legible`)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue as _glue

    legible(name, fig)

    _glue(name, fig, display=True)
    plt.close(fig)


def image(fig, alt: str, width: str = "100%") -> None:
    """Show a figure as an image with alt text that says what it shows (in the page and in
    JupyterLab), and close it. Its text must be legible on the page (`legible`)."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    legible(f"panel '{alt[:40]}'", fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    display(HTML(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}" '
                 f'style="max-width:{width};height:auto" class="cxr-panel">'))

