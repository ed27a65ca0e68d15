"""The five use cases: preset sites, the original project's money claims, and each case's
verdict from the ROI model and its uncertainty (`reports/business.json`).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from cxr.core.files import write_json
from cxr.roi.format import format_output, money
from cxr.roi.inputs import FIELDS, UNCERTAIN, WORKFLOW_NAMES, InputError, Performance, Site, parse_value, validate
from cxr.roi.model import OUTPUTS, roi
from cxr.roi.uncertainty import break_even_price, psa, volume_for

#: said beside every case in which the AI decides alone (no reader checks its calls)
STANDALONE = (" Standalone use: no reader checks these calls, and no regulator would clear this research model for "
              "it; the figures say what the arithmetic gives if one did.")

PRESETS = {
    "default": (Site(), "A general hospital that buys a triage tool for its chest radiograph worklist, the most "
                        "common deployment of commercial chest X-ray AI: every film is still read, the AI reorders "
                        "the list and flags abnormal ones."),
    "ed_triage": (Site(name="emergency department triage", workflow="prioritisation", operating_point="abnormal@95",
                       studies_per_year=20_000, prevalence_abnormal=0.226, value_expedited=0.0),
                  "An emergency department whose films are flagged for a faster read. Radiographs are read either "
                  "way; the gain is reading time and a quicker report for flagged films."),
    "radiology_workflow": (Site(name="radiology department, normal rule-out", workflow="rule_out",
                                operating_point="abnormal@99", studies_per_year=100_000, prevalence_abnormal=0.30),
                           "A radiology department lets the AI report the films it calls normal, at its most "
                           "sensitive operating point; the rest are read as usual." + STANDALONE),
    "telemedicine": (Site(name="teleradiology service, normal rule-out", workflow="rule_out",
                          operating_point="abnormal@99", studies_per_year=150_000, prevalence_abnormal=0.226,
                          radiologist_cost_per_hour=250.0),
                     "A teleradiology provider reading for remote clinics lets the AI clear the films it calls "
                     "normal, so reports reach the clinics sooner and the readers' time goes to the rest." + STANDALONE),
    "low_resource": (Site(name="low-resource setting, normal rule-out", workflow="rule_out",
                          operating_point="abnormal@99", studies_per_year=30_000, prevalence_abnormal=0.15,
                          radiologist_cost_per_hour=45.0, ai_cost_per_study=0.5, ai_cost_per_year=2_000.0,
                          deployment_cost=15_000.0, cost_missed=500.0),
                     "A screening programme where radiologists are scarce and cheap per hour: the AI clears "
                     "films it calls normal; AI is priced as in the published TB-screening analysis." + STANDALONE),
    "pandemic_surveillance": (Site(name="pandemic COVID-19 screening", workflow="covid_screening",
                                   operating_point="covid@95", studies_per_year=100_000, prevalence_abnormal=0.40,
                                   prevalence_covid=0.20, cost_missed=1_000.0, cost_false_alarm=100.0,
                                   reader_sensitivity=0.68, reader_specificity=0.70),
                              "During a wave, the AI's COVID-19 call on every admission radiograph decides who "
                              "is isolated and tested, in place of a reader's call. A chest radiograph is not a "
                              "COVID-19 test (PCR is), and the model calls most films from outside the database "
                              "COVID-19 (chapter 06)." + STANDALONE),
}


# What the original project claimed for each use case (quoted, not computed): a yearly value, and a
# percentage for the output it would correspond to in this model (None: not modelled).
ORIGINAL_CLAIMS = {
    "ed_triage": {"text": "90% faster screening, $1.05M/year", "value": 1.05e6,
                  "percent": ("reading_time_reduction", 0.90)},
    "radiology_workflow": {"text": "60% more throughput, $700K/year", "value": 7.0e5,
                           "percent": ("throughput_gain", 0.60)},
    "telemedicine": {"text": "99% faster diagnosis, $3.5M/year", "value": 3.5e6,
                     "percent": ("reading_time_reduction", 0.99)},
    "low_resource": {"text": "96% cost reduction", "value": None, "percent": ("reading_cost_reduction", 0.96)},
    "pandemic_surveillance": {"text": "86% faster detection, $70M+/year", "value": 7.0e7, "percent": None},
}


def preset(name: str) -> Site:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; the presets are: {', '.join(PRESETS)}")
    return PRESETS[name][0]


def site_from(preset_name: str = "default", changes: dict | None = None) -> Site:
    """A preset with some fields changed (values as text or numbers), checked."""
    site = preset(preset_name)
    fields = {f.name for f in dataclasses.fields(Site)}
    clean = {}
    for k, v in (changes or {}).items():
        if k not in fields:
            raise InputError(f"unknown field {k!r}; the fields are: {', '.join(sorted(fields))}")
        clean[k] = parse_value(k, v) if isinstance(v, str) else v
    return validate(site.replace(**clean))


def use_cases(perf_sets: dict[str, dict[str, Performance]], n: int = 2000, seed: int = 0) -> dict:
    """The five use cases under every performance set: result, uncertainty, the original claim and a
    verdict (judged on the first performance set, the database's)."""
    out = {}
    first = next(iter(perf_sets))
    for name, claim in ORIGINAL_CLAIMS.items():
        site = preset(name)
        per = {}
        for data, ops in perf_sets.items():
            if site.operating_point not in ops:
                raise InputError(f"operating_point: {site.operating_point!r} was not measured on {data}")
            perf = ops[site.operating_point]
            u = psa(site, perf, n=n, seed=seed)
            per[data] = {"performance": perf.to_dict(), "result": roi(site, perf),
                         "psa": {k: v for k, v in u.items() if k != "net_values"}}
        out[name] = {"site": dataclasses.asdict(site), "claim": claim["text"], "by_data": per,
                     "verdict": verdict(site, perf_sets[first][site.operating_point], per[first]["result"],
                                        per[first]["psa"], claim)}
    return out


def label(name: str) -> str:
    """A use case as the page names it (its site's name), not its key in the code and records."""
    return PRESETS[name][0].name if name in PRESETS else name


def use_case_table(cases: dict) -> pd.DataFrame:
    """The use cases side by side: workflow, the original claim, and the net value under each performance."""
    rows = {}
    for name, c in cases.items():
        row = {("", "workflow"): f"{WORKFLOW_NAMES[c['site']['workflow']]} ({c['site']['operating_point']})",
               ("", "original claim"): c["claim"]}
        for data, d in c["by_data"].items():
            u = d["psa"]
            row[(data, "net value: median [90% interval]")] = (f"{money(u['median'])} [{money(u['interval90'][0])}, "
                                                               f"{money(u['interval90'][1])}]")
            row[(data, "P(> 0)")] = f"{100 * u['p_positive']:.0f}%"
        rows[label(name)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.rename_axis("use case")


def verdicts_markdown(cases: dict) -> str:
    """The use cases' stories and verdicts as a Markdown list."""
    return "\n".join(f"* **{label(name)}**: {PRESETS[name][1]} *Verdict*: {c['verdict']}." for name, c in cases.items())


def summarise_use_cases(cases: dict) -> dict:
    """What the chapter says of the use cases as a whole: how many money claims lie above the 90%
    interval (on the first performance set), and which use cases pay on the database's performance
    but not on the external one (probability of a positive value at least one half)."""
    data = list(next(iter(cases.values()))["by_data"])
    money_claims = [n for n in cases if ORIGINAL_CLAIMS[n].get("value") is not None]
    above = [n for n in money_claims
             if ORIGINAL_CLAIMS[n]["value"] > cases[n]["by_data"][data[0]]["psa"]["interval90"][1]]
    pays = {d: [n for n, c in cases.items() if c["by_data"][d]["psa"]["p_positive"] >= 0.5] for d in data}
    out = {"money_claims": len(money_claims), "claims_above_interval": len(above), "pays": pays}
    if len(data) > 1:
        out["pays_first_not_second"] = [n for n in pays[data[0]] if n not in pays[data[1]]]
    return out


def write_record(cases: dict, path: str | Path) -> Path:
    """The use cases as JSON (infinite payback written as null)."""
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x

    return write_json({"use_cases": clean(cases), "fields": FIELDS, "uncertain": UNCERTAIN}, path)


def verdict(site: Site, perf: Performance, r: dict, u: dict, claim: dict | None) -> str:
    """Where the original claim holds, where it does not, and which input it would need."""
    if claim is None:
        return "no claim to test"
    parts = []
    if claim.get("value") is not None:
        lo, hi = u["interval90"]
        if lo <= claim["value"] <= hi:
            parts.append(f"the claimed {money(claim['value'])}/year lies inside the 90% interval: it can hold")
        elif claim["value"] > hi:
            need = volume_for(site, perf, claim["value"])
            parts.append(f"the claimed {money(claim['value'])}/year is above the 90% interval "
                         f"({money(lo)} to {money(hi)}): not supported"
                         + (f"; it would need {need:,.0f} studies a year at these inputs (here "
                            f"{site.studies_per_year:,.0f})" if math.isfinite(need) else
                            "; no volume reaches it, since each study costs more than it saves"))
        else:
            parts.append(f"the claimed {money(claim['value'])}/year is below the 90% interval: it understates")
    if claim.get("percent"):
        key, claimed = claim["percent"]
        got = r[key]
        label = {"reading_time_reduction": "reading time saved per study", "throughput_gain": "reader throughput gain",
                 "reading_cost_reduction": "reading cost reduction"}[key]
        if got >= claimed:
            parts.append(f"{label}: {100 * got:.0f}% here, at least the claimed {100 * claimed:.0f}%")
        else:
            need = _reading_time_needed(site, key, claimed)
            parts.append(f"{label}: {100 * got:.0f}% here against the claimed {100 * claimed:.0f}%" +
                         (f"; it would need studies read in {need:.1f} s on average with AI "
                          f"(measured: {site.read_s_ai_normal:.1f}-{site.read_s_ai_flagged:.1f} s)"
                          if need is not None else ""))
    elif claim.get("value") is not None and claim.get("percent") is None:
        parts.append("the speed claim is not modelled: no study of it was found")
    return "; ".join(parts)


def _reading_time_needed(site: Site, key: str, claimed: float) -> float | None:
    if key == "reading_time_reduction":
        return site.read_s_without_ai * (1 - claimed)
    if key == "throughput_gain":
        return site.read_s_without_ai / (1 + claimed)
    return None


def at_site(site: Site, perf: Performance, n: int = 2000, seed: int = 0) -> tuple[dict, dict]:
    """One site under one performance: its one-year result (`roi`) and the uncertainty in it (`psa`)."""
    return roi(site, perf), psa(site, perf, n=n, seed=seed)


def site_comparison(site: Site, perf_sets: dict[str, dict[str, Performance]], n: int = 2000,
                    seed: int = 0) -> tuple[pd.DataFrame, dict[str, dict], dict[str, str]]:
    """Chapter 07: `site` under each performance set (at its operating point): the outputs side by
    side, each set's uncertainty analysis, and the sentences the chapter quotes (the net value and
    P(>0) per set by the set's first word, the break-even price and what it means)."""
    side, psas, words = {}, {}, {}
    for name, points in perf_sets.items():
        r, u = at_site(site, points[site.operating_point], n, seed)
        psas[name] = u
        side[name] = {label: format_output(k, r[k]) for k, (label, _) in OUTPUTS.items()}
        side[name]["90% interval (uncertainty analysis)"] = f"{money(u['interval90'][0])} to {money(u['interval90'][1])}"
        side[name]["P(net value > 0)"] = f"{100 * u['p_positive']:.0f}%"
        words[f"default_{name.split()[0]}_net"] = money(r["net_annual_value"])
        words[f"default_{name.split()[0]}_p"] = f"{100 * u['p_positive']:.0f}%"
    database = perf_sets["database test split"][site.operating_point]
    price = break_even_price(site, database)
    words["default_break_even"] = f"{'-' if price < 0 else ''}${abs(price):.2f}"
    words["default_break_even_meaning"] = ("negative: no price pays, the fixed yearly cost alone exceeds the time saved"
                                           if price < 0 else "at or below it the tool pays")
    words["default_hta_direction"] = ("the same direction" if roi(site, database)["net_annual_value"] < 0
                                      else "the opposite direction to this site's result")
    return pd.DataFrame(side), psas, words
