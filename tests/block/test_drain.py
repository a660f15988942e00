"""RequestGate: a drain waits for the requests in flight and holds new ones."""

from __future__ import annotations

import trio
import trio.testing

from qmpd.block.drain import RequestGate


async def test_drain_waits_for_requests_in_flight_and_holds_new_ones() -> None:
    gate = RequestGate()
    order: list[str] = []
    finish_first = trio.Event()

    async def first() -> None:
        async with gate.request():
            order.append("first in")
            await finish_first.wait()
        order.append("first out")

    async def later() -> None:
        async with gate.request():
            order.append("later in")

    async def drain() -> None:
        await gate.drain()
        order.append("drained")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(later)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first in"]
        assert (gate.held, gate.in_flight) == (True, 1)
        finish_first.set()
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first in", "first out", "drained"]
        gate.release()
    assert order == ["first in", "first out", "drained", "later in"]
    assert (gate.held, gate.in_flight) == (False, 0)
