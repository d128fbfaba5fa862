# %% [markdown]
# # 6 · The full comparison
#
# Every strategy of the reference run side by side: the baseline and the three designs of the series (pipe,
# queue, shared memory), zero-copy shared memory (`shm_zerocopy`: workers assemble whole batches, notebook 4),
# plus two for context when the run has them: `threads` (a thread pool in the training process) and `torch`
# (`torch.utils.data.DataLoader`). The figures are the report's own (`harness.report.plots`); the same run's
# `report.md` shows them with tables.

# %%
from IPython.display import Markdown, display

from harness.notebook import RUN as run
from harness.notebook import figure, medians, run_text
from harness.report import provenance

print(run_text())

# %% [markdown]
# ## Where the numbers come from
#
# Machine, software, dataset and config as recorded in `env.json`. The load average before and after the run
# says how busy the machine was; on a shared machine, read small differences with care.

# %%
display(Markdown("\n".join(f"- **{k}:** {v}" for k, v in provenance.provenance_items(run))))

# %% [markdown]
# ## Summary
#
# Medians per cell, computed from the raw samples. `unstable` flags a cell whose batches/s spread (std / mean)
# is over 10%; a cell with one sample has no spread to judge (`cv` is empty).

# %%
table = medians(
    run, "batches_per_s", "mb_per_s", "wait_ms_p50", "wait_ms_p95", "cpu_s_per_batch", "pss_peak_mb", "shm_peak_mb"
)
table["cv"] = run.summary.set_index(["strategy", "workers"])["batches_per_s_cv"]
table["unstable"] = run.summary.set_index(["strategy", "workers"])["unstable"]
table

# %%
rates = run.summary.pivot_table(index="workers", columns="strategy", values="batches_per_s_median")
for workers, row in rates.iterrows():
    ranking = row.dropna().sort_values(ascending=False)
    print(f"workers={workers}: " + " > ".join(f"{s} {v:.1f}" for s, v in ranking.items()) + " batches/s")
# The baseline is one process whatever `workers` says: where it was not run at a worker count, take its median.
baseline = rates["baseline"].fillna(rates["baseline"].median())
rates.div(baseline, axis=0).T.rename(columns=lambda w: f"workers={w}: x baseline")

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
