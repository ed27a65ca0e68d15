"""The ROI model's numbers as people read them: money, each output with its unit, the defaults
table and the text of one result.
"""
from __future__ import annotations

import math

import pandas as pd

from cxr.roi.inputs import FIELDS, UNCERTAIN, WORKFLOW_NAMES, Performance, Site, shown_number
from cxr.roi.model import OUTPUTS


def money(x: float) -> str:
    """$1.2M, $350K, -$40K, $1.20B: for sentences and tables ("n/a" for a value that is not finite)."""
    if not math.isfinite(x):
        return "n/a"
    sign, a = ("-" if x < 0 else ""), abs(x)
    if a >= 1e9:
        return f"{sign}${a / 1e9:,.2f}B"
    if a >= 1e6:
        return f"{sign}${a / 1e6:.2f}M"
    if a >= 1e3:
        return f"{sign}${a / 1e3:.0f}K"
    return f"{sign}${a:.0f}"


#: outputs that count extra cases: a negative count is shown as that many fewer
COUNTS = ("extra_missed", "extra_workups")


def format_output(key: str, v: float) -> str:
    """One output as the pages show it (the static calculator's JavaScript formats the same way):
    never NaN, Infinity or exponent notation, and a negative extra count reads as "fewer"."""
    unit = OUTPUTS[key][1]
    if unit.startswith("$"):
        return money(v)
    if key == "payback_years":
        if not math.isfinite(v) or v < 0:
            return "never"
        return "under a month" if v < 1 / 12 else f"{12 * v:.0f} months" if v < 1 else f"{v:,.1f} years"
    if not math.isfinite(v):
        return "n/a"
    if unit == "share":
        return f"{100 * v:.1f}%"
    if key in COUNTS and v < 0:
        return f"{-v:,.1f} fewer {unit}"
    return f"{v:,.1f} {unit}"


def format_input(v: float, unit: str) -> str:
    """An input's value with its unit (`inputs.FIELDS`), as the calculator's page writes it: 22.6%,
    $1/study, $50,000, 14.8 s/study."""
    if unit == "share":
        return f"{100 * v:.1f}%"
    if unit.startswith("$"):
        return f"${shown_number(round(v, 2))}{unit[1:]}"
    return f"{shown_number(round(v, 2))} {unit}".strip()


def defaults_table() -> pd.DataFrame:
    """Every input of the default site, with its unit, its range in the uncertainty analysis and its source."""
    site = Site()
    rows = []
    for name, (label, unit, source) in FIELDS.items():
        unc = UNCERTAIN.get(name)
        rng = ("" if unc is None else f"{unc[1]:g} to {unc[2]:g}" if unc[0] == "absolute"
               else f"{unc[1]:g} to {unc[2]:g} times the site's value")
        rows.append({"input": label, "field": name, "default": getattr(site, name), "unit": unit,
                     "range in the uncertainty analysis": rng, "source": source})
    return pd.DataFrame(rows).set_index("input")


def format_result(site: Site, perf: Performance, r: dict, u: dict | None = None) -> str:
    """A plain-text report of one calculation, for `cxr roi`."""
    lines = [f"{site.name} ({WORKFLOW_NAMES[site.workflow]}, operating point {perf.operating_point}: "
             f"sensitivity {100 * perf.sensitivity:.1f}%, specificity {100 * perf.specificity:.1f}% on {perf.source})"]
    for key, (label, unit) in OUTPUTS.items():
        lines.append(f"  {label:<36} {format_output(key, r[key])}")
    if u:
        lines.append(f"  uncertainty ({u['n']} draws, seed {u['seed']}): median {money(u['median'])}, 90% interval "
                     f"{money(u['interval90'][0])} to {money(u['interval90'][1])}, P(net > 0) = {100 * u['p_positive']:.0f}%")
    return "\n".join(lines)
