# %% [markdown]
# # 2 · Pipes: a request/response loop
#
# Each worker process gets its own `multiprocessing.Pipe`. The main process sends a *request* (process image
# *k* of this epoch); the worker does the per-image work and answers on the same pipe, then waits for the next
# request. Up to `prefetch` requests per worker are in flight, so workers process the next images while the
# training loop consumes the current one.
#
# ```
# main --Job(generation, image)----------------> worker i
# main <--ImageDone(position, n_tiles), pickled-- worker i
# main <--tile data, raw bytes------------------- worker i
# main <--tile masks, raw bytes------------------ worker i
# ```
#
# `generation` numbers the epochs: after an early `break`, answers for the abandoned epoch are recognised
# and dropped.

# %%
import pandas as pd
from IPython.display import display

from harness.notebook import RUN as run
from harness.notebook import figure, medians, only, run_text, show_source
from harness.report import provenance

print(run_text())

# %% [markdown]
# ## The worker's loop
#
# The child loop of the post, *check the pipe for requests, reset or stop; process the requested image;
# deliver it; wait for a new request*, is `RequestWorker.run`. It reads every message already waiting before
# it starts an image, so a `Stop` or a `Reset` (after an early `break`) is seen without delay, and stale
# requests are answered `Skipped` instead of computed.

# %%
from strategies.pipe import PipeGenerator, PipeWorker
from strategies.request_response import RequestWorker

show_source(RequestWorker.run)

# %% [markdown]
# ## The raw-bytes path
#
# `conn.send((data, masks))` would pickle the arrays: the pickle is a second copy of every byte in the worker,
# and unpickling makes a third in the main process. Instead, `PipeWorker.deliver` sends a small pickled header
# and then the tile buffers themselves with `send_bytes` (no pickling); the main process reads them straight
# into preallocated arrays (`_collect`), which go back to a small stock once their tiles are in batches.
# The bytes are copied into the pipe and out of it by the kernel, and nowhere else.

# %%
show_source(PipeWorker.deliver)
show_source(PipeGenerator._collect)

# %% [markdown]
# What crosses the pipe for one image of the reference run's dataset: the header, pickled as `Connection.send`
# pickles it, and the two raw payloads.

# %%
from multiprocessing.reduction import ForkingPickler

from strategies.messages import ImageDone
from strategies.plan import tiles_per_image
from strategies.work import tile_nbytes

*leading, height, width = provenance.lookup(run.env, "dataset.shape")
channels = leading[0] if leading else 1
tile = int(run.samples["tile"].iloc[0])
batch_size = int(run.samples["batch_size"].iloc[0])
prefetch = int(run.samples["prefetch"].iloc[0])

n_tiles = tiles_per_image(height, width, tile)
data_bytes, mask_bytes = (n_tiles * b for b in tile_nbytes(channels, tile))
header_bytes = len(ForkingPickler.dumps(ImageDone(generation=1, position=0, image_index=0, n_tiles=n_tiles)))
pd.Series(
    {"header (pickled)": header_bytes, "tile data (raw)": data_bytes, "tile masks (raw)": mask_bytes},
    name=f"bytes per image ({n_tiles} tiles)",
)

# %% [markdown]
# ## In the reference run
#
# Throughput, payload rate and CPU per batch of the pipe strategy next to the baseline, and their ratio at
# each worker count. With one worker, images are still processed one at a time (now in parallel with the main
# process's batch assembly), plus the transfer; a second worker can process two images at once, given a free
# core to run on.

# %%
display(medians(only(run, "baseline", "pipe"), "batches_per_s", "mb_per_s", "wait_ms_p50", "cpu_s_per_batch"))
rates = run.summary.pivot_table(index="workers", columns="strategy", values="batches_per_s_median")
# The baseline is one process whatever `workers` says: where it was not run at a worker count, take its median.
baseline = rates["baseline"].fillna(rates["baseline"].median())
(rates["pipe"] / baseline).rename("pipe / baseline, batches/s").to_frame()

# %%
figure("throughput", only(run, "baseline", "pipe"))

# %% [markdown]
# The dotted line is R, the batches one core can copy per second at this machine's memcpy bandwidth: how far a
# strategy is from the limit that copying alone would set. The wait per batch shows whether the workers stay
# ahead of the loop: where they do, most waits are the copy of tiles into the batch; the dotted line across the
# wait figure marks the share of batches that wait for the next image's work.

# %%
figure("wait_ecdf", only(run, "baseline", "pipe"))

# %% [markdown]
# CPU time per batch counts every process (main and workers): what the pipe strategy spends on top of the
# baseline's per-image work is the transfer and the coordination.

# %%
figure("cpu_per_batch", only(run, "baseline", "pipe"))
