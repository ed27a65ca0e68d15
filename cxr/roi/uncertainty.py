"""How sure the ROI model's answer is: the probabilistic sensitivity analysis (`psa`: the uncertain
inputs and the model's sensitivity and specificity drawn, seeded), the one-way tornado, break-even
price and volume.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from cxr.core.metrics import wilson
from cxr.roi.inputs import FIELDS, SHARES, UNCERTAIN, InputError, Performance, Site, validate
from cxr.roi.model import roi


def draw_inputs(site: Site, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` draws of the site's uncertain inputs (see UNCERTAIN), seeded; one row per draw."""
    validate(site)
    rng = np.random.default_rng(seed)
    cols = {}
    for name, (kind, lo, hi, _) in UNCERTAIN.items():
        base = getattr(site, name)
        if kind == "absolute":
            cols[name] = rng.uniform(lo, hi, n)
        else:
            cols[name] = base * np.exp(rng.uniform(math.log(lo), math.log(hi), n))
        if name in SHARES:
            cols[name] = np.clip(cols[name], 0.0, 1.0)
    df = pd.DataFrame(cols)
    if site.workflow != "covid_screening":
        df["prevalence_covid"] = np.minimum(df.prevalence_covid, df.prevalence_abnormal)
    return df


def draw_performance(perf: Performance, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` draws of sensitivity and specificity: Beta posteriors (Jeffreys prior) of the evaluation's counts."""
    rng = np.random.default_rng(seed + 1)
    se = rng.beta(perf.tp + 0.5, perf.fn + 0.5, n)
    sp = rng.beta(perf.tn + 0.5, perf.fp + 0.5, n)
    return se, sp


def psa(site: Site, perf: Performance, n: int = 2000, seed: int = 0) -> dict:
    """Probabilistic sensitivity analysis: median net annual value, its 90% interval, P(net > 0)."""
    draws = draw_inputs(site, n, seed)
    se, sp = draw_performance(perf, n, seed)
    nets, hours = np.empty(n), np.empty(n)
    for i, row in enumerate(draws.itertuples(index=False)):
        p = dataclasses.replace(perf, sensitivity=float(se[i]), specificity=float(sp[i]))
        r = roi(site.replace(**row._asdict()), p)
        nets[i], hours[i] = r["net_annual_value"], r["reader_hours_saved"]
    return {"n": n, "seed": seed, "median": float(np.median(nets)),
            "interval90": [float(np.quantile(nets, 0.05)), float(np.quantile(nets, 0.95))],
            "p_positive": float(np.mean(nets > 0)), "net_values": nets,
            "hours_median": float(np.median(hours))}


def tornado(site: Site, perf: Performance, seed: int = 0) -> pd.DataFrame:
    """One-way sensitivity: net annual value with each uncertain input at its low and high end
    (the rest at the site's values), and the model's sensitivity and specificity at their 95%
    interval ends; sorted by swing, largest first. `unit` is the input's (`inputs.FIELDS`)."""
    base = roi(site, perf)["net_annual_value"]
    rows = []
    for name, (kind, lo, hi, _) in UNCERTAIN.items():
        v = getattr(site, name)
        ends = (lo, hi) if kind == "absolute" else (v * lo, v * hi)
        if name in SHARES:
            ends = tuple(min(max(e, 0.0), 1.0) for e in ends)
        nets = []
        for e in ends:
            try:
                nets.append(roi(site.replace(**{name: e}), perf)["net_annual_value"])
            except InputError:  # e.g. a COVID-19 prevalence pushed above the abnormal one
                nets.append(base)
        rows.append({"input": FIELDS[name][0], "unit": FIELDS[name][1], "low": ends[0], "high": ends[1],
                     "net at low": nets[0], "net at high": nets[1]})
    for label, k, n, key in (("AI sensitivity", perf.tp, perf.tp + perf.fn, "sensitivity"),
                             ("AI specificity", perf.tn, perf.tn + perf.fp, "specificity")):
        lo, hi = wilson(k, n)
        nets = [roi(site, dataclasses.replace(perf, **{key: e}))["net_annual_value"] for e in (lo, hi)]
        rows.append({"input": label, "unit": "share", "low": lo, "high": hi, "net at low": nets[0],
                     "net at high": nets[1]})
    df = pd.DataFrame(rows)
    df["swing"] = (df["net at high"] - df["net at low"]).abs()
    return df.sort_values("swing", ascending=False).reset_index(drop=True).assign(base=base)


def break_even(site: Site, perf: Performance, prices: np.ndarray, saved_s: np.ndarray) -> pd.DataFrame:
    """Net annual value over a grid of AI price per study and seconds saved per study the AI calls
    normal (read_s_without_ai - read_s_ai_normal); rows = seconds saved, columns = price."""
    out = np.empty((len(saved_s), len(prices)))
    for i, s in enumerate(saved_s):
        for j, price in enumerate(prices):
            changed = site.replace(ai_cost_per_study=float(price),
                                   read_s_ai_normal=max(site.read_s_without_ai - float(s), 0.0))
            out[i, j] = roi(changed, perf)["net_annual_value"]
    return pd.DataFrame(out, index=pd.Index(saved_s, name="seconds saved per normal-called study"),
                        columns=pd.Index(prices, name="AI price per study"))


def break_even_price(site: Site, perf: Performance) -> float:
    """The AI price per study at which the net annual value is zero (negative: no price pays)."""
    return roi(site.replace(ai_cost_per_study=0.0), perf)["net_annual_value"] / site.studies_per_year


def volume_for(site: Site, perf: Performance, target_net: float) -> float:
    """Studies per year at which the net annual value reaches `target_net` (inf if it never does)."""
    a = roi(site.replace(studies_per_year=1.0), perf)["net_annual_value"] + site.ai_cost_per_year
    fixed = site.ai_cost_per_year
    return (target_net + fixed) / a if a > 0 else math.inf
