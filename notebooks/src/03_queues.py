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
from IPython.display import display

from harness.notebook import RUN as run
from harness.notebook import figure, medians, only, run_text, show_source
from harness.report import provenance

print(run_text())

# %%
from strategies.mpqueue import ImageResult, QueueWorker

show_source(QueueWorker.run)

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
display(medians(only(run, "baseline", "pipe", "queue"), "batches_per_s", "mb_per_s", "cpu_s_per_batch", "pss_peak_mb"))
rates = run.summary.pivot_table(index="workers", columns="strategy", values="batches_per_s_median")
(rates["queue"] / rates["pipe"]).rename("queue / pipe, batches/s").to_frame()

# %%
figure("throughput", only(run, "baseline", "pipe", "queue"))

# %% [markdown]
# CPU per batch shows the price of the extra copies (pickling and unpickling run on the same cores as
# everything else), and memory shows the fresh arrays and pickles in flight:

# %%
figure("cpu_per_batch", only(run, "baseline", "pipe", "queue"))

# %%
figure("memory", only(run, "pipe", "queue"))

# %%
figure("wait_ecdf", only(run, "pipe", "queue"))
