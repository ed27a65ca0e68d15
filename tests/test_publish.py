"""Publishing the book (issue 26): `make publish` puts a built site on a gh-pages branch, and the
link check that the book's test runs on the built site finds a broken internal link."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cxr.core.config import repo_root

ROOT = repo_root()


def git(*args, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_make_publish_puts_the_site_on_a_gh_pages_branch_of_the_remote(tmp_path: Path):
    if not (ROOT / ".venv" / "bin" / "ghp-import").exists():
        pytest.skip("ghp-import is not installed (make setup)")
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git("init", "--bare", "-q", str(remote), cwd=tmp_path)
    work.mkdir()
    git("init", "-q", cwd=work)
    for k, v in (("user.name", "test"), ("user.email", "test@example.org")):
        git("config", k, v, cwd=work)
    (work / "README.md").write_text("source\n")
    git("add", "README.md", cwd=work)
    git("commit", "-q", "-m", "source", cwd=work)
    site = work / "site"
    (site / "notebooks").mkdir(parents=True)
    (site / "index.html").write_text('<a href="notebooks/00_summary.html">summary</a>')
    (site / "notebooks" / "00_summary.html").write_text("<p>the summary</p>")
    run = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "publish", f"VENV={ROOT / '.venv'}", "SITE=site",
                          f"REMOTE={remote}"], cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    files = git("ls-tree", "-r", "--name-only", "gh-pages", cwd=remote).split()
    assert sorted(files) == [".nojekyll", "index.html", "notebooks/00_summary.html"]
    assert "Publish the book built from" in git("log", "-1", "--format=%s", "gh-pages", cwd=remote)
    assert git("branch", "--show-current", cwd=work).strip() in ("master", "main")  # the source branch is untouched
    # without a built site it says what to do
    shutil.rmtree(site)
    run = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "publish", f"VENV={ROOT / '.venv'}", "SITE=site",
                          f"REMOTE={remote}"], cwd=work, capture_output=True, text=True)
    assert run.returncode != 0 and "run make book first" in run.stdout + run.stderr


def test_the_link_check_finds_a_broken_link_and_a_missing_anchor(tmp_path: Path):
    from test_book import broken_links

    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text('<a href="a/b.html#fig">ok</a> <a href="https://doi.org/x">outside</a>'
                                         '<img src="img.png"> <a href="#top">top</a><span id="top"></span>')
    (tmp_path / "img.png").write_bytes(b"png")
    (tmp_path / "a" / "b.html").write_text('<figure id="fig"></figure><a href="../index.html">back</a>'
                                           '<a href="c.html">gone</a><a href="../index.html#nowhere">no anchor</a>')
    assert broken_links(tmp_path) == ["a/b.html -> c.html (no such file)",
                                      "a/b.html -> ../index.html#nowhere (no such anchor)"]
