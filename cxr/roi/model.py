"""What the model could be worth to a site: a small, explicit return-on-investment model (`roi`).

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

import math

from cxr.roi.inputs import WORKFLOWS, InputError, Performance, Site, validate


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
