"""The files `cxr predict` reads, found as a PACS export holds them: a streaming walk of nested
folders that takes a file by its content (an image's extension, or the DICOM preamble, so
extensionless `IM00001` files count), the share of files one machine takes (`--shard K/N`), and a
tally of what was left out.

The walk never lists a tree whole: it goes folder by folder, each folder's entries in name order,
so a million-file archive starts predicting at once and every run sees the same order.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cxr.data.images import IMAGE_EXTS

DICOM_EXTS = {".dcm", ".dicom"}
# Extensions that are never images: left out by name, without opening the file.
NOT_IMAGES = {".txt", ".xml", ".json", ".csv", ".html", ".htm", ".pdf", ".md", ".ini", ".log", ".zip", ".gz",
              ".db", ".exe", ".inf", ".sh", ".bat", ".py", ".doc", ".docx", ".xls", ".xlsx", ".lnk", ".url"}
DICOMDIR_NAMES = {"dicomdir"}
SHOWN_IGNORED = 5  # names in the summary line


@dataclass(frozen=True)
class Item:
    """One file to read: where it is, the name the output shows (relative to the given root), the
    key that decides its shard (its path below the root), and what identifies this version of it."""
    path: Path
    shown: str
    rel: str
    size: int
    mtime_ns: int
    named: bool  # given by name on the command line: always read, never left out as "not an image"


@dataclass
class Tally:
    """What the walk left out (not images) and which given paths gave nothing."""
    ignored: int = 0
    ignored_names: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    per_root: dict[str, int] = field(default_factory=dict)

    def ignore(self, shown: str) -> None:
        self.ignored += 1
        if len(self.ignored_names) < SHOWN_IGNORED:
            self.ignored_names.append(Path(shown).name)

    def line(self) -> str:
        """One summary line, or "" when nothing was left out."""
        if not self.ignored:
            return ""
        names = ", ".join(sorted(self.ignored_names)) + (", ..." if self.ignored > len(self.ignored_names) else "")
        what = "1 file that is not an image" if self.ignored == 1 else f"{self.ignored:,} files that are not images"
        return f"ignored {what}: {names}"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"K/N" (1 <= K <= N) as (K, N); None for none."""
    if not text:
        return None
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text}: write it as K/N, for example 2/8 (the second of 8 shares)") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be between 1 and N (here N={n})")
    return k, n


def shard_of(rel: str, n: int) -> int:
    """The shard (1..n) of a file, from its path below the given root: every machine agrees
    without talking to the others, whatever folder the archive is mounted at."""
    h = hashlib.blake2b(rel.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "big") % n + 1


def by_name(path: Path) -> str:
    """What a file's name says: "image", "dicom", "not an image", or "look" (open it to know)."""
    suffix = path.suffix.lower()
    if path.name.lower() in DICOMDIR_NAMES:
        return "not an image"
    if suffix in IMAGE_EXTS:
        return "image"
    if suffix in DICOM_EXTS:
        return "dicom"
    if suffix in NOT_IMAGES or path.name.startswith("."):
        return "not an image"
    return "look"


def dicom_preamble(head: bytes) -> bool:
    """Whether a file's first 132 bytes carry the DICOM preamble ("DICM" after 128 bytes)."""
    return head[128:132] == b"DICM"


def looks_like_image(item: Item) -> bool:
    """Whether `cxr predict` reads this file rather than leaving it out: an image's or DICOM's name,
    or the DICOM preamble (a named file is always read)."""
    kind = by_name(item.path)
    if item.named or kind in ("image", "dicom"):
        return True
    if kind != "look":
        return False
    try:
        with item.path.open("rb") as f:
            return dicom_preamble(f.read(132))
    except OSError:
        return True  # reading it says why it cannot be read


def _files_below(folder: Path) -> Iterator[Path]:
    """Every file below `folder` in the order of their sorted paths (each folder's entries in name
    order, a folder's contents where its name falls), one folder's listing in memory at a time.
    Symbolic links to files are followed; links to folders are not (a loop would never end)."""
    stack = [iter(_listing(folder))]
    while stack:
        e = next(stack[-1], None)
        if e is None:
            stack.pop()
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                stack.append(iter(_listing(Path(e.path))))
            elif e.is_file():
                yield Path(e.path)
        except OSError:
            continue


def _listing(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def items(paths: Iterable[str | Path], shard: tuple[int, int] | None = None, tally: Tally | None = None
          ) -> Iterator[Item]:
    """The files to read under `paths`, in a fixed order, only this shard's share. Files whose name
    says they are not images are counted in `tally`; paths that do not exist are listed there."""
    tally = tally if tally is not None else Tally()
    for p in map(Path, paths):
        if p.is_dir():
            tally.per_root.setdefault(str(p), 0)
            root = p.name if p.name not in ("", ".", "..") else p.resolve().name
            for f in _files_below(p):
                rel = f.relative_to(p).as_posix()
                shown = f"{root}/{rel}"
                if shard and shard_of(rel, shard[1]) != shard[0]:
                    continue
                if by_name(f) == "not an image":
                    tally.ignore(shown)
                    continue
                tally.per_root[str(p)] += 1
                yield _item(f, shown, rel, named=False)
        elif p.is_file():
            if shard and shard_of(p.name, shard[1]) != shard[0]:
                continue
            yield _item(p, p.name, p.name, named=True)
        elif not shard or shard_of(str(p), shard[1]) == shard[0]:
            tally.missing.append(str(p))


def _item(path: Path, shown: str, rel: str, named: bool) -> Item:
    try:
        st = path.stat()
    except OSError:
        return Item(path, shown, rel, -1, -1, named)  # reading it will say why
    return Item(path, shown, rel, st.st_size, st.st_mtime_ns, named)
