"""What the model could be worth to a site: a small, explicit return-on-investment model.

Plain functions over one input dataclass, `Site`. The model's sensitivity and specificity are
never typed in: they come from an evaluation record (`cxr evaluate`), at a named operating point
chosen on validation (`metrics.OPERATING_POINTS`), via `performance`. Every default is listed in
`FIELDS` with its source, or the word "assumption".

Three workflows:

* ``prioritisation``: every study is still read; the AI reorders the worklist. Reading time
  changes with the AI's output (a study the AI calls normal is read faster, a flagged one a
  little slower: Shin et al. 2023). Nothing is missed that the reader alone would have caught.
* ``rule_out``: studies the AI calls normal are taken off the worklist and never read. The
  abnormal studies among them are missed (against the reader alone, who would have caught
  `reader_sensitivity` of them).
* ``covid_screening``: the AI's COVID-19 call replaces the reader's in deciding who gets a
  confirmatory test; every study is still read for everything else. Misses and extra work-ups
  are counted against a reader's COVID-19 call on a radiograph.

All money is in one currency (US dollars in the defaults); time in seconds per study or hours
per year. `roi` is deterministic; `psa` draws the uncertain inputs (`UNCERTAIN`) and the model's
sensitivity and specificity (Beta from the evaluation's counts), seeded.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

WORKFLOWS = {"prioritisation": "abnormal", "rule_out": "abnormal", "covid_screening": "covid"}
WORKFLOW_NAMES = {"prioritisation": "worklist prioritisation", "rule_out": "normal rule-out",
                  "covid_screening": "COVID-19 screening"}


class InputError(ValueError):
    """A bad input to the ROI model; the message names the field and what is allowed."""


@dataclass(frozen=True)
class Site:
    """The inputs of the ROI model for one site (units in the names; money in one currency)."""

    name: str = "default site: general hospital, worklist prioritisation"
    workflow: str = "prioritisation"  # prioritisation | rule_out | covid_screening
    operating_point: str = "abnormal@95"  # a name from metrics.OPERATING_POINTS, of the workflow's task
    studies_per_year: float = 50_000  # chest radiographs read at the site per year
    prevalence_abnormal: float = 0.226  # share of studies with a clinically relevant abnormality
    prevalence_covid: float = 0.10  # share of studies with COVID-19
    read_s_without_ai: float = 14.8  # radiologist reading time per study without AI (s)
    read_s_ai_normal: float = 10.8  # ... with AI, for a study the AI calls normal (s)
    read_s_ai_flagged: float = 18.6  # ... with AI, for a study the AI flags (s)
    radiologist_cost_per_hour: float = 210.0  # fully loaded cost of an hour of radiologist time
    ai_cost_per_study: float = 2.0  # licence fee per study processed
    ai_cost_per_year: float = 10_000.0  # fixed yearly cost: support, integration upkeep, monitoring
    deployment_cost: float = 50_000.0  # one-off: integration, local validation, training
    cost_missed: float = 2_000.0  # cost of one abnormal study missed (COVID-19 for covid_screening)
    cost_false_alarm: float = 100.0  # cost of one extra work-up of a study without the finding
    value_expedited: float = 0.0  # value of reporting one true abnormal study sooner (prioritisation)
    reader_sensitivity: float = 0.90  # the reader alone: sensitivity for the workflow's finding
    reader_specificity: float = 0.70  # the reader alone: specificity for COVID-19 (covid_screening)

    def replace(self, **changes) -> "Site":
        return dataclasses.replace(self, **changes)


# field -> (label for the page, unit, source of the default); the defaults are Site's
FIELDS = {
    "workflow": ("workflow", "", "the use case"),
    "operating_point": ("operating point", "", "chosen on validation (chapter 04), measured on test and external"),
    "studies_per_year": ("studies per year", "studies", "assumption (one ED: ~4,500 a year, Hwang 2019; a regional "
                         "service: ~110,000-270,000, news reports)"),
    "prevalence_abnormal": ("prevalence of abnormal studies", "share", "Hwang EJ et al., Radiology 2019 "
                            "(22.6% of ED chest radiographs)"),
    "prevalence_covid": ("prevalence of COVID-19", "share", "Cochrane review CD013639 (10% to 80% in single EDs; "
                         "51% in enriched studies)"),
    "read_s_without_ai": ("reading time without AI", "s/study", "Shin HJ et al., npj Digit Med 2023 (14.8 s)"),
    "read_s_ai_normal": ("reading time with AI, AI says normal", "s/study", "Shin 2023 (10.8 s)"),
    "read_s_ai_flagged": ("reading time with AI, AI flags", "s/study", "Shin 2023 (18.6 s)"),
    "radiologist_cost_per_hour": ("radiologist cost per hour", "$/h", "Insights Imaging 2023 (USA EUR 196/h, UK "
                                  "127, Poland 45); USD 210 ~ EUR 196"),
    "ai_cost_per_study": ("AI price per study", "$/study", "assumption; no published high-income list price. In TB "
                          "screening in Pakistan: US$0.19-2.78 a screen (Bashir S et al., PLOS One 2022, doi "
                          "10.1371/journal.pone.0277393; the range as its summary gives it, tables not checked)"),
    "ai_cost_per_year": ("AI fixed cost per year", "$/year", "assumption"),
    "deployment_cost": ("one-off deployment cost", "$", "assumption"),
    "cost_missed": ("cost of a missed case", "$/case", "assumption (no published figure)"),
    "cost_false_alarm": ("cost of a false alarm (extra work-up)", "$/case", "CMS: RT-PCR $75 + $25 (COVID-19); "
                         "otherwise assumption"),
    "value_expedited": ("value of an abnormal study reported sooner", "$/case", "assumption: 0, as the LungIMPACT "
                        "trial (Woznitza, Nat Med 2026) found no faster diagnosis"),
    "reader_sensitivity": ("reader alone: sensitivity", "share", "assumption (abnormal); Borakati 2020, Flor 2021: "
                           "56-79% for COVID-19"),
    "reader_specificity": ("reader alone: specificity for COVID-19", "share", "Borakati 2020, Flor 2021: 60-81%"),
}
NUMERIC = tuple(f.name for f in dataclasses.fields(Site) if f.type in ("float", float))
SHARES = ("prevalence_abnormal", "prevalence_covid", "reader_sensitivity", "reader_specificity")

# The uncertain inputs of the probabilistic sensitivity analysis: field -> (kind, low, high, source).
# "absolute": uniform between low and high; "relative": the site's value times a factor drawn
# log-uniformly between low and high (costs: from half to twice, an assumption).
UNCERTAIN = {
    "read_s_without_ai": ("absolute", 13.1, 18.4, "Shin 2023: without AI, studies later called normal / flagged"),
    "read_s_ai_normal": ("absolute", 9.0, 13.1, "Shin 2023 and assumption: up to no gain"),
    "read_s_ai_flagged": ("absolute", 16.0, 21.0, "Shin 2023 (18.6 s) +- assumption"),
    "radiologist_cost_per_hour": ("relative", 0.6, 1.3, "Insights Imaging 2023 (UK to above-US)"),
    "ai_cost_per_study": ("relative", 0.5, 2.0, "assumption"),
    "ai_cost_per_year": ("relative", 0.5, 2.0, "assumption"),
    "deployment_cost": ("relative", 0.5, 2.0, "assumption"),
    "cost_missed": ("relative", 0.25, 4.0, "assumption"),
    "cost_false_alarm": ("relative", 0.5, 2.0, "assumption"),
    "prevalence_abnormal": ("relative", 0.67, 1.5, "assumption around the site's value"),
    "prevalence_covid": ("relative", 0.5, 2.0, "Cochrane: 10-80% between EDs and months"),
    "reader_sensitivity": ("relative", 0.9, 1.05, "assumption around the site's value"),
    "reader_specificity": ("relative", 0.85, 1.15, "Borakati 2020, Flor 2021"),
}


# --------------------------------------------------------------------------- checking inputs
def validate(site: Site) -> Site:
    """The site unchanged, or an InputError naming the first bad field and what it must be."""
    from .metrics import OPERATING_POINTS

    if site.workflow not in WORKFLOWS:
        raise InputError(f"workflow: {site.workflow!r} is not one of {', '.join(WORKFLOWS)}")
    ops = {name: task for name, task, _ in OPERATING_POINTS}
    if site.operating_point not in ops:
        raise InputError(f"operating_point: {site.operating_point!r} is not one of {', '.join(ops)}")
    if ops[site.operating_point] != WORKFLOWS[site.workflow]:
        usable = [n for n, t in ops.items() if t == WORKFLOWS[site.workflow]]
        raise InputError(f"operating_point: {site.operating_point!r} is for the {ops[site.operating_point]} task; "
                         f"the {site.workflow} workflow needs one of {', '.join(usable)}")
    for name in NUMERIC:
        v = getattr(site, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{name}: {v!r} is not a number")
        if v < 0:
            raise InputError(f"{name}: {v} is negative; it must be 0 or more")
        if name in SHARES and v > 1:
            raise InputError(f"{name}: {v} is outside 0-1 (give a share, e.g. 0.2 for 20%)")
    if site.prevalence_covid > site.prevalence_abnormal and site.workflow != "covid_screening":
        raise InputError(f"prevalence_covid: {site.prevalence_covid} is above prevalence_abnormal "
                         f"({site.prevalence_abnormal}); COVID-19 studies are abnormal studies")
    return site


def parse_value(field: str, text: str):
    """A command-line or widget value for `field`, converted, or an InputError naming the field."""
    if field not in {f.name for f in dataclasses.fields(Site)}:
        raise InputError(f"unknown field {field!r}; the fields are: {', '.join(f.name for f in dataclasses.fields(Site))}")
    if field not in NUMERIC:
        return str(text)
    try:
        v = float(str(text).replace(",", "").replace("_", ""))
    except ValueError:
        raise InputError(f"{field}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{field}: {text!r} is not a finite number")
    return v


# --------------------------------------------------------------------------- the model's performance
@dataclass(frozen=True)
class Performance:
    """Sensitivity and specificity of one operating point, with the counts behind them."""

    operating_point: str
    task: str
    sensitivity: float
    specificity: float
    tp: int
    fn: int
    tn: int
    fp: int
    source: str  # which record and which data

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def performance(record: dict | str | Path, operating_point: str) -> Performance:
    """The measured performance at `operating_point` from an evaluation record (or its path)."""
    if not isinstance(record, dict):
        path = Path(record)
        if not path.exists():
            raise FileNotFoundError(
                f"No evaluation record at {path}. Write it with `cxr evaluate --data DATASET --split test --out "
                f"{path}` (database test split) or `cxr evaluate --data EXTERNAL --thresholds reports/evaluation.json "
                f"--out {path}` (an external set).")
        record = json.loads(path.read_text())
        where = str(path)
    else:
        where = record.get("data", "record")
    ops = record.get("operating_points")
    if not ops:
        raise InputError(f"the evaluation record of {where} has no operating points: make it with `cxr evaluate "
                         "--split test` (or pass --thresholds for another folder)")
    if operating_point not in ops:
        raise InputError(f"operating_point: {operating_point!r} is not in the record ({', '.join(ops)})")
    op = ops[operating_point]
    m = op["measured"]
    return Performance(operating_point, op["task"], m["sensitivity"]["value"], m["specificity"]["value"],
                       m["tp"], m["fn"], m["tn"], m["fp"],
                       f"{Path(str(record.get('data'))).name} ({record.get('split') or 'all images'})")


def performance_sets(records: dict[str, dict | str | Path]) -> dict[str, dict[str, Performance]]:
    """{data name: {operating point: Performance}} for every operating point of every record."""
    out = {}
    for name, rec in records.items():
        rec = json.loads(Path(rec).read_text()) if not isinstance(rec, dict) else rec
        out[name] = {op: performance(rec, op) for op in rec.get("operating_points", {})}
    return out


# --------------------------------------------------------------------------- the model
def roi(site: Site, perf: Performance) -> dict:
    """Yearly outcomes of deploying the AI at `site` with performance `perf`, against the reader alone."""
    validate(site)
    task = WORKFLOWS[site.workflow]
    if perf.task != task:
        raise InputError(f"operating_point: the performance given is for the {perf.task} task, the "
                         f"{site.workflow} workflow needs the {task} task")
    se, sp = perf.sensitivity, perf.specificity
    v = site.studies_per_year
    prev = site.prevalence_covid if task == "covid" else site.prevalence_abnormal
    flagged = prev * se + (1 - prev) * (1 - sp)  # share of studies the AI flags
    if site.workflow == "rule_out":
        read_with_ai = flagged * site.read_s_ai_flagged  # studies called normal are not read
        removed = 1 - flagged
    else:
        read_with_ai = (1 - flagged) * site.read_s_ai_normal + flagged * site.read_s_ai_flagged
        removed = 0.0
    hours_saved = v * (site.read_s_without_ai - read_with_ai) / 3600
    staff_saved = hours_saved * site.radiologist_cost_per_hour
    if site.workflow == "rule_out":
        extra_missed = v * prev * site.reader_sensitivity * (1 - se)
        extra_workups = 0.0
    elif site.workflow == "covid_screening":
        extra_missed = v * prev * (site.reader_sensitivity - se)
        extra_workups = v * (1 - prev) * (site.reader_specificity - sp)
    else:
        extra_missed = extra_workups = 0.0
    expedited = v * prev * se * site.value_expedited if site.workflow == "prioritisation" else 0.0
    ai_cost = v * site.ai_cost_per_study + site.ai_cost_per_year
    missed_cost = extra_missed * site.cost_missed
    workup_cost = extra_workups * site.cost_false_alarm
    net = staff_saved + expedited - missed_cost - workup_cost - ai_cost
    reading_cost_without = v * site.read_s_without_ai / 3600 * site.radiologist_cost_per_hour
    return {
        "flagged_share": flagged,
        "worklist_share_removed": removed,
        "reader_hours_saved": hours_saved,
        "staff_cost_saved": staff_saved,
        "expedited_value": expedited,
        "extra_missed": extra_missed,
        "extra_workups": extra_workups,
        "missed_cost": missed_cost,
        "workup_cost": workup_cost,
        "ai_cost": ai_cost,
        "net_annual_value": net,
        "payback_years": site.deployment_cost / net if net > 0 else math.inf,
        "five_year_net": 5 * net - site.deployment_cost,
        "reading_time_reduction": 1 - read_with_ai / site.read_s_without_ai if site.read_s_without_ai else 0.0,
        "throughput_gain": site.read_s_without_ai / read_with_ai - 1 if read_with_ai else math.inf,
        "reading_cost_reduction": (1 - (ai_cost + v * read_with_ai / 3600 * site.radiologist_cost_per_hour)
                                   / reading_cost_without) if reading_cost_without else 0.0,
    }


OUTPUTS = {  # output -> (label, unit), in the order the pages show them
    "net_annual_value": ("net annual value", "$/year"),
    "payback_years": ("payback period", "years"),
    "reader_hours_saved": ("reader hours saved", "h/year"),
    "staff_cost_saved": ("staff cost saved", "$/year"),
    "ai_cost": ("AI cost", "$/year"),
    "extra_missed": ("extra missed cases", "cases/year"),
    "extra_workups": ("extra work-ups", "cases/year"),
    "worklist_share_removed": ("share of studies off the worklist", "share"),
    "reading_time_reduction": ("reading time saved per study", "share"),
}


# --------------------------------------------------------------------------- uncertainty
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
    interval ends; sorted by swing, largest first."""
    from .metrics import wilson

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
        rows.append({"input": FIELDS[name][0], "low": ends[0], "high": ends[1], "net at low": nets[0],
                     "net at high": nets[1]})
    for label, k, n, key in (("AI sensitivity", perf.tp, perf.tp + perf.fn, "sensitivity"),
                             ("AI specificity", perf.tn, perf.tn + perf.fp, "specificity")):
        lo, hi = wilson(k, n)
        nets = [roi(site, dataclasses.replace(perf, **{key: e}))["net_annual_value"] for e in (lo, hi)]
        rows.append({"input": label, "low": lo, "high": hi, "net at low": nets[0], "net at high": nets[1]})
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


# --------------------------------------------------------------------------- the five use cases
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
                           "sensitive operating point; the rest are read as usual."),
    "telemedicine": (Site(name="teleradiology service, normal rule-out", workflow="rule_out",
                          operating_point="abnormal@99", studies_per_year=150_000, prevalence_abnormal=0.226,
                          radiologist_cost_per_hour=250.0),
                     "A teleradiology provider reading for remote clinics lets the AI clear the films it calls "
                     "normal, so reports reach the clinics sooner and the readers' time goes to the rest."),
    "low_resource": (Site(name="low-resource setting, normal rule-out", workflow="rule_out",
                          operating_point="abnormal@99", studies_per_year=30_000, prevalence_abnormal=0.15,
                          radiologist_cost_per_hour=45.0, ai_cost_per_study=0.5, ai_cost_per_year=2_000.0,
                          deployment_cost=15_000.0, cost_missed=500.0),
                     "A screening programme where radiologists are scarce and cheap per hour: the AI clears "
                     "films it calls normal; AI is priced as in the published TB-screening analysis."),
    "pandemic_surveillance": (Site(name="pandemic COVID-19 screening", workflow="covid_screening",
                                   operating_point="covid@95", studies_per_year=100_000, prevalence_abnormal=0.40,
                                   prevalence_covid=0.20, cost_missed=1_000.0, cost_false_alarm=100.0,
                                   reader_sensitivity=0.68, reader_specificity=0.70),
                              "During a wave, the AI's COVID-19 call on every admission radiograph decides who "
                              "is isolated and tested, in place of a reader's call."),
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
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.rename_axis("use case")


def verdicts_markdown(cases: dict) -> str:
    """The use cases' stories and verdicts as a Markdown list."""
    return "\n".join(f"* **{name}**: {PRESETS[name][1]} *Verdict*: {c['verdict']}." for name, c in cases.items())


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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"use_cases": clean(cases), "fields": FIELDS, "uncertain": UNCERTAIN}, indent=1))
    return path


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


def money(x: float) -> str:
    """$1.2M, $350K, -$40K: for sentences and tables."""
    if not math.isfinite(x):
        return "n/a"
    sign, a = ("-" if x < 0 else ""), abs(x)
    if a >= 1e6:
        return f"{sign}${a / 1e6:.2f}M"
    if a >= 1e3:
        return f"{sign}${a / 1e3:.0f}K"
    return f"{sign}${a:.0f}"


def format_output(key: str, v: float) -> str:
    """One output as the pages show it (the static calculator's JavaScript formats the same way)."""
    unit = OUTPUTS[key][1]
    if unit.startswith("$"):
        return money(v)
    if unit == "share":
        return f"{100 * v:.1f}%"
    if not math.isfinite(v):
        return "never"
    return f"{v:,.1f} {unit}"


def defaults_table() -> pd.DataFrame:
    """Every input of the default site, with its unit, its PSA range and its source."""
    site = Site()
    rows = []
    for name, (label, unit, source) in FIELDS.items():
        unc = UNCERTAIN.get(name)
        rng = ("" if unc is None else f"{unc[1]:g}-{unc[2]:g}" if unc[0] == "absolute"
               else f"x{unc[1]:g} to x{unc[2]:g}")
        rows.append({"input": label, "field": name, "default": getattr(site, name), "unit": unit,
                     "PSA range": rng, "source": source})
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


# --------------------------------------------------------------------------- the calculators
# the inputs a reader can change in the static book and the JupyterLab widget
CALCULATOR_FIELDS = ("studies_per_year", "prevalence_abnormal", "prevalence_covid", "read_s_without_ai",
                     "read_s_ai_normal", "read_s_ai_flagged", "radiologist_cost_per_hour", "ai_cost_per_study",
                     "ai_cost_per_year")


def calculator_data(perf_sets: dict[str, dict[str, Performance]]) -> dict:
    """Everything the static calculator needs, as plain JSON."""
    from .metrics import OPERATING_POINTS

    return {
        "workflows": WORKFLOWS,
        "operating_points": {name: task for name, task, _ in OPERATING_POINTS},
        "numeric": list(NUMERIC), "shares": list(SHARES),
        "outputs": {k: list(v) for k, v in OUTPUTS.items()},
        "presets": {k: dataclasses.asdict(site) for k, (site, _) in PRESETS.items()},
        "stories": {k: story for k, (_, story) in PRESETS.items()},
        "performance": {data: {op: p.to_dict() for op, p in ops.items()} for data, ops in perf_sets.items()},
    }


def calculator_html(perf_sets: dict[str, dict[str, Performance]]) -> str:
    """A self-contained HTML calculator (inline JavaScript, nothing from the network) for the static book."""
    import html

    data = json.dumps(calculator_data(perf_sets)).replace("</", "<\\/")
    script = (Path(__file__).parent / "static" / "roi.js").read_text()
    opt = lambda v, label: f'<option value="{html.escape(v)}">{html.escape(label)}</option>'  # noqa: E731
    presets = "".join(opt(k, f"{k}: {site.name}") for k, (site, _) in PRESETS.items())
    datas = "".join(opt(k, k) for k in perf_sets)
    inputs = "".join(
        f'<tr><td><label for="cxr-roi-{f}">{html.escape(FIELDS[f][0])} ({html.escape(FIELDS[f][1])})</label></td>'
        f'<td><input id="cxr-roi-{f}" type="number" step="any" min="0" data-field="{f}" style="width:7em"></td></tr>'
        for f in CALCULATOR_FIELDS)
    rows = "".join(f'<tr><td>{html.escape(label)}</td><td data-output="{k}" style="text-align:right"></td></tr>'
                   for k, (label, _) in OUTPUTS.items())
    return f"""<div id="cxr-roi" class="cxr-roi" style="max-width:100%;border:1px solid #ccc;padding:8px;font-size:0.9em">
<div><label>use case <select id="cxr-roi-preset">{presets}</select></label></div>
<div><label>performance measured on <select id="cxr-roi-data">{datas}</select></label>
<label>operating point <select id="cxr-roi-op"></select></label></div>
<p id="cxr-roi-story" style="font-style:italic;margin:4px 0"></p>
<div style="display:flex;flex-wrap:wrap;gap:16px">
<table class="cxr-roi-inputs"><tbody>{inputs}</tbody></table>
<div><p>model: <span id="cxr-roi-perf"></span></p>
<table class="cxr-roi-results"><tbody>{rows}</tbody></table>
<p id="cxr-roi-error" style="color:#b00020"></p></div></div>
<script type="application/json" id="cxr-roi-json">{data}</script>
<script>{script}</script>
</div>"""


def widget(perf_sets: dict[str, dict[str, Performance]], draws: int = 500, seed: int = 0):
    """The JupyterLab calculator: preset, data and operating point, sliders for the main inputs; the
    results, the uncertainty analysis and its histogram update live. The result table carries the
    inputs and the net value as data attributes, for the browser test."""
    import html

    import ipywidgets as w
    import matplotlib.pyplot as plt

    preset_box = w.Dropdown(options=list(PRESETS), value="default", description="use case")
    data_box = w.Dropdown(options=list(perf_sets), description="measured on")
    op_box = w.Dropdown(description="operating point")
    spec = {  # field -> (widget class, min, max, step)
        "studies_per_year": (w.IntSlider, 1_000, 300_000, 1_000),
        "prevalence_abnormal": (w.FloatSlider, 0.0, 1.0, 0.01),
        "prevalence_covid": (w.FloatSlider, 0.0, 1.0, 0.01),
        "read_s_without_ai": (w.FloatSlider, 1.0, 120.0, 0.1),
        "read_s_ai_normal": (w.FloatSlider, 0.0, 120.0, 0.1),
        "read_s_ai_flagged": (w.FloatSlider, 0.0, 120.0, 0.1),
        "radiologist_cost_per_hour": (w.FloatSlider, 0.0, 600.0, 5.0),
        "ai_cost_per_study": (w.FloatSlider, 0.0, 20.0, 0.05),
        "ai_cost_per_year": (w.FloatSlider, 0.0, 200_000.0, 1_000.0),
    }
    style, layout = {"description_width": "16em"}, w.Layout(width="36em")
    sliders = {f: cls(min=lo, max=hi, step=st, description=FIELDS[f][0], style=style, layout=layout,
                      continuous_update=False) for f, (cls, lo, hi, st) in spec.items()}
    story, result, plot = w.HTML(), w.HTML(), w.Output()
    busy = {"on": False}

    def site_now() -> Site:
        base = preset(preset_box.value)
        return base.replace(operating_point=op_box.value or base.operating_point,
                            **{f: (int(s.value) if f == "studies_per_year" else float(s.value)) for f, s in sliders.items()})

    def refresh(*_):
        if busy["on"]:
            return
        try:
            site = validate(site_now())
            perf = perf_sets[data_box.value].get(site.operating_point)
            if perf is None:
                raise InputError(f"operating_point: no measured performance for {site.operating_point} on this data")
            r, u = roi(site, perf), psa(site, perf, n=draws, seed=seed)
        except InputError as e:
            result.value = f'<p class="cxr-roi-error" style="color:#b00020">{html.escape(str(e))}</p>'
            return
        rows = "".join(f"<tr><td>{html.escape(label)}</td><td class='cxr-roi-{k}' style='text-align:right'>"
                       f"{format_output(k, r[k])}</td></tr>" for k, (label, _) in OUTPUTS.items())
        inputs = html.escape(json.dumps(dataclasses.asdict(site)))
        result.value = (f"<div class='cxr-roi-result' data-inputs='{inputs}' data-net='{r['net_annual_value']!r}' "
                        f"data-data='{html.escape(data_box.value)}'>"
                        f"<p>model: sensitivity {100 * perf.sensitivity:.1f}%, specificity {100 * perf.specificity:.1f}% "
                        f"({html.escape(perf.source)})</p><table>{rows}</table>"
                        f"<p>uncertainty ({u['n']} draws): median {money(u['median'])}, 90% interval "
                        f"{money(u['interval90'][0])} to {money(u['interval90'][1])}, P(net &gt; 0) = "
                        f"{100 * u['p_positive']:.0f}%</p></div>")
        with plot:
            plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 2.2))
            ax.hist(u["net_values"] / 1e3, bins=40, color="#4c72b0")
            ax.axvline(0, color="k", lw=1)
            ax.set_xlabel("net annual value ($K)")
            ax.set_yticks([])
            plt.show()

    def load_preset(*_):
        site, text = PRESETS[preset_box.value]
        busy["on"] = True
        from .metrics import OPERATING_POINTS

        op_box.options = [n for n, t, _ in OPERATING_POINTS if t == WORKFLOWS[site.workflow]]
        op_box.value = site.operating_point
        for f, s in sliders.items():
            s.value = getattr(site, f)
        story.value = f"<i>{html.escape(text)}</i>"
        busy["on"] = False
        refresh()

    preset_box.observe(load_preset, "value")
    for box in (data_box, op_box, *sliders.values()):
        box.observe(refresh, "value")
    load_preset()
    return w.VBox([preset_box, story, w.HBox([data_box, op_box]), *sliders.values(), result, plot])
