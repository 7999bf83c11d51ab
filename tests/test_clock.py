"""Instants as the store keeps them: one fixed-width UTC form whose order is time's order,
whatever zone, daylight-saving change or microsecond they were made in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcade.clock import iso, iso_or_none, parse_iso

ZONES = st.sampled_from(
    ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
MOMENTS = st.builds(
    lambda naive, zone, fold: naive.replace(tzinfo=ZoneInfo(zone), fold=fold),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30)),
    ZONES,
    st.integers(0, 1),
)


@given(st.lists(MOMENTS, min_size=2, max_size=20))
def test_sorting_the_strings_sorts_the_instants(moments):
    """GIVEN instants in several zones (folds of DST changes included) WHEN written by iso()
    THEN the strings sort as the instants do, and read back to the same instant."""
    written = [iso(m) for m in moments]

    # Python compares two times of one zone by their wall clocks, folds aside: order by UTC.
    in_time_order = sorted(moments, key=lambda m: m.astimezone(UTC))
    assert sorted(written) == [iso(m) for m in in_time_order]
    assert all(len(text) == 27 for text in written)
    assert [parse_iso(text) for text in written] == [m.astimezone(UTC) for m in moments]


def test_midnight_dst_and_microseconds_in_one_order():
    """GIVEN instants a microsecond around midnight UTC and around Paris's autumn change
    WHEN written THEN their order holds."""
    paris = ZoneInfo("Europe/Paris")
    first_0230 = datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=0)  # summer time, UTC+2
    second_0230 = datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=1)  # winter time, UTC+1
    midnight = datetime(2026, 11, 29, tzinfo=UTC)
    moments = [
        midnight - timedelta(microseconds=1),
        midnight,
        midnight + timedelta(microseconds=1),
        first_0230,
        second_0230,
    ]

    in_time_order = sorted(moments, key=lambda m: m.astimezone(UTC))
    assert sorted(iso(m) for m in moments) == [iso(m) for m in in_time_order]
    assert iso(first_0230) == "2026-10-25T00:30:00.000000Z"
    assert iso(second_0230) == "2026-10-25T01:30:00.000000Z"
    assert iso(datetime(1999, 1, 1, tzinfo=UTC)) < iso(datetime(2000, 1, 1, tzinfo=UTC))


def test_a_naive_datetime_is_refused_and_none_stays_none():
    """GIVEN a datetime without a zone WHEN written THEN ValueError (it would be read as this
    machine's local time); an absent optional instant is written as None."""
    with pytest.raises(ValueError, match="naive datetime"):
        iso(datetime(2026, 11, 22, 10, 0))
    assert iso_or_none(None) is None
    assert iso_or_none(datetime(2026, 11, 22, 10, tzinfo=UTC)) == "2026-11-22T10:00:00.000000Z"
