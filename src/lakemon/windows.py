"""Time windows: assigning rows to windows, listing them, and deciding which ones a run must (re)compute."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

# Weekly (and longer) windows start on Mondays, as analysts expect; 1970-01-05 was a Monday.
_MONDAY_ORIGIN = 4 * 86400


def _origin(window: timedelta) -> int:
    return _MONDAY_ORIGIN if window >= timedelta(days=7) else 0


def window_start_col(ts: Column, window: timedelta) -> Column:
    """The start of the window containing ``ts`` (UTC, aligned to the epoch; weeks to Mondays)."""
    from pyspark.sql import functions as F

    secs = int(window.total_seconds())
    origin = _origin(window)
    epoch = F.unix_seconds(ts.cast("timestamp"))
    return F.timestamp_seconds(F.floor((epoch - F.lit(origin)) / F.lit(secs)) * F.lit(secs) + F.lit(origin))


def floor_window(ts: datetime, window: timedelta) -> datetime:
    """Driver-side twin of :func:`window_start_col` (naive UTC datetimes)."""
    secs = int(window.total_seconds())
    origin = _origin(window)
    epoch = int(ts.replace(tzinfo=UTC).timestamp()) if ts.tzinfo is None else int(ts.timestamp())
    start = (epoch - origin) // secs * secs + origin
    return datetime.fromtimestamp(start, UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class WindowFacts:
    """What the cheap discovery scan learns about one window of the source."""

    window_start: datetime
    row_count: int
    fingerprint: int | None
    label_fingerprint: int | None
    new_labels: bool


def merge_appended(
    stored: Mapping[datetime, tuple[int, int | None]], added: Mapping[datetime, tuple[int, int | None]]
) -> dict[datetime, tuple[int, int | None]]:
    """Per-window ``(row_count, fingerprint)`` of a source that only gained rows since ``stored`` was taken.

    A window's fingerprint is the XOR of its rows' 64-bit hashes, so the hashes of the rows added to a window
    XOR into it and the counts add; windows only in ``added`` are new ones.
    """
    out = dict(stored)
    for ws, (n, fp) in added.items():
        n0, fp0 = out.get(ws, (0, None))
        out[ws] = (n0 + n, fp if fp0 is None else fp0 if fp is None else fp0 ^ fp)
    return out


@dataclass(frozen=True)
class WindowPlan:
    """The windows a run computes, and why."""

    windows: tuple[datetime, ...]
    reasons: Mapping[datetime, str]
    skipped_incomplete: tuple[datetime, ...] = ()


def plan_windows(
    facts: Iterable[WindowFacts],
    state: Mapping[datetime, tuple[int, int | None, int | None]],
    window: timedelta,
    as_of: datetime,
    start: datetime | None = None,
    backfill: tuple[datetime | None, datetime | None] | None = None,
    earliest: datetime | None = None,
) -> WindowPlan:
    """Choose the windows to compute.

    New windows (not in ``state``), windows whose rows changed since they were computed (count or
    fingerprint differ: late or rewritten rows), windows that received new labels, and with ``backfill``
    every window in ``[start, end)`` and nothing else. Only complete windows (``window_end <= as_of``) are computed.
    ``state`` maps a computed window to ``(row_count, fingerprint, label_fingerprint)``.
    """
    chosen: dict[datetime, str] = {}
    incomplete = []
    for f in sorted(facts, key=lambda x: x.window_start):
        ws = f.window_start
        if earliest is not None and ws < earliest:
            continue
        if start is not None and ws < floor_window(start, window):
            continue
        if ws + window > as_of:
            incomplete.append(ws)
            continue
        if backfill is not None:
            lo, hi = backfill
            if (lo is None or ws >= lo) and (hi is None or ws < hi):
                chosen[ws] = "backfill"
            continue
        prev = state.get(ws)
        if prev is None:
            chosen[ws] = "new"
        elif prev[0] != f.row_count or (f.fingerprint is not None and prev[1] != f.fingerprint):
            chosen[ws] = "late_rows"
        elif (f.label_fingerprint is not None and prev[2] != f.label_fingerprint) or f.new_labels:
            chosen[ws] = "new_labels"
    return WindowPlan(tuple(sorted(chosen)), chosen, tuple(incomplete))


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def range_content(
    facts: Iterable[WindowFacts], start: datetime, end: datetime, window: timedelta
) -> tuple[str, bool]:
    """A digest of the rows of ``[start, end)`` as discovery saw them, and whether any got new labels.

    The windows overlapping the range cover it, so the digest (of their row counts and id/timestamp/label
    fingerprints) changes exactly when one of them would be re-opened for late or rewritten rows; the flag
    says one of them received labels since the last successful run.
    """
    lo, hi = floor_window(start, window), _naive_utc(end)
    covering = sorted((f for f in facts if lo <= f.window_start < hi), key=lambda f: f.window_start)
    parts = [
        f"{f.window_start.isoformat()}|{f.row_count}|{f.fingerprint}|{f.label_fingerprint}" for f in covering
    ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
    return digest, any(f.new_labels for f in covering)
