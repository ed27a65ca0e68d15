"""Build the book (smoke profile, warnings as errors) and open every page in headless Chromium.

Each page must load with no console errors and no failed or off-site requests, and every
chapter page must show its figures. Needs Debian's chromium and chromium-driver (.ci/run
installs them); without them the test is skipped, unless CXR_REQUIRE_BROWSER=1.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cxr.core.config import repo_root
from cxr.report import page_check

ROOT = repo_root()
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# The `site` fixture retries a build whose cell timed out itself; the global rerun of timed-out
# tests (pyproject.toml) would rebuild the book again for every page test that shares a failed
# build, so it is off here.
pytestmark = [pytest.mark.slow, pytest.mark.flaky(reruns=0)]
BUILD_TIMEOUT = 40 * 60  # the whole smoke build takes about 6 minutes here


def toc_pages() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", [toc]) for c in part.get("chapters", [])]
    return [f + ".html" for f in files]


@pytest.fixture(scope="module")
def site(tmp_path_factory, pytestconfig) -> Path:
    out = tmp_path_factory.mktemp("book")
    # A cell that hangs fails the build after the per-cell limit the notebooks get from nbmake
    # (pyproject.toml) instead of holding CI until it is killed.
    cell_timeout = int(pytestconfig.getoption("nbmake_timeout"))
    env = dict(os.environ, CXR_PROFILE="smoke", TQDM_DISABLE="1", CXR_CELL_TIMEOUT=str(cell_timeout))
    for attempt in (1, 2):
        # a fresh folder each time: Sphinx would otherwise reuse what the first build read
        dest, log = out / f"attempt-{attempt}", out / f"build-{attempt}.log"
        cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT), "--config", "book/_config.yml",
               "--toc", "book/_toc.yml", "--path-output", str(dest), "-W", "--keep-going"]
        with log.open("w") as f:
            try:
                code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=BUILD_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                code = f"timeout after {BUILD_TIMEOUT} s"
        # Only a cell that timed out (a kernel that stopped answering) earns a second build;
        # an error in a notebook or a warning fails at once.
        if code == 0 or attempt == 2 or "CellTimeoutError" not in log.read_text():
            break
        warnings.warn(f"book build: a cell timed out, building once more (see {log})")
    assert code == 0, f"book build failed ({code}); the end of {log}:\n{log.read_text()[-8000:]}"
    return dest / "_build" / "html"


def test_book_builds_every_page(site: Path):
    for page in toc_pages():
        assert (site / page).exists(), page


def broken_links(site: Path) -> list[str]:
    """Every internal link and image of the built site that points at no file, or at an anchor its
    page does not have ("page -> target (why)"); links off the site are not followed (no network)."""
    from html.parser import HTMLParser
    from urllib.parse import unquote, urlsplit

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.ids = [], set()

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(a["id"])
            if tag == "a" and a.get("name"):
                self.ids.add(a["name"])
            for key in ("href", "src"):
                if a.get(key) and tag in ("a", "img", "link", "script"):
                    self.links.append(a[key])

    parsed = {}

    def parse(path: Path) -> Page:
        if path not in parsed:
            parsed[path] = Page()
            parsed[path].feed(path.read_text(errors="replace"))
        return parsed[path]

    bad = []
    for page in sorted(site.rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        for link in parse(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("data:", "mailto:", "javascript:")):
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            name = page.relative_to(site).as_posix()
            if not target.exists():
                bad.append(f"{name} -> {link} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in parse(target).ids:
                bad.append(f"{name} -> {link} (no such anchor)")
    return bad


def test_the_built_site_has_no_broken_internal_link(site: Path):
    bad = broken_links(site)
    assert not bad, f"{len(bad)} broken links:\n" + "\n".join(bad[:20])


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CXR_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium/chromedriver not found: apt-get install chromium chromium-driver")
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(site: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.browser
@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_offline(page: str, browser, server: str):
    browser.get_log("performance")  # drop what earlier pages left
    browser.get_log("browser")
    browser.get(f"{server}/{page}")
    browser.execute_script("return document.readyState")
    browser.execute_async_script("const done = arguments[0]; window.setTimeout(done, 300);")

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors on {page}: {errors}"

    requests, failed = {}, []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            requests[params["requestId"]] = params["request"]["url"]
        elif msg["method"] == "Network.loadingFailed":
            failed.append((requests.get(params["requestId"]), params.get("errorText")))
        elif msg["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append((params["response"]["url"], params["response"]["status"]))
    offsite = [u for u in requests.values() if urlparse(u).scheme in ("http", "https") and
               urlparse(u).hostname != "127.0.0.1"]
    assert not offsite, f"{page} requested off-site resources: {offsite}"
    assert not failed, f"{page} had failed requests: {failed}"

    if page.startswith("notebooks/"):
        sizes = browser.execute_script(
            "return Array.from(document.querySelectorAll('article .cell_output img, article figure img'))"
            ".map(i => i.naturalWidth)")
        assert sizes, f"{page} shows no figures"
        assert all(w > 0 for w in sizes), f"{page} has figures that did not load: {sizes}"


# --------------------------------------------------------------------------- the page as a reader meets it
# Each check runs in the page at the book's normal width (1280 px), on what the reader sees:
# collapsed (hidden) cells have no size and are not counted.
_OVERFLOW = """
const col = document.querySelector('article.bd-article') || document.querySelector('main');
const edge = col.getBoundingClientRect().right;
const bad = [];
for (const el of col.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const ox = getComputedStyle(el).overflowX;
  const scrolls = (ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1;
  if (r.right > edge + 1 || scrolls)
    bad.push(`${el.tagName.toLowerCase()}.${el.className}: ${Math.round(r.right - edge)} px past the column` +
             `${scrolls ? ', scrolls sideways' : ''}: ${(el.innerText || el.getAttribute('src') || '').slice(0, 60)}`);
}
return bad;
"""
_IMAGES = """
return Array.from(document.querySelectorAll('article img'))
  .filter(i => i.getBoundingClientRect().width > 0).map(i => i.getAttribute('src'));
"""
# What the reader sees, for `page_check`: the visible text outside code (a command in a code literal
# keeps its marks and names), every visible table cell, and every image's alt text.
_SEEN = """
const art = document.querySelector('article') || document.body, parts = [];
const walker = document.createTreeWalker(art, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const el = walker.currentNode.parentElement;
  if (!el || el.closest('code, pre, script, style, .cell_input') || !el.getClientRects().length) continue;
  parts.push(walker.currentNode.textContent);
}
const visible = e => e.getClientRects().length > 0;
return {text: parts.join(' '),
        cells: Array.from(art.querySelectorAll('td, th')).filter(visible).map(e => e.innerText),
        alts: Array.from(art.querySelectorAll('img')).map(i => i.getAttribute('alt') || ''),
        captions: Array.from(art.querySelectorAll('figcaption')).map(e => e.innerText)};
"""
STRAY_REPR = re.compile(r"Text\(\d|<Figure size|<Axes[: ]|AxesSubplot|<matplotlib\.|Line2D\(|<module '|object at 0x")
MACHINE_PATH = re.compile(r"(?<![\w.])(/(?:work|tmp|home|root|Users|opt|usr|var|mnt)/[\w.-]+|[A-Z]:\\[\w])")


def screenshot(browser, folder: Path, page: str) -> Path:
    """A full-length screenshot of the page at 1280 px, beside the build (not committed)."""
    folder.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return Math.min(document.documentElement.scrollHeight, 30000)")
    browser.set_window_size(1280, max(900, height))
    path = folder / (Path(page).stem + ".png")
    browser.save_screenshot(str(path))
    browser.set_window_size(1280, 900)
    return path


@pytest.mark.browser
@pytest.mark.parametrize("page", toc_pages())
def test_page_reads_as_a_report(page: str, browser, server: str, site: Path):
    browser.set_window_size(1280, 900)
    browser.get(f"{server}/{page}")
    browser.execute_async_script("const done = arguments[0]; window.setTimeout(done, 300);")
    shot = screenshot(browser, site.parent.parent / "screenshots", page)
    overflow = browser.execute_script(_OVERFLOW)
    assert not overflow, f"{page}: wider than the content column at 1280 px ({shot}):\n" + "\n".join(overflow[:10])
    text = browser.execute_script("return (document.querySelector('article') || document.body).innerText")
    assert not STRAY_REPR.findall(text), f"{page} shows stray reprs: {sorted(set(STRAY_REPR.findall(text)))}"
    assert not MACHINE_PATH.findall(text), f"{page} shows machine paths: {sorted(set(MACHINE_PATH.findall(text)))}"
    images = browser.execute_script(_IMAGES)
    repeated = sorted({src[:80] for src in images if images.count(src) > 1})
    assert not repeated, f"{page} shows the same image twice: {repeated}"
    seen = browser.execute_script(_SEEN)
    found = page_check.problems(seen["text"], seen["cells"], seen["alts"], seen["captions"])
    assert not found, f"{page} shows what a reader should not see ({shot}):\n" + "\n".join(found[:15])


# At a phone's width (390 px) the page must not scroll sideways, and nothing may stick out of the
# viewport unless it sits in a box that scrolls (a wide table scrolls inside its own box).
_PHONE = """
const vw = document.documentElement.clientWidth, bad = [];
if (document.documentElement.scrollWidth > vw + 1)
  bad.push(`the page is ${document.documentElement.scrollWidth} px wide at ${vw} px`);
const col = document.querySelector('article.bd-article') || document.querySelector('main');
for (const el of col.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0 || r.right <= vw + 1) continue;
  let p = el.parentElement, scroller = false;
  while (p && p !== document.body) {
    const ox = getComputedStyle(p).overflowX;
    if ((ox === 'auto' || ox === 'scroll' || ox === 'hidden') && p.getBoundingClientRect().right <= vw + 1) { scroller = true; break; }
    p = p.parentElement;
  }
  if (!scroller) bad.push(`${el.tagName.toLowerCase()}.${el.className}: ${Math.round(r.right - vw)} px past the screen: ` +
                          `${(el.innerText || el.getAttribute('src') || '').slice(0, 60)}`);
}
return bad;
"""


@pytest.mark.browser
@pytest.mark.parametrize("page", toc_pages())
def test_page_reads_on_a_phone(page: str, browser, server: str, site: Path):
    """The page as a phone shows it (390 px wide, device emulation: a desktop window cannot be that
    narrow), with a full-length screenshot beside the build."""
    def phone(height: int):
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 390, "height": height, "deviceScaleFactor": 1, "mobile": True})

    phone(844)
    try:
        browser.get(f"{server}/{page}")
        browser.execute_async_script("const done = arguments[0]; window.setTimeout(done, 300);")
        bad = browser.execute_script(_PHONE)
        folder = site.parent.parent / "screenshots-390"
        folder.mkdir(parents=True, exist_ok=True)
        phone(browser.execute_script("return Math.min(document.documentElement.scrollHeight, 30000)"))
        shot = folder / (Path(page).stem + ".png")
        browser.save_screenshot(str(shot))
        assert not bad, f"{page} at 390 px ({shot}):\n" + "\n".join(bad[:10])
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.set_window_size(1280, 900)


def test_page_checks_catch_what_they_look_for():
    """The patterns of the page checks find what they are for, and leave ordinary text alone."""
    assert STRAY_REPR.search("Text(0.5, 1.0, 'top-left corner')") and STRAY_REPR.search("<Figure size 640x480 with 1 Axes>")
    assert STRAY_REPR.search("<Axes: title={'center': 'x'}>")
    assert not STRAY_REPR.search("Text and figures (chapter 04)")
    assert MACHINE_PATH.search("reusing finished run /work/main/runs/finetune-smoke-1") and MACHINE_PATH.search("C:\\data")
    assert not MACHINE_PATH.search("runs/finetune-full-fe3cc0a3d866 and ../shared/cxr-radiography, and/or 1/2")


def test_chapters_glue_the_numbers_of_their_records(site: Path):
    """Sentences in chapter 06 quote the records the build wrote, through the package's text functions."""
    from cxr.assess import adapt
    from cxr.report import prose

    evaluation = json.loads((_smoke_reports() / "evaluation.json").read_text())
    external = json.loads((_smoke_reports() / "external.json").read_text())
    pasted = pasted_texts(site / "notebooks" / "06_external.html")
    shown = prose.external_text(external, evaluation)
    for key in ("ext_accuracy", "db_accuracy", "ext_called_covid", "ext_normals_covid"):
        assert shown[key] in pasted, f"{key}: {shown[key]!r} not on the page"
    curve = json.loads((_smoke_reports() / "adaptation.json").read_text())
    curve_text = adapt.curve_text(adapt.curve_summary(curve))
    for key in ("site_none", "site_head_25"):
        assert curve_text[key] in pasted, f"{key}: {curve_text[key]!r} not on the page"



def test_cell_timeout_can_be_set_for_one_build(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "book" / "_ext"))
    import cxr_book

    class Config:
        nb_execution_timeout = 5400

    config = Config()
    monkeypatch.delenv("CXR_CELL_TIMEOUT", raising=False)
    cxr_book._cell_timeout_from_env(None, config)
    assert config.nb_execution_timeout == 5400
    monkeypatch.setenv("CXR_CELL_TIMEOUT", "600")
    cxr_book._cell_timeout_from_env(None, config)
    assert config.nb_execution_timeout == 600


# --------------------------------------------------------------------------- the executive summary
def pasted_texts(page: Path) -> list[str]:
    """The numbers a built page quotes through {glue:text}, as the reader sees them."""
    import html

    return [html.unescape(t) for t in re.findall(r'<span class="pasted-text">(.*?)</span>', page.read_text())]


def _smoke_reports() -> Path:
    from cxr.core.config import get_config

    return get_config("smoke").reports_dir


def test_summary_page_shows_the_records_of_its_run(site: Path):
    import pandas as pd

    from cxr.core.config import CLASSES
    from cxr.report import prose

    record = json.loads((_smoke_reports() / "summary.json").read_text())
    evaluation = json.loads((_smoke_reports() / "evaluation.json").read_text())
    pasted = pasted_texts(site / "notebooks" / "00_summary.html")
    shown = prose.summary_text(record)
    for key in ("accuracy", "macro_auc", "covid_sensitivity", "twin_agreement", "speed_batched", "roi_database",
                "roi_external", "external_accuracy", "external_normals_covid", "adapt_before", "adapt_after"):
        assert shown[key] in pasted, f"{key}: {shown[key]!r} not on the summary page ({pasted})"
    # the record is the evaluation of the same model (its weights), and agrees with its per-image predictions
    assert record["model_sha256"] == evaluation["model_sha256"]
    assert record["accuracy"] == evaluation["accuracy"]
    pred = pd.read_csv(_smoke_reports() / "evaluation.csv", keep_default_na=False)
    assert record["accuracy"] == pytest.approx((pred.label == pred.pred).mean())
    covid = pred[pred.label == "COVID"]
    assert record["covid_sensitivity"] == pytest.approx((covid.pred == "COVID").mean())
    assert set(pred.pred) <= set(CLASSES)


def test_one_speed_one_value_on_every_page_that_quotes_it(site: Path):
    """The summary and chapter 08 quote the model's batched speed and cxr predict's time for one image
    from one record each (`speed_facts`), so both pages show the same figure; chapter 08's table
    names every timing."""
    from cxr.core.config import get_config
    from cxr.report import speed_facts

    found = speed_facts.for_book(get_config("smoke"))
    summary = pasted_texts(site / "notebooks" / "00_summary.html")
    for name in ("batched", "predict_one"):
        assert found[name]["text"] in summary, f"{name}: {found[name]['text']!r} not on the summary ({summary})"
    page = (site / "notebooks" / "08_predictions.html").read_text()
    for f in found.values():
        assert f["text"] in page and f["label"] in page, f"chapter 08 does not name {f['label']!r}"


def glued_texts(site: Path) -> dict[str, dict[str, str]]:
    """Every text the build's notebooks glued (myst-nb's records beside the build): name -> page -> text."""
    glued: dict[str, dict[str, str]] = {}
    for f in sorted((site.parent / "jupyter_execute").rglob("*.glue.json")):
        for name, out in json.loads(f.read_text()).items():
            data = out.get("data", {}) if isinstance(out, dict) else {}
            if "text/plain" in data and not any(k.startswith("image/") for k in data):
                glued.setdefault(name, {})[f.name.removesuffix(".glue.json")] = data["text/plain"]
    return glued


def test_one_fact_one_value_on_every_page_that_quotes_it(site: Path):
    """A name glued by two chapters is one fact (the summary's accuracy is chapter 04's accuracy), so
    every page that quotes it shows one value: a chapter that wants the fact with more (its counts,
    another rounding) glues the more under a name of its own."""
    glued = glued_texts(site)
    assert len(glued) > 100, f"only {len(glued)} glued names found beside the build"
    shared = {name: pages for name, pages in glued.items() if len(pages) > 1}
    assert {"accuracy", "macro_auc", "twin_target"} <= set(shared), sorted(shared)
    split = {name: pages for name, pages in shared.items() if len(set(pages.values())) > 1}
    assert not split, "one fact, two values:\n" + "\n".join(f"{n}: {p}" for n, p in split.items())


#: the pages with figures to explore (plotly), and what each draws: chapter 01's explorer (points),
#: chapter 04's ROC curves (lines) and chapter 07's tornado (bars)
PLOTLY_PAGES = {"01_data": ".scatterlayer .point", "04_clinical": ".scatterlayer .trace", "07_business": ".barlayer .point"}


@pytest.mark.browser
@pytest.mark.parametrize("page", PLOTLY_PAGES)
def test_the_figures_to_explore_draw_from_the_books_own_plotly(page: str, browser, server: str, site: Path):
    """Chapter 01's explorer, chapter 04's ROC curves and chapter 07's tornado are drawn (SVG, with
    their points, curves or bars) by the plotly.js the site serves itself (the page test checks that no
    page requests anything off the site); only pages with such a figure load it."""
    from cxr.report import interactive

    browser.get(f"{server}/notebooks/{page}.html")
    browser.execute_async_script("const done = arguments[0]; window.setTimeout(done, 500);")
    drawn = browser.execute_script(
        "const d = document.querySelector('.cxr-plotly .js-plotly-plot');"
        "return d ? [d.querySelectorAll('svg.main-svg').length, d.querySelectorAll(arguments[0]).length] : null",
        PLOTLY_PAGES[page])
    assert drawn is not None and drawn[0] > 0 and drawn[1] > 0, drawn
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src).filter(Boolean)")
    assert any(s.endswith(interactive.PLOTLY_JS) for s in scripts), scripts
    assert (site / "_static" / interactive.PLOTLY_JS).exists()
    assert interactive.PLOTLY_JS not in (site / "notebooks" / "03_training.html").read_text()


# --------------------------------------------------------------------------- the static ROI calculator
CALCULATOR_CASES = [
    ("default", "database test split", {}),
    ("radiology_workflow", "external radiographs", {"studies_per_year": 80000, "ai_cost_per_study": 0.7}),
    ("pandemic_surveillance", "database test split", {"prevalence_covid": 0.35, "read_s_ai_normal": 12.5}),
    ("low_resource", "external radiographs", {"radiologist_cost_per_hour": 60}),
    ("ed_triage", "database test split", {"studies_per_year": 5000, "ai_cost_per_year": 0}),
]

_SET_CALCULATOR = """
const [preset, data, changes] = arguments;
const root = document.getElementById('cxr-roi');
const fire = (el, kind) => el.dispatchEvent(new Event(kind, {bubbles: true}));
const p = root.querySelector('#cxr-roi-preset'); p.value = preset; fire(p, 'change');
const d = root.querySelector('#cxr-roi-data'); d.value = data; fire(d, 'change');
for (const [field, value] of Object.entries(changes)) {
  const input = root.querySelector(`input[data-field="${field}"]`); input.value = String(value); fire(input, 'input');
}
const out = {};
for (const cell of root.querySelectorAll('[data-output]')) out[cell.dataset.output] = [cell.textContent, cell.dataset.value];
return {out: out, state: root.dataset.state, error: root.querySelector('#cxr-roi-error').textContent,
        op: root.querySelector('#cxr-roi-op').value};
"""


@pytest.mark.browser
def test_static_calculator_matches_python(browser, server: str):
    from cxr.roi import cases as roi_cases, format as roi_format, inputs as roi_inputs, model as roi_model

    browser.get(f"{server}/notebooks/07_business.html")
    data = json.loads(browser.execute_script("return document.getElementById('cxr-roi-json').textContent"))
    # the performance in the page is the one the evaluation records of this build measured
    evaluation = json.loads((_smoke_reports() / "evaluation.json").read_text())
    for op, p in data["performance"]["database test split"].items():
        measured = roi_inputs.performance(evaluation, op)
        assert (p["sensitivity"], p["specificity"]) == (measured.sensitivity, measured.specificity)
    assert "external radiographs" in data["performance"]
    for preset, which, changes in CALCULATOR_CASES:
        # a reader types a share as a percentage: 35 for 35%
        typed = {f: 100 * v if f in roi_inputs.SHARES else v for f, v in changes.items()}
        got = browser.execute_script(_SET_CALCULATOR, preset, which, typed)
        assert got["state"] == "ok", got["error"]
        site = roi_cases.site_from(preset, changes)
        assert got["op"] == site.operating_point
        result = roi_model.roi(site, roi_inputs.Performance(**data["performance"][which][site.operating_point]))
        for key, (text, value) in got["out"].items():
            assert text == roi_format.format_output(key, result[key]), (preset, key)
            assert float(value) == pytest.approx(result[key], rel=1e-9, abs=1e-9), (preset, key)
    bad = browser.execute_script(_SET_CALCULATOR, "default", "database test split", {"studies_per_year": -5})
    assert bad["state"] == "error" and bad["error"].startswith("studies per year: -5 is below the plausible range")
    bad = browser.execute_script(_SET_CALCULATOR, "default", "database test split", {"prevalence_abnormal": 170})
    assert bad["state"] == "error" and bad["error"].startswith("prevalence of abnormal studies: 170% is not a percentage")
    # the shares are shown as percentages, and COVID-19 prevalence says where it is not used
    browser.execute_script(_SET_CALCULATOR, "ed_triage", "database test split", {})
    shown = browser.execute_script("return document.querySelector('input[data-field=prevalence_abnormal]').value")
    assert shown == "22.6", shown
    unused = "return document.getElementById('cxr-roi-prevalence_covid').closest('tr').classList.contains('cxr-roi-unused')"
    assert browser.execute_script(unused)
    browser.execute_script(_SET_CALCULATOR, "pandemic_surveillance", "database test split", {})
    assert not browser.execute_script(unused)
    # the results stay in view while the last input is edited
    browser.set_window_size(1280, 900)
    top = browser.execute_script("""
const inputs = document.querySelectorAll('#cxr-roi input[data-field]');
inputs[inputs.length - 1].scrollIntoView({block: 'center'});
return document.querySelector('.cxr-roi-results').getBoundingClientRect().top;""")
    assert 0 <= top < 900, f"the results scrolled out of view ({top} px)"


# what a reader typed into the calculator by hand (issue 26), and the start of the message it must give
EXTREME_INPUTS = [
    ({"studies_per_year": "1e308"}, "studies per year: a number that large is above the plausible range 1 to 10,000,000"),
    ({"studies_per_year": "99999999999999999999"}, "studies per year: a number that large is above"),
    ({"read_s_without_ai": "1e-320"}, "reading time without AI: a number that close to 0 is below the plausible range"),
    ({"read_s_without_ai": "0"}, "reading time without AI: 0 is below the plausible range 1 to 600 s/study"),
    ({"cost_missed": "-1"}, "cost of a missed case: -1 is below the plausible range"),
    ({"prevalence_abnormal": "5"}, "prevalence of COVID-19 (10%) cannot be above the prevalence of abnormal studies (5%)"),
    ({"studies_per_year": "abc"}, "studies per year: not a number"),
]


@pytest.mark.browser
def test_the_calculator_refuses_nonsense_with_the_readers_words_and_never_shows_it(browser, server: str):
    browser.get(f"{server}/notebooks/07_business.html")
    for changes, message in EXTREME_INPUTS:
        got = browser.execute_script(_SET_CALCULATOR, "default", "database test split", changes)
        assert got["state"] == "error" and got["error"].startswith(message), (changes, got["error"])
        assert "_" not in got["error"].split(":")[0], got["error"]  # a label, not a code name
    # every input of the model can be edited, each shows its source, and reset puts the preset back
    fields = browser.execute_script("return [...document.querySelectorAll('#cxr-roi input[data-field]')]"
                                    ".map(i => [i.dataset.field, i.closest('tr').querySelector('.cxr-roi-source').textContent])")
    from cxr.roi import inputs as roi_inputs

    assert sorted(f for f, _ in fields) == sorted(roi_inputs.NUMERIC) and all(src for _, src in fields)
    browser.execute_script(_SET_CALCULATOR, "pandemic_surveillance", "database test split", {"cost_missed": 5})
    browser.execute_script("document.getElementById('cxr-roi-reset').click()")
    assert browser.execute_script("return document.querySelector('input[data-field=cost_missed]').value") == "1000"
    # the presets as they come, and a sweep of inputs at their bounds: nothing shown is NaN, Infinity or exponent
    # notation, and no "extra" count is negative
    cases = [(p, d, {}) for p in ("default", "ed_triage", "radiology_workflow", "pandemic_surveillance", "low_resource",
                                 "telemedicine") for d in ("database test split", "external radiographs")]
    cases += [("pandemic_surveillance", "database test split", {f: roi_inputs.BOUNDS[f][k] for f in
              ("studies_per_year", "cost_missed", "deployment_cost", "read_s_ai_flagged")}) for k in (0, 1)]
    for preset, data, changes in cases:
        got = browser.execute_script(_SET_CALCULATOR, preset, data, changes)
        if got["state"] != "ok":
            assert "_" not in got["error"].split(":")[0], got["error"]
            continue
        for key, (text, _) in got["out"].items():
            assert not any(bad in text for bad in ("NaN", "Infinity", "e+", "e-")), (preset, key, text)
            assert not (key.startswith("extra") and text.startswith("-")), (preset, key, text)


# --------------------------------------------------------------------------- the ROI widget in JupyterLab
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A headless JupyterLab on a free local port (no token), serving the repository, smoke profile."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("lab") / "lab.log"
    env = dict(os.environ, CXR_PROFILE="smoke", TQDM_DISABLE="1")
    cmd = [str(Path(sys.executable).with_name("jupyter-lab")), "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={ROOT}", "--allow-root",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"jupyter lab did not start; its log:\n{log.read_text()[-4000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait(browser, script: str, timeout: float, what: str, *args):
    import time

    end = time.time() + timeout
    while time.time() < end:
        value = browser.execute_script(script, *args)
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


_RESULT = """
const r = document.querySelector('.cxr-roi-result');
const shown = r ? r.querySelector('.cxr-roi-net_annual_value') : null;
return r ? {net: r.dataset.net, inputs: r.dataset.inputs, data: r.dataset.data, shown: shown && shown.textContent} : null;
"""


@pytest.mark.browser
def test_roi_widget_in_jupyterlab(browser, lab: str):
    """Open chapter 07 in JupyterLab, Run All, move a slider: the net value changes and equals
    cxr.roi.model for the new inputs."""
    from selenium.webdriver.common.keys import Keys

    from cxr.core.config import get_config
    from cxr.report import records
    from cxr.roi import format as roi_format, inputs as roi_inputs, model as roi_model

    browser.get(f"{lab}/lab/tree/notebooks/07_business.ipynb?reset")
    _wait(browser, "return window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell') !== null", 120,
          "JupyterLab to open the notebook")
    _wait(browser, """const w = window.jupyterapp.shell.currentWidget;
                      return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
                             w.sessionContext.session.kernel.status === 'idle';""", 120, "the kernel to start")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    first = _wait(browser, _RESULT, 600, "the ROI widget to show a result")
    slider = _wait(browser, """
        for (const s of document.querySelectorAll('.widget-slider')) {
          const label = s.querySelector('.widget-label');
          if (label && label.textContent.trim() === 'studies per year') return s.querySelector('.noUi-handle');
        }
        return null;""", 60, "the studies-per-year slider")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
    slider.click()
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    _wait(browser, f"const r = (function() {{ {_RESULT} }})(); return r && r.net !== {json.dumps(first['net'])} ? r : null;",
          120, "the net value to change after moving the slider")
    import time

    after = None
    for _ in range(60):  # every key press is a change: wait until the widget has taken the last one
        time.sleep(2)
        now = browser.execute_script(_RESULT)
        if now == after:
            break
        after = now
    before_inputs, inputs = json.loads(first["inputs"]), json.loads(after["inputs"])
    assert inputs["studies_per_year"] > before_inputs["studies_per_year"]
    cfg = get_config("smoke")
    evaluated = {"database test split": records.evaluation_record(cfg)}
    if (ext := records.external_record(cfg)) is not None:
        evaluated["external radiographs"] = ext
    perf = roi_inputs.performance_sets(evaluated)[after["data"]][inputs["operating_point"]]
    expected = roi_model.roi(roi_inputs.Site(**inputs), perf)["net_annual_value"]
    assert float(after["net"]) == pytest.approx(expected, rel=1e-9)
    assert after["shown"] == roi_format.format_output("net_annual_value", expected)


# --------------------------------------------------------------------------- the model in the reader's browser
_CARDS = """
return Array.from(document.querySelectorAll('#cxr-try-results .cxr-try-card')).map(c => ({
  file: c.dataset.file, call: c.dataset.call, op: c.dataset.opCall || null, error: c.dataset.error || null,
  proba: c.dataset.probabilities ? JSON.parse(c.dataset.probabilities) : null, flagged: c.dataset.flagged}));
"""


def _requests(browser) -> list[str]:
    out = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            out.append(msg["params"]["request"]["method"] + " " + msg["params"]["request"]["url"])
    return out


@pytest.mark.browser
def test_the_browser_panel_gives_cxr_predicts_calls_and_sends_nothing(browser, server: str, site: Path):
    """Chapter 08's panel: 20 test-split films chosen in the page get `cxr predict`'s call on every
    one and its probabilities within 0.02 (and its call at the panel's operating point); once the
    model is loaded, predicting makes no network request; the cards fit a phone's width."""
    import numpy as np
    from selenium.webdriver.common.by import By

    from cxr.assess import predict
    from cxr.core.config import CLASSES, get_config
    from cxr.data.splits import load_table, stratified_sample
    from cxr.model import registry
    from cxr.report import browser_demo

    config = get_config("smoke")
    root, table = load_table(config)
    films = stratified_sample(table[table.split == "test"], 20, seed=0)
    paths = [str(root / f) for f in films.file]
    pred = predict.load(registry.final_model(config).checkpoint, config)
    expected = predict.predict_paths(paths, pred, progress=False).set_index("file")
    at_point = predict.predict_paths(paths, pred, threshold=browser_demo.OPERATING_POINT, progress=False).set_index("file")

    browser.get(f"{server}/notebooks/08_predictions.html")
    box = browser.find_element(By.ID, "cxr-try-file")
    box.send_keys(paths[0])  # the first film loads the runtime and the model from the site
    _wait(browser, "return document.getElementById('cxr-try').dataset.done === '1'", 120, "the first film")
    loaded = _requests(browser)
    assert any(u.endswith("/_static/cxr-try/model.onnx") for u in loaded), loaded
    urls = [urlparse(u.split(" ", 1)[1]) for u in loaded]
    assert all(u.hostname == "127.0.0.1" for u in urls if u.scheme in ("http", "https")), loaded

    browser.execute_script("arguments[0].value = ''", box)  # a file box with `multiple` adds to what it holds
    box.send_keys("\n".join(paths))
    _wait(browser, "return document.getElementById('cxr-try').dataset.done === '20'", 300, "20 films")
    assert _requests(browser) == [], "predicting films made network requests"
    cards = browser.execute_script(_CARDS)
    assert len(cards) == 20 and not [c for c in cards if c["error"]]
    for c in cards:
        name = next(f for f in expected.index if Path(f).name == c["file"])
        want = expected.loc[name]
        assert c["call"] == want.decision, (c, want.to_dict())
        assert np.abs(np.array(c["proba"]) - want[list(CLASSES)].to_numpy(float)).max() < 0.02, (c, want.to_dict())
        assert c["op"] == at_point.loc[name].decision
        assert c["flagged"] == str(bool(want.status == predict.OOD)).lower()

    # what the page cannot read as cxr predict does gets a card that says why, and the rest goes on
    import cv2

    bad = {"deep.png": (np.arange(96 * 96).reshape(96, 96) * 7).astype(np.uint16), "small.png": np.zeros((40, 40), np.uint8)}
    folder = site.parent.parent / "panel-inputs"
    folder.mkdir(exist_ok=True)
    for name, arr in bad.items():
        cv2.imwrite(str(folder / name), arr)
    (folder / "notes.txt").write_text("not a film")
    browser.execute_script("arguments[0].value = ''", box)
    box.send_keys("\n".join(str(folder / n) for n in ("deep.png", "small.png", "notes.txt")) + "\n" + paths[0])
    _wait(browser, "return document.getElementById('cxr-try').dataset.done === '4'", 60, "4 files")
    cards = {c["file"]: c for c in browser.execute_script(_CARDS)}
    assert "16-bit PNG" in cards["deep.png"]["error"] and "too small (40x40" in cards["small.png"]["error"]
    assert "not a decodable image" in cards["notes.txt"]["error"] and cards[Path(paths[0]).name]["call"]

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        wide = browser.execute_script("""
            const edge = document.querySelector('article.bd-article').getBoundingClientRect().right;
            return Array.from(document.querySelectorAll('#cxr-try *')).filter(e => {
              const r = e.getBoundingClientRect(); return r.width > 0 && r.right > edge + 1; }).length;""")
        assert wide == 0, f"{wide} elements of the panel run past a phone's screen"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.set_window_size(1280, 900)
