"""The ROI model's inputs: a site (`Site`, every default in `FIELDS` with its source or the word
"assumption"), its checks and parsing, and the model's performance at an operating point, read
from an evaluation record (`performance`), never typed in.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from cxr.core.metrics import OPERATING_POINTS

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
    "studies_per_year": ("studies per year", "studies", "assumption (one ED: ~4,500 a year, Hwang 2019, doi "
                         "10.1148/radiol.2019191225; a regional service: ~110,000-270,000, from news reports on NHS "
                         "Grampian and North East London, 2022, not checked against a primary source)"),
    "prevalence_abnormal": ("prevalence of abnormal studies", "share", "Hwang EJ et al., Radiology 2019, doi "
                            "10.1148/radiol.2019191225 (22.6% of ED chest radiographs)"),
    "prevalence_covid": ("prevalence of COVID-19", "share", "Cochrane review CD013639.pub4, 2021, doi "
                         "10.1002/14651858.CD013639.pub4 (10% to 80% in single EDs; 51% in enriched studies)"),
    "read_s_without_ai": ("reading time without AI", "s/study", "Shin HJ et al., npj Digit Med 2023, doi 10.1038/s41746-023-00829-4 (14.8 s)"),
    "read_s_ai_normal": ("reading time with AI, AI says normal", "s/study", "Shin 2023 (10.8 s)"),
    "read_s_ai_flagged": ("reading time with AI, AI flags", "s/study", "Shin 2023 (18.6 s)"),
    "radiologist_cost_per_hour": ("radiologist cost per hour", "$/h", "Insights Imaging 2023, doi 10.1186/s13244-023-01561-z "
                                  "(USA EUR 196/h, UK 127, Poland 45); USD 210 ~ EUR 196"),
    "ai_cost_per_study": ("AI price per study", "$/study", "assumption; no published high-income list price. In TB "
                          "screening in Pakistan: US$0.19-2.78 a screen (Bashir S et al., PLOS One 2022, doi "
                          "10.1371/journal.pone.0277393; the range as its summary gives it, tables not checked)"),
    "ai_cost_per_year": ("AI fixed cost per year", "$/year", "assumption"),
    "deployment_cost": ("one-off deployment cost", "$", "assumption"),
    "cost_missed": ("cost of a missed case", "$/case", "assumption (no published figure)"),
    "cost_false_alarm": ("cost of a false alarm (extra work-up)", "$/case", "CMS: RT-PCR $75 + $25 (COVID-19); "
                         "otherwise assumption"),
    "value_expedited": ("value of an abnormal study reported sooner", "$/case", "assumption: 0, as the LungIMPACT "
                        "trial (Woznitza N et al., Nat Med 2026, doi 10.1038/s41591-026-04253-5) found no faster diagnosis"),
    "reader_sensitivity": ("reader alone: sensitivity", "share", "assumption (abnormal); Borakati A et al., BMJ Open "
                           "2020;10:e042946, and Flor N et al., Emerg Radiol 2021: 56-79% for COVID-19"),
    "reader_specificity": ("reader alone: specificity for COVID-19", "share", "Borakati A et al., BMJ Open 2020;10:e042946; Flor 2021: 60-81%"),
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


#: the plausible range of every numeric input, in its unit: a value outside it is refused with a
#: message that names the input as the page labels it (the static calculator reads the same table)
BOUNDS = {
    "studies_per_year": (1, 10_000_000),  # one ED (~4,500) to a national service
    "prevalence_abnormal": (0.0, 1.0), "prevalence_covid": (0.0, 1.0),
    "read_s_without_ai": (1.0, 600.0), "read_s_ai_normal": (0.0, 600.0), "read_s_ai_flagged": (1.0, 600.0),
    "radiologist_cost_per_hour": (0.0, 2_000.0), "ai_cost_per_study": (0.0, 1_000.0),
    "ai_cost_per_year": (0.0, 10_000_000.0), "deployment_cost": (0.0, 100_000_000.0),
    "cost_missed": (0.0, 10_000_000.0), "cost_false_alarm": (0.0, 1_000_000.0), "value_expedited": (0.0, 1_000_000.0),
    "reader_sensitivity": (0.0, 1.0), "reader_specificity": (0.0, 1.0),
}


def shown_number(v: float) -> str:
    """A number as a message quotes it: grouped digits, never exponent notation."""
    if abs(v) >= 1e12:
        return "a number that large"
    if v != 0 and abs(v) < 1e-6:
        return "a number that close to 0"
    text = f"{v:,.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def validate(site: Site) -> Site:
    """The site unchanged, or an InputError naming the first bad input (as the page labels it) and
    what it must be."""
    if site.workflow not in WORKFLOWS:
        raise InputError(f"workflow: {site.workflow!r} is not one of {', '.join(WORKFLOWS)}")
    ops = {name: task for name, task, _ in OPERATING_POINTS}
    if site.operating_point not in ops:
        raise InputError(f"operating point: {site.operating_point!r} is not one of {', '.join(ops)}")
    if ops[site.operating_point] != WORKFLOWS[site.workflow]:
        usable = [n for n, t in ops.items() if t == WORKFLOWS[site.workflow]]
        raise InputError(f"operating point: {site.operating_point!r} is for the {ops[site.operating_point]} task; "
                         f"the {site.workflow} workflow needs one of {', '.join(usable)}")
    for name in NUMERIC:
        v, label, unit = getattr(site, name), FIELDS[name][0], FIELDS[name][1]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{label}: {v!r} is not a number" if isinstance(v, str) else f"{label}: not a number")
        lo, hi = BOUNDS[name]
        if name in SHARES and not 0 <= v <= 1:
            raise InputError(f"{label}: {shown_number(v)} is not a share between 0 and 1 (give 0.2 for 20%)")
        if not lo <= v <= hi:
            raise InputError(f"{label}: {shown_number(v)} is {'below' if v < lo else 'above'} the plausible range "
                             f"{shown_number(lo)} to {shown_number(hi)} {unit}")
    if site.prevalence_covid > site.prevalence_abnormal and site.workflow != "covid_screening":
        raise InputError(f"{FIELDS['prevalence_covid'][0]} ({shown_number(site.prevalence_covid)}) cannot be above the "
                         f"{FIELDS['prevalence_abnormal'][0]} ({shown_number(site.prevalence_abnormal)}): COVID-19 studies "
                         "are abnormal studies; raise the one or lower the other")
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
