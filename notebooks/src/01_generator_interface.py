# %% [markdown]
# # 1 · The generator interface and the baseline
#
# Post 3 of the series, "Creating an Image-Generator", builds a `DataGenerator`: an object that a training
# loop drives with `for data, labels in generator`, that knows how many batches an epoch has, and that serves
# one epoch per loop. ipcbench keeps exactly that interface for every way of feeding the loop
# (`strategies.BatchGenerator`):
#
# - `iter(gen)` starts the next epoch; which images, tiles and augmentations it serves is a pure function of
#   the dataset, the config (seed, tile, batch size) and the epoch number: the *epoch plan*;
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
from harness.notebook import figure, medians, only, run_text, show
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
pd.DataFrame(
    [(e.stem, e.channels, e.height, e.width, e.classes is not None) for e in dataset.entries],
    columns=["image", "channels", "height", "width", "class table"],
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
# ## The baseline in the reference run
#
# The numbers from here on come from the committed reference run (`results/reference`, printed by the setup
# cell), read from its raw per-epoch samples by `harness.results.load`. The baseline is one process whatever
# the `workers` setting says: where the run measured it at several worker counts, those rows repeat the same
# work, and their difference is a first look at the run's noise.

# %%
medians(only(run, "baseline"), "batches_per_s", "mb_per_s", "wait_ms_p50", "wait_ms_p95", "cpu_s_per_batch")

# %%
baseline_rate = run.summary.loc[run.summary["strategy"] == "baseline", "batches_per_s_median"].median()
copies_per_s = provenance.lookup(run.env, "memcpy.batch_copies_per_s_one_core")
print(f"Baseline: {baseline_rate:.1f} batches/s, {1000 / baseline_rate:.1f} ms per batch.")
if copies_per_s:
    print(
        f"Copying one batch (memcpy, measured at the start and the end of the run) takes {1000 / copies_per_s:.2f} ms: "
        f"{baseline_rate / copies_per_s:.0%} of the baseline's time per batch."
    )
    print("The rest goes to the per-image work (read, mask, tiles) and the loop around it.")

# %% [markdown]
# In the baseline, `next()` reads and tiles a new image whenever the batch needs tiles it does not have yet.
# So the wait per batch has two kinds of batches: those cut from an image already in memory (a copy of the
# tiles) and those that wait for an image to be read first. How often the second kind comes follows from
# the geometry:

# %%
from strategies.plan import tiles_per_image

*leading, height, width = provenance.lookup(run.env, "dataset.shape")
channels = leading[0] if leading else 1
tile = int(run.samples["tile"].iloc[0])
batch_size = int(run.samples["batch_size"].iloc[0])
prefetch = int(run.samples["prefetch"].iloc[0])

per_image = tiles_per_image(height, width, tile)
print(
    f"{per_image} tiles of {tile} px per {height} x {width} image, {batch_size} tiles per batch: "
    f"about one batch in {per_image / batch_size:.1f} needs a new image."
)

# %%
figure("wait_ecdf", only(run, "baseline"))

# %% [markdown]
# The lower steps of the curve are batches served from an image in memory; the upper ones are batches that
# waited for a read. A strategy with workers can hide those reads, if the workers stay ahead of the loop.
# The next notebooks measure what each way of doing that costs.

# %%
shutil.rmtree(scratch)  # the tiny dataset
