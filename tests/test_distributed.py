"""``ipcbench run --distributed``: two ranks on loopback under torchrun, and the pieces it is made of.

The launch test (about 20 s on 2 cores) checks what sharding promises: each epoch's
shards are disjoint and together are the images the single-rank plan uses minus the
remainder, every rank yields the same number of batches, the combined throughput is
the sum of the ranks', and no process of the launch is left afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_dataset
from test_results import make_sample

from harness.cli import main
from harness.distributed import combine_epoch, torchrun_env
from harness.errors import IpcbenchError
from harness.measure import children_of, descendants_of, is_alive
from harness.results import ALL_RANKS, ENV_FILE, SAMPLES_FILE, SUMMARY_FILE, read_samples
from strategies import open_dataset
from strategies.plan import make_plan

REPO = Path(__file__).resolve().parents[1]
IMAGES, TILE, BATCH = 5, 32, 4  # 5 images over 2 ranks: one is the remainder every epoch
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
LAUNCH_TIMEOUT_S = 150
LEFTOVER_GRACE_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def adopting_orphans():
    """Make this process the subreaper of what it starts: an orphan stays our descendant, so the check sees it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0)


def leftovers(before: set[int]) -> list[int]:
    """Descendants that appeared since ``before`` and are still alive after a short grace; killed and reaped."""
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (alive := [p for p in descendants_of(os.getpid()) if p not in before and is_alive(p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in set(children_of(os.getpid())) - before:  # adopted: ours to reap, killed or zombie
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return alive


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One 2-rank run (shared by the tests below): its folder, and the processes it left."""
    root = tmp_path_factory.mktemp("distributed")
    dataset = write_dataset(root / "ds", images=IMAGES, height=96, width=128, channels=1)
    out = root / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "harness.cli",
        "run",
        "--distributed",
        "--dataset",
        str(dataset),
        "--strategies",
        "shm",
        "--workers",
        "1",
        "--repeats",
        "1",
        "--epochs",
        "2",
        "--tile",
        str(TILE),
        "--batch-size",
        str(BATCH),
        "--out",
        str(out),
        "--no-report",
    ]
    before = set(descendants_of(os.getpid()))
    with adopting_orphans():
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
        left = leftovers(before)
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return dataset, out, left, done.stdout


def test_two_ranks_on_loopback_shard_the_epoch_and_leave_nothing(launch):
    dataset, out, left, stdout = launch
    assert left == []
    rows = [r for r in read_samples(out / SAMPLES_FILE)]
    shapes = open_dataset(dataset).shapes
    by_epoch: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_epoch.setdefault(row["epoch"], {})[row["rank"]] = row
    assert sorted(by_epoch) == [0, 1, 2]  # the warm-up and 2 measured epochs
    for epoch, ranks in by_epoch.items():
        assert set(ranks) == {"0", "1", ALL_RANKS}
        zero, one = set(ranks["0"]["images"]), set(ranks["1"]["images"])
        assert zero and one and not zero & one
        alone = make_plan(shapes, seed=0, epoch=epoch, tile=TILE, batch_size=BATCH)
        order = [job.image_index for job in alone.jobs]
        assert zero | one == set(order[: IMAGES - IMAGES % 2])  # the single-rank epoch, less the remainder
        assert ranks["0"]["batches"] == ranks["1"]["batches"] > 0
        together = ranks[ALL_RANKS]
        assert together["batches"] == 2 * ranks["0"]["batches"]
        assert together["batches_per_s"] == pytest.approx(
            ranks["0"]["batches_per_s"] + ranks["1"]["batches_per_s"], rel=1e-12
        )
    assert "together" in stdout


def test_rank_zero_writes_one_folder_with_ranks_and_hosts(launch):
    _, out, _, _ = launch
    env = json.loads((out / ENV_FILE).read_text())
    distributed = env["distributed"]
    assert distributed["world_size"] == 2 and distributed["backend"] == "gloo"
    assert [r["rank"] for r in distributed["ranks"]] == [0, 1]
    assert all(r["host"] == socket.gethostname() for r in distributed["ranks"])
    assert env["command"][:3] == ["torchrun", "--nnodes=1", "--nproc-per-node=2"]
    summary = pd.read_csv(out / SUMMARY_FILE, dtype={"rank": str})
    assert sorted(summary["rank"]) == ["0", "1", ALL_RANKS]
    assert (summary["n"] == 2).all() and summary["checksums_consistent"].all()
    assert not (out / "failures.jsonl").exists()


def test_without_torchrun_the_error_says_how_to_launch(monkeypatch, capsys, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    dataset = write_dataset(tmp_path / "ds", images=2)
    assert main(["run", "--distributed", "--dataset", str(dataset), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "run it under torchrun" in err and "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set" in err
    assert not (tmp_path / "out").exists()
    other = write_dataset(tmp_path / "other", images=2)
    assert main(["run", "--distributed", "--dataset", f"{dataset},{other}", "--out", str(tmp_path / "out")]) == 2
    assert "--distributed measures one dataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(IpcbenchError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"})


def test_combined_row_adds_rates_and_counts_each_hosts_shm_once():
    a = make_sample(batches=10, batches_per_s=20.0, mb_per_s=5.0, seconds=0.5, shm_peak_mb=8.0, wait_ms=(1.0, 3.0))
    b = make_sample(batches=30, batches_per_s=30.0, mb_per_s=7.0, seconds=0.4, shm_peak_mb=6.0, wait_ms=(2.0,))
    a, b = dataclasses.replace(a, checksum="a"), dataclasses.replace(b, checksum="b")
    same_host = combine_epoch([a, b], ["h", "h"])
    assert same_host.rank == ALL_RANKS
    assert same_host.batches_per_s == 50.0 and same_host.mb_per_s == 12.0 and same_host.batches == 40
    assert same_host.seconds == 0.5 and same_host.wait_ms == (1.0, 3.0, 2.0) and same_host.wait_ms_max == 3.0
    assert same_host.shm_peak_mb == 8.0  # one /dev/shm, seen by both ranks
    assert combine_epoch([a, b], ["h1", "h2"]).shm_peak_mb == 14.0
    assert combine_epoch([a, b], ["h", "h"]).checksum != combine_epoch([b, a], ["h", "h"]).checksum
    a = dataclasses.replace(a, stage_ms_per_batch={"wait": 4.0})
    assert combine_epoch([a, b], ["h", "h"]).stage_ms_per_batch is None  # b timed no stages
    b = dataclasses.replace(b, stage_ms_per_batch={"wait": 2.0})
    assert combine_epoch([a, b], ["h", "h"]).stage_ms_per_batch == {"wait": pytest.approx(2.5)}  # weighted 10:30
    with pytest.raises(ValueError, match="one row per rank"):
        combine_epoch([a], ["h1", "h2"])
