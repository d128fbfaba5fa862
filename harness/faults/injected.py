"""The faults the fault scenarios arm at the strategies' injection points (strategies.injection).

Each function is an action for one point; a scenario names them in its ``inject``
mapping and :func:`arming` turns that into the environment every worker arms from.
They run in worker processes only (the main process arms nothing).

One worker breaks per scenario, at its ``VICTIM_IMAGE``-th image: the first worker
process to get there claims a marker file named after the process group (the
scenario's own session, shared by every worker), so exactly one worker breaks,
whichever strategy decides who gets which image.
"""

from __future__ import annotations

import os
import signal
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from strategies import injection
from strategies.internals import queue_locks, queue_writer
from strategies.messages import Skipped

# The victim strikes at its second image: one image of the epoch has got through first.
VICTIM_IMAGE = 2
START_FAILURE_MESSAGE = "injected start-up failure"
MODULE = __name__

_images_seen = 0
# The image (its position in the epoch) this worker struck at: its tiles are where it dies.
# Kept by image, not as "the image in hand", so that threads of one worker process
# (spdl_arena's) working on other images neither clear it nor die for it.
_victim: int | None = None


def arming(actions: dict[str, str]) -> dict[str, str]:
    """The environment that arms ``{point: function of this module}`` in every worker of a scenario."""
    return {injection.ENV: injection.spec({point: f"{MODULE}:{name}" for point, name in actions.items()})}


def strikes() -> bool:
    """Count this worker's images; True at its ``VICTIM_IMAGE``-th if it is the scenario's one victim."""
    global _images_seen
    _images_seen += 1
    if _images_seen != VICTIM_IMAGE:
        return False
    try:
        os.close(os.open(victim_marker(), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def victim_marker() -> Path:
    return Path(tempfile.gettempdir()) / f"ipcbench-fault-victim-{os.getpgid(0)}"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def send_half(fd: int, payload: bytes | memoryview) -> None:
    """Start a ``send_bytes`` message on ``fd``: its full-length header, then half its bytes."""
    payload = memoryview(payload).cast("B")
    write_all(fd, struct.pack("!i", len(payload)))
    write_all(fd, payload[: len(payload) // 2])


# -- the actions -------------------------------------------------------------------------
def failing_init(worker_id: int) -> None:
    """worker.start: the worker's set-up fails (before it says Ready)."""
    raise RuntimeError(f"{START_FAILURE_MESSAGE} in worker {worker_id}")


def pixels_cut_short(conn: Any, data: Any) -> None:
    """pipe.pixels: the victim sends half of an image's pixels (the header promised them all), then dies."""
    if strikes():
        send_half(conn.fileno(), memoryview(data))
        die()


def queue_message_cut_short(results: Any, result: Any) -> None:
    """queue.result: the victim writes half its pickled result into the shared pipe, holding the write lock, dies.

    What ``Queue.put`` and its feeder thread do, stopped half-way through the write.
    """
    if isinstance(result, Skipped) or not strikes():
        return
    from multiprocessing.reduction import ForkingPickler

    slots, write_lock = queue_locks(results)
    slots.acquire(timeout=10)
    write_lock.acquire()
    send_half(queue_writer(results).fileno(), ForkingPickler.dumps(result))
    die()


def choose_victim(job: Any) -> None:
    """tiles.start: count the image; the victim's is the one it breaks while writing."""
    global _victim
    if strikes():
        _victim = job.position


def die_half_way(job: Any, index: int) -> None:
    """tiles.row: the victim dies with half of the image's tiles written (into a slot or a shared tensor)."""
    if job.position == _victim and index == job.n_tiles // 2:
        die()


def die_after_writing(job: Any) -> None:
    """tiles.done: the victim wrote every tile into shared memory, and dies before announcing them."""
    if job.position == _victim:
        die()


def hang_ignoring_sigterm(job: Any) -> None:
    """tiles.start: the victim ignores SIGTERM and blocks for good: only SIGKILL ends it."""
    if strikes():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
