"""The pure rules of closing: what counts as true in a close_field, when the guard refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from target_noojee.lifecycle import GUARD_FLOOR, NotABoolean, guard_refuses, is_true


@pytest.mark.parametrize("value", [True, 1, "true", "TRUE", " yes ", "Y", "y", "1", 1.0])
def test_true_values_close(value: Any) -> None:
    assert is_true(value) is True


@pytest.mark.parametrize("value", [False, 0, None, "", "  ", "false", "No", "n", "0", 0.0])
def test_false_values_keep_the_lead_open(value: Any) -> None:
    assert is_true(value) is False


@given(
    st.one_of(
        st.text().filter(
            lambda t: (
                t.strip().lower() not in {"true", "yes", "y", "1", "false", "no", "n", "0", ""}
            )
        ),
        st.integers().filter(lambda n: n not in (0, 1)),
        st.lists(st.integers()),
        st.dictionaries(st.text(), st.integers()),
    )
)
def test_anything_else_is_not_a_boolean(value: Any) -> None:
    with pytest.raises(NotABoolean):
        is_true(value)


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0, 1))
def test_the_guard_allows_a_few_and_a_share(count: int, open_leads: int, ratio: float) -> None:
    refused = guard_refuses(count, open_leads, ratio)
    if count <= GUARD_FLOOR or count <= ratio * open_leads:
        assert not refused
    else:
        assert refused
