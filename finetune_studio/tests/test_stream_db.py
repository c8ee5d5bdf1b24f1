"""The turns of event streams at the database (finetune_studio.stream_db.StreamSlots).

The storm itself, with real processes and a real pool, is tests/reliability/test_reconnect_storm.py.
"""

import asyncio
import threading

import pytest

from finetune_studio.stream_db import CHECK, OPEN, READ, SlotTimeout, StreamSlots, stream_read


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


def test_identical_reads_waiting_for_a_turn_are_made_once(settings):
    settings.STREAM_DB_SLOTS = 1
    calls: list[tuple[int, int]] = []

    def page(job_id: int, after: int) -> str:
        calls.append((job_id, after))
        return f"page {job_id}:{after}"

    async def scenario():
        async with StreamSlots.here().held(READ):  # the one slot is taken: the reads below all wait
            same = [asyncio.create_task(stream_read(page, 7, 100, shared=True)) for _ in range(5)]
            other = asyncio.create_task(stream_read(page, 7, 200, shared=True))
            await asyncio.sleep(0.05)
        return await asyncio.gather(*same), await other

    same, other = asyncio.run(scenario())
    assert same == ["page 7:100"] * 5
    assert other == "page 7:200"
    assert sorted(calls) == [(7, 100), (7, 200)]


def test_a_read_asked_once_an_identical_one_has_started_is_made_again(settings):
    """Joining a read already running could hand out an answer older than the question."""
    settings.STREAM_DB_SLOTS = 2
    calls: list[int] = []
    first_running, finish_first = threading.Event(), threading.Event()

    def position(job_id: int) -> int:
        calls.append(job_id)
        number = len(calls)
        if number == 1:
            first_running.set()
            finish_first.wait(5)
        return number

    async def scenario():
        first = asyncio.create_task(stream_read(position, 3, shared=True))
        await asyncio.to_thread(first_running.wait, 5)
        second = asyncio.create_task(stream_read(position, 3, shared=True))
        await asyncio.sleep(0.05)
        finish_first.set()
        return await first, await second

    assert asyncio.run(scenario()) == (1, 2)


def test_a_stream_that_leaves_does_not_cancel_the_read_it_shares(settings):
    settings.STREAM_DB_SLOTS = 1

    def page(after: int) -> str:
        return f"after {after}"

    async def scenario():
        async with StreamSlots.here().held(READ):
            leaving = asyncio.create_task(stream_read(page, 5, shared=True))
            staying = asyncio.create_task(stream_read(page, 5, shared=True))
            await asyncio.sleep(0.02)
            leaving.cancel()
            await asyncio.sleep(0.02)
        return await staying

    assert asyncio.run(scenario()) == "after 5"
