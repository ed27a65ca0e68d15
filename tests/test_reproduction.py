"""The reproduce verdict (issue 38) on toy pairs: bitwise equal, within the seed spread, and not."""
from __future__ import annotations

import numpy as np
import pytest

from cxr.assess import reproduction
from cxr.core.config import CLASSES

SPREAD = {"test_accuracy": 0.01, **{f"test_sensitivity_{c}": 0.03 for c in CLASSES}}


def toy(n_per_class=100, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    p = np.full((len(y), len(CLASSES)), 0.05)
    p[np.arange(len(y)), y] = 0.85
    wrong = rng.choice(len(y), len(y) // 25, replace=False)  # 4% wrong
    p[wrong] = np.roll(p[wrong], 1, axis=1)
    return y, p


def flip(p, rows, to):
    q = p.copy()
    q[rows] = 0.05
    q[rows, to] = 0.85
    return q


def test_equal_weights_reproduce_bit_for_bit():
    y, p = toy()
    v = reproduction.verdict(True, reproduction.compare(y, p, p), SPREAD)
    assert v["reproduced"] and v["how"] == "bitwise"


def test_a_few_changed_calls_within_the_seed_spread_reproduce():
    y, p = toy()
    q = flip(p, [0, 150], to=3)  # two calls move out of 400: 99.5% agree
    c = reproduction.compare(y, p, q)
    assert c["calls_agreeing"] == pytest.approx(0.995) and c["calls_differing"] == 2
    v = reproduction.verdict(False, c, SPREAD)
    assert v["reproduced"] and v["how"] == "within the seed spread"


def test_too_few_agreeing_calls_or_a_metric_beyond_its_spread_do_not():
    y, p = toy()
    many = flip(p, np.arange(0, 400, 40), to=2)  # 10 calls move: 97.5% agree
    v = reproduction.verdict(False, reproduction.compare(y, p, many), SPREAD)
    assert not v["reproduced"] and any("below 99%" in r for r in v["reasons"])
    # 99.5% agree, but both changed calls are COVID-19 films lost: its sensitivity falls 2 points, the
    # spread allows 1
    v = reproduction.verdict(False, reproduction.compare(y, p, flip(p, [1, 2], to=2)),
                             SPREAD | {"test_sensitivity_COVID": 0.01})
    assert not v["reproduced"] and any("test_sensitivity_COVID" in r for r in v["reasons"])
    assert not reproduction.verdict(False, reproduction.compare(y, p, p), {})["reproduced"]  # no spread: no judgement


def test_the_paired_interval_and_mcnemar_read_only_the_discordant_films():
    a = np.array([True] * 90 + [False] * 10)
    m = reproduction.paired(a, a)
    assert m["difference"] == 0 and m["ci"] == [0, 0] and m["mcnemar_p"] == 1.0
    b = a.copy()
    b[:8] = False  # the second model loses 8 films the first got right
    m = reproduction.paired(a, b)
    assert m["only_a"] == 8 and m["only_b"] == 0 and m["difference"] == pytest.approx(-0.08)
    assert m["ci"][1] < 0 and m["mcnemar_p"] < 0.01


def test_the_machine_names_what_decides_the_arithmetic():
    m = reproduction.machine()
    assert m["torch_threads"] >= 1 and set(m["libraries"]) >= {"numpy", "opencv", "pillow", "torch", "albumentations"}


def test_the_appendix_table_says_the_verdict_and_the_times_beside_the_books():
    y, p = toy()
    q = flip(p, [0, 150], to=3)
    c = reproduction.compare(y, p, q)
    rec = {"verdict": reproduction.verdict(False, c, SPREAD), "test": c, "weights_equal": False,
           "largest_probability_difference": 0.31, "retrained_wall_seconds": 1194.0, "make_reproduce_seconds": 1860.0,
           "machine": reproduction.machine(), "retrained_run": "finetune-full-x", "shipped_from": "finetune-full-y"}
    md = reproduction.markdown(rec, {"chapters": {"00": {"seconds": 60.0}, "01": {"seconds": 120.0}}})
    assert "reproduced (within the seed spread)" in md and "99.50% (2 of 400 differ)" in md
    assert "19.9 min" in md and "31.0 min (target at most 45 min)" in md and "| 3.0 min |" in md
    assert "0.31" in md and "Lung Opacity" in md and "Lung_Opacity" not in md
    # a record without the times (an older one) says only what it has
    md = reproduction.markdown({k: v for k, v in rec.items() if "seconds" not in k})
    assert "make reproduce" not in md and "verdict" in md
