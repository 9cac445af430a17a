"""What the signal modules share during a run: the config, the monitored columns, the grouping and the
names of the projected columns; and the small aggregated results they finish on the driver."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from lakemon.config import MonitorConfig
from lakemon.plan import ColumnSet, Grouping

# Projected column names (the projection keeps source columns under their own names besides these).
ID = "__id"
TS = "__ts"
LABEL = "__label"
LABELED = "__labeled"
SCORE = "__score"
PRED = "__pred"
Y = "__y"
YHAT = "__yhat"
BIN = "__bin"

SliceId = tuple[str | None, str | None]
CellKey = tuple[datetime, str | None, str | None]  # window_start, slice_key, slice_value


@dataclass(frozen=True)
class RunContext:
    """Everything a signal module needs to build its aggregates and finish its metrics."""

    cfg: MonitorConfig
    columns: ColumnSet
    grouping: Grouping
    window: timedelta
    probs: np.ndarray
    has_labels: bool
    label_name: str | None
    run_id: str = ""
    computed_at: datetime | None = None

    @property
    def monitor(self) -> str:
        """The monitor's name."""
        return self.cfg.monitor

    def key_columns(
        self, window_start: datetime, slice_key: str | None, slice_value: str | None
    ) -> dict[str, Any]:
        """The key columns every monitoring-table row carries."""
        return {
            "monitor": self.cfg.monitor,
            "window_start": window_start,
            "window_end": window_start + self.window,
            "granularity": self.cfg.granularity,
            "slice_key": slice_key,
            "slice_value": slice_value,
            "run_id": self.run_id,
            "computed_at": self.computed_at,
        }


@dataclass
class Results:
    """The small aggregated results of a run, on the driver."""

    merged: dict[CellKey, dict[str, Any]] = field(default_factory=dict)
    keyed: dict[str, Any] = field(default_factory=dict)  # name -> pandas DataFrame (long format)
    cells: dict[tuple[datetime, str | None, str | None, str], dict[str, Any]] = field(default_factory=dict)
    reference_cells: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    baseline_cells: dict[tuple[str | None, str | None, str], dict[str, Any]] = field(default_factory=dict)
    baseline_metrics: dict[tuple[str | None, str | None], dict[str, float]] = field(default_factory=dict)
    baseline_histogram: tuple[np.ndarray, np.ndarray] | None = None
    # (window_start, slice_key, slice_value, column, reference) -> (statistic, drifted) stored by an earlier run
    previous_verdicts: dict[tuple[Any, ...], tuple[str, bool]] = field(default_factory=dict)

    def windows(self) -> list[datetime]:
        """The windows present in the results."""
        return sorted({k[0] for k in self.merged})


def rows_for(mapping: Mapping[CellKey, Any]) -> list[CellKey]:
    """Cell keys in a stable order: window, population first, then slice key and value."""
    return sorted(mapping, key=lambda k: (k[0], k[1] is not None, k[1] or "", k[2] or ""))
