"""RunData: one run as every reader sees it (reports, compare, notebooks), whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True, slots=True)
class RunData:
    """Everything a report or a comparison needs from one run."""

    root: Path  # the results folder, or the JSON file it was read from
    env: dict[str, Any]
    samples: pd.DataFrame  # every epoch, warm-up included (column ``warmup``)
    summary: pd.DataFrame  # recomputed from samples, one row per cell
    stored_summary: pd.DataFrame | None
    faults: pd.DataFrame | None
    source: str  # "samples", "pytest-benchmark", or "faults" (a faults-only folder: no samples, empty summary)
    notes: tuple[str, ...] = ()  # what the loader noticed (dropped lines, disagreeing summary.csv); plain text
