"""Site adaptation: the refit on planted site-specific normals, the adapted checkpoint, bad input."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import synthetic_xray, write_dataset

from cxr.assess import adapt
from cxr.cli import main
from cxr.core.config import CLASSES, get_config
from cxr.model import checkpoints
from cxr.train import run as train

COVID, NORMAL = CLASSES.index("COVID"), CLASSES.index("Normal")


def _clusters(n_per_class: int, dim: int = 16, seed: int = 0, shift: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    centres = np.eye(len(CLASSES), dim) * 4
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    x = centres[y] + rng.normal(0, 1, (len(y), dim))
    return (x + (shift if shift is not None else 0)).astype(np.float32), y


def test_refit_on_planted_site_normals_lowers_false_covid_on_held_out_films_of_that_site():
    """The site's normals sit towards the COVID cluster (a site effect); a head fitted on the
    database calls most of them COVID-19. Refitted with 20 of them, it calls the held-out ones
    Normal and keeps the database."""
    x_db, y_db = _clusters(100)
    site_shift = np.zeros(16, np.float32)
    site_shift[[COVID, NORMAL]] = [3.0, -1.5]  # towards COVID, away from Normal
    site_shift[8] = 4.0  # and a feature only this site has
    rng = np.random.default_rng(1)
    x_site = (np.eye(len(CLASSES), 16)[NORMAL] * 4 + site_shift + rng.normal(0, 1, (80, 16))).astype(np.float32)
    y_site = np.full(80, NORMAL)
    w0, b0 = adapt.fit_head(torch.zeros(4, 16), torch.zeros(4), (x_db, y_db), (np.zeros((0, 16)), np.zeros(0, int)))
    before = adapt.proba(w0, b0, x_site[20:]).argmax(1)
    assert np.mean(before == COVID) > 0.5  # the problem is planted
    x_test, y_test = _clusters(50, seed=2)
    for method in adapt.METHODS:
        w, b = adapt.fit_head(w0, b0, (x_db, y_db), (x_site[:20], y_site[:20]), method=method)
        after = adapt.proba(w, b, x_site[20:]).argmax(1)
        assert np.mean(after == COVID) < np.mean(before == COVID) / 2, method
        if method == "head":
            assert np.mean(after == NORMAL) >= 0.85
            kept = np.mean(adapt.proba(w, b, x_test).argmax(1) == y_test)
            assert kept >= np.mean(adapt.proba(w0, b0, x_test).argmax(1) == y_test) - 0.03  # the database is kept
    with pytest.raises(ValueError, match="Unknown method"):
        adapt.fit_head(w0, b0, (x_db, y_db), (x_site, y_site), method="magic")


@pytest.fixture
def tiny_model(home: Path, tmp_path: Path, monkeypatch):
    ds = write_dataset(tmp_path / "tiny", per_class=10)
    monkeypatch.setenv("CXR_DATA_DIR", str(ds))
    cfg = get_config("full", epochs=1, patience=5, views=1, input_size=64, image_size=64, batch_size=8,
                     cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    return train.fit("finetune", cfg, progress=False), cfg


def _site(folder: Path, n: int, seed: int = 500) -> Path:
    d = folder / "Normal" / "images"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = synthetic_xray(seed + i)
        img[:8, :8] = 255  # a site marker
        cv2.imwrite(str(d / f"site-{i}.png"), img)
    return folder


def test_adapt_writes_a_checkpoint_with_its_card_and_refuses_bad_input(tiny_model, tmp_path, capsys):
    run, cfg = tiny_model
    site = _site(tmp_path / "site", 8)
    (site / "Normal" / "images" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "adapted.pt"
    result = adapt.adapt(run.checkpoint, site, out, config=cfg)
    assert result["films"] == {"Normal": 8} and [s["file"] for s in result["skipped"]] == ["Normal/images/broken.png"]
    model, meta = checkpoints.load_model(out)  # an ordinary cxr checkpoint (weights_only)
    assert meta["adapted"]["films"] == {"Normal": 8} and meta["adapted"]["method"] == "head"
    assert "8 local films" in meta["card"]["adapted"] and set(meta["operating_points"]) >= {"covid@95"}
    state0 = torch.load(run.checkpoint, weights_only=True)["model"]
    state1 = torch.load(out, weights_only=True)["model"]
    assert not torch.equal(state0["_fc.weight"], state1["_fc.weight"])
    assert all(torch.equal(state0[k], state1[k]) for k in state0 if not k.startswith("_fc."))  # backbone kept
    # bad input: a missing folder, an empty one, too few films; each a clear error and exit 2 from the CLI
    with pytest.raises(FileNotFoundError, match="not a folder"):
        adapt.adapt(run.checkpoint, tmp_path / "nowhere", out, config=cfg)
    (tmp_path / "empty" / "Normal" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="No usable images.*nothing to adapt on"):
        adapt.adapt(run.checkpoint, tmp_path / "empty", out, config=cfg)
    few = _site(tmp_path / "few", 2)
    with pytest.raises(ValueError, match="at least"):
        adapt.adapt(run.checkpoint, few, out, config=cfg)
    assert main.main(["adapt", "--data", str(tmp_path / "empty"), "--model", str(run.checkpoint),
                     "--out", str(out)]) == 2
    assert "No usable images" in capsys.readouterr().err


def test_learning_curve_rows(tiny_model, tmp_path):
    run, cfg = tiny_model
    site = _site(tmp_path / "site", 12)
    curve = adapt.learning_curve(run.checkpoint, site, sizes=(0, 4, 8), draws=2, config=cfg)
    t = adapt.curve_summary(curve)
    assert list(t["local films"]) == [0, 4, 8, 4, 8] and set(t.method) == {"none", "prior", "head"}
    rows = curve["rows"]
    assert all(r["normals"] == 12 - r["films"] for r in rows)  # tested only on films not adapted on
    assert len(rows) == 1 + 2 * 2 * 2
    shown = adapt.curve_table(t)  # the page's table: the same rows, the site's rate with its interval
    assert len(shown) == len(t) and shown.index.names == ["method", "local films"]
    first = t.iloc[0]
    assert shown.iloc[0]["site false-COVID %"].startswith(f"{first['site false-COVID %']:.1f} [")
    assert adapt.curve_text(t)["site_none"].startswith(f"{first['site false-COVID %']:.1f}% [")
    with pytest.raises(ValueError, match="normal films"):
        adapt.learning_curve(run.checkpoint, site, sizes=(0, 12), config=cfg)
