"""QEMU's hash-table orders, which decide the member named in some errors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qmpd.protocol.hashorder import first_unvisited, qdict_order


def test_qdict_order_matches_qemu_output() -> None:
    # Key orders QEMU 7.2 printed: replies, errors and VersionInfo.
    assert qdict_order(["id", "return"]) == ["return", "id"]
    assert qdict_order(["error", "id"]) == ["id", "error"]
    assert qdict_order(["major", "minor", "micro"]) == ["micro", "minor", "major"]
    assert qdict_order(["timestamp", "event", "data"]) == ["timestamp", "event", "data"]


def test_unexpected_member_matches_qemu() -> None:
    # QEMU 7.2: query-version with {"a": 1, "b": 2} says 'b' either way round.
    assert first_unvisited(["a", "b"], []) == "b"
    assert first_unvisited(["b", "a"], []) == "b"
    assert first_unvisited(["a", "b"], ["b"]) == "a"


keys = st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=40)


@given(keys, st.data())
def test_first_unvisited_is_a_leftover_member(members: list[str], data: st.DataObject) -> None:
    visited = data.draw(st.lists(st.sampled_from(members), unique=True) if members else st.just([]))
    left = set(members) - set(visited)
    result = first_unvisited(members, visited)
    if left:
        assert result in left
    else:
        assert result is None
