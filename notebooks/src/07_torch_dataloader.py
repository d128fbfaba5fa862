# %% [markdown]
# # 7 · torch's DataLoader, mapped onto the three designs
#
# The post sets out to "replicate the important parts" of PyTorch's `Dataset` and `DataLoader`. Having built the
# three designs by hand, we can read the DataLoader's multi-process iterator
# (`torch.utils.data.dataloader._MultiProcessingDataLoaderIter`) as a combination of them:
#
# | the DataLoader's part | what it does | the design it matches |
# |:---|:---|:---|
# | one *index queue* per worker | the main process deals indices round robin, at most `prefetch_factor` per worker | pipe: requests addressed to one worker |
# | one *result queue* for all workers | every worker puts its (pickled) results on it; the main process reorders them | queue: one channel, results out of order |
# | tensors in shared memory | a tensor's storage is moved to shared memory when pickled; only a file descriptor crosses the queue | shm: the pixels never travel through a pipe |
# | `pin_memory` thread | copies each batch into page-locked memory for a faster, asynchronous copy to the GPU | (none: the three designs stop at host memory) |
# | `_shutdown_workers` | a done event, `None` on every index queue, bounded joins, then terminate | the shutdown protocol of post 5 |
# | `ManagerWatchdog` in each worker | the worker exits when its parent is gone | workers watch their parent (post 5) |
#
# The one difference from `shm` that matters for speed: the DataLoader allocates fresh shared-memory storage for
# every result and passes a new file descriptor for it, where `shm` writes into slots it reuses.

# %%
import math

import torch
from torch.utils.data import dataloader

from harness.notebook import RUN as run
from harness.notebook import committed, figure, medians, number, only, run_text, say, show_source, table, versus, where

print(run_text())
say(f"torch {torch.__version__}, as installed here; the source below is the installed one.")

# %% [markdown]
# ## Its shutdown, next to ours
#
# torch's own comment in `_shutdown_workers` lists the same hazards as post 5 (a worker blocked on a full queue,
# a dead worker, the interpreter shutting down); its answer is the same escalation: ask, wait with a bound,
# then terminate.

# %%
show_source(dataloader._MultiProcessingDataLoaderIter._shutdown_workers)

# %% [markdown]
# ## How ipcbench drives it
#
# The `torch` strategy uses the DataLoader as a reader would, with the per-image work in its `Dataset`: one
# item per image (`batch_size=None`, so the main process cuts batches across image boundaries exactly as every
# other strategy does and the batches are bit-identical), `num_workers` and `prefetch_factor` from the config,
# persistent workers, and a sampler that carries each epoch's plan as the indices. Its module docstring has the
# reasons for every setting (`strategies/torch_loader.py`).
#
# ## Measured beside the three designs

# %%
table(
    medians(only(run, "baseline", "pipe", "queue", "shm", "torch"), "batches_per_s", "cpu_s_per_batch", "pss_peak_mb")
)
most = int(run.samples["workers"].max())
for other in ("queue", "shm"):
    say(f"torch against {other} at {most} workers, batches/s: {versus(run, 'torch', other, most)}.")

# %% [markdown]
# Where its time goes: the per-image work runs in the workers (compute), and the main process waits for results,
# unpickles them and maps their shared memory inside torch's own iterator, which the stage timers cannot reach
# (that time lands in *wait*).

# %%
figure("stages", only(run, "pipe", "queue", "shm", "torch"))

# %% [markdown]
# Moving bytes alone (the transfer workload of post 3) shows what fresh shared memory for every result, and a
# pickled descriptor on one result queue, cost against slots that are reused:

# %%
# Each epoch on its own and the workers started before the first batch, as torch does.
goals = where(committed("reference-goals"), prefetch_next_epoch="off", background_start="off")
moved = goals.summary[goals.summary["workload"] == "transfer"].set_index("strategy")["batches_per_s_median"]
table(moved.reindex(["queue", "torch", "pipe", "shm", "shm_zerocopy"]).rename("transfer, batches/s"))
nearer = (
    "the queue"
    if abs(math.log(moved["torch"] / moved["queue"])) < abs(math.log(moved["torch"] / moved["shm"]))
    else "shared memory"
)
say(
    f"Moving 4 MiB batches: torch {number(moved['torch'])} batches/s, queue {number(moved['queue'])}, "
    f"shm {number(moved['shm'])}: the DataLoader is nearer {nearer}."
)

# %% [markdown]
# Start-up: every worker needs torch imported. The strategy starts multiprocessing's fork server with torch
# preloaded, so workers fork with it already loaded; the first batch still comes later than with the designs
# that need only NumPy, unless the DataLoader starts in the background (`background_start=True`), while the main
# process makes the first images itself (the verdict post measures both ways).

# %%
table(medians(only(run, "baseline", "pipe", "shm", "torch"), "time_to_first_batch_s", "startup_s"))

# %% [markdown]
# ## Pinned memory: not measured here
#
# The post lists pinned memory among its key concepts. Page-locked host memory lets the GPU copy a batch with
# DMA, asynchronously (`tensor.to("cuda", non_blocking=True)`), and `DataLoader(pin_memory=True)` runs a thread
# that copies every batch into it. Whether that pays depends on the GPU, its PCIe link and the batch size, and
# the machine these measurements ran on has no GPU, so no figure in this series measures it. In ipcbench,
# `LoaderConfig(output="torch", pin_memory=True, device="cuda")` pins the assembled batch and copies it to the
# GPU for every strategy alike; on a machine without CUDA it is refused with a clear error before any worker
# starts, which is all that could be tested here.
