"""`cxr predict` on a Dask cluster: an archive's files in N shards, one task per shard, on any
`dask.distributed` cluster whose workers see the same paths (a `LocalCluster` on one machine, or
a scheduler's address); the parts are then merged (`cxr predict --merge`).

A task is the command itself, `cxr predict PATHS --shard K/N --out PARTS/part-K-of-N.csv ...`,
run by the worker as a child process that dies with it. The command writes its part as it goes and resumes from it, so a
shard whose worker dies (killed, out of memory, a lost machine) is run again by the scheduler on
another worker and goes on from the rows already written: no file is lost or predicted twice,
which the merge checks. The scheduler reruns a task whose worker died up to its
`distributed.scheduler.allowed-failures` times (3 by default); `retries` reruns one that failed.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: the command's own options a shard passes on (the rest, --out, --shard and --merge, are the route's)
PASSED_ON = ("--model", "--threshold", "--cam", "--batch", "--site", "--site-check", "--device", "--backend")


def part_path(parts: Path, k: int, n: int) -> Path:
    return Path(parts) / f"part-{k}-of-{n}.csv"


def shard_argv(paths: Sequence[str | Path], k: int, n: int, parts: Path, options: Sequence[str] = (),
               profile: str | None = None) -> list[str]:
    """The `cxr` command line of shard `k` of `n` (decoding in the worker's own process: a Dask
    worker is one already)."""
    head = ["--profile", profile] if profile else []
    return [*head, "predict", *map(str, paths), "--shard", f"{k}/{n}", "--out", str(part_path(parts, k, n)),
            "--workers", "0", *options]


def run_shard(argv: list[str]) -> dict:
    """One shard, from a Dask worker: the command in a process of its own that dies with the worker
    (Linux's parent-death signal), so a shard run again never races a stray copy of itself. Returns
    its exit code (0: every file read; 1: some were not, and their rows say why) and its part."""
    from cxr.assess.predict import die_with

    parent = os.getpid()
    done = subprocess.run([sys.executable, "-m", "cxr.cli", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, preexec_fn=lambda: die_with(parent))
    return {"argv": list(argv), "exit_code": done.returncode, "part": argv[argv.index("--out") + 1],
            "stderr_tail": done.stderr[-2000:]}


def predict_on(client, paths: Sequence[str | Path], shards: int, parts: str | Path, options: Sequence[str] = (),
               profile: str | None = None, retries: int = 2) -> list[dict]:
    """Every shard of `paths` as a task on the cluster of `client`; waits for them all and returns
    each task's result (`run_shard`). A shard that ends with an exit code other than 0 or 1 is an error."""
    if shards < 1:
        raise ValueError("--shards must be at least 1")
    parts = Path(parts)
    parts.mkdir(parents=True, exist_ok=True)
    argvs = [shard_argv(paths, k, shards, parts, options, profile) for k in range(1, shards + 1)]
    run_id = hashlib.sha256(repr(argvs).encode()).hexdigest()[:10]
    futures = [client.submit(run_shard, argv, key=f"cxr-predict-{run_id}-shard-{k}-of-{shards}", pure=False,
                             retries=retries) for k, argv in enumerate(argvs, 1)]
    done = client.gather(futures)
    failed = [d for d in done if d["exit_code"] not in (0, 1)]
    if failed:
        raise RuntimeError("shards failed: " + "; ".join(f"{d['part']} (exit {d['exit_code']}: "
                                                         f"{d['stderr_tail'].strip()[-300:]})" for d in failed)
                           + ". Run the same command again: finished parts are skipped, the rest resume.")
    return done


def client_for(address: str):
    """A Dask client: `local:N` starts a `LocalCluster` of N single-threaded worker processes here;
    anything else is a scheduler's address (tcp://host:8786)."""
    from dask.distributed import Client, LocalCluster

    if address.startswith("local"):
        n = int(address.partition(":")[2] or 2)
        return Client(LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"))
    return Client(address)
