# %% [markdown]
# # 6 · The full comparison
#
# Every strategy of the reference run side by side: the baseline and the three designs of the series (pipe,
# queue, shared memory), zero-copy shared memory (`shm_zerocopy`: workers assemble whole batches, notebook 4),
# plus two for context when the run has them: `threads` (a thread pool in the training process) and `torch`
# (`torch.utils.data.DataLoader`). The figures are the report's own (`harness.report.plots`); the same run's
# `report.md` shows them with tables.

# %%
from harness.notebook import RUN as run
from harness.notebook import cell_median as rate
from harness.notebook import figure, medians, number, run_text, say, table, tiers
from harness.report import provenance

print(run_text())

# %% [markdown]
# ## Where the numbers come from
#
# Machine, software, dataset and config as recorded in `env.json`. The load average before and after the run
# says how busy the machine was; on a shared machine, read small differences with care.

# %%
say("\n".join(f"- **{k}:** {v}" for k, v in provenance.provenance_items(run)))

# %% [markdown]
# ## Summary
#
# Medians per cell, computed from the raw samples. `unstable` flags a cell whose batches/s spread (std / mean)
# is over 10%; a cell with one sample has no spread to judge (`cv` is empty).

# %%
summary = medians(
    run, "batches_per_s", "mb_per_s", "wait_ms_p50", "wait_ms_p95", "cpu_s_per_batch", "pss_peak_mb", "shm_peak_mb"
)
summary["cv"] = run.summary.set_index(["strategy", "workers"])["batches_per_s_cv"]
summary["unstable"] = run.summary.set_index(["strategy", "workers"])["unstable"]
table(summary)

# %% [markdown]
# ## What the measurements can order
#
# Sorting the table by its medians would rank cells whose difference is noise. Instead, at each worker count,
# the strategies are grouped: sorted by median batches/s, a strategy opens a new group only when it is
# measurably slower than the best of the group above it (two-sided Mann-Whitney U on the raw samples, p < 0.05,
# and medians at least 5% apart). Within a group the order is not a finding.


# %%
worker_counts = sorted(int(w) for w in run.summary["workers"].unique())
ordered = {workers: tiers(run, workers) for workers in worker_counts}
for workers, groups in ordered.items():
    shown = [", ".join(f"{s} {number(rate(run, s, workers))}" for s in group) for group in groups]
    say(f"**{workers} worker(s)**, batches/s: " + " > ".join(f"({text})" for text in shown))

# %%
figure("throughput")

# %% [markdown]
# ## Latency: the wait in `next()`
#
# Throughput is an average; a training step waits on the *slowest* batches. The ECDF shows every batch's wait,
# with p50, p95 and p99 marked: a curve further left is a loop that waits less, and a long flat tail is stalls.

# %%
figure("wait_ecdf")

# %% [markdown]
# ## Memory
#
# PSS and USS summed over the main process and its workers, and the `/dev/shm` peak. `/dev/shm` is one file
# system for the whole machine: a strategy that creates no segment (the baseline, threads) shows what other
# processes were doing with it during the run.

# %%
figure("memory")

# %% [markdown]
# ## CPU per batch
#
# CPU time of every process per delivered batch: what a batch costs on a machine whose cores are shared.

# %%
figure("cpu_per_batch")

# %% [markdown]
# ## Where the time goes per batch
#
# Each strategy's own stage timers (`gen.stage_times()`): compute (the per-image work), serialize (pickling),
# transfer (moving the pixels through the channel), assemble (the main process copying tiles into batches) and
# wait (the main process blocked on a result). Worker stages are summed over workers, which run in parallel
# with the main process, so a bar can be longer than the wall time per batch (the black tick). Zero-copy shared
# memory is the one with no assemble at all.

# %%
figure("stages")

# %% [markdown]
# ## How much to trust it
#
# The checks the report makes: stable cells, enough samples, and the equivalence contract (every strategy
# delivered the same batches, compared by checksum).

# %%
from harness.results import checksum_mismatches

print(provenance.n_text(run))
unjudged = int(run.summary["batches_per_s_cv"].isna().sum())
if unjudged:
    print(f"{unjudged} of {len(run.summary)} cells have a single sample: their stability cannot be judged")
unstable = run.summary.loc[run.summary["unstable"].astype(bool), ["strategy", "workers"]]
listed = "".join(f"; {s} (workers={w})" for s, w in unstable.itertuples(index=False))
print(f"unstable cells: {len(unstable)} of {len(run.summary)}{listed}")
mismatches = checksum_mismatches(run.samples)
print(
    "checksums:",
    "not recorded"
    if mismatches is None
    else "every strategy delivered the same batches"
    if not mismatches
    else f"DIFFER in {mismatches}",
)
for note in run.notes:
    print("note:", note)

# %% [markdown]
# ## What this comparison says
#
# On this machine and this data (uncompressed 16-bit images already in the page cache, a training step that
# takes no time, two cores), the ordering the measurements support is the grouping above, not the table's
# medians; what holds across the other conditions measured (compressed data, a cold cache, a busy machine, a
# training step that takes time) is the subject of post 8.

# %%
most = max(worker_counts)
best_group = ordered[most][0]
baseline_rate = rate(run, "baseline", most)
say(
    f"With {most} workers the fastest group is {', '.join(best_group)}: "
    + ", ".join(f"{s} {number(rate(run, s, most) / baseline_rate)}x the baseline" for s in best_group)
    + ". "
    + (
        f"The queue is in group {next(i for i, g in enumerate(ordered[most], 1) if 'queue' in g)} "
        f"of {len(ordered[most])}, at {number(rate(run, 'queue', most) / baseline_rate)}x the baseline."
        if "queue" in run.summary["strategy"].values
        else ""
    )
)
