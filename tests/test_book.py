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
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cxr.config import repo_root

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
            "return Array.from(document.querySelectorAll('.cell_output img')).map(i => i.naturalWidth)")
        assert sizes, f"{page} shows no figures"
        assert all(w > 0 for w in sizes), f"{page} has figures that did not load: {sizes}"


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
