"""The turns of event streams at the database (finetune_studio.stream_db.StreamSlots).

The storm itself, with real processes and a real pool, is tests/reliability/test_reconnect_storm.py.
"""

import asyncio

import pytest

from finetune_studio.stream_db import CHECK, OPEN, READ, SlotTimeout, StreamSlots


async def _take(slots: StreamSlots, kind: str, served: list[str], *, hold: float = 0.01) -> None:
    async with slots.held(kind):
        served.append(kind)
        await asyncio.sleep(hold)


def test_a_freed_slot_serves_upkeep_then_openings_then_lines_each_in_arrival_order():
    async def scenario() -> list[str]:
        slots = StreamSlots(1)
        served: list[str] = []
        async with slots.held(READ):  # the one slot is taken: everyone else waits
            waiting = [
                asyncio.create_task(_take(slots, kind, served)) for kind in (READ, OPEN, READ, CHECK, OPEN, CHECK)
            ]
            await asyncio.sleep(0.05)
            assert served == []
        await asyncio.gather(*waiting)
        assert slots.in_use == 0
        return served

    assert asyncio.run(scenario()) == [CHECK, CHECK, OPEN, OPEN, READ, READ]


def test_no_more_than_size_hold_a_slot_at_once():
    async def scenario() -> int:
        slots = StreamSlots(3)
        holding, most = 0, 0

        async def read() -> None:
            nonlocal holding, most
            async with slots.held(READ):
                holding += 1
                most = max(most, holding)
                await asyncio.sleep(0.005)
                holding -= 1

        await asyncio.gather(*(read() for _ in range(40)))
        assert slots.in_use == 0
        return most

    assert asyncio.run(scenario()) == 3


def test_an_opening_that_waits_past_its_bound_gives_up_and_leaves_no_slot_taken():
    async def scenario() -> None:
        slots = StreamSlots(1)
        async with slots.held(READ):
            with pytest.raises(SlotTimeout):
                async with slots.held(OPEN, timeout=0.05):
                    raise AssertionError("no slot was free")
            assert not slots.waiting[OPEN]
        assert slots.in_use == 0
        async with slots.held(OPEN, timeout=0.05):  # free again at once
            assert slots.in_use == 1

    asyncio.run(scenario())


def test_a_client_that_leaves_while_waiting_gives_its_turn_to_the_next():
    async def scenario() -> list[str]:
        slots = StreamSlots(1)
        served: list[str] = []
        async with slots.held(READ):
            leaving = asyncio.create_task(_take(slots, OPEN, served))
            staying = asyncio.create_task(_take(slots, READ, served))
            await asyncio.sleep(0.02)
            leaving.cancel()
            await asyncio.sleep(0.02)
        await staying
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert slots.in_use == 0
        return served

    assert asyncio.run(scenario()) == [READ]
