"""The Dask route of `cxr predict`: shards as tasks on a cluster (a LocalCluster of 2 worker
processes here), one worker killed in the middle of a shard, the shard run again and resumed, and
the merge finding every file exactly once."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from test_predict import _archive, model_file  # noqa: F401 - model_file is a fixture

from cxr.assess import results
from cxr.cli import cluster
from cxr.cli import main

FILES = 90


def _rows(part: Path) -> int:
    try:
        return max(0, sum(1 for _ in part.open()) - 1)
    except FileNotFoundError:
        return 0


def test_shards_on_a_dask_cluster_survive_a_killed_worker(model_file: Path, tmp_path: Path, capsys):  # noqa: F811
    root = _archive(tmp_path / "archive", FILES)
    parts = tmp_path / "parts"
    # one image per pass and a Grad-CAM each: slow enough that a shard is caught half done
    options = ["--model", str(model_file), "--batch", "1", "--cam", str(tmp_path / "cams")]
    killed = None
    with cluster.client_for("local:2") as client, ThreadPoolExecutor(1) as pool:
        pids = client.run(os.getpid)
        assert len(pids) == 2
        job = pool.submit(cluster.predict_on, client, [root], 3, parts, options)
        deadline = time.monotonic() + 240
        while killed is None and not job.done() and time.monotonic() < deadline:
            for address, keys in client.processing().items():
                for key in keys:
                    k = int(str(key).split("-shard-")[1].split("-of-")[0])
                    part = cluster.part_path(parts, k, 3)
                    if _rows(part) >= 2:  # the shard has written rows and is still running: kill its worker
                        os.kill(pids[address], signal.SIGKILL)
                        killed = (k, _rows(part))
                        break
                if killed:
                    break
            time.sleep(0.02)
        done = job.result(timeout=300)
    assert killed is not None, "no shard was caught running"
    assert [d["exit_code"] for d in done] == [0, 0, 0]
    k, rows_when_killed = killed
    shard_files = {f for f in results.read(cluster.part_path(parts, k, 3)).file}
    assert len(shard_files) > rows_when_killed, "the killed shard had finished"
    assert results.read_run(cluster.part_path(parts, k, 3))["complete"] is True

    merged = tmp_path / "all.csv"
    assert main.main(["predict", "--merge", str(merged), *[d["part"] for d in done]]) == 0
    assert "every file is there exactly once" in capsys.readouterr().out
    rows = results.read(merged)
    assert len(rows) == FILES and rows.file.is_unique and (rows.status == "ok").all()


def test_the_command_line_runs_the_shards_on_a_local_cluster_and_merges_them(model_file: Path, tmp_path: Path,  # noqa: F811
                                                                              capsys):
    root = _archive(tmp_path / "archive", 12)
    out = tmp_path / "all.csv"
    assert main.main(["predict", str(root), "--model", str(model_file), "--dask", "local:2", "--shards", "3",
                      "--out", str(out)]) == 0
    assert "every file is there exactly once" in capsys.readouterr().out
    assert len(results.read(out)) == 12 and sorted(p.name for p in Path(str(out) + ".parts").glob("*.csv")) == [
        "part-1-of-3.csv", "part-2-of-3.csv", "part-3-of-3.csv"]
    assert main.main(["predict", str(root), "--dask", "local:2", "--shard", "1/2", "--out", str(out)]) == 2
    assert "leave out --shard" in capsys.readouterr().err
