"""Which windows a run computes: new, late rows, new labels, backfills, incomplete (no Spark)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lakemon.windows import WindowFacts, floor_window, plan_windows, range_content

DAY = timedelta(days=1)
D0 = datetime(2026, 10, 1)


def _facts(n=5, overrides=None):
    overrides = overrides or {}
    out = []
    for i in range(n):
        ws = D0 + i * DAY
        kw = {
            "window_start": ws,
            "row_count": 100,
            "fingerprint": i,
            "label_fingerprint": None,
            "new_labels": False,
        }
        kw.update(overrides.get(i, {}))
        out.append(WindowFacts(**kw))
    return out


def test_first_run_takes_all_complete_windows():
    plan = plan_windows(_facts(), {}, DAY, as_of=D0 + 4 * DAY + timedelta(hours=3))
    assert plan.windows == tuple(D0 + i * DAY for i in range(4))
    assert plan.skipped_incomplete == (D0 + 4 * DAY,)
    assert set(plan.reasons.values()) == {"new"}


def test_changed_windows_only():
    state = {D0 + i * DAY: (100, i, None) for i in range(5)}
    facts = _facts(overrides={1: {"row_count": 101}, 2: {"fingerprint": 99}, 3: {"new_labels": True}})
    plan = plan_windows(facts, state, DAY, as_of=D0 + 10 * DAY)
    assert plan.reasons == {D0 + DAY: "late_rows", D0 + 2 * DAY: "late_rows", D0 + 3 * DAY: "new_labels"}


def test_backfill_range_only():
    state = {D0 + i * DAY: (100, i, None) for i in range(5)}
    plan = plan_windows(_facts(), state, DAY, as_of=D0 + 10 * DAY, backfill=(D0 + DAY, D0 + 3 * DAY))
    assert plan.windows == (D0 + DAY, D0 + 2 * DAY)


def test_floor_window_weeks_start_monday():
    assert floor_window(datetime(2026, 11, 26, 15), timedelta(days=7)).weekday() == 0
    assert floor_window(datetime(2026, 11, 26, 15, 7), timedelta(hours=1)) == datetime(2026, 11, 26, 15)


def test_range_content_changes_with_the_rows_of_the_range_only():
    lo, hi = D0 + DAY, D0 + 3 * DAY  # windows 1 and 2
    base, fresh = range_content(_facts(), lo, hi, DAY)
    assert not fresh
    assert range_content(list(reversed(_facts())), lo, hi, DAY)[0] == base  # order does not matter
    # outside the range: new rows, a new window, new labels -> same digest, not fresh
    outside = _facts(6, {0: {"row_count": 7}, 3: {"fingerprint": 99, "new_labels": True}})
    assert range_content(outside, lo, hi, DAY) == (base, False)
    # inside: late rows, rewritten ids, labels -> another digest; labels since the last run -> fresh
    for change in ({"row_count": 101}, {"fingerprint": 42}, {"label_fingerprint": 5}):
        assert range_content(_facts(overrides={2: change}), lo, hi, DAY)[0] != base
    assert range_content(_facts(overrides={1: {"new_labels": True}}), lo, hi, DAY) == (base, True)
    # a range not on window bounds is covered by the windows it overlaps; aware bounds are taken as UTC
    assert range_content(_facts(), lo + timedelta(hours=5), hi - timedelta(hours=1), DAY)[0] == base
    aware = (lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC))
    assert range_content(_facts(), *aware, DAY)[0] == base
    assert range_content(_facts(), lo, hi + DAY, DAY)[0] != base  # one more window


def test_merge_appended_adds_counts_and_xors_fingerprints():
    from lakemon.windows import merge_appended

    d0, d1, d2 = datetime(2026, 1, 1), datetime(2026, 1, 2), datetime(2026, 1, 3)
    rows = {d0: [11, -7, 2**62], d1: [5], d2: [-(2**63), 3]}
    fp = {}
    for ws, hashes in rows.items():
        x = 0
        for h in hashes:
            x ^= h
        fp[ws] = x
    # d0 had two rows and gained one; d1 is unchanged; d2 is new
    stored = {d0: (2, 11 ^ -7), d1: (1, fp[d1])}
    added = {d0: (1, 2**62), d2: (2, fp[d2])}
    merged = merge_appended(stored, added)
    assert merged == {ws: (len(h), fp[ws]) for ws, h in rows.items()}
    assert all(-(2**63) <= v[1] < 2**63 for v in merged.values())  # still a signed 64-bit value
    assert merge_appended(stored, {}) == stored
