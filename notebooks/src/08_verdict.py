# %% [markdown]
# # 8 · Which one should I use?
#
# Seven posts built and measured the ways of feeding a training loop with tiles of large 16-bit images. This one
# answers the question a reader comes with, from every committed run: the reference comparison, a training step
# that takes time, compressed files, a cold page cache, a busy machine, the loader libraries, and the advisor.
# Each answer names its evidence; the limits come at the end.
#
# The short version: **what decides is how long your training step takes**, then how expensive each image is to
# decode, then how many cores are free. The numbers follow.

# %%
import pandas as pd

from harness.notebook import cell_median, committed, figure, number, root_dir, say, table, tiers, where
from harness.report import provenance

reference = committed("reference")
print(f"{provenance.machine_text(reference.env)}; every run below on this machine")


def fastest(data, workers=2):
    """The strategies the measurements cannot separate from the fastest, with their medians."""
    group = tiers(data, workers)[0]
    return ", ".join(f"{s} ({number(cell_median(data, s, workers))} batches/s)" for s in group)


# %% [markdown]
# ## 1. By step time: how much loading can the step hide?
#
# A step of *s* ms needs 1000 / *s* batches a second, and a loader that works beside the step (in workers or
# threads) can hide its work behind it; the baseline cannot, since it loads between steps. The step-time run
# simulates the step with a sleep and measures the share of time the loop spends in its step (*utilization*).

# %%
steps = committed("regime-step")
utilization = steps.summary.pivot_table(index="strategy", columns="step_ms", values="consumer_utilization_median")
utilization = utilization.drop(columns=0.0, errors="ignore").sort_values(utilization.columns[-1], ascending=False)
table(utilization.rename(columns=lambda s: f"step {s:g} ms"))
figure("utilization", steps)
for step in utilization.columns:
    best = utilization[step].max()
    close = utilization.index[utilization[step] >= best - 0.05].tolist()
    say(
        f"**{step:g} ms step** (needs {number(1000 / step)} batches/s): best utilization {number(best)}; within "
        f"5 points of it: {', '.join(close)}; the baseline {number(utilization.loc['baseline', step])}."
    )

# %% [markdown]
# So: with a short step, the loader is the bottleneck and the choice matters (next sections); the longer the
# step, the more designs keep up, and past the point where every design is within a few points of the best the
# simplest one that keeps up is the right one: the less code, the fewer ways to fail.
#
# ## 2. By per-image cost: compressed or not
#
# The same images stored uncompressed, with zstd, with Deflate (zlib) and with LZW, two workers, a step of no
# time. Decoding a compressed TIFF releases the GIL, so threads in the training process can decode in parallel.

# %%
regimes = {
    "uncompressed, warm cache": where(committed("regime-cold"), cache="warm"),
    "zstd": committed("regime-zstd"),
    "Deflate (zlib)": where(committed("regime-zlib"), decode_threads="auto"),
    "LZW": committed("regime-lzw"),
    "uncompressed, cold cache": where(committed("regime-cold"), cache="cold"),
}
rows = []
for name, data in regimes.items():
    baseline = cell_median(data, "baseline", 2)
    group = tiers(data, 2)[0]
    rows.append(
        {
            "data": name,
            "baseline, batches/s": baseline,
            "fastest group (not measurably different)": ", ".join(group),
            "its best / baseline": cell_median(data, group[0], 2) / baseline,
        }
    )
table(pd.DataFrame(rows), index=False)

# %% [markdown]
# Shared memory (`shm_zerocopy`, `shm`) and threads are in the fastest group wherever decoding is cheap or
# releases the GIL. LZW decoding is slow enough to bound every design at the cores' compute, and then the
# designs that do the same work converge.
#
# ## 3. By free cores: a busy machine
#
# The same Deflate data with one and two busy processes beside the loader (other jobs, a data-augmentation
# process, the training step's own threads):

# %%
contention = committed("regime-contention")
loads = sorted(contention.samples["background_load"].unique())
for busy in loads:
    say(f"**{busy} busy process(es):** fastest group {fastest(where(contention, background_load=busy))}.")
kept = pd.DataFrame(
    {
        f"{busy} busy / none": {
            s: cell_median(where(contention, background_load=busy), s, 2)
            / cell_median(where(contention, background_load=0), s, 2)
            for s in ("baseline", "threads", "pipe", "shm", "shm_zerocopy")
        }
        for busy in loads[1:]
    }
).rename_axis("strategy")
table(kept)
say(
    f"With one busy process the baseline keeps {number(100 * kept.iloc[:, 0]['baseline'])}% of its throughput, "
    f"threads {number(100 * kept.iloc[:, 0]['threads'])}%, shm {number(100 * kept.iloc[:, 0]['shm'])}%."
)

# %% [markdown]
# Worker processes compete with everything else for the cores; a thread pool in the training process competes
# less (it has no process of its own to schedule, and no transfer), and the baseline loses the least of all,
# since it never used more than one core.
#
# ## 4. Memory
#
# PSS of the whole process tree (shared pages divided among the processes that map them) and the `/dev/shm`
# peak, at two workers in the reference run:

# %%
most = int(reference.samples["workers"].max())
memory = reference.summary[reference.summary["workers"] == most].set_index("strategy")
table(memory[["pss_peak_mb_median", "shm_peak_mb_median"]].sort_values("pss_peak_mb_median"))
say(
    f"The queue needs {number(memory.loc['queue', 'pss_peak_mb_median'] / memory.loc['shm', 'pss_peak_mb_median'])}x"
    f" the memory of `shm` (results in flight, pickles and fresh arrays for every image), and torch's DataLoader "
    f"{number(memory.loc['torch', 'pss_peak_mb_median'] / memory.loc['shm', 'pss_peak_mb_median'])}x (every worker "
    f"imports torch)."
)

# %% [markdown]
# Memory grows with the images as well as with the workers: each worker holds the image it is working on, decoded,
# and the first batch waits for one whole image. The image-size run measures the same strategies on synthetic
# two-channel images of three sizes, one interleaved run:

# %%
by_size = committed("reference-image-size")
megapixels = {d["name"]: d["shape"][-2] * d["shape"][-1] / 1e6 for d in by_size.env["datasets"]}
smallest, *_, largest = megapixels  # the datasets, smallest image first
full = by_size.summary[by_size.summary["workload"] == "full"]
grown = full.pivot_table(index="strategy", columns="dataset", values="pss_peak_mb_median")[list(megapixels)]
table(grown.rename(columns=lambda name: f"PSS MB, {megapixels[name]:.1f} MP"))
first = full.pivot_table(index="strategy", columns="dataset", values="time_to_first_batch_s_median")[list(megapixels)]
rates = full.pivot_table(index="strategy", columns="dataset", values="batches_per_s_median")[list(megapixels)]
say(
    f"From {number(megapixels[smallest])} to {number(megapixels[largest])} megapixels an image, `pipe`'s PSS "
    f"grows from {number(grown.loc['pipe', smallest])} to {number(grown.loc['pipe', largest])} MB and its first "
    f"batch from {number(first.loc['pipe', smallest])} to {number(first.loc['pipe', largest])} s, while its "
    f"batches/s change by {number(100 * (rates.loc['pipe', largest] / rates.loc['pipe', smallest] - 1))}% for "
    f"{number(megapixels[largest] / megapixels[smallest])}x the pixels (the work is per tile): on large images, the "
    f"workers' memory is the cost to budget."
)

# %% [markdown]
# The first batch has a cost of its own: a design with worker processes starts multiprocessing's fork server, which
# imports NumPy, tifffile and the strategies before it forks the first worker, and only then can a worker decode
# an image; torch's DataLoader has its fork server import torch as well. With `background_start=True` (`pipe`,
# `queue`, `shm`, `shm_zerocopy`, `torch`) `make_generator` returns at once, the workers start in a thread, and the
# main process makes the first images itself until they are ready. The goals run measures both ways, from the
# `make_generator` call to the first batch of the first epoch:

# %%
from harness.report.goals import BACKGROUND_START, first_batch_s

goals = committed("reference-goals")
waited = first_batch_s(goals)
designs = ["pipe", "queue", "shm", "shm_zerocopy", "torch"]
started = pd.DataFrame(
    {
        "workers started first, s": [waited[s] for s in designs],
        "started in the background, s": [waited[s + BACKGROUND_START] for s in designs],
    },
    index=designs,
)
table(started)
say(
    f"The baseline's first batch came {number(waited['baseline'])} s after `make_generator`. Started first, the "
    f"four designs took {number(started.iloc[:4, 0].min())}-{number(started.iloc[:4, 0].max())} s and torch's "
    f"DataLoader {number(started.loc['torch'].iloc[0])} s (its fork server imports torch before the first worker "
    f"exists); started in the background, {number(started.iloc[:, 1].min())}-{number(started.iloc[:, 1].max())} s, "
    f"within {number(started.iloc[:, 1].max() - waited['baseline'])} s of the baseline."
)

# %% [markdown]
# ## The verdict
#
# - **A step of tens of milliseconds or more** (most segmentation models on a GPU): use the simplest design that
#   keeps up. Threads in the training process (`threads`) when decoding releases the GIL (compressed TIFFs,
#   NumPy); the baseline if even that is not needed. Nothing to shut down, nothing in `/dev/shm`.
# - **A short step on a machine with free cores**: shared memory with per-worker slots (`shm`), or with workers
#   assembling whole batches (`shm_zerocopy`) if the loop can live with batches valid until the next `next()`.
#   Worth its shutdown protocol only with that protocol (post 5).
# - **Not a `multiprocessing.Queue` for big arrays**: two extra copies of every byte, the most memory, and a
#   `get()` that can hang forever (posts 3 and 5). A request/response Pipe copies once through the kernel, and is
#   the simplest multi-process design that is safe with the protocol.
# - **A loader library** (torch's DataLoader, Grain, SPDL) when its ecosystem is worth more than the difference:
#   they are measured beside the four designs in the reference run, with their own pitfalls in `docs/peers.md`.
#
# ## What this does not show
#
# Every figure here is from one 2-core virtual machine with no GPU: more workers than two only share its cores
# (`results/reference-scaling` measures 4: more memory, no more speed), so how the designs scale on a machine
# with 8 or 16 cores is not measured here (the strategies are built for 8 and more workers, and run with them),
# pinned memory and the host-to-GPU copy are not measured, and a shared machine's noise is large (the cells
# flagged unstable in the reports). The data are real 16-bit microscopy frames, but of nuclei, in one channel.
#
# ## On your own machine
#
# The answer depends on your cores, your disk, your images and your step. `ipcbench advise` measures the
# candidates on your data within a time budget and writes a recommendation, with its evidence and code to paste:
#
# ```sh
# .venv/bin/ipcbench advise --dataset path/to/your/tiffs --step-ms 40 --budget-s 300
# ```
#
# Its advice for the reference data on this machine, with no step:

# %%
advice = (root_dir() / "results" / "advise-real" / "advice.md").read_text()
recommendation = advice.split("\n## Paste this", 1)[0].splitlines()[1:]  # without its title
say("\n".join(recommendation).replace("## What limits it", "**What limits it.**"))
