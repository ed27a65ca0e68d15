"""The shortcut measures of issue 38: the lung transplant's geometry, what it counts, and the
lungs-hidden figures."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr.assess import shortcuts
from cxr.core.config import CLASSES
from cxr.data.lung_crop import box


def lungs(shape, top, left, h, w, gap):
    """A two-lung mask: two upright ellipses of height h and width w, `gap` apart."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = np.zeros(shape, bool)
    for x0 in (left, left + w + gap):
        m |= ((yy - (top + h / 2)) / (h / 2)) ** 2 + ((xx - (x0 + w / 2)) / (w / 2)) ** 2 <= 1
    return m


STRIPES = np.tile((np.arange(256) % 6 < 3).astype(np.float32), (256, 1))


def film(mask, lung_value, body_value, stripes=False, seed=0):
    rng = np.random.default_rng(seed)
    f = np.full(mask.shape, body_value, np.float32) + rng.normal(0, 3, mask.shape)
    inside = np.full(mask.shape, lung_value, np.float32) + rng.normal(0, 10, mask.shape)  # lung texture
    if stripes:
        inside += 40 * STRIPES[:mask.shape[0], :mask.shape[1]]
    f[mask] = inside[mask]
    return np.clip(f, 0, 255).astype(np.uint8)


def test_transplanted_lungs_land_inside_the_hosts_lung_box_and_nothing_else_changes():
    host_mask = lungs((120, 120), top=30, left=20, h=60, w=30, gap=20)
    donor_mask = lungs((120, 120), top=10, left=5, h=90, w=45, gap=10)  # bigger lungs, elsewhere
    host, donor = film(host_mask, 60, 200), film(donor_mask, 120, 90, stripes=True, seed=1)
    out = shortcuts.transplant(donor, donor_mask, host, host_mask)
    assert out.shape == host.shape and out.dtype == host.dtype
    y0, y1, x0, x1 = box(host_mask, 0.0)
    outside = np.ones(host.shape, bool)
    outside[y0:y1, x0:x1] = False
    changed = out != host
    assert not changed[outside].any()  # the host's surroundings are the host's
    assert changed[host_mask].mean() > 0.9  # its lungs are replaced
    # the donor's lungs (brighter than their own surroundings: an opacity) stay brighter than the
    # host's surroundings by as much, at the host's exposure: the opacity is carried, not erased
    inside = out[host_mask].astype(float)
    d_inside, d_ring = donor[donor_mask].astype(float), donor[~donor_mask].astype(float)
    assert inside.mean() > host[~host_mask].mean() + 15  # the host's own lungs were 140 below it
    assert abs((inside.mean() - host[~host_mask].mean()) - (d_inside.mean() - d_ring.mean())) < 12
    # ...with the donor's lungs, moved from the donor's lung box onto the host's, as content
    dy0, dy1, dx0, dx1 = box(donor_mask, 0.0)
    moved = cv2.resize(donor[dy0:dy1, dx0:dx1].astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    core = cv2.erode(host_mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)[y0:y1, x0:x1]
    assert np.corrcoef(out[y0:y1, x0:x1][core], moved[core])[0, 1] > 0.9
    # a donor whose lungs sit in another place of the frame is moved, not pasted where they were
    assert not changed[:y0].any() and not changed[:, :x0].any()


def test_the_transplant_counts_follow_the_lungs_or_the_surroundings():
    mask = lungs((64, 64), top=12, left=8, h=36, w=18, gap=10)
    labels = np.array([CLASSES.index(c) for c in ["COVID"] * 6 + ["Normal"] * 6])
    films = np.stack([film(mask, 70, 180, stripes=c == CLASSES.index("COVID"), seed=i) for i, c in enumerate(labels)])
    masks, usable = np.stack([mask] * len(films)), np.ones(len(films), bool)

    def striped_lungs(x):  # a model that reads the lungs: stripes there mean COVID-19
        stripes = np.array([np.corrcoef(im[mask], STRIPES[:64, :64][mask])[0, 1] > 0.5 for im in x])
        return np.eye(len(CLASSES))[np.where(stripes, CLASSES.index("COVID"), CLASSES.index("Normal"))]

    r = shortcuts.transplant_test(striped_lungs, films, masks, labels, usable, per_pair=4)
    assert r["pairs"]["COVID lungs in Normal"]["follows_lungs"] == 1.0
    assert r["pairs"]["Normal lungs in COVID"]["follows_lungs"] == 1.0
    assert r["pairs"]["Lung_Opacity lungs in Normal"]["films"] == 0  # no Lung Opacity film: nothing to count
    assert r["overall"] == {"films": 8, "follows_lungs": 1.0, "follows_surroundings": 0.0, "other": 0.0}

    def the_corner(x):  # a model that reads the hospital: a bright corner means Normal
        corner = np.array([im[:4, :4].mean() > 150 for im in x])
        return np.eye(len(CLASSES))[np.where(corner, CLASSES.index("Normal"), CLASSES.index("COVID"))]

    r = shortcuts.transplant_test(the_corner, films, masks, labels, usable, per_pair=4)
    assert r["pairs"]["COVID lungs in Normal"]["follows_surroundings"] == 1.0
    assert r["pairs"]["Normal lungs in COVID"]["follows_lungs"] == 1.0  # every corner is bright: it says Normal


def test_transplant_pairs_draw_usable_films_of_the_named_classes_only():
    labels = np.repeat(np.arange(len(CLASSES)), 5)
    usable = np.ones(len(labels), bool)
    usable[0] = False  # a COVID-19 film whose mask failed
    for donor, host, d, h in shortcuts.transplant_pairs(labels, usable, per_pair=3, seed=1):
        assert len(d) == len(h) == 3
        assert (labels[d] == CLASSES.index(donor)).all() and (labels[h] == CLASSES.index(host)).all()
        assert usable[d].all() and usable[h].all()


def test_lungs_hidden_gives_the_shortcut_figures_per_class_and_the_covid_normal_auc():
    y = np.array([CLASSES.index(c) for c in ["COVID"] * 4 + ["Normal"] * 4 + ["Lung_Opacity"] * 2])
    blind = np.full((len(y), len(CLASSES)), 0.25)
    blind[:, CLASSES.index("Normal")] = 0.4  # grey lungs look clear: everything called Normal
    r = shortcuts.lungs_hidden(blind, y)
    assert r["sensitivity"]["COVID"] == 0 and r["sensitivity"]["Lung_Opacity"] == 0 and r["sensitivity"]["Normal"] == 1
    assert r["covid_vs_normal_auc"] == pytest.approx(0.5)
    cue = blind.copy()
    cue[:4, CLASSES.index("COVID")] = 0.9  # something outside the lungs still says COVID-19
    r = shortcuts.lungs_hidden(cue, y)
    assert r["sensitivity"]["COVID"] == 1 and r["covid_vs_normal_auc"] == pytest.approx(1.0)


def test_the_model_cards_shortcut_figures_are_shown_as_the_card_carries_them():
    from cxr.report import prose

    y = np.array([CLASSES.index(c) for c in ["COVID"] * 4 + ["Normal"] * 4 + ["Lung_Opacity"] * 2])
    p = np.full((len(y), len(CLASSES)), 0.25)
    p[:, CLASSES.index("Normal")] = 0.4
    p[:2, CLASSES.index("COVID")] = 0.9
    shown = prose._card_shortcuts(shortcuts.lungs_hidden(p, y) | {"masks_replaced": 0})
    assert shown["with the lungs hidden, COVID-19 / Lung Opacity found (card)"] == "50.0% / 0.0%"
    assert prose._card_shortcuts(None) == {"shortcut figures (card)": "not recorded"}
