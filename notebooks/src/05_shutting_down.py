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

from harness.notebook import RUN as run
from harness.notebook import figure, medians, run_text, show_source

print(run_text())

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
lifecycle.round(1)

# %%
slowest = run.summary.loc[run.summary["shutdown_s_median"].idxmax()]
print(
    f"Slowest median shutdown: {slowest['strategy']} (workers={slowest['workers']}), "
    f"{slowest['shutdown_s_median'] * 1000:.0f} ms; the escalation bound is {sum(graces.values()):g} s."
)
figure("lifecycle")

# %%
if run.faults is not None and not run.faults.empty:
    figure("faults")
else:
    print("This run has no faults.jsonl; `ipcbench faults --out RUN_DIR` adds the shutdown-cleanliness matrix.")

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
