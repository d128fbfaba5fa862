# %% [markdown]
# # 5 · Shutting down gracefully
#
# The post's last section: processes need a way to shut down; a broken pipe must start the shutdown; queues
# must be emptied; all shared memory must be closed and unlinked. ipcbench writes this down as one protocol
# that every multi-process strategy shares (`strategies.workers.WorkerPool`; `docs/design.md`, "Shutdown protocol"):
#
# 1. **No wait without a timeout and a liveness check.** The main process waits on its pipes *and* on the
#    workers' process sentinels (`multiprocessing.connection.wait`): a worker that dies is a `WorkerDiedError`
#    naming it and its exit code, a worker that stays silent past `LoaderConfig.timeout` is a
#    `WorkerTimeoutError`. Neither is ever a hang.
# 2. **A worker's exception travels as data** and is raised again in the main process with the worker's
#    traceback attached.
# 3. **`close()` escalates, bounded and idempotent:** a stop message, then a bounded join that keeps draining the
#    pipes (a worker blocked writing a big result into a full pipe cannot see the stop behind it), then SIGTERM
#    and a bounded join, then SIGKILL and a bounded join.
# 4. **Shared memory has exactly one owner**, the main process, which unlinks every segment after the workers
#    are gone, also when one of them was killed. If the main process itself is killed, the resource tracker
#    unlinks them.
# 5. **Workers watch their parent** and exit on their own when it dies.
# 6. **Queues are emptied and closed** by the main process, so no feeder thread stays blocked on a full pipe.

# %%
import os
from pathlib import Path

import pandas as pd

from harness.notebook import RUN as run
from harness.notebook import committed, figure, medians, number, root_dir, run_text, say, show_source, table

print(run_text())

# %% [markdown]
# ## What breaks without it
#
# One failure makes the case. A worker puts a processed image (64 MB here) on a plain `multiprocessing.Queue`,
# and is killed while its feeder thread is half-way through writing the message into the queue's pipe. The
# main process then calls `get(timeout=3)`. The timeout only covers waiting for the *first* byte: bytes are
# there, so `get` starts reading the message, and waits for the rest, which will never come. The pipe never
# reports its end either, because the main process itself (and any other worker) holds its write end open. The
# program below does exactly this; it runs in a child process, so this notebook can stop it from outside.

# %%
import subprocess
import sys
import textwrap

HANG_DEMO = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    import numpy as np

    MESSAGE_MB = 64

    def worker(queue):
        queue.put(np.ones(MESSAGE_MB << 20, np.uint8))  # the feeder thread writes it into a 64 KiB pipe

    if __name__ == "__main__":
        queue = mp.get_context("fork").Queue()
        child = mp.get_context("fork").Process(target=worker, args=(queue,))
        child.start()
        queue._reader.poll(10)  # the first bytes of the message are in the pipe
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        print(f"worker killed mid-put of a {MESSAGE_MB} MB message (exit code {child.exitcode})")
        print("calling queue.get(timeout=3)", flush=True)
        start = time.monotonic()
        queue.get(timeout=3)
        print(f"get returned after {time.monotonic() - start:.1f} s")
    """
)
WAIT_S = 8
try:
    done = subprocess.run([sys.executable, "-c", HANG_DEMO], capture_output=True, text=True, timeout=WAIT_S)
    print(done.stdout, done.stderr)
except subprocess.TimeoutExpired as hung:  # subprocess.run has killed the child
    print((hung.stdout or b"").decode() if isinstance(hung.stdout, bytes) else hung.stdout or "", end="")
    print(f"... still inside queue.get(timeout=3) after {WAIT_S} s: the program had to be killed from outside.")

# %% [markdown]
# The queue strategy never calls `get()` for that reason (post 3): it reads the queue's pipe in pieces,
# watching the workers' sentinels, so the same kill is a `WorkerDiedError` within milliseconds. The fault
# matrix below has that very case (`sigkill_mid_transfer`) for every strategy.

# %%
from strategies import constants
from strategies.workers import WorkerPool

graces = {name: getattr(constants, name) for name in ("STOP_GRACE_S", "TERMINATE_GRACE_S", "KILL_GRACE_S")}
print(", ".join(f"{name} = {value:g} s" for name, value in graces.items()))
print(
    f"close() returns within about {sum(graces.values()):g} s even when every worker ignores the stop message;"
    f" workers notice a dead parent within PARENT_POLL_S = {constants.PARENT_POLL_S:g} s."
)
show_source(WorkerPool.close)

# %% [markdown]
# ## Shutdown in the reference run
#
# `shutdown_s` is measured from the `close()` call until every worker is gone, once per process (so `n`
# here counts processes); `leaked_shm` and `leftover_processes` count what was left afterwards.

# %%
lifecycle = (medians(run, "startup_s", "shutdown_s") * [1, 1000, 1000]).rename(
    columns={"startup_s": "startup (ms)", "shutdown_s": "shutdown (ms)"}
)
for name in ("leaked_shm_max", "leftover_processes_max"):
    if name in run.summary:
        lifecycle[name.removesuffix("_max")] = run.summary.set_index(["strategy", "workers"])[name]
table(lifecycle)

# %%
slowest = run.summary.loc[run.summary["shutdown_s_median"].idxmax()]
say(
    f"The slowest median shutdown is {slowest['strategy']}'s (workers={slowest['workers']}): "
    f"{number(slowest['shutdown_s_median'] * 1000)} ms, against an escalation bound of {sum(graces.values()):g} s."
)
figure("lifecycle")

# %% [markdown]
# ## Every failure, on purpose: the fault matrix
#
# `ipcbench faults` runs each strategy through a list of scenarios, each in a fresh process: a worker that
# raises, is killed (idle, mid-epoch, mid-transfer, right after writing shared memory), hangs, ignores SIGTERM,
# or stops reading; Ctrl-C, a killed main process, a killed resource tracker; and the ways training programs
# use loaders (a peek at one batch before the loop, a train and a validation loader side by side, the program's
# own multiprocessing, `close()` from another thread, a closed loader still referenced, a forked child). A cell
# is *clean* when the error is the right one, names its cause, and nothing is left behind: no process, no
# shared-memory segment, no open descriptor. The committed matrix:

# %%
faults = committed("reference-faults")
matrix = faults.faults
say(
    f"{int(matrix['clean'].sum())} of {len(matrix)} cells clean: {matrix['scenario'].nunique()} scenarios x "
    f"{matrix['strategy'].nunique()} strategies ({', '.join(matrix['strategy'].unique())})."
)
figure("faults", faults)

# %%
errors = matrix.dropna(subset=["time_to_error_s"]).groupby("scenario")["time_to_error_s"]
table(
    (errors.median() * 1000)
    .rename("time to the error, ms (median over strategies)")
    .sort_values()
    .to_frame()
    .assign(**{"slowest strategy, ms": errors.max() * 1000})
)

# %% [markdown]
# The two slow rows are the hangs: a worker that stops answering is declared dead only after
# `LoaderConfig.timeout`, which the matrix sets to a few seconds (the default is longer, since a slow image is
# not a hang).
#
# ## Many times over: the soak test
#
# A leak of one descriptor per loader is invisible in one run and fatal in a job that builds a validation loader
# every epoch for a week. `ipcbench soak` creates a loader, takes three batches, breaks out of the loop and
# closes it, hundreds of times, counting descriptors, `/dev/shm` entries, threads, child processes and memory
# after a warm-up and at the end:

# %%
import json

soak = json.loads((root_dir() / "results" / "reference-soak" / "soak.json").read_text())
table(
    pd.DataFrame(
        [
            {
                "strategy": record["strategy"],
                "cycles": record["cycles"],
                **{f"+{k}": v for k, v in record["growth"].items()},
                "passed": record["passed"],
            }
            for record in soak
        ]
    ),
    index=False,
)

# %% [markdown]
# ## Live: kill a worker
#
# A shared-memory generator with two workers on a tiny dataset. After the first batch, one worker is sent
# SIGKILL: no exception, no message, it just disappears. The loop goes on until the main process next waits
# for that worker; the sentinel tells it the worker is gone, and `next()` raises `WorkerDiedError` after
# closing the generator (every worker stopped, every segment unlinked).

# %%
import shutil
import signal
import tempfile
import time

import psutil

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, WorkerDiedError, make_generator
from strategies.constants import SHM_PREFIX
from strategies.shm_segments import stale_segments

scratch = Path(tempfile.mkdtemp(prefix="ipcbench-notebook-"))
tiny = ensure_dataset("synth", out=scratch / "synth", images=2, height=600, width=800)


def our_segments():
    """This kernel's ipcbench segments in /dev/shm (the owner's pid is in the name)."""
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"{SHM_PREFIX}{os.getpid()}_"))


def running(pids):
    """Those of ``pids`` that still run (a zombie, dead but not yet reaped, does not count)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


config = LoaderConfig(batch_size=4, tile=256, workers=2, prefetch=2, timeout=10.0)
stale_before = set(stale_segments())  # a program killed earlier may have left some: not this demo's
caught = None
with make_generator("shm", tiny, config) as gen:
    next(iter(gen))
    pids, segments = gen.worker_pids(), [s.name for s in gen.segments]
    print(f"workers {pids}, segments {segments}")
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        for _ in range(20):  # the images in flight may already be home: the next epoch asks the dead worker
            for _ in gen:
                pass
    except WorkerDiedError as error:
        caught, detected_s = error, time.monotonic() - killed_at
assert caught is not None, "the dead worker went unnoticed"
print(f"{type(caught).__name__} after {detected_s * 1000:.0f} ms: {caught}")
print(f"exit code {caught.exitcode}, worker {caught.worker_id}, pid {caught.pid}")

# %% [markdown]
# What is left: `stale_segments()` lists project segments whose owner process is gone, and none may have
# appeared since the demo began (ones a program killed earlier left are removed by `ipcbench clean`);
# this kernel's own segments (still alive, so not "stale") are checked by name; and both workers are gone.
# The children this kernel still has are multiprocessing's fork server and resource tracker, shared by every
# generator of the process, not left over by this one.

# %%
left = {
    "new stale segments": sorted(set(stale_segments()) - stale_before),
    "this kernel's segments": our_segments(),
    "workers still running": running(pids),
}
for what, value in left.items():
    print(f"{what}: {value}")
children = psutil.Process().children(recursive=True)
print("children of this kernel:", [(p.pid, " ".join(p.cmdline())[:90]) for p in children] or "none")
assert not any(left.values()), left
shutil.rmtree(scratch)
