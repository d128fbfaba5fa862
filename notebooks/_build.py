"""Write the blog notebooks (notebooks/*.ipynb) from the Python source in this file.

The notebooks' cells live here, as plain strings, so that a review reads them as a
diff of ordinary text; the .ipynb files are generated from them, committed without
outputs, and executed by ``tests/test_notebooks.py``::

    .venv/bin/python notebooks/_build.py           # rewrite every notebook
    .venv/bin/python notebooks/_build.py --check   # exit 1 if a notebook differs from this source

One notebook per post of the series (see ``NOTEBOOKS``). Each starts with the same
setup cell (``SETUP``): it loads the committed reference run (``results/reference``,
or the folder named by ``IPCBENCH_RUN``) through ``harness.report.load`` and defines
five small helpers around the report's own functions (``only``, ``show``, ``figure``,
``medians``, ``show_source``). The notebooks hold no measurement logic of their own:
numbers come from the run's raw samples, figures from ``harness.report.plots``, and
prose never hard-codes a number that a later run could change; cells compute and
print them.

Cell ids are fixed (``cell-NN``) so that building twice gives identical files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
# The setup cell every notebook of the series shares (written by notebooks/_build.py).
import dataclasses
import inspect
import io
import os
import textwrap
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

from harness.report import load, plots, provenance, style
from harness.report.summary import summarize

# The repository root is the folder with pyproject.toml: notebooks run from notebooks/ or from the root.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file())
# The committed reference run; set IPCBENCH_RUN to read another results folder instead.
RUN_DIR = Path(os.environ.get("IPCBENCH_RUN", ROOT / "results" / "reference"))
run = load.load_run(RUN_DIR)
style.apply()  # the report's look: blog-width figures, one colour and marker per strategy
pd.set_option("display.precision", 3)


def only(data, *strategies):
    """``data`` restricted to some strategies: same colours, summary recomputed from the raw samples."""
    samples = data.samples[data.samples["strategy"].isin(strategies)]
    return dataclasses.replace(data, samples=samples, summary=summarize(samples))


def show(fig):
    """Display a matplotlib Figure as the report saves it (PNG at the report's dpi, 800 px wide)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    display(Image(buffer.getvalue(), width=800))


def figure(name, data=None):
    """One of the report's figures (harness.report.plots) for ``data`` (default: the whole run), captioned."""
    data = run if data is None else data
    spec = next(s for s in (*plots.FIGURES, plots.FAULTS_FIGURE) if s.name == name)
    show(spec.draw(data))
    context = provenance.caption_context(data, "wait_ms" if name == "wait_ecdf" else None)
    display(Markdown(f"*{spec.describe}* {context}"))


def medians(data, *metrics):
    """Median of each metric per cell (strategy x workers), from the summary recomputed from the samples."""
    columns = ["strategy", "workers", "n", *(f"{m}_median" for m in metrics)]
    return data.summary[columns].rename(columns=lambda c: c.removesuffix("_median")).set_index(["strategy", "workers"])


def show_source(obj):
    """The source of ``obj`` as it is in this checkout, so the notebook cannot drift from the code."""
    display(Markdown("```python\\n" + textwrap.dedent(inspect.getsource(obj)) + "```"))


print(f"run {provenance.lookup(run.env, 'run_id')} from {RUN_DIR}: {provenance.machine_text(run.env)}; "
      f"dataset {provenance.dataset_text(run)}; {provenance.config_text(run.samples)}; {provenance.n_text(run)}")'''

# The reference dataset's geometry, as env.json records it: (C, H, W) or (H, W).
GEOMETRY = """\
*leading, height, width = provenance.lookup(run.env, "dataset.shape")
channels = leading[0] if leading else 1
tile = int(run.samples["tile"].iloc[0])
batch_size = int(run.samples["batch_size"].iloc[0])
prefetch = int(run.samples["prefetch"].iloc[0])"""

# A two-image synthetic dataset in a scratch folder, for the live demos; its cell imports
# shutil, tempfile and harness.datasets.ensure_dataset.
TINY_DATASET = """\
scratch = Path(tempfile.mkdtemp(prefix="ipcbench-notebook-"))
tiny = ensure_dataset("synth", out=scratch / "synth", images=2, height=600, width=800)"""


def compose(*parts: str) -> str:
    """One cell from parts (imports first, then snippets and code), a blank line between parts."""
    return "\n\n".join(part.strip("\n") for part in parts)


# -- 1: the generator interface and the baseline -------------------------------------------------

GENERATOR = [
    (
        "md",
        """\
# 1 · The generator interface and the baseline

The first post of the series builds a `DataGenerator`: an object that a training loop drives with
`for data, labels in generator`, that knows how many batches an epoch has, and that serves one epoch per
loop. ipcbench keeps exactly that interface for every way of feeding the loop (`strategies.BatchGenerator`):

- `iter(gen)` starts the next epoch; which images, tiles and augmentations it serves is a pure function of
  the dataset, the config (seed, tile, batch size) and the epoch number: the *epoch plan*;
- `next(gen)` returns one batch `(data, masks)`: `uint16 (B, C, T, T)` tiles and `uint8 (B, T, T)` masks;
- `len(gen)` is the number of batches in an epoch;
- `with ... as gen` (or `gen.close()`) releases whatever the strategy started: processes, pipes, queues,
  shared memory.

The **baseline** does the per-image work (read the 16-bit TIFF and its label image, assemble the true mask,
cut and augment the tiles) inline, inside `next()`, in the training process. The other strategies move that
work to worker processes (or threads); they differ only in how the tiles travel back.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## A tiny dataset

Two synthetic live/dead assay images from `harness.datasets` (source `synth`): channel 0 is a calcein-like
stain of live cells, channel 1 a nucleus stain of dead cells, with a 12-bit camera signal in 16-bit words.
600 x 800 pixels keeps this notebook quick; the benchmark's images are blog-sized.""",
    ),
    (
        "code",
        compose(
            """\
import shutil
import tempfile

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, make_generator, open_dataset""",
            TINY_DATASET,
            """\
dataset = open_dataset(tiny)
pd.DataFrame([(e.stem, e.channels, e.height, e.width, e.classes is not None) for e in dataset.entries],
             columns=["image", "channels", "height", "width", "class table"])""",
        ),
    ),
    (
        "md",
        """\
## Driving it like a training loop

Two epochs of batches of four 256-pixel tiles. Each `for` loop calls `iter()`, which starts the next epoch.""",
    ),
    (
        "code",
        """\
config = LoaderConfig(batch_size=4, tile=256, seed=0)
with make_generator("baseline", tiny, config) as gen:
    print(f"len(gen) = {len(gen)} batches per epoch")
    for _ in range(2):
        for i, (data, masks) in enumerate(gen):
            print(f"epoch {gen.epoch}, batch {i}: data {data.dtype} {data.shape}, masks {masks.dtype} {masks.shape}")
            if gen.epoch == 0 and i == 0:
                first_batch = (data, masks)""",
    ),
    (
        "md",
        """\
## What one batch holds

Each column below is one tile of the first batch: both stains (contrast stretched per channel, 0.5th to
99.5th percentile of the batch) and the true mask, assembled from the label image and `classes.csv`
(0 background, 1 live, 2 dead). The plan rotates and flips each tile, and a batch may span two images.""",
    ),
    (
        "code",
        """\
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

data, masks = first_batch
class_colours = ["#202020", "#009E73", "#D55E00"]  # background, live, dead
fig = Figure(figsize=(8, 2.1 * (data.shape[1] + 1) + 0.6), layout="constrained")
axes = fig.subplots(data.shape[1] + 1, len(data), squeeze=False)
for c in range(data.shape[1]):
    low, high = np.percentile(data[:, c], [0.5, 99.5])
    for t in range(len(data)):
        axes[c, t].imshow(data[t, c], cmap="gray", vmin=low, vmax=high)
    axes[c, 0].set_ylabel(f"channel {c}\\n(uint16 ADU)")
for t in range(len(data)):
    axes[-1, t].imshow(masks[t], cmap=ListedColormap(class_colours), vmin=0, vmax=2, interpolation="nearest")
    axes[0, t].set_title(f"tile {t}")
axes[-1, 0].set_ylabel("true mask")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
fig.suptitle(f"The first batch: {len(data)} tiles of {data.shape[-1]} x {data.shape[-1]} px")
fig.legend([Patch(color=c) for c in class_colours], ["background (0)", "live (1)", "dead (2)"],
           loc="outside lower center", ncol=3)
show(fig)""",
    ),
    (
        "md",
        """\
## The same batches from every strategy

The equivalence contract: for one dataset and one config, every strategy yields the same batches, bit for
bit, whatever the number of workers. Here epoch 0 from the baseline and from the shared-memory strategy
with two worker processes:""",
    ),
    (
        "code",
        """\
def epoch_zero(name, **overrides):
    with make_generator(name, tiny, config, **overrides) as gen:
        return list(gen)


reference, candidate = epoch_zero("baseline"), epoch_zero("shm", workers=2)
identical = len(reference) == len(candidate) and all(
    np.array_equal(a, b) for ref, cand in zip(reference, candidate, strict=True) for a, b in zip(ref, cand, strict=True)
)
print(f"{len(reference)} batches from the baseline, {len(candidate)} from shm (2 workers): "
      f"{'identical' if identical else 'DIFFERENT'}")
assert identical""",
    ),
    (
        "md",
        """\
## The baseline in the reference run

The numbers from here on come from the committed reference run (`results/reference`, printed by the setup
cell), read from its raw per-epoch samples by `harness.report.load`. The baseline is one process whatever
the `workers` setting says: where the run measured it at several worker counts, those rows repeat the same
work, and their difference is a first look at the run's noise.""",
    ),
    (
        "code",
        """\
medians(only(run, "baseline"), "batches_per_s", "mb_per_s", "wait_ms_p50", "wait_ms_p95", "cpu_s_per_batch")""",
    ),
    (
        "code",
        """\
baseline_rate = run.summary.loc[run.summary["strategy"] == "baseline", "batches_per_s_median"].median()
copies_per_s = provenance.lookup(run.env, "memcpy.batch_copies_per_s_one_core")
print(f"Baseline: {baseline_rate:.1f} batches/s, {1000 / baseline_rate:.1f} ms per batch.")
if copies_per_s:
    print(f"Copying one batch (memcpy, measured at the start and the end of the run) takes {1000 / copies_per_s:.2f} ms: "
          f"{baseline_rate / copies_per_s:.0%} of the baseline's time per batch.")
    print("The rest goes to the per-image work (read, mask, tiles) and the loop around it.")""",
    ),
    (
        "md",
        """\
In the baseline, `next()` reads and tiles a new image whenever the batch needs tiles it does not have yet.
So the wait per batch has two kinds of batches: those cut from an image already in memory (a copy of the
tiles) and those that wait for an image to be read first. How often the second kind comes follows from
the geometry:""",
    ),
    (
        "code",
        compose(
            "from strategies.plan import tiles_per_image",
            GEOMETRY,
            """\
per_image = tiles_per_image(height, width, tile)
print(f"{per_image} tiles of {tile} px per {height} x {width} image, {batch_size} tiles per batch: "
      f"about one batch in {per_image / batch_size:.1f} needs a new image.")""",
        ),
    ),
    ("code", """figure("wait_ecdf", only(run, "baseline"))"""),
    (
        "md",
        """\
The lower steps of the curve are batches served from an image in memory; the upper ones are batches that
waited for a read. A strategy with workers can hide those reads, if the workers stay ahead of the loop.
The next posts measure what that costs.""",
    ),
    ("code", """shutil.rmtree(scratch)  # the tiny dataset"""),
]

# -- 2: pipes --------------------------------------------------------------------------------------

PIPES = [
    (
        "md",
        """\
# 2 · Pipes: a request/response loop

Each worker process gets its own `multiprocessing.Pipe`. The main process sends a *request* (process image
*k* of this epoch); the worker does the per-image work and answers on the same pipe, then waits for the next
request. Up to `prefetch` requests per worker are in flight, so workers process the next images while the
training loop consumes the current one.

```
main --Job(generation, image)----------------> worker i
main <--ImageDone(position, n_tiles), pickled-- worker i
main <--tile data, raw bytes------------------- worker i
main <--tile masks, raw bytes------------------ worker i
```

`generation` numbers the epochs: after an early `break`, answers for the abandoned epoch are recognised
and dropped.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## The worker's loop

The child loop of the post, *check the pipe for requests, reset or stop; process the requested image;
deliver it; wait for a new request*, is `RequestWorker.run`. It reads every message already waiting before
it starts an image, so a `Stop` or a `Reset` (after an early `break`) is seen without delay, and stale
requests are answered `Skipped` instead of computed.""",
    ),
    (
        "code",
        """\
from strategies.pipe import PipeGenerator, PipeWorker
from strategies.request_response import RequestWorker

show_source(RequestWorker.run)""",
    ),
    (
        "md",
        """\
## The raw-bytes path

`conn.send((data, masks))` would pickle the arrays: the pickle is a second copy of every byte in the worker,
and unpickling makes a third in the main process. Instead, `PipeWorker.deliver` sends a small pickled header
and then the tile buffers themselves with `send_bytes` (no pickling); the main process reads them straight
into preallocated arrays (`_collect`), which go back to a small stock once their tiles are in batches.
The bytes are copied into the pipe and out of it by the kernel, and nowhere else.""",
    ),
    ("code", """show_source(PipeWorker.deliver)\nshow_source(PipeGenerator._collect)"""),
    (
        "md",
        """\
What crosses the pipe for one image of the reference run's dataset: the header, pickled as `Connection.send`
pickles it, and the two raw payloads.""",
    ),
    (
        "code",
        compose(
            """\
from multiprocessing.reduction import ForkingPickler

from strategies.messages import ImageDone
from strategies.plan import tiles_per_image
from strategies.work import tile_nbytes""",
            GEOMETRY,
            """\
n_tiles = tiles_per_image(height, width, tile)
data_bytes, mask_bytes = (n_tiles * b for b in tile_nbytes(channels, tile))
header_bytes = len(ForkingPickler.dumps(ImageDone(generation=1, position=0, image_index=0, n_tiles=n_tiles)))
pd.Series({"header (pickled)": header_bytes, "tile data (raw)": data_bytes, "tile masks (raw)": mask_bytes},
          name=f"bytes per image ({n_tiles} tiles)")""",
        ),
    ),
    (
        "md",
        """\
## In the reference run

Throughput, payload rate and CPU per batch of the pipe strategy next to the baseline, and their ratio at
each worker count. With one worker, images are still processed one at a time (now in parallel with the main
process's batch assembly), plus the transfer; a second worker can process two images at once, given a free
core to run on.""",
    ),
    (
        "code",
        """\
display(medians(only(run, "baseline", "pipe"), "batches_per_s", "mb_per_s", "wait_ms_p50", "cpu_s_per_batch"))
rates = run.summary.pivot_table(index="workers", columns="strategy", values="batches_per_s_median")
# The baseline is one process whatever `workers` says: where it was not run at a worker count, take its median.
baseline = rates["baseline"].fillna(rates["baseline"].median())
(rates["pipe"] / baseline).rename("pipe / baseline, batches/s").to_frame()""",
    ),
    ("code", """figure("throughput", only(run, "baseline", "pipe"))"""),
    (
        "md",
        """\
The right panel puts the payload rate against this machine's memcpy bandwidth (dotted): how far a strategy is
from the limit that copying alone would set. The wait per batch shows whether the workers stay ahead of the
loop: where they do, most waits are the copy of tiles into the batch.""",
    ),
    ("code", """figure("wait_ecdf", only(run, "baseline", "pipe"))"""),
    (
        "md",
        """\
CPU time per batch counts every process (main and workers): what the pipe strategy spends on top of the
baseline's per-image work is the transfer and the coordination.""",
    ),
    ("code", """figure("cpu_per_batch", only(run, "baseline", "pipe"))"""),
]

# -- 3: queues -------------------------------------------------------------------------------------

QUEUES = [
    (
        "md",
        """\
# 3 · Queues, and why they are slow with big arrays

`multiprocessing.Queue` is the textbook way to hand work to processes: the main process puts jobs on a task
queue, any idle worker takes one, and puts its result on a result queue. Results come back in any order; the
main process puts them back in plan order.

```
main --Job(generation, image)--> tasks (Queue) --> any idle worker
main <--ImageResult(position, data, masks)-- results (Queue) <-- worker
```

What `results.put(result)` does with a processed image: a *feeder thread* in the worker pickles the result,
copying every pixel into the pickle bytes, and writes the message into one pipe that all workers share,
under a lock. The main process reads the whole message and unpickles it, which copies the pixels again.
Compared with the raw-bytes pipe path: two more copies of every byte, a thread, and one pipe for all
workers.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from strategies.mpqueue import ImageResult, QueueWorker

show_source(QueueWorker.run)""",
    ),
    (
        "md",
        """\
## The copies, made visible

One image's worth of tiles of the reference dataset, pickled as the queue pickles it (`ForkingPickler`): the
message is as large as the pixels themselves, i.e. a full copy, and unpickling it builds new arrays, a
second copy. The timings below are from this machine, now, for one round trip against one plain copy of the
same bytes; they vary from run to run.""",
    ),
    (
        "code",
        compose(
            """\
import time
from multiprocessing.reduction import ForkingPickler

import numpy as np

from strategies.plan import tiles_per_image""",
            GEOMETRY,
            """\
n_tiles = tiles_per_image(height, width, tile)
tiles = np.ones((n_tiles, channels, tile, tile), np.uint16)
tile_masks = np.ones((n_tiles, tile, tile), np.uint8)
result = ImageResult(generation=1, position=0, image_index=0, data=tiles, masks=tile_masks)
message = ForkingPickler.dumps(result)
received = ForkingPickler.loads(message)
payload = tiles.nbytes + tile_masks.nbytes
print(f"pixels: {payload / 1e6:.1f} MB; pickled message: {len(message) / 1e6:.1f} MB "
      f"({len(message) - payload:,} bytes more than the pixels)")
print(f"the received arrays are new memory: {not np.shares_memory(received.data, tiles)}, "
      f"equal to the sent ones: {np.array_equal(received.data, tiles)}")


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
)""",
        ),
    ),
    (
        "md",
        """\
Two more consequences follow from `put` returning before the feeder thread has pickled the result: the worker
cannot reuse its output buffer (the next image would overwrite the one not yet pickled), so every image
allocates fresh arrays; and a result stays in memory until it has been pickled and written, on top of the
pickle itself.

## In the reference run

The queue strategy next to the pipe strategy and the baseline, and its throughput relative to the pipe's at
each worker count:""",
    ),
    (
        "code",
        """\
display(medians(only(run, "baseline", "pipe", "queue"), "batches_per_s", "mb_per_s", "cpu_s_per_batch",
                "pss_peak_mb"))
rates = run.summary.pivot_table(index="workers", columns="strategy", values="batches_per_s_median")
(rates["queue"] / rates["pipe"]).rename("queue / pipe, batches/s").to_frame()""",
    ),
    ("code", """figure("throughput", only(run, "baseline", "pipe", "queue"))"""),
    (
        "md",
        """\
CPU per batch shows the price of the extra copies (pickling and unpickling run on the same cores as
everything else), and memory shows the fresh arrays and pickles in flight:""",
    ),
    ("code", """figure("cpu_per_batch", only(run, "baseline", "pipe", "queue"))"""),
    ("code", """figure("memory", only(run, "pipe", "queue"))"""),
    ("code", """figure("wait_ecdf", only(run, "pipe", "queue"))"""),
]

# -- 4: shared memory ------------------------------------------------------------------------------

SHARED_MEMORY = [
    (
        "md",
        """\
# 4 · Shared memory: slots and the implicit lock

Each worker gets its own region of shared memory, which no other worker writes. The main process creates one
segment per worker, holding `prefetch` *slots*, each big enough for the tiles of the largest image. A request
names a slot; the worker writes the tiles into that slot and answers with a short note on its pipe; only then
does the main process read the slot, and only once it has copied the tiles into batches does it name the slot
in a new request.

```
main --Job(generation, image, slot s)--> worker i   writes the tiles into its slot s
main <--ImageDone(slot s, n_tiles)------ worker i   the handshake: slot s is ready
main copies the tiles from slot s into batches; then s is free for a new Job
```

That is the *implicit lock* of the post: between the request that names a slot and the note that returns it,
only the worker touches the slot; after the note, only the main process does. The pipe messages order every
access, so no `Lock` object is needed. The pixels are copied once, from the slot into the batch.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from strategies.shm import ShmGenerator, ShmWorker, SlotLayout

show_source(ShmWorker.deliver)
show_source(ShmGenerator._collect)
show_source(ShmGenerator._free)""",
    ),
    (
        "md",
        """\
## How much shared memory the slots take

For the reference run's dataset and config, per worker count: `prefetch` slots per worker, each sized for the
largest image's tiles (data, then masks). Beside it, the `/dev/shm` peak measured in the run. `/dev/shm` is
one file system for the whole machine, so the measurement counts every process's segments: a strategy that
creates none (the baseline) shows the level of everything else running at the time.""",
    ),
    (
        "code",
        compose(
            "from strategies.plan import max_tiles_per_image",
            GEOMETRY,
            """\
layout = SlotLayout(max_tiles_per_image([(height, width)], tile), channels, tile)
measured = run.summary.pivot_table(index="workers", columns="strategy", values="shm_peak_mb_median")
slots = pd.DataFrame({"slot (MB)": layout.slot_bytes / 1e6,
                      "slots needed (MB)": measured.index * prefetch * layout.slot_bytes / 1e6,
                      "shm: measured peak (MB)": measured.get("shm"),
                      "baseline: measured peak (MB)": measured.get("baseline")}, index=measured.index)
slots""",
        ),
    ),
    (
        "md",
        """\
## A live look at the segments

On a tiny dataset: the generator creates its segments before the workers start (names carry the project's
prefix and the owner's pid, so a stale one can be traced), the workers attach to them by name, and `close()`
unlinks them after the workers are gone.""",
    ),
    (
        "code",
        compose(
            """\
import shutil
import tempfile

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, make_generator""",
            TINY_DATASET,
            """\
with make_generator("shm", tiny, LoaderConfig(batch_size=4, tile=256, workers=2, prefetch=2)) as gen:
    batches = sum(1 for _ in gen)
    names = [segment.name for segment in gen.segments]
    for segment in gen.segments:
        print(f"{segment.name}: {segment.size / 1e6:.2f} MB, in /dev/shm: {os.path.exists('/dev/shm/' + segment.name)}")
print(f"{batches} batches served; after close(), still in /dev/shm: "
      f"{[n for n in names if os.path.exists('/dev/shm/' + n)]}")
shutil.rmtree(scratch)""",
        ),
    ),
    (
        "md",
        """\
## In the reference run

All three multi-process designs and the baseline:""",
    ),
    (
        "code",
        """\
medians(only(run, "baseline", "pipe", "queue", "shm"), "batches_per_s", "mb_per_s", "cpu_s_per_batch",
        "pss_peak_mb", "uss_peak_mb", "shm_peak_mb")""",
    ),
    ("code", """figure("throughput", only(run, "baseline", "pipe", "queue", "shm"))"""),
    (
        "md",
        """\
## Memory: PSS, USS and /dev/shm

RSS counts a shared page once in every process that maps it, so summing RSS over the main process and its
workers overstates memory. The report sums **PSS** (each shared page divided among the processes that map it)
and **USS** (pages only one process maps) over the process tree, and shows `/dev/shm` on its own. Once the
main process has read a slot, its pages are mapped by two processes, the main process and one worker: they
count in PSS (split between the two, so once over the tree) and no longer in USS. They are also part of
`/dev/shm`, so PSS and `/dev/shm` must not be added up.""",
    ),
    ("code", """figure("memory", only(run, "pipe", "queue", "shm"))"""),
    ("code", """figure("memory_trace", only(run, "pipe", "queue", "shm"))"""),
    (
        "md",
        """\
## One copy fewer: workers assemble the batches

`shm` still copies every tile once in the main process, from the slot into the batch. With `zero_copy=True`
(the `shm_zerocopy` strategy) the slots hold *batches* instead of images: tile `j` of the epoch goes to row
`j % batch_size` of batch `j // batch_size`, which lives in slot `batch % n_slots`. A worker works out where
each of its image's tiles goes and writes it there; two workers may share a slot (a batch spanning two
images), never a row. The main process only waits for the notes and yields views of the slot.

```
main --Job(generation, image)--> worker i   writes each tile straight into its row of a batch slot
main <--ImageDone(...)---------- worker i   its rows are written
main yields batch k as views of slot k % n_slots once every image with tiles in batch k is done
```

The price is a rule for the training loop: a batch is valid until the next `next()`, when its slot may be
rewritten for batch `k + n_slots`. Below, on a tiny dataset: batches are views (`owndata` is False), a batch
kept past its `next()` shows a later batch, a copy stays valid, and the main process's `assemble` stage
(the time it spends copying tiles into batches, `gen.stage_times()`) stays at zero.""",
    ),
    (
        "code",
        compose(
            """\
import shutil
import tempfile

import numpy as np

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, make_generator""",
            TINY_DATASET,
            """\
config = LoaderConfig(batch_size=4, tile=128, workers=1, prefetch=1)  # 12 batches an epoch, 8 slots
with make_generator("shm", tiny, config, zero_copy=True) as gen:
    print(f"{type(gen).__name__}: {gen.n_slots} batch slots of {config.batch_size} tiles")
    kept, copies = [], []
    for data, _ in gen:
        kept.append(data)  # a view: only valid until the next next()
        copies.append(np.array(data))  # a copy: valid for good
    first_view_now_shows = [k for k, c in enumerate(copies) if k and np.array_equal(kept[0], c)]
    assert first_view_now_shows and first_view_now_shows[0] % gen.n_slots == 0, first_view_now_shows
    print(f"batch 0 is a view: {not kept[0].flags.owndata}; kept past its next(), it now shows batch "
          f"{first_view_now_shows[0]} (0 + n_slots)")
    assert gen.stage_times()["assemble"] == 0.0
    print("main-process seconds spent copying tiles into batches:", gen.stage_times()["assemble"])
shutil.rmtree(scratch)""",
        ),
    ),
    (
        "code",
        """\
medians(only(run, "shm", "shm_zerocopy"), "batches_per_s", "cpu_s_per_batch", "pss_peak_mb", "shm_peak_mb")""",
    ),
]

# -- 5: shutting down gracefully -------------------------------------------------------------------

SHUTDOWN = [
    (
        "md",
        """\
# 5 · Shutting down gracefully

The post's last section: processes need a way to shut down; a broken pipe must start the shutdown; queues
must be emptied; all shared memory must be closed and unlinked. ipcbench writes this down as one protocol
that every multi-process strategy shares (`strategies.workers.WorkerPool`, DESIGN.md section 8):

1. **No wait without a timeout and a liveness check.** The main process waits on its pipes *and* on the
   workers' process sentinels (`multiprocessing.connection.wait`): a worker that dies is a `WorkerDiedError`
   naming it and its exit code, a worker that stays silent past `LoaderConfig.timeout` is a
   `WorkerTimeoutError`. Neither is ever a hang.
2. **A worker's exception travels as data** and is raised again in the main process with the worker's
   traceback attached.
3. **`close()` escalates, bounded and idempotent:** a stop message, then a bounded join that keeps draining the
   pipes (a worker blocked writing a big result into a full pipe cannot see the stop behind it), then SIGTERM
   and a bounded join, then SIGKILL and a bounded join.
4. **Shared memory has exactly one owner**, the main process, which unlinks every segment after the workers
   are gone, also when one of them was killed. If the main process itself is killed, the resource tracker
   unlinks them.
5. **Workers watch their parent** and exit on their own when it dies.
6. **Queues are emptied and closed** by the main process, so no feeder thread stays blocked on a full pipe.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from strategies import constants
from strategies.workers import WorkerPool

graces = {name: getattr(constants, name) for name in ("STOP_GRACE_S", "TERMINATE_GRACE_S", "KILL_GRACE_S")}
print(", ".join(f"{name} = {value:g} s" for name, value in graces.items()))
print(f"close() returns within about {sum(graces.values()):g} s even when every worker ignores the stop message;"
      f" workers notice a dead parent within PARENT_POLL_S = {constants.PARENT_POLL_S:g} s.")
show_source(WorkerPool.close)""",
    ),
    (
        "md",
        """\
## Shutdown in the reference run

`shutdown_s` is measured from the `close()` call until every worker is gone, once per process (so `n`
here counts processes); `leaked_shm` and `leftover_processes` count what was left afterwards.""",
    ),
    (
        "code",
        """\
lifecycle = (medians(run, "startup_s", "shutdown_s") * [1, 1000, 1000]).rename(
    columns={"startup_s": "startup (ms)", "shutdown_s": "shutdown (ms)"})
for name in ("leaked_shm_max", "leftover_processes_max"):
    if name in run.summary:
        lifecycle[name.removesuffix("_max")] = run.summary.set_index(["strategy", "workers"])[name]
lifecycle.round(1)""",
    ),
    (
        "code",
        """\
slowest = run.summary.loc[run.summary["shutdown_s_median"].idxmax()]
print(f"Slowest median shutdown: {slowest['strategy']} (workers={slowest['workers']}), "
      f"{slowest['shutdown_s_median'] * 1000:.0f} ms; the escalation bound is {sum(graces.values()):g} s.")
figure("lifecycle")""",
    ),
    (
        "code",
        """\
if run.faults is not None and not run.faults.empty:
    figure("faults")
else:
    print("This run has no faults.jsonl; `ipcbench faults --out RUN_DIR` adds the shutdown-cleanliness matrix.")""",
    ),
    (
        "md",
        """\
## Live: kill a worker

A shared-memory generator with two workers on a tiny dataset. After the first batch, one worker is sent
SIGKILL: no exception, no message, it just disappears. The loop goes on until the main process next waits
for that worker; the sentinel tells it the worker is gone, and `next()` raises `WorkerDiedError` after
closing the generator (every worker stopped, every segment unlinked).""",
    ),
    (
        "code",
        compose(
            """\
import shutil
import signal
import tempfile
import time

import psutil

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, WorkerDiedError, make_generator
from strategies.constants import SHM_PREFIX
from strategies.shm_segments import stale_segments""",
            TINY_DATASET,
            """\

def our_segments():
    \"\"\"This kernel's ipcbench segments in /dev/shm (the owner's pid is in the name).\"\"\"
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"{SHM_PREFIX}{os.getpid()}_"))


def running(pids):
    \"\"\"Those of ``pids`` that still run (a zombie, dead but not yet reaped, does not count).\"\"\"
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


config = LoaderConfig(batch_size=4, tile=256, workers=2, prefetch=2, timeout=10.0)
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
print(f"exit code {caught.exitcode}, worker {caught.worker_id}, pid {caught.pid}")""",
        ),
    ),
    (
        "md",
        """\
What is left: `stale_segments()` lists project segments whose owner process is gone (there should be none);
this kernel's own segments (still alive, so not "stale") are checked by name; and both workers are gone.
The children this kernel still has are multiprocessing's fork server and resource tracker, shared by every
generator of the process, not left over by this one.""",
    ),
    (
        "code",
        """\
left = {"stale segments": stale_segments(), "this kernel's segments": our_segments(),
        "workers still running": running(pids)}
for what, value in left.items():
    print(f"{what}: {value}")
children = psutil.Process().children(recursive=True)
print("children of this kernel:", [(p.pid, " ".join(p.cmdline())[:90]) for p in children] or "none")
assert not any(left.values()), left
shutil.rmtree(scratch)""",
    ),
]

# -- 6: the full comparison ------------------------------------------------------------------------

COMPARISON = [
    (
        "md",
        """\
# 6 · The full comparison

Every strategy of the reference run side by side: the baseline and the three designs of the series (pipe,
queue, shared memory), zero-copy shared memory (`shm_zerocopy`: workers assemble whole batches, notebook 4),
plus two for context when the run has them: `threads` (a thread pool in the training process) and `torch`
(`torch.utils.data.DataLoader`). The figures are the report's own (`harness.report.plots`); the same run's
`report.md` shows them with tables.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## Where the numbers come from

Machine, software, dataset and config as recorded in `env.json`. The load average before and after the run
says how busy the machine was; on a shared machine, read small differences with care.""",
    ),
    ("code", """display(Markdown("\\n".join(f"- **{k}:** {v}" for k, v in provenance.provenance_items(run))))"""),
    (
        "md",
        """\
## Summary

Medians per cell, computed from the raw samples. `unstable` flags a cell whose batches/s spread (std / mean)
is over 10%; a cell with one sample has no spread to judge (`cv` is empty).""",
    ),
    (
        "code",
        """\
table = medians(run, "batches_per_s", "mb_per_s", "wait_ms_p50", "wait_ms_p95", "cpu_s_per_batch", "pss_peak_mb",
                "shm_peak_mb")
table["cv"] = run.summary.set_index(["strategy", "workers"])["batches_per_s_cv"]
table["unstable"] = run.summary.set_index(["strategy", "workers"])["unstable"]
table""",
    ),
    (
        "code",
        """\
rates = run.summary.pivot_table(index="workers", columns="strategy", values="batches_per_s_median")
for workers, row in rates.iterrows():
    ranking = row.dropna().sort_values(ascending=False)
    print(f"workers={workers}: " + " > ".join(f"{s} {v:.1f}" for s, v in ranking.items()) + " batches/s")
# The baseline is one process whatever `workers` says: where it was not run at a worker count, take its median.
baseline = rates["baseline"].fillna(rates["baseline"].median())
rates.div(baseline, axis=0).T.rename(columns=lambda w: f"workers={w}: x baseline")""",
    ),
    ("code", """figure("throughput")"""),
    (
        "md",
        """\
## Latency: the wait in `next()`

Throughput is an average; a training step waits on the *slowest* batches. The ECDF shows every batch's wait,
with p50, p95 and p99 marked: a curve further left is a loop that waits less, and a long flat tail is stalls.""",
    ),
    ("code", """figure("wait_ecdf")"""),
    (
        "md",
        """\
## Memory

PSS and USS summed over the main process and its workers, and the `/dev/shm` peak. `/dev/shm` is one file
system for the whole machine: a strategy that creates no segment (the baseline, threads) shows what other
processes were doing with it during the run.""",
    ),
    ("code", """figure("memory")"""),
    (
        "md",
        """\
## CPU per batch

CPU time of every process per delivered batch: what a batch costs on a machine whose cores are shared.""",
    ),
    ("code", """figure("cpu_per_batch")"""),
    (
        "md",
        """\
## Where the time goes per batch

Each strategy's own stage timers (`gen.stage_times()`): compute (the per-image work), serialize (pickling),
transfer (moving the pixels through the channel), assemble (the main process copying tiles into batches) and
wait (the main process blocked on a result). Worker stages are summed over workers, which run in parallel
with the main process, so a bar can be longer than the wall time per batch (the black tick). Zero-copy shared
memory is the one with no assemble at all.""",
    ),
    ("code", """figure("stages")"""),
    (
        "md",
        """\
## How much to trust it

The checks the report makes: stable cells, enough samples, and the equivalence contract (every strategy
delivered the same batches, compared by checksum).""",
    ),
    (
        "code",
        """\
from harness.report.summary import checksum_mismatches

print(provenance.n_text(run))
unjudged = int(run.summary["batches_per_s_cv"].isna().sum())
if unjudged:
    print(f"{unjudged} of {len(run.summary)} cells have a single sample: their stability cannot be judged")
unstable = run.summary.loc[run.summary["unstable"].astype(bool), ["strategy", "workers"]]
listed = "".join(f"; {s} (workers={w})" for s, w in unstable.itertuples(index=False))
print(f"unstable cells: {len(unstable)} of {len(run.summary)}{listed}")
mismatches = checksum_mismatches(run.samples)
print("checksums:", "not recorded" if mismatches is None else
      "every strategy delivered the same batches" if not mismatches else f"DIFFER in {mismatches}")
for note in run.notes:
    print("note:", note)""",
    ),
]

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_generator_interface": GENERATOR,
    "02_pipes": PIPES,
    "03_queues": QUEUES,
    "04_shared_memory": SHARED_MEMORY,
    "05_shutting_down": SHUTDOWN,
    "06_comparison": COMPARISON,
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook (v4, no outputs) from ``(kind, source)`` pairs; kind is "md" or "code"."""
    notebook = new_notebook()
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for number, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = f"cell-{number:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def rendered() -> dict[Path, str]:
    """Every notebook's file path and its text, as this source writes it."""
    return {HERE / f"{name}.ipynb": nbformat.writes(build(cells)) + "\n" for name, cells in NOTEBOOKS.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in rendered().items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run notebooks/_build.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
