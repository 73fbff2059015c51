"""Planning the slices of an export window (pure: no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataexport.query.slices import (
    USER_ID_SPACE,
    Partition,
    ReadSlice,
    SessionSlice,
    plan_slices,
    session_time_slices,
    slice_count,
    sorted_user_id_slices,
    user_id_slices,
)
from dataexport.warehouse.backend import RowGroup

DAY = datetime(2026, 2, 14, tzinfo=UTC)


def covers_every_user_id_once(slices: list[SessionSlice]) -> bool:
    """Consecutive half-open ranges from 0 with no gap or overlap, the last open above."""
    if slices[0].low != 0 or slices[-1].high is not None:
        return False
    return all(a.high == b.low and a.low < a.high for a, b in zip(slices, slices[1:], strict=False))


def which(slices: list[SessionSlice], user_id: int) -> list[int]:
    return [i for i, s in enumerate(slices) if s.low <= user_id and (s.high is None or user_id < s.high)]


def test_slice_count():
    assert slice_count(0, 100) == 1
    assert slice_count(100, 100) == 1
    assert slice_count(101, 100) == 2
    with pytest.raises(ValueError):
        slice_count(5, 0)


@given(st.integers(1, 500), st.integers(0, USER_ID_SPACE - 1))
def test_equal_ranges_put_every_user_id_in_exactly_one_slice(count, user_id):
    slices = user_id_slices(count)
    assert len(slices) == count
    assert covers_every_user_id_once(slices)
    assert len(which(slices, user_id)) == 1


def sorted_groups(bounds: list[tuple[int, int, int]]) -> tuple[RowGroup, ...]:
    return tuple(RowGroup(lo, hi, rows) for lo, hi, rows in bounds)


def test_slices_are_whole_row_groups_when_groups_are_small():
    # Eight row groups of 100 rows each over the id space, 250 rows a slice: two whole groups each.
    step = USER_ID_SPACE // 8
    groups = sorted_groups([(i * step, (i + 1) * step - 1, 100) for i in range(8)])
    slices = sorted_user_id_slices(groups, 250)
    assert slices is not None and covers_every_user_id_once(slices)
    assert [s.low for s in slices] == [0, 2 * step, 4 * step, 6 * step]
    # The window reads half of each group: five groups fit a slice.
    assert [s.low for s in sorted_user_id_slices(groups, 250, share=0.5)] == [0, 5 * step]


def test_cuts_interpolate_inside_a_large_row_group():
    # One row group holding the whole file (as a small test file has): four slices by interpolation.
    slices = sorted_user_id_slices(sorted_groups([(1000, 2000, 400)]), 100)
    assert slices is not None and covers_every_user_id_once(slices)
    assert [s.low for s in slices] == [0, 1250, 1500, 1750]


def test_unsorted_or_statless_row_groups_give_no_cut():
    assert sorted_user_id_slices(sorted_groups([(10, 50, 5), (20, 60, 5)]), 2) is None  # overlapping
    assert sorted_user_id_slices((RowGroup(None, None, 10),), 2) is None
    assert sorted_user_id_slices((), 2) is None


@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(1, 50)), min_size=1, max_size=30), st.integers(1, 120))
def test_sorted_cuts_cover_every_user_id_once_and_no_slice_overflows(widths, rows_per_slice):
    groups, low = [], 0
    for width, rows in widths:
        groups.append(RowGroup(low, low + width, rows))
        low += width  # a group may end on the next one's first id: a visitor straddling two groups
    slices = sorted_user_id_slices(tuple(groups), rows_per_slice)
    assert slices is not None
    assert covers_every_user_id_once(slices)
    for s in slices:  # the rows of the groups a slice holds whole stay within the limit
        whole = [g for g in groups if s.low <= g.min_user_id and (s.high is None or g.max_user_id < s.high)]
        assert sum(g.rows for g in whole) <= max(rows_per_slice, max(g.rows for g in whole) if whole else 0)


def test_time_slices_are_consecutive_and_in_order():
    slices = session_time_slices(DAY, DAY + timedelta(days=1), 3)
    assert [s.low for s in slices] == [DAY, DAY + timedelta(hours=8), DAY + timedelta(hours=16)]
    assert slices[-1].high == DAY + timedelta(days=1)
    assert all(a.high == b.low for a, b in zip(slices, slices[1:], strict=False))


def partition(day: int, rows: int, groups: tuple[RowGroup, ...] = ()) -> Partition:
    start = DAY + timedelta(days=day)
    return Partition(start.date(), rows, start, start + timedelta(days=1), groups)


def day(n: int) -> date:
    return (DAY + timedelta(days=n)).date()


def test_a_window_that_fits_is_one_read_of_every_day():
    parts = [partition(0, 40), partition(1, 50)]
    assert plan_slices(parts, rows_per_slice=100, ordered=False) == [ReadSlice((day(0), day(1)), None)]


def test_a_large_window_is_read_partition_by_partition():
    step = USER_ID_SPACE // 4
    sorted_day = partition(0, 400, groups=sorted_groups([(i * step, (i + 1) * step - 1, 100) for i in range(4)]))
    fresh_day = partition(1, 250)
    small_day = partition(2, 60)
    reads = plan_slices([sorted_day, fresh_day, small_day, partition(3, 0)], rows_per_slice=100, ordered=False)
    assert [r.days for r in reads] == [(day(0),)] * 4 + [(day(1),)] * 3 + [(day(2),)]
    assert [r.session_slice.low for r in reads[:4]] == [0, step, 2 * step, 3 * step]  # row-group starts
    assert [r.session_slice for r in reads[4:7]] == user_id_slices(3)  # no statistics: equal ranges
    assert reads[7].session_slice is None  # a day that fits is read whole


def test_sorted_exports_cut_each_day_in_time_order():
    reads = plan_slices([partition(0, 300), partition(1, 200)], rows_per_slice=100, ordered=True)
    lows = [r.session_slice.low for r in reads]
    assert lows == sorted(lows) and len(reads) == 5
    assert all(r.session_slice.column == "session_time" for r in reads)
