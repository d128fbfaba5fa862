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
#
# ## Why the post calls it "unreliable"
#
# The post's heading for this design is "Alternative but unreliable complexity", without saying what fails.
# Written naively, a request/response loop fails in four ways, and each one is a hang rather than an error:
#
# 1. **A dead worker.** The main process waits in `conn.recv()` for an answer that never comes. A worker killed
#    outright closes its end and `recv` raises `EOFError`; a worker that is *stuck* (a deadlock in a library, a
#    stopped process) keeps it open, and `recv` waits forever.
# 2. **A half-written message.** `recv_bytes` returns only whole messages: a worker that dies mid-way through a
#    big answer leaves the reader waiting for the rest.
# 3. **A full pipe at shutdown.** A worker blocked writing a big answer into a full pipe never reads the stop
#    message behind it, and a `join()` on it never returns.
# 4. **An early `break`.** Requests already sent are answered in the next epoch, where they are the wrong images.
#
# ipcbench keeps the design and removes the hangs: every wait watches the workers' process sentinels and has a
# timeout (`strategies.framing.MessageReader` reads a message in pieces, so a half-written one is an error too),
# `close()` drains the pipes while it waits for the workers, and answers carry their epoch's `generation`. Post 5
# shows each of these failing on purpose.

# %%
import pandas as pd

from harness.notebook import RUN as run
from harness.notebook import figure, medians, number, only, run_text, say, show_source, table, versus
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

from strategies.framing import WIDE_BUFFER_BYTES
from strategies.messages import ImageDone
from strategies.plan import tiles_per_image
from strategies.work import tile_nbytes

*leading, height, width = provenance.lookup(run.env, "dataset.shape")
channels = leading[0] if leading else 1
tile = int(run.samples["tile"].iloc[0])

n_tiles = tiles_per_image(height, width, tile)
data_bytes, mask_bytes = (n_tiles * b for b in tile_nbytes(channels, tile))
header_bytes = len(ForkingPickler.dumps(ImageDone(generation=1, position=0, image_index=0, n_tiles=n_tiles)))
table(
    pd.Series(
        {"header (pickled)": header_bytes, "tile data (raw)": data_bytes, "tile masks (raw)": mask_bytes},
        name=f"bytes per image ({n_tiles} tiles)",
    ).rename_axis("message")
)

# %% [markdown]
# A pipe holds 64 KiB by default. Each time the reader empties it, the writer has to be woken to refill it: a
# system call and a context switch on each side. The pipe strategy asks the kernel for a wider buffer
# (`strategies.framing.widen`, `fcntl(F_SETPIPE_SZ)`), as wide as an unprivileged process may:

# %%
payload = data_bytes + mask_bytes
say(
    f"One image is {number(payload / 1e6)} MB: {payload // (64 << 10):,} refills of a 64 KiB pipe, "
    f"{payload // WIDE_BUFFER_BYTES:,} of a {WIDE_BUFFER_BYTES >> 20} MiB one."
)

# %% [markdown]
# ## In the reference run
#
# Throughput, payload rate and CPU per batch of the pipe strategy next to the baseline.

# %%
table(medians(only(run, "baseline", "pipe"), "batches_per_s", "mb_per_s", "wait_ms_p50", "cpu_s_per_batch"))
worker_counts = sorted(run.samples.loc[run.samples["strategy"] == "pipe", "workers"].unique())
for workers in worker_counts:
    say(f"pipe with {workers} worker(s) against the baseline, batches/s: {versus(run, 'pipe', 'baseline', workers)}.")

# %% [markdown]
# One worker processes the next image while the main process assembles batches from the current one, so why
# is it not faster than doing the work inline? The stage timers say why: the worker does all of the per-image
# work the baseline does, and on top of it writes every pixel into the pipe, and the main process reads every
# pixel out; so the one worker is busier per batch than the whole baseline loop, and the loop waits for it.

# %%
stages = run.summary.set_index(["strategy", "workers"])
one = stages.loc[("pipe", 1)]
base = stages.loc[("baseline", 1)]
say(
    f"Per batch, at one worker: the worker computes for {number(one['stage_compute_ms_per_batch_median'])} ms "
    f"(the baseline: {number(base['stage_compute_ms_per_batch_median'])} ms), and moving the pixels through the "
    f"pipe takes {number(one['stage_transfer_ms_per_batch_median'])} ms, the two sides together; the baseline "
    f"spends {number(1000 / base['batches_per_s_median'])} ms per batch in all."
)

# %% [markdown]
# With **two workers** on this two-core machine, the two workers and the main process share two cores, so
# two images are not processed at full speed at once, and the difference from the baseline has to be judged
# against the noise: the verdict above says whether the measurements can tell the two apart at all. The
# throughput figure shows the same with its spread (the bars are the interquartile range; the baseline, which
# has no workers, is the grey band).

# %%
figure("throughput", only(run, "baseline", "pipe"))

# %% [markdown]
# The wait per batch shows whether the workers stay ahead of the loop: where they do, most waits are the copy
# of tiles into the batch; the dotted line across the figure marks the share of batches that wait for the next
# image's work.

# %%
figure("wait_ecdf", only(run, "baseline", "pipe"))

# %% [markdown]
# CPU time per batch counts every process (main and workers): what the pipe strategy spends on top of the
# baseline's per-image work is the transfer and the coordination.

# %%
figure("cpu_per_batch", only(run, "baseline", "pipe"))
