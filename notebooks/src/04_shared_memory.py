# %% [markdown]
# # 4 · Shared memory: slots and the implicit lock
#
# Each worker gets its own region of shared memory, which no other worker writes. The main process creates one
# segment per worker, holding `prefetch` *slots*, each big enough for the tiles of the largest image. A request
# names a slot; the worker writes the tiles into that slot and answers with a short note on its pipe; only then
# does the main process read the slot, and only once it has copied the tiles into batches does it name the slot
# in a new request.
#
# ```
# main --Job(generation, image, slot s)--> worker i   writes the tiles into its slot s
# main <--ImageDone(slot s, n_tiles)------ worker i   the handshake: slot s is ready
# main copies the tiles from slot s into batches; then s is free for a new Job
# ```
#
# That is the *implicit lock* of the post: between the request that names a slot and the note that returns it,
# only the worker touches the slot; after the note, only the main process does. The pipe messages order every
# access, so no `Lock` object is needed. The pixels are copied once, from the slot into the batch.

# %%
import os
from pathlib import Path

import pandas as pd

from harness.notebook import RUN as run
from harness.notebook import figure, medians, only, run_text, say, show_source, table, versus
from harness.report import provenance

print(run_text())

# %%
from strategies.shm import ShmGenerator, ShmWorker, SlotLayout

show_source(ShmWorker.deliver)
show_source(ShmGenerator._collect)
show_source(ShmGenerator._free)

# %% [markdown]
# ## How much shared memory the slots take
#
# For the reference run's dataset and config, per worker count: `prefetch` slots per worker, each sized for the
# largest image's tiles (data, then masks). Beside it, the `/dev/shm` peak measured in the run. `/dev/shm` is
# one file system for the whole machine, so the measurement counts every process's segments: a strategy that
# creates none (the baseline) shows the level of everything else running at the time.

# %%
from strategies.plan import max_tiles_per_image

*leading, height, width = provenance.lookup(run.env, "dataset.shape")
channels = leading[0] if leading else 1
tile = int(run.samples["tile"].iloc[0])
batch_size = int(run.samples["batch_size"].iloc[0])
prefetch = int(run.samples["prefetch"].iloc[0])

layout = SlotLayout(max_tiles_per_image([(height, width)], tile), channels, tile)
measured = run.summary.pivot_table(index="workers", columns="strategy", values="shm_peak_mb_median")
slots = pd.DataFrame(
    {
        "slot (MB)": layout.slot_bytes / 1e6,
        "slots needed (MB)": measured.index * prefetch * layout.slot_bytes / 1e6,
        "shm: measured peak (MB)": measured.get("shm"),
        "baseline: measured peak (MB)": measured.get("baseline"),
    },
    index=measured.index,
)
table(slots)

# %% [markdown]
# ## A live look at the segments
#
# On a tiny dataset: the generator creates its segments before the workers start (names carry the project's
# prefix and the owner's pid, so a stale one can be traced), the workers attach to them by name, and `close()`
# unlinks them after the workers are gone.

# %%
import shutil
import tempfile

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, make_generator

scratch = Path(tempfile.mkdtemp(prefix="ipcbench-notebook-"))
tiny = ensure_dataset("synth", out=scratch / "synth", images=2, height=600, width=800)

with make_generator("shm", tiny, LoaderConfig(batch_size=4, tile=256, workers=2, prefetch=2)) as gen:
    batches = sum(1 for _ in gen)
    names = [segment.name for segment in gen.segments]
    for segment in gen.segments:
        print(f"{segment.name}: {segment.size / 1e6:.2f} MB, in /dev/shm: {os.path.exists('/dev/shm/' + segment.name)}")
print(
    f"{batches} batches served; after close(), still in /dev/shm: "
    f"{[n for n in names if os.path.exists('/dev/shm/' + n)]}"
)
shutil.rmtree(scratch)

# %% [markdown]
# ## In the reference run
#
# All three multi-process designs and the baseline:

# %%
table(
    medians(
        only(run, "baseline", "pipe", "queue", "shm"),
        "batches_per_s",
        "mb_per_s",
        "cpu_s_per_batch",
        "pss_peak_mb",
        "uss_peak_mb",
        "shm_peak_mb",
    )
)
for workers in sorted(run.samples.loc[run.samples["strategy"] == "shm", "workers"].unique()):
    say(f"shm against pipe with {workers} worker(s), batches/s: {versus(run, 'shm', 'pipe', workers)}.")

# %%
figure("throughput", only(run, "baseline", "pipe", "queue", "shm"))

# %% [markdown]
# ## Memory: PSS, USS and /dev/shm
#
# RSS counts a shared page once in every process that maps it, so summing RSS over the main process and its
# workers overstates memory. The report sums **PSS** (each shared page divided among the processes that map it)
# and **USS** (pages only one process maps) over the process tree, and shows `/dev/shm` on its own. Once the
# main process has read a slot, its pages are mapped by two processes, the main process and one worker: they
# count in PSS (split between the two, so once over the tree) and no longer in USS. They are also part of
# `/dev/shm`, so PSS and `/dev/shm` must not be added up.

# %%
figure("memory", only(run, "pipe", "queue", "shm"))

# %%
figure("memory_trace", only(run, "pipe", "queue", "shm"))

# %% [markdown]
# ## One copy fewer: workers assemble the batches
#
# `shm` still copies every tile once in the main process, from the slot into the batch. With `zero_copy=True`
# (the `shm_zerocopy` strategy) the slots hold *batches* instead of images: tile `j` of the epoch goes to row
# `j % batch_size` of batch `j // batch_size`, which lives in slot `batch % n_slots`. A worker works out where
# each of its image's tiles goes and writes it there; two workers may share a slot (a batch spanning two
# images), never a row. The main process only waits for the notes and yields views of the slot.
#
# ```
# main --Job(generation, image)--> worker i   writes each tile straight into its row of a batch slot
# main <--ImageDone(...)---------- worker i   its rows are written
# main yields batch k as views of slot k % n_slots once every image with tiles in batch k is done
# ```
#
# The price is a rule for the training loop: a batch is valid until the next `next()`, when its slot may be
# rewritten for batch `k + n_slots`. Below, on a tiny dataset: batches are views (`owndata` is False), a batch
# kept past its `next()` shows a later batch, a copy stays valid, and the main process's `assemble` stage
# (the time it spends copying tiles into batches, `gen.stage_times()`) stays at zero.

# %%
import shutil
import tempfile

import numpy as np

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, make_generator

scratch = Path(tempfile.mkdtemp(prefix="ipcbench-notebook-"))
tiny = ensure_dataset("synth", out=scratch / "synth", images=2, height=600, width=800)

config = LoaderConfig(batch_size=4, tile=128, workers=1, prefetch=1)  # 12 batches an epoch, 8 slots
with make_generator("shm", tiny, config, zero_copy=True) as gen:
    print(f"{type(gen).__name__}: {gen.n_slots} batch slots of {config.batch_size} tiles")
    kept, copies = [], []
    for data, _ in gen:
        kept.append(data)  # a view: only valid until the next next()
        copies.append(np.array(data))  # a copy: valid for good
    first_view_now_shows = [k for k, c in enumerate(copies) if k and np.array_equal(kept[0], c)]
    assert first_view_now_shows and first_view_now_shows[0] % gen.n_slots == 0, first_view_now_shows
    print(
        f"batch 0 is a view: {not kept[0].flags.owndata}; kept past its next(), it now shows batch "
        f"{first_view_now_shows[0]} (0 + n_slots)"
    )
    assert gen.stage_times()["assemble"] == 0.0
    print("main-process seconds spent copying tiles into batches:", gen.stage_times()["assemble"])
shutil.rmtree(scratch)

# %%
table(medians(only(run, "shm", "shm_zerocopy"), "batches_per_s", "cpu_s_per_batch", "pss_peak_mb", "shm_peak_mb"))
for workers in sorted(run.samples.loc[run.samples["strategy"] == "shm_zerocopy", "workers"].unique()):
    say(f"shm_zerocopy against shm with {workers} worker(s), batches/s: {versus(run, 'shm_zerocopy', 'shm', workers)}.")

# %% [markdown]
# ## One batch, process by process
#
# The stage timers can also record *when* each stage ran (`LoaderConfig(trace_dir=...)`): every process writes
# its intervals, and `ipcbench timeline` draws them for a short stretch of an epoch around the batch that waited
# longest, with two workers and two images in flight per worker. A row is a process; the triangles are the
# moments `next()` returns a batch. In the shared-memory row the main process only assembles and waits: the
# pixels never pass through it in a pipe; for the pipe and the queue, the main process spends its time reading
# (and, for the queue, unpickling) what the workers send.

# %%
from harness import timeline as timelines
from harness.notebook import root_dir, show
from harness.report import timeline as timeline_figure

recorded = timelines.load(root_dir() / "results" / "timeline")
show(timeline_figure.draw(recorded))
load = recorded.meta.get("loadavg_before")
say(
    f"Recorded with `{' '.join(recorded.meta['command'])}` on {recorded.meta.get('cores')} cores"
    + (f", 1-minute load average {load[0]:.1f} before it" if load else "")
    + ": the lengths are those of this one stretch, not medians."
)
