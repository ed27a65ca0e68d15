"""`cxr site-check FOLDER --report site.html`: the one page a hospital brings to its governance
meeting. The verdict and what it means; the site's own numbers with intervals (a labelled
folder); what `cxr adapt` would do, as a learning curve (where there are enough labelled normal
films and the database is at hand); the ROI calculator's net value at the site's measured
specificity. Plots are inline images, so the page is one file that prints to PDF as the book
does (chromium --headless --print-to-pdf). It is circulated: it names no file, folder or DICOM
header field (PACS exports name folders after patients), only counts and rates.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from cxr.assess import adapt
from cxr.assess.adapt import curve_summary
from cxr.core.config import CLASSES
from cxr.core.files import write_text
from cxr.core.labels import CLASS_LABELS as LABELS
from cxr.core.metrics import proportion
from cxr.data.dataset import find_dataset
from cxr.model import site_check
from cxr.report.plots import learning_curve
from cxr.roi import cases, inputs, model

CURVE_MIN_NORMALS = 40  # labelled normal films needed to draw what adaptation would do

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ccc}
.verdict{padding:.8rem 1rem;border-radius:.4rem;border-left:.5rem solid}
.shift{background:#fdecea;border-color:#b3261e}.same{background:#e8f4ea;border-color:#2e7d32}
.few{background:#fff7e0;border-color:#a66a00}
table{border-collapse:collapse;margin:.4rem 0;font-size:.95rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f3f3f3}.wide{overflow-x:auto}img{max-width:100%;height:auto}.small{font-size:.85rem;color:#555}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}img,table{break-inside:avoid}}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pct(v, ci=None) -> str:
    if v is None or not np.isfinite(v):
        return "not measurable here"
    text = f"{100 * v:.1f}%"
    if ci is not None and all(c is not None and np.isfinite(c) for c in ci):
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def calls_figure(verdict: site_check.Verdict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.2))
    names = [LABELS[c] for c in verdict.calls]
    vals = [100 * v for v in verdict.calls.values()]
    ax.barh(names[::-1], vals[::-1], color="#4c72b0")
    for i, v in enumerate(vals[::-1]):
        ax.text(v + 1, i, f"{v:.0f}%", va="center")
    ax.set_xlim(0, 110)
    ax.set_xlabel("share of the site's films the model calls each class (%)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def metrics_html(found: dict) -> str:
    rows = [f"<tr><td>accuracy (all films)</td><td colspan=2>{_pct(found['accuracy'], found['accuracy_ci'])}</td></tr>"]
    for c in CLASSES:
        m = found["per_class"][c]
        if not m["n"] and c not in found["classes_present"]:
            sens = "no films of this class"
        else:
            sens = _pct(m["sensitivity"], m["sensitivity_ci"])
        rows.append(f"<tr><td>{LABELS[c]} ({m['n']} films)</td><td>{sens}</td>"
                    f"<td>{_pct(m['specificity'], m['specificity_ci'])}</td></tr>")
    table = ("<table><tr><th>class</th><th>sensitivity, 95% interval</th><th>specificity, 95% interval</th></tr>"
             + "".join(rows) + "</table>")
    ops = found.get("operating_points") or {}
    if ops:
        r = []
        for name, op in ops.items():
            s = op["site"]
            r.append(f"<tr><td>{html.escape(name)}</td><td>{_pct(s['sensitivity']['value'], s['sensitivity']['ci']) if s['sensitivity']['n'] else 'no films with the finding'}</td>"
                     f"<td>{_pct(s['specificity']['value'], s['specificity']['ci']) if s['specificity']['n'] else 'no films without it'}</td></tr>")
        table += ("<p>At the operating points chosen on the database's validation split:</p><table><tr><th>operating "
                  "point</th><th>sensitivity</th><th>specificity</th></tr>" + "".join(r) + "</table>")
    return f'<div class="wide">{table}</div>'


def roi_html(found: dict | None, reports: Path) -> str:
    """The calculator's default site (worklist prioritisation at abnormal@95) at the site's measured
    specificity; its sensitivity where the folder has abnormal films, else the database test split's."""
    site = cases.site_from("default")
    op = site.operating_point
    if not found or op not in (found.get("operating_points") or {}):
        return ("<p>The net value needs the site's measured specificity: run the report on a labelled folder "
                "(the database layout, &lt;class&gt;/images/*).</p>")
    m = found["operating_points"][op]["site"]
    if not m["specificity"]["n"]:
        return "<p>The folder has no normal films, so the specificity this calculation needs is not measured.</p>"
    sens_from = "measured on this site's films"
    sens = m["sensitivity"]
    if not sens["n"]:

        record = reports / "evaluation.json"
        if not record.exists():
            return "<p>The folder has no abnormal films and the database's evaluation record is not here, so no " \
                   "sensitivity at this operating point is known.</p>"
        db = inputs.performance(record, op)
        sens = proportion(db.tp, db.tp + db.fn)
        sens_from = "measured on the database's test split (this folder has no abnormal films)"
    spec = m["specificity"]
    perf = inputs.Performance(op, "abnormal", sens["value"], spec["value"], sens["k"], sens["n"] - sens["k"],
                                  spec["k"], spec["n"] - spec["k"], "site")
    r = model.roi(site, perf)
    net = r["net_annual_value"]
    return (f"<p>At the calculator's default site ({html.escape(site.name)}; {site.studies_per_year:,.0f} studies a "
            f"year) and operating point {op}, with specificity {_pct(spec['value'], spec['ci'])} measured here and "
            f"sensitivity {_pct(sens['value'], sens.get('ci'))} {sens_from}, the net annual value is "
            f"<b>{_money(net)}</b>. Change the inputs to your site's in the book's calculator (chapter 07).</p>")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _money(v) -> str:
    if v is None or not np.isfinite(v):
        return "not computable"
    sign = "-" if v < 0 else ""
    return f"{sign}${abs(v):,.0f}"


def render(site, found: dict | None, model_name: str, reports: Path, curve=None) -> str:
    """The report's HTML (no file or folder names: `site` and `found` hold counts and rates only)."""
    v = site.verdict
    kind = {"site-shift": "shift", "as the database": "same"}.get(v.verdict, "few")
    headline = {"shift": "These films differ from the database the model was trained and measured on",
                "same": "These films look like the database's, as the model sees them",
                "few": "Too few films to tell"}[kind] if v.verdict != site_check.UNCHECKED else "Not checked"
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
             f"content='width=device-width,initial-scale=1'><title>Site validation report</title>"
             f"<style>{STYLE}</style></head><body>",
             "<h1>Site validation report</h1>",
             f"<p class=small>Model {html.escape(model_name)}. Research use only; not a medical device.</p>",
             f'<div class="verdict {kind}"><b>Verdict: {html.escape(v.verdict)}. {headline}.</b><br>'
             f"{html.escape(_sentence(site_check.advice(v).removeprefix('Site check: ')))}</div>",
             "<h2>What the check measured</h2>",
             f"<p>{v.films:,} films were read{f' ({site.unread:,} more files were unreadable or not radiographs)' if site.unread else ''}. "
             + (f"Their mean rank among database films of the same call is {v.mean_rank:.2f} (database films: 0.50; "
                f"the check tolerates up to {0.5 + v.margin:.2f}); one-sided p = {v.p_value:.1e}, level {v.level}."
                if np.isfinite(v.mean_rank) else "") + "</p>",
             f'<img alt="Bar chart: the share of the site films the model calls each class" src="{_png(calls_figure(v))}">']
    parts.append("<h2>The model on this site's labelled films</h2>")
    if found:
        parts.append(f"<p>{found['films']:,} labelled films ({', '.join(LABELS[c] for c in found['classes_present'])}). "
                     "Intervals are 95% (Wilson).</p>" + metrics_html(found))
    else:
        parts.append("<p>The folder is not labelled, so no accuracy can be measured. Put labelled films in the "
                     "database layout (&lt;class&gt;/images/*) and run the report again: a site should not use the "
                     "model before it has measured it on its own films.</p>")
    parts.append("<h2>What adapting would do</h2>")
    if curve is not None:

        summary = curve_summary(curve)
        parts.append("<p>cxr adapt refits the model's last layer on labelled local films. The curve draws, for "
                     "random draws of the site's normal films, the share of the other normals still called COVID-19 "
                     "(left) and what the database's test split keeps (right).</p>"
                     f'<img alt="Line chart: held-out site normals called COVID-19 against the number of films adapted on" '
                     f'src="{_png(learning_curve(summary))}">')
    else:
        parts.append(f"<p>Not drawn: it needs at least {CURVE_MIN_NORMALS} labelled normal films and the database's "
                     "training split at hand. cxr adapt --data FOLDER adapts the model; run this report again with "
                     "--model on the adapted file, on other films of the site.</p>")
    parts.append("<h2>What it could be worth</h2>" + roi_html(found, reports))
    parts.append("<p class=small>Made by cxr site-check. The check compares the films' pooled features, as the model "
                 "sees them, with the database's validation split; it sees large shifts of exposure, processing and "
                 "population, not every difference that matters.</p></body></html>")
    return "\n".join(parts)


def adaptation_curve(folder, site, pred) -> dict | None:
    """What `cxr adapt` would do at this site (`adapt.learning_curve`, last layer, 3 draws): where
    the folder has at least CURVE_MIN_NORMALS labelled normal films and the database is at hand."""
    normals = int((site.labels == CLASSES.index("Normal")).sum()) if site.labelled else 0
    if normals < CURVE_MIN_NORMALS:
        return None
    try:
        find_dataset()
    except (FileNotFoundError, ValueError):
        return None
    sizes = sorted({0, *(max(5, normals * k // 8) for k in (1, 2, 4))})
    return adapt.learning_curve(pred.checkpoint, folder, sizes=tuple(sizes), draws=3, methods=("head",), config=pred.config)


def write(out: str | Path, site, found: dict | None, pred, curve=None) -> Path:
    name = str(pred.meta.get("source_run") or "the shipped model")
    if pred.meta.get("adapted"):
        name += f", adapted ({pred.meta['adapted'].get('method', 'head')})"
    return write_text(render(site, found, name, pred.config.reports_dir, curve), out)
