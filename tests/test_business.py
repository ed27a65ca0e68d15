"""The ROI model: hand-computed cases, invariants, reproducible uncertainty, clear errors, the
command line and the JupyterLab widget (the static calculator is checked in Chromium in
test_book.py)."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from cxr.cli import main
from cxr.core import metrics
from cxr.roi import calculator, cases as roi_cases, format, inputs as roi_inputs, model, uncertainty
from cxr.roi.inputs import InputError, Performance, Site


def perf(task="abnormal", op="abnormal@95", se=0.9, sp=0.5, n=100) -> Performance:
    tp, tn = round(se * n), round(sp * n)
    return Performance(op, task, se, sp, tp, n - tp, tn, n - tn, "test")


def record(se=0.9, sp=0.5) -> dict:
    """An evaluation record as `cxr evaluate --split test` writes it, with every operating point."""
    ops = {}
    for name, task, target in metrics.OPERATING_POINTS:
        m = {"tp": int(90 * se / 0.9), "fn": 100 - int(90 * se / 0.9), "tn": int(100 * sp), "fp": 100 - int(100 * sp),
             "sensitivity": {"value": se}, "specificity": {"value": sp}}
        ops[name] = {"task": task, "target_sensitivity": target, "threshold": 0.5, "measured": m}
    return {"data": "/somewhere/db", "split": "test", "operating_points": ops}


def test_prioritisation_by_hand():
    site = Site(workflow="prioritisation", operating_point="abnormal@95", studies_per_year=3600, prevalence_abnormal=0.5,
                prevalence_covid=0.1, read_s_without_ai=20, read_s_ai_normal=10, read_s_ai_flagged=20,
                radiologist_cost_per_hour=100, ai_cost_per_study=1, ai_cost_per_year=100, deployment_cost=1000)
    r = model.roi(site, perf(se=1.0, sp=1.0))
    # half flagged (read in 20 s), half called normal (10 s): 15 s against 20 s, 5 s x 3600 = 5 h
    assert r["flagged_share"] == pytest.approx(0.5)
    assert r["reader_hours_saved"] == pytest.approx(5.0)
    assert r["staff_cost_saved"] == pytest.approx(500.0)
    assert r["ai_cost"] == pytest.approx(3700.0)
    assert r["net_annual_value"] == pytest.approx(-3200.0)
    assert r["payback_years"] == math.inf and r["extra_missed"] == 0 and r["worklist_share_removed"] == 0
    assert r["reading_time_reduction"] == pytest.approx(0.25)


def test_rule_out_by_hand():
    site = Site(workflow="rule_out", operating_point="abnormal@99", studies_per_year=1000, prevalence_abnormal=0.2,
                prevalence_covid=0.1, read_s_without_ai=20, read_s_ai_flagged=20, radiologist_cost_per_hour=360,
                ai_cost_per_study=0, ai_cost_per_year=0, cost_missed=10, reader_sensitivity=0.9, deployment_cost=100)
    r = model.roi(site, perf(op="abnormal@99", se=0.9, sp=0.5))
    # flagged: 0.2 x 0.9 + 0.8 x 0.5 = 0.58, read in 20 s; the other 42% are not read
    assert r["flagged_share"] == pytest.approx(0.58)
    assert r["worklist_share_removed"] == pytest.approx(0.42)
    assert r["reader_hours_saved"] == pytest.approx(1000 * (20 - 11.6) / 3600)
    assert r["staff_cost_saved"] == pytest.approx(1000 * 8.4 / 10)
    # missed: abnormal studies the AI clears that the reader would have caught: 1000 x 0.2 x 0.9 x 0.1
    assert r["extra_missed"] == pytest.approx(18.0)
    assert r["net_annual_value"] == pytest.approx(840 - 180)
    assert r["payback_years"] == pytest.approx(100 / 660)


def test_covid_screening_by_hand():
    site = Site(workflow="covid_screening", operating_point="covid@95", studies_per_year=1000, prevalence_abnormal=0.3,
                prevalence_covid=0.2, read_s_without_ai=10, read_s_ai_normal=10, read_s_ai_flagged=10,
                ai_cost_per_study=0, ai_cost_per_year=0, cost_missed=100, cost_false_alarm=10,
                reader_sensitivity=0.7, reader_specificity=0.8)
    r = model.roi(site, perf(task="covid", op="covid@95", se=0.9, sp=0.6))
    assert r["extra_missed"] == pytest.approx(1000 * 0.2 * (0.7 - 0.9))  # fewer misses than the reader: negative
    assert r["extra_workups"] == pytest.approx(1000 * 0.8 * (0.8 - 0.6))
    assert r["net_annual_value"] == pytest.approx(-(-40 * 100) - 160 * 10)


@pytest.mark.parametrize("workflow,op,task", [("prioritisation", "abnormal@95", "abnormal"),
                                              ("rule_out", "abnormal@99", "abnormal"),
                                              ("covid_screening", "covid@95", "covid")])
def test_invariants(workflow, op, task):
    rng = np.random.default_rng(1)
    for _ in range(50):
        se, sp = rng.uniform(0.5, 1, 2)
        p = perf(task=task, op=op, se=se, sp=sp)
        site = Site(workflow=workflow, operating_point=op, prevalence_abnormal=rng.uniform(0.2, 0.5),
                    prevalence_covid=rng.uniform(0, 0.2), read_s_ai_normal=rng.uniform(5, 14),
                    read_s_ai_flagged=rng.uniform(5, 14), read_s_without_ai=14.8)
        r = model.roi(site, p)
        more = model.roi(site.replace(studies_per_year=site.studies_per_year * 2), p)
        # the AI saves time per study here, so more volume never lowers the hours saved
        assert r["reader_hours_saved"] > 0 and more["reader_hours_saved"] >= r["reader_hours_saved"]
        # a dearer AI never raises the net value; a costlier miss never raises it
        dearer = model.roi(site.replace(ai_cost_per_study=site.ai_cost_per_study + 1), p)
        assert dearer["net_annual_value"] < r["net_annual_value"]
        if workflow == "rule_out":
            costlier = model.roi(site.replace(cost_missed=site.cost_missed * 2), p)
            assert costlier["net_annual_value"] <= r["net_annual_value"]
            better = model.roi(site, dataclasses.replace(p, sensitivity=min(1.0, se + 0.05)))
            assert better["extra_missed"] <= r["extra_missed"]


def test_psa_is_reproducible_and_brackets_the_point_estimate():
    site, p = Site(), perf()
    a, b = uncertainty.psa(site, p, n=400, seed=3), uncertainty.psa(site, p, n=400, seed=3)
    assert np.array_equal(a["net_values"], b["net_values"])
    c = uncertainty.psa(site, p, n=400, seed=4)
    assert not np.array_equal(a["net_values"], c["net_values"])
    lo, hi = a["interval90"]
    assert lo < a["median"] < hi
    assert 0 <= a["p_positive"] <= 1
    draws = uncertainty.draw_inputs(site, 1000, seed=0)
    for name, (kind, low, high, _) in roi_inputs.UNCERTAIN.items():
        base = getattr(site, name)
        lo_b, hi_b = (low, high) if kind == "absolute" else (base * low, base * high)
        assert draws[name].min() >= min(lo_b, 1.0 if name in roi_inputs.SHARES else lo_b) - 1e-9
        assert draws[name].max() <= hi_b + 1e-9


def test_tornado_and_break_even():
    site, p = Site(), perf()
    t = uncertainty.tornado(site, p)
    assert list(t.swing) == sorted(t.swing, reverse=True)
    assert t.input.iloc[0] == "AI price per study"  # at the default site the licence dominates
    grid = uncertainty.break_even(site, p, np.array([0.0, 2.0]), np.array([0.0, 4.0]))
    assert grid.loc[0.0, 2.0] == pytest.approx(model.roi(site.replace(read_s_ai_normal=14.8), p)["net_annual_value"])
    assert grid.loc[4.0, 0.0] > grid.loc[0.0, 0.0] and grid.loc[4.0, 0.0] > grid.loc[4.0, 2.0]


def test_volume_for_a_claim():
    site = Site(workflow="rule_out", operating_point="abnormal@99", cost_missed=0.0, ai_cost_per_study=0.1)
    p = perf(op="abnormal@99", se=0.99, sp=0.6)
    v = uncertainty.volume_for(site, p, 1e6)
    assert model.roi(site.replace(studies_per_year=v), p)["net_annual_value"] == pytest.approx(1e6)
    assert uncertainty.volume_for(Site(), perf(), 1e6) == math.inf  # prioritisation at $2 a study never pays


@pytest.mark.parametrize("change,field", [
    (dict(studies_per_year=-1), "studies per year: -1 is below"), (dict(prevalence_abnormal=1.5), "prevalence of abnormal"),
    (dict(ai_cost_per_study=float("nan")), "AI price per study: not a number"),
    (dict(reader_sensitivity=-0.1), "reader alone: sensitivity"), (dict(workflow="teleport"), "workflow"),
    (dict(operating_point="covid@95"), "operating point"), (dict(operating_point="abnormal@50"), "operating point"),
    (dict(radiologist_cost_per_hour="lots"), "radiologist cost per hour: 'lots' is not a number"),
    (dict(studies_per_year=1e308), "studies per year: a number that large is above the plausible range 1 to 10,000,000"),
    (dict(studies_per_year=99999999999999999999), "studies per year: a number that large"),
    (dict(read_s_without_ai=1e-320), "reading time without AI: a number that close to 0 is below"),
    (dict(read_s_without_ai=0), "reading time without AI: 0 is below the plausible range 1 to 600 s/study"),
    (dict(cost_missed=float("inf")), "cost of a missed case: not a number"),
])
def test_bad_inputs_name_the_input_as_the_page_labels_it(change, field):
    with pytest.raises(InputError, match=re.escape(field)):
        roi_inputs.validate(Site().replace(**change))


def test_a_wrong_abnormal_prevalence_names_both_prevalences():
    with pytest.raises(InputError, match=re.escape("prevalence of COVID-19 (0.1) cannot be above the prevalence of "
                                                   "abnormal studies (0.05)")):
        roi_inputs.validate(Site().replace(prevalence_abnormal=0.05))


@pytest.mark.parametrize("key,value,shown", [
    ("payback_years", math.inf, "never"), ("payback_years", 0.018, "under a month"), ("payback_years", 0.5, "6 months"),
    ("payback_years", 2.4, "2.4 years"), ("extra_missed", -6400.0, "6,400.0 fewer cases/year"),
    ("extra_missed", 12.0, "12.0 cases/year"), ("net_annual_value", 2.5e9, "$2.50B"),
    ("reading_time_reduction", -math.inf, "n/a"), ("reader_hours_saved", math.nan, "n/a"),
])
def test_outputs_never_show_nonsense(key, value, shown):
    assert format.format_output(key, value) == shown


def test_text_inputs_and_presets():
    assert roi_cases.site_from("ed_triage", {"studies_per_year": "40,000"}).studies_per_year == 40_000
    with pytest.raises(InputError, match="studies_per_year: 'many' is not a number"):
        roi_cases.site_from("default", {"studies_per_year": "many"})
    with pytest.raises(InputError, match="unknown field 'volume'"):
        roi_cases.site_from("default", {"volume": "3"})
    with pytest.raises(InputError, match="unknown preset 'mars'"):
        roi_cases.preset("mars")
    for name, (site, story) in roi_cases.PRESETS.items():
        roi_inputs.validate(site)
        assert story
    assert set(roi_cases.ORIGINAL_CLAIMS) <= set(roi_cases.PRESETS)


def test_performance_is_read_from_the_record(tmp_path: Path):
    rec = record(se=0.9, sp=0.5)
    p = roi_inputs.performance(rec, "abnormal@98")
    assert (p.sensitivity, p.specificity, p.task) == (0.9, 0.5, "abnormal")
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(rec))
    assert roi_inputs.performance(path, "covid@95").task == "covid"
    with pytest.raises(FileNotFoundError, match="cxr evaluate"):
        roi_inputs.performance(tmp_path / "missing.json", "covid@95")
    with pytest.raises(InputError, match="no operating points"):
        roi_inputs.performance({"data": "x"}, "covid@95")
    with pytest.raises(InputError, match="operating_point"):
        roi_inputs.performance(rec, "covid@50")
    with pytest.raises(InputError, match="covid task"):
        model.roi(Site(), roi_inputs.performance(rec, "covid@95").__class__(**{**p.to_dict(), "task": "covid"}))


def test_use_cases_and_verdicts(tmp_path: Path):
    sets = roi_inputs.performance_sets({"database": record(0.99, 0.99), "external": record(0.95, 0.4)})
    cases = roi_cases.use_cases(sets, n=200, seed=0)
    assert set(cases) == set(roi_cases.ORIGINAL_CLAIMS)
    for c in cases.values():
        assert set(c["by_data"]) == {"database", "external"} and c["verdict"]
    # a claim far above the interval is called unsupported, with what it would need
    assert "not supported" in cases["ed_triage"]["verdict"]
    table = roi_cases.use_case_table(cases)
    assert len(table) == 5 and ("", "original claim") in table.columns
    assert "**emergency department triage**" in roi_cases.verdicts_markdown(cases)
    path = roi_cases.write_record(cases, tmp_path / "business.json")
    saved = json.loads(path.read_text())
    assert saved["use_cases"]["ed_triage"]["by_data"]["database"]["result"]["payback_years"] is None


def test_roi_command(tmp_path: Path, capsys):
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(record()))
    assert main.main(["roi", "--list"]) == 0
    assert "pandemic_surveillance" in capsys.readouterr().out
    assert main.main(["roi", "--evaluation", str(path), "--preset", "ed_triage", "--set", "studies_per_year=40000",
                     "--draws", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    site = roi_cases.site_from("ed_triage", {"studies_per_year": 40000})
    expected = model.roi(site, roi_inputs.performance(path, site.operating_point))
    assert out["result"]["net_annual_value"] == pytest.approx(expected["net_annual_value"])
    assert main.main(["roi", "--evaluation", str(path), "--set", "prevalence_covid=2"]) == 2
    assert "prevalence of COVID-19: 2 is not a share between 0 and 1" in capsys.readouterr().err
    assert main.main(["roi", "--evaluation", str(path), "--set", "speed"]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err
    assert main.main(["roi", "--preset", "nowhere", "--evaluation", str(path)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main.main(["roi", "--evaluation", str(tmp_path / "none.json")]) == 2
    assert "cxr evaluate" in capsys.readouterr().err


def _controls(box) -> list:
    """Every control of a widget tree, depth first."""
    out = []
    for c in getattr(box, "children", ()):
        out += [c] + _controls(c)
    return out


def _control(box, description: str):
    return next(c for c in _controls(box) if getattr(c, "description", "") == description)


def _result_attrs(box) -> dict:
    import re

    html = next(c for c in _controls(box) if "cxr-roi-result" in str(getattr(c, "value", "")) or
                "cxr-roi-error" in str(getattr(c, "value", ""))).value
    net = re.search(r"data-net='([^']+)'", html)
    inputs = re.search(r"data-inputs='([^']+)'", html)
    import html as h
    return {"net": float(net.group(1)) if net else None, "inputs": json.loads(h.unescape(inputs.group(1))) if inputs else None,
            "html": html}


def test_widget_updates_and_matches_the_model():
    sets = roi_inputs.performance_sets({"database": record(0.99, 0.9), "external": record(0.95, 0.4)})
    box = calculator.widget(sets, draws=50)
    first = _result_attrs(box)
    slider = _control(box, "studies per year")
    slider.value = 120_000
    after = _result_attrs(box)
    assert after["net"] != first["net"] and after["inputs"]["studies_per_year"] == 120_000
    site = Site(**after["inputs"])
    assert after["net"] == pytest.approx(model.roi(site, sets["database"][site.operating_point])["net_annual_value"])
    preset_box = _control(box, "use case")
    preset_box.value = "pandemic_surveillance"
    assert _result_attrs(box)["inputs"]["workflow"] == "covid_screening"
    prev = _control(box, "prevalence of abnormal studies")
    prev.value = 0.0
    preset_box.value = "radiology_workflow"
    covid, abnormal = _control(box, "prevalence of COVID-19"), _control(box, "prevalence of abnormal studies")
    abnormal.value, covid.value = 0.05, 0.5
    # the error names both inputs as the reader sees them
    assert "prevalence of COVID-19 (0.5) cannot be above the prevalence of abnormal studies (0.05)" in _result_attrs(box)["html"]
    # every input can be changed, with a message for an implausible value, and reset puts the use case back
    missed = _control(box, "cost of a missed case")
    missed.value = 1e308
    assert "cost of a missed case: a number that large is above the plausible range" in _result_attrs(box)["html"]
    _control(box, "reset to the use case").click()
    assert _result_attrs(box)["inputs"]["cost_missed"] == roi_cases.preset("radiology_workflow").cost_missed


def test_static_calculator_is_self_contained():
    sets = roi_inputs.performance_sets({"database": record()})
    page = calculator.calculator_html(sets)
    assert "http://" not in page and "https://" not in page
    assert 'id="cxr-roi-json"' in page and "function roi(" in page
    data = calculator.calculator_data(sets)
    assert set(data["presets"]) == set(roi_cases.PRESETS)
    assert data["performance"]["database"]["abnormal@95"]["sensitivity"] == 0.9


def test_break_even_price_and_summary_of_use_cases():
    site, p = Site(), perf()
    price = uncertainty.break_even_price(site, p)
    if price > 0:
        assert model.roi(site.replace(ai_cost_per_study=price), p)["net_annual_value"] == pytest.approx(0, abs=1e-6)
    cheap = site.replace(ai_cost_per_year=0.0, read_s_ai_normal=5.0)
    price = uncertainty.break_even_price(cheap, p)
    assert price > 0
    assert model.roi(cheap.replace(ai_cost_per_study=price), p)["net_annual_value"] == pytest.approx(0, abs=1e-6)
    sets = roi_inputs.performance_sets({"database": record(0.99, 0.99), "external": record(0.95, 0.2)})
    cases = roi_cases.use_cases(sets, n=200, seed=0)
    s = roi_cases.summarise_use_cases(cases)
    assert s["money_claims"] == 4 and 0 <= s["claims_above_interval"] <= 4
    assert set(s["pays_first_not_second"]) <= set(s["pays"]["database"])
    for name in s["pays"]["database"]:
        assert cases[name]["by_data"]["database"]["psa"]["p_positive"] >= 0.5
