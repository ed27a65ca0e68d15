"""Words that state a direction or a size follow the numbers (issue 26): chapter 06's sentences are
chosen by code, and they flip when the result flips."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from cxr.assess import adapt
from cxr.core import book
from cxr.core.config import CLASSES, repo_root
from cxr.report import prose


def _record(confusion, covid_sens, normal_sens, accuracy):
    return {"confusion": confusion, "accuracy": accuracy, "accuracy_ci": [accuracy - 0.05, accuracy + 0.05], "n": int(np.sum(confusion)),
            "per_class": {c: {"sensitivity": {"COVID": covid_sens, "Normal": normal_sens}.get(c, 0.5)} for c in CLASSES}}


DATABASE = _record(np.diag([100, 100, 100, 100]).tolist(), 0.96, 0.97, 0.97)


def test_share_words_and_verbs():
    assert [book.share_word(k, 10) for k in (0, 3, 5, 6, 10)] == ["none", "a minority", "half", "most", "all"]
    assert (book.moves(0.5, 0.6), book.moves(0.6, 0.5), book.moves(0.5, 0.5)) == ("rises", "falls", "stays")


def test_the_external_sentences_say_what_the_confusion_matrix_shows():
    # the published case: nearly everything called COVID-19
    covid_everywhere = _record([[30, 0, 0, 0], [10, 2, 0, 0], [25, 0, 7, 0], [20, 0, 0, 5]], 1.0, 7 / 32, 0.44)
    w = prose.external_words(covid_everywhere, DATABASE)
    assert "sensitivity rises to 100.0%" in w["ext_covid_reading"] and "most of the external films" in w["ext_covid_reading"]
    assert "calling COVID-19 where there is none" in w["ext_covid_reading"]
    assert "the column with the most calls is COVID" in w["ext_caption"]
    assert "Normal called COVID (25 of 32 Normal films)" in w["ext_engineer"]
    # the smoke build's case: nearly everything called Normal (the direction flips)
    normal_everywhere = _record([[1, 0, 30, 0], [0, 0, 12, 0], [0, 0, 32, 0], [0, 0, 25, 0]], 1 / 31, 1.0, 33 / 100)
    w = prose.external_words(normal_everywhere, DATABASE)
    assert "sensitivity falls to 3.2%" in w["ext_covid_reading"] and "a minority of the external films" in w["ext_covid_reading"]
    assert "none of the normal films" in w["ext_covid_reading"] and "where there is none" not in w["ext_covid_reading"]
    assert "the column with the most calls is Normal" in w["ext_caption"]
    assert "accuracy falls to 33.0%" in w["ext_radiologist"] and "COVID called Normal" in w["ext_engineer"]


def _curve(prior_covid, prior_site, head_ext):
    rows = [("none", 0, 33.0, 96.3, 27.9), ("prior", 25, prior_site, prior_covid, 30.0), ("head", 25, 5.0, 95.0, head_ext)]
    return pd.DataFrame([{"method": m, "local films": n, "site false-COVID %": s, "COVID sensitivity %": c,
                          "external accuracy %": e} for m, n, s, c, e in rows])


def test_the_adaptation_sentences_follow_the_curve():
    w = adapt.curve_words(_curve(prior_covid=80.0, prior_site=2.0, head_ext=26.0))
    assert "called COVID-19 falls to 2.0%" in w["prior_words"] and "database falls to 80.0%" in w["prior_words"]
    assert "accuracy falls to 26.0%" in w["ext_words"]
    w = adapt.curve_words(_curve(prior_covid=97.0, prior_site=40.0, head_ext=45.0))
    assert "called COVID-19 rises to 40.0%" in w["prior_words"] and "database rises to 97.0%" in w["prior_words"]
    assert "accuracy rises to 45.0%" in w["ext_words"]


def test_chapter_06_types_no_direction_or_size_beside_its_numbers():
    """Its prose may explain, but a word that says which way a number went, or how much of
    something there is, comes from the code (a glued sentence) or is not there."""
    nb = json.loads((repo_root() / "notebooks" / "06_external.ipynb").read_text())
    prose = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    typed = re.findall(r"\b(stays high|only because|calls most|most things|flags most|silences|does not help|"
                       r"nearly everything|partly reads)\b", prose)
    assert not typed, typed


def test_the_ood_sentence_follows_the_flag_rates():
    from cxr.model import ood

    caught = {"not chest radiographs": {"n": 26, "flagged": 26}, "external: COVID": {"n": 26, "flagged": 4},
              "external: Normal": {"n": 32, "flagged": 3}}
    text = ood.flag_words(caught, external_accuracy=0.279)
    assert "catches all of the pictures" in text and "flags a minority (7 of 58)" in text and "right on 27.9%" in text
    missed = {"not chest radiographs": {"n": 26, "flagged": 5}, "external: Normal": {"n": 32, "flagged": 30}}
    text = ood.flag_words(missed)
    assert "catches a minority of the pictures" in text and "flags most (30 of 32)" in text


def test_chapter_03_says_why_it_shows_no_training_history():
    from pathlib import Path
    from types import SimpleNamespace

    one = SimpleNamespace(checkpoint=Path("m.pt"), name="run-a", meta=lambda: {})
    two = SimpleNamespace(checkpoint=Path("m.pt"), name="whole: a + lungs: b", meta=lambda: {"members": {"whole": {}}})
    assert "does not carry its run's training history" in prose.training_text(None, one)
    said = prose.training_text(None, two)
    assert "holds two networks" in said and "retrains both" in said
