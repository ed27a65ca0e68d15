"""The built book as one PDF (`make pdf`): each page of the table of contents printed by Debian's
chromium in headless mode (the book's print style hides the navigation and keeps the folded code
folded), then joined by poppler's pdfunite. Offline: the pages need nothing from the network.

    python book/pdf.py book/_build/html book/_build/cxr-report.pdf
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[str]:
    """The book's pages in the table of contents' order (paths of their HTML, relative to the site)."""
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", [toc]) for c in part.get("chapters", [])]
    return [f + ".html" for f in files]


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found: apt-get install {package}")
    return path


def build(site: Path, out: Path) -> Path:
    chromium, unite = tool("chromium", "chromium"), tool("pdfunite", "poppler-utils")
    missing = [p for p in pages() if not (site / p).exists()]
    if missing:
        raise SystemExit(f"{site} lacks {', '.join(missing)}: build the book first (make book)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for k, page in enumerate(pages()):
            part = Path(tmp) / f"{k:02d}.pdf"
            subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--no-pdf-header-footer",
                            "--virtual-time-budget=5000", f"--print-to-pdf={part}", (site / page).resolve().as_uri()],
                           check=True, capture_output=True, timeout=300)
            parts.append(str(part))
            print(f"printed {page}", flush=True)
        subprocess.run([unite, *parts, str(out)], check=True)
    return out


def main() -> int:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "book" / "_build" / "html")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "book" / "_build" / "cxr-report.pdf")
    start = time.perf_counter()
    build(site, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
