"""Writing files so that a reader never sees half of one: every record, table, array and
checkpoint goes through a temporary file in the same folder and a rename. Also the one JSON
encoder for numpy values."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: str | Path, write, suffix: str = "") -> Path:
    """Call `write(tmp_path)`, then move the temporary file to `path`, with the permissions a plain
    `open` would have given it (mkstemp's temporary file is private to its owner: a record or a
    built site's file would stay unreadable to a web server or a colleague)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", suffix=suffix, dir=ensure(path.parent))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (a checkpoint's, for the caches made from it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _umask() -> int:
    """The process's umask: read from Linux's /proc (setting it to read it back is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_default(o):
    """What json.dumps cannot write itself: numpy scalars."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON: {type(o).__name__}")


def write_json(record, path: str | Path) -> Path:
    """A record as indented JSON."""
    return _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, default=json_default)))


def write_text(text: str, path: str | Path) -> Path:
    return _atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_csv(frame, path: str | Path) -> Path:
    return _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """np.save through a temporary file."""
    return _atomic(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def save_state(path: str | Path, state: dict) -> Path:
    """torch.save through a temporary file, so a killed run never leaves half a checkpoint."""
    import torch

    return _atomic(path, lambda tmp: torch.save(state, tmp))


def ensure_dir(path: Path) -> Path:
    """`path`, made with its parents when missing."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish_dir(tmp: Path, final: Path) -> None:
    """Atomically move a finished temporary folder into place (a concurrent winner is kept)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise


@contextlib.contextmanager
def working_dir(path: str | Path):
    """Run the block in folder `path` (as a user who typed `cd path` would), then come back."""
    here = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(here)
