"""The event loop's CPU charged to the task whose coroutine spent it (node/service/loopcpu.py)."""

from __future__ import annotations

import asyncio
import time

from node.service import loopcpu
from node.service.profiler import Profiler, split_by_bytes


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_coroutines_are_charged_to_the_task_they_were_spawned_for() -> None:
    profiler = Profiler()

    async def main() -> None:
        loopcpu.bind(profiler, "observe")

        async def work(seconds: float) -> None:
            burn(seconds)
            await asyncio.sleep(0)
            burn(seconds)

        await asyncio.gather(
            loopcpu.spawn(work(0.05), "generate_transaction"),
            loopcpu.spawn(work(0.02), "generate_block"),
        )

    asyncio.run(main())
    totals = profiler.totals()
    assert 0.09 <= totals[("generate_transaction", "network")] <= 0.2
    assert 0.035 <= totals[("generate_block", "network")] <= 0.1


def test_a_handler_naming_its_task_has_the_whole_step_charged_to_it() -> None:
    profiler = Profiler()

    async def main() -> None:
        loopcpu.bind(profiler, "observe")

        async def handler() -> None:
            burn(0.03)  # before it knows its task
            loopcpu.charge_to("receive_transaction")
            burn(0.03)

        await loopcpu.spawn(handler(), "observe")

    asyncio.run(main())
    totals = profiler.totals()
    assert totals[("receive_transaction", "network")] >= 0.055
    assert totals.get(("observe", "network"), 0.0) < 0.02


def test_scopes_inside_a_callback_are_taken_out_of_its_network_time() -> None:
    profiler = Profiler()

    async def main() -> None:
        loopcpu.bind(profiler, "observe")

        async def handler() -> None:
            loopcpu.charge_to("receive_transaction")
            burn(0.02)
            with profiler.measure(category="blockchain"):
                burn(0.04)

        await loopcpu.spawn(handler(), "observe")

    asyncio.run(main())
    totals = profiler.totals()
    assert totals[("receive_transaction", "blockchain")] >= 0.04
    assert 0.015 <= totals[("receive_transaction", "network")] < 0.035


def test_outside_a_bound_context_nothing_is_charged() -> None:
    profiler = Profiler()

    async def main() -> None:
        loopcpu.install()
        loopcpu.charge_to("receive_transaction")
        burn(0.01)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert profiler.totals() == {}


def test_bytes_each_task_moved_are_counted_for_the_grpc_threads_share() -> None:
    profiler = Profiler()

    async def main() -> None:
        loopcpu.bind(profiler, "observe")

        async def send() -> None:
            loopcpu.moved(3_000)

        await loopcpu.spawn(send(), "generate_transaction")
        loopcpu.moved(1_000)

    asyncio.run(main())
    assert profiler.snapshot()["bytes_by_task"] == {"generate_transaction": 3_000, "observe": 1_000}


def test_grpc_threads_cpu_is_shared_by_bytes_and_is_observes_while_nothing_moved() -> None:
    shares = split_by_bytes(2.0, {"generate_transaction": 3, "receive_transaction": 1})
    assert shares == {
        ("generate_transaction", "network"): 1.5,
        ("receive_transaction", "network"): 0.5,
    }
    assert split_by_bytes(1.0, {}) == {("observe", "network"): 1.0}
    assert split_by_bytes(0.0, {"observe": 5}) == {}


def test_close_scope_charges_the_task_named_at_the_end() -> None:
    profiler = Profiler()
    profiler.open_scope("observe", "network")
    burn(0.01)
    profiler.close_scope("generate_block")
    assert set(profiler.totals()) == {("generate_block", "network")}
    assert profiler.thread_seconds() >= 0.01
