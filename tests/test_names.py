"""Turbine names: the same id for the same name everywhere, and the way back."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import SchemaError
from pipeline.names import TurbineNames, is_hashed, turbine_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [("0", 0), ("7", 7), ("-3", -3), (" 12 ", 12), (9, 9), (np.int64(5), 5)],
)
def test_integer_names_are_their_own_ids(name, expected):
    assert turbine_id(name) == expected


@pytest.mark.parametrize("name", ["R80711", "007", "1e3", "7.0", "WT 01", "涡轮-3"])
def test_other_names_hash_below_every_integer_id(name):
    tid = turbine_id(name)
    assert tid <= -(2**32)
    assert is_hashed(np.array([tid]))[0]
    assert tid == turbine_id(name)  # a function of the name alone


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, 3.5, None, True, 2**64, "R1\x00", "a\nb"])
def test_bad_names_are_errors(bad):
    with pytest.raises(SchemaError):
        turbine_id(bad)


def test_ids_of_is_vectorised_and_round_trips():
    names = TurbineNames()
    col = np.array(["R80711", "R80721", "R80711", "3", "R80790"] * 1000)
    ids = names.ids_of(col)
    assert ids.dtype == np.int64 and ids.shape == (5000,)
    assert names.labels(ids) == col.tolist()
    assert len(names) == 3  # "3" needs no entry


def test_state_and_json_round_trip_and_merge_is_a_union():
    a, b = TurbineNames(), TurbineNames()
    a.ids_of(["R80711", "R80721"])
    b.ids_of(["R80721", "R80736"])
    restored = TurbineNames.from_state(a.state())
    assert restored.items() == a.items()
    assert TurbineNames.from_json(a.to_json()).items() == a.items()
    merged = TurbineNames().merge(a).merge(b)
    assert [n for _, n in merged.items()] == ["R80711", "R80721", "R80736"]


def test_from_json_rejects_non_lists():
    with pytest.raises(SchemaError):
        TurbineNames.from_json({"a": 1})


PRINTABLE = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and s.isprintable())


@given(st.lists(PRINTABLE, max_size=30))
def test_ids_depend_on_names_only(names):
    first, second = TurbineNames(), TurbineNames()
    ids1 = first.ids_of(names) if names else np.zeros(0, dtype=np.int64)
    ids2 = second.ids_of(list(reversed(names)))[::-1] if names else ids1
    assert np.array_equal(ids1, ids2)
    assert first.labels(ids1) == [n.strip() for n in names]
