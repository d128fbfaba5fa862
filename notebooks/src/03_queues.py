# %% [markdown]
# # 3 · Queues, and why they are slow with big arrays
#
# `multiprocessing.Queue` is the textbook way to hand work to processes: the main process puts jobs on a task
# queue, any idle worker takes one, and puts its result on a result queue. Results come back in any order; the
# main process puts them back in plan order.
#
# ```
# main --Job(generation, image)--> tasks (Queue) --> any idle worker
# main <--ImageResult(position, data, masks)-- results (Queue) <-- worker
# ```
#
# What `results.put(result)` does with a processed image: a *feeder thread* in the worker pickles the result,
# copying every pixel into the pickle bytes, and writes the message into one pipe that all workers share,
# under a lock. The main process reads the whole message and unpickles it, which copies the pixels again.
# Compared with the raw-bytes pipe path: two more copies of every byte, a thread, and one pipe for all
# workers.

# %%
from harness.notebook import RUN as run
from harness.notebook import committed, figure, medians, number, only, run_text, say, show_source, table, versus, where
from harness.report import provenance

print(run_text())

# %%
from strategies.mpqueue import ImageResult, QueueWorker

show_source(QueueWorker.run)

# %% [markdown]
# ## Reading the result queue without `get()`
#
# A disclosure: the queue strategy does not call `results.get()`. A worker killed in the middle of writing its
# message leaves half a message in the one pipe every worker writes to; the other workers keep that pipe open,
# so the reader never sees the end of the file, and `get()` waits for the rest of the message forever (post 5
# shows it). The strategy reads the queue's pipe itself, through the queue's private attribute `_reader`,
# with a reader that watches the workers while it waits, and then releases the queue's slot semaphore as
# `get()` would. CPython's own `concurrent.futures` reads its result queue's `_reader` the same way, for the
# same reason. Every private name ipcbench touches sits in one module, `strategies.internals`, and a test
# checks that each still exists in the installed Python:

# %%
from strategies import internals

show_source(internals.queue_reader)

# %% [markdown]
# ## The copies, made visible
#
# One image's worth of tiles of the reference dataset, pickled as the queue pickles it (`ForkingPickler`): the
# message is as large as the pixels themselves, i.e. a full copy, and unpickling it builds new arrays, a
# second copy. The timings below are from this machine, now, for one round trip against one plain copy of the
# same bytes; they vary from run to run.

# %%
import time
from multiprocessing.reduction import ForkingPickler

import numpy as np

from strategies.plan import tiles_per_image

*leading, height, width = provenance.lookup(run.env, "dataset.shape")
channels = leading[0] if leading else 1
tile = int(run.samples["tile"].iloc[0])
batch_size = int(run.samples["batch_size"].iloc[0])
prefetch = int(run.samples["prefetch"].iloc[0])

n_tiles = tiles_per_image(height, width, tile)
tiles = np.ones((n_tiles, channels, tile, tile), np.uint16)
tile_masks = np.ones((n_tiles, tile, tile), np.uint8)
result = ImageResult(generation=1, position=0, image_index=0, data=tiles, masks=tile_masks)
message = ForkingPickler.dumps(result)
received = ForkingPickler.loads(message)
payload = tiles.nbytes + tile_masks.nbytes
print(
    f"pixels: {payload / 1e6:.1f} MB; pickled message: {len(message) / 1e6:.1f} MB "
    f"({len(message) - payload:,} bytes more than the pixels)"
)
print(
    f"the received arrays are new memory: {not np.shares_memory(received.data, tiles)}, "
    f"equal to the sent ones: {np.array_equal(received.data, tiles)}"
)


def best_of(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


tiles_copy, masks_copy = np.empty_like(tiles), np.empty_like(tile_masks)
round_trip_s = best_of(lambda: ForkingPickler.loads(ForkingPickler.dumps(result)))
copy_s = best_of(lambda: (np.copyto(tiles_copy, tiles), np.copyto(masks_copy, tile_masks)))
print(
    f"pickle + unpickle: {round_trip_s * 1000:.1f} ms; one copy of the same pixels: {copy_s * 1000:.1f} ms "
    f"(best of 5, this machine, now)"
)

# %% [markdown]
# Two more consequences follow from `put` returning before the feeder thread has pickled the result: the worker
# cannot reuse its output buffer (the next image would overwrite the one not yet pickled), so every image
# allocates fresh arrays; and a result stays in memory until it has been pickled and written, on top of the
# pickle itself.
#
# ## In the reference run
#
# The queue strategy next to the pipe strategy and the baseline, and its throughput relative to the pipe's at
# each worker count:

# %%
table(medians(only(run, "baseline", "pipe", "queue"), "batches_per_s", "mb_per_s", "cpu_s_per_batch", "pss_peak_mb"))
for workers in sorted(run.samples.loc[run.samples["strategy"] == "queue", "workers"].unique()):
    say(f"queue against pipe with {workers} worker(s), batches/s: {versus(run, 'queue', 'pipe', workers)}.")

# %%
figure("throughput", only(run, "baseline", "pipe", "queue"))

# %% [markdown]
# ## The transfer on its own
#
# In the full workload the per-image work (decode, mask, tiles) takes most of the time, so it hides how much
# the transfer costs. The *transfer* workload removes it: each worker sends the same ready-made batch, 4 MiB of
# pixels and their masks, again and again, and the measurement is only how fast each design moves bytes to the
# main process. R is the number of such batches one core copies per second with `memcpy`, measured in the same
# run: the ceiling for any design that copies the bytes once.

# %%
from harness.report.goals import copies_per_s as memcpy_rate
from harness.report.goals import transfer_batch_size

# Each epoch on its own and the workers started before the first batch, as so far.
goals = where(committed("reference-goals"), prefetch_next_epoch="off", background_start="off")
transfer = goals.samples[goals.samples["workload"] == "transfer"]
moved_summary = goals.summary[goals.summary["workload"] == "transfer"].set_index("strategy")
copies_per_s = memcpy_rate(goals.env, transfer_batch_size(goals))
rates = moved_summary["batches_per_s_median"].rename("batches/s").sort_values(ascending=False)
table((rates.to_frame().assign(**{"x R": rates / copies_per_s})).drop(index="baseline", errors="ignore"))
say(
    f"With {int(transfer['workers'].iloc[0])} workers, moving 4 MiB batches: queue "
    f"{number(rates['queue'])} batches/s, pipe {number(rates['pipe'])}, shared memory {number(rates['shm'])} "
    f"(R, one core's memcpy: {number(copies_per_s)}). The queue moves bytes "
    f"{number(rates['pipe'] / rates['queue'])}x slower than the pipe, which copies each byte in and out of the "
    f"kernel once, and {number(rates['shm'] / rates['queue'])}x slower than shared memory."
)

# %% [markdown]
# ## Where the time goes
#
# The strategies time their own stages. For the queue, *serialize* is the pickling in the worker's feeder thread
# and the unpickling in the main process, *transfer* the writing into the shared pipe and the reading out of it;
# the pipe has no serialize stage at all.

# %%
figure("stages", only(run, "baseline", "pipe", "queue"))

# %% [markdown]
# CPU per batch shows the price of the extra copies (pickling and unpickling run on the same cores as
# everything else), and memory shows the fresh arrays and pickles in flight:

# %%
figure("cpu_per_batch", only(run, "baseline", "pipe", "queue"))

# %%
figure("memory", only(run, "pipe", "queue"))

# %%
figure("wait_ecdf", only(run, "pipe", "queue"))
