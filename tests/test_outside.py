"""The outside comparison's record (issue 38) on a toy table: the rule reads validation and the
outside hospital's normals only, and the words say whether the choice ships."""
from __future__ import annotations

from cxr.core.config import CLASSES
from cxr.report import outside_experiment as oe


def row(name, val_acc, site_share, test_acc=0.96, digests=("a",), covid_hidden=0.3, external_normals=20):
    sens = {c: 0.95 for c in CLASSES}
    return {"name": name, "tries": "a toy", "models": {d: {"model_sha256": d} for d in digests},
            "val": {"accuracy": val_acc, "balanced_accuracy": val_acc, "sensitivity": sens, "twin_agreement": 0.97},
            "test": {"accuracy": test_acc, "sensitivity": sens},
            "lungs_hidden": {"sensitivity": {c: covid_hidden for c in CLASSES}, "covid_vs_normal_auc": 0.9},
            "transplant": {"overall": {"films": 0}},
            "site": {"normals": 200, "normals_called_covid": int(site_share * 200), "normals_called_covid_share": site_share},
            "external": {"normals": 32, "normals_called_covid": external_normals, "covid": 26, "covid_found": 21}}


def record(rows):
    from cxr.core import targets

    return {"candidates": rows, "chosen": rows[targets.choose_for_outside([oe.rule_numbers(r) for r in rows])]["name"]}


def test_the_rule_reads_validation_and_the_outside_hospital_never_test_or_external_numbers():
    shipped = row("whole film", 0.96, 0.33, digests=("s",))
    better_outside = row("lung crop", 0.95, 0.12, test_acc=0.5, external_normals=31)  # test and external ignored
    below_floor = row("low resolution", 0.93, 0.05)
    rec = record([shipped, better_outside, below_floor])
    assert rec["chosen"] == "lung crop"
    assert set(oe.rule_numbers(better_outside)) == {"accuracy", "sensitivity", "twin_agreement", "balanced_accuracy",
                                                    "site_normal_called_covid"}


def test_the_words_say_whether_the_rules_choice_ships():
    shipped = row("whole film", 0.96, 0.33, digests=("s",))
    average = row("average of the two", 0.96, 0.20, digests=("wl",))  # one file, not the shipped weights
    rec = record([shipped, average])
    assert rec["chosen"] == "average of the two"
    words = oe.summary(rec, "s")
    assert words.startswith("Two candidate models") and "Average of the two does not ship yet" in words
    assert "whole film ships" in words and "20.0%" in words and "33.0%" in words
    alone = record([shipped])
    assert "does not ship" not in oe.summary(alone, "s") and "does not ship" not in oe.verdict(alone, "s")
    assert oe.verdict(rec, "wl").endswith("It is the model that ships, and every chapter describes it.")
    assert list(oe.table(rec, "wl").columns) == ["whole film", "average (shipped, chosen)"]
    v = oe.verdict(rec, "s")
    assert "2 meet every floor" in v and "misses" in v  # 20% of the outside normals is above the 10% target
    t = oe.table(rec)
    assert list(t.columns) == ["whole film", "average (chosen)"]
    assert list(oe.table(rec, "s").columns) == ["whole film (shipped)", "average (chosen)"]
    assert list(oe.table(rec, "wl").columns) == ["whole film", "average (shipped, chosen)"]
    assert t.loc["site normals called COVID-19", "average (chosen)"] == "20.0% \u2717"  # missed: the target is 10%
    assert t.loc["test accuracy", "whole film"] == "96.0%"
    m = oe.measures(rec)
    assert m.loc["meets every floor"].tolist() == ["yes", "yes"] and m.loc["validation twin agreement", "whole film"] == "97.0%"
