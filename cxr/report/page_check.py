"""What a page of the built book must not show a reader, as the page test checks it: Markdown's
code marks, the code's names (`labels.NAMES`, the classes' and the use cases' keys), stray values
in tables (None, NaN, a signed zero, an interval of zeros), the profile line, alt text that
is a file's path, and a figure caption that never says what to look at. Each function returns
what it found, in words; empty means the page passes.
"""
from __future__ import annotations

import re

from cxr.core import labels
from cxr.roi import cases

_CASE_KEY = re.compile(r"(?<![\w/.])(" + "|".join(sorted((k for k in cases.PRESETS if "_" in k), key=len, reverse=True))
                       + r")(?![\w/])")
_STRAY_CELL = re.compile(r"^(None|nan|NaN|NaT|<NA>|inf|-inf)$|(?<![\d.])-0(\.0+)?(?![\d.])|"
                         r"\+0(\.0+)? \[\+0(\.0+)?,\s*\+0(\.0+)?\]")
_PROFILE = re.compile(r"\bprofile = \w+")
_PATH_ALT = re.compile(r"(^|/)[\w.-]+\.(png|jpe?g|svg|gif)$|^_images/|^data:", re.I)


def code_names(text: str) -> list[str]:
    """The code's names that the text shows (classes, record keys, collections, use cases)."""
    return sorted(set(labels.code_names(text)) | {m.group(1) for m in _CASE_KEY.finditer(text)})


def text_problems(text: str) -> list[str]:
    """What is wrong with a page's visible text: code marks, code names, the profile line."""
    out = []
    if "`" in text:
        i = text.index("`")
        out.append(f"a raw code mark (backtick): ...{text[max(0, i - 40):i + 40]}...")
    out += [f"a code name in place of its label: {n} (say {labels.label(n) if n not in cases.PRESETS else cases.label(n)})"
            for n in code_names(text)]
    out += [f"the profile line: {m.group(0)}" for m in _PROFILE.finditer(text)]
    return out


def cell_problems(cells: list[str]) -> list[str]:
    """Stray values among a page's table cells (each cell's visible text)."""
    return sorted({f"a stray value in a table: {c.strip()!r}" for c in cells if _STRAY_CELL.search(c.strip())})


def alt_problems(alts: list[str]) -> list[str]:
    """Images whose alt text is missing or a file's path instead of what the image shows."""
    return ([f"alt text that says nothing of the image: {a!r}" for a in alts
             if not a.strip() or _PATH_ALT.search(a.strip())]
            + [f"a code name in alt text: {n}" for a in alts for n in code_names(a)])


#: the words that open a caption's sentence on what to look at ("Look at the border...", "Compare...")
LOOK_CUES = ("Look", "Compare", "Read", "Ask", "Note", "Watch", "Follow", "Find", "Check", "Expect")
_LOOK = re.compile(r"(?:^|[.!?:;]\s+|\(\s*)(?:" + "|".join(LOOK_CUES) + r")\b", re.I)


def caption_problems(captions: list[str]) -> list[str]:
    """Figure captions with no sentence on what to look at: one caption says what the figure shows and,
    in a sentence opening with one of `LOOK_CUES`, what the reader should look at in it."""
    return [f"a caption that never says what to look at: {c.strip()[:90]!r}" for c in captions
            if c.strip() and not _LOOK.search(c.strip())]


def problems(text: str, cells: list[str], alts: list[str], captions: list[str] = ()) -> list[str]:
    return text_problems(text) + cell_problems(cells) + alt_problems(alts) + caption_problems(list(captions))
