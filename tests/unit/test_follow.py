"""rtcommon.follow: the failover policy, and the loop that follows a log across nodes."""

from __future__ import annotations

import asyncio
import random

import pytest

from rtcommon.follow import FailoverPolicy, StreamEnded, follow


def test_failover_goes_round_the_nodes_and_backs_off_until_progress() -> None:
    policy = FailoverPolicy(3, first=1, initial=0.1, cap=0.5, rng=random.Random(1))
    delays, nodes = [], []
    for _ in range(5):
        delays.append(policy.failed(progressed=False))
        nodes.append(policy.node)
    assert nodes == [2, 0, 1, 2, 0]
    for delay, nominal in zip(delays, [0.1, 0.2, 0.4, 0.5, 0.5], strict=True):
        assert nominal / 2 <= delay <= nominal  # jittered
    assert policy.failed(progressed=True) == 0.0 and policy.node == 1
    assert 0.05 <= policy.failed(progressed=False) <= 0.1  # afresh
    with pytest.raises(ValueError):
        FailoverPolicy(0)


def test_follow_fails_over_resumes_and_stops_when_done() -> None:
    """Node 0 breaks after two chunks, node 1 is down, node 2 serves the rest."""
    log = list(range(10))
    copy: list[int] = []
    opened: list[int] = []
    breaks: list[tuple[int, str, bool]] = []
    sleeps: list[float] = []

    async def stream(node: int):
        opened.append(node)
        if node == 1:
            raise ConnectionError("node 1 is down")
        start = len(copy)
        for item in log[start : start + (2 if node == 0 else 100)]:
            yield item

    def write(item: int) -> bool:
        copy.append(item)
        return True

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    asyncio.run(
        follow(
            FailoverPolicy(3, rng=random.Random(0)),
            stream,
            write,
            done=lambda: len(copy) == len(log),
            on_break=lambda node, error, progressed, delay: breaks.append(
                (node, type(error).__name__, progressed)
            ),
            sleep=sleep,
        )
    )
    assert copy == log
    assert opened == [0, 1, 2]
    assert breaks == [(0, StreamEnded.__name__, True), (1, "ConnectionError", False)]
    assert sleeps[0] == 0.0 and sleeps[1] > 0


def test_a_fatal_break_stops_following() -> None:
    async def stream(node: int):
        raise PermissionError("refused")
        yield  # an async generator

    def fatal(node: int, error: BaseException, progressed: bool, delay: float) -> None:
        raise RuntimeError("give up") from error

    with pytest.raises(RuntimeError, match="give up"):
        asyncio.run(follow(FailoverPolicy(2), stream, lambda _: True, on_break=fatal))


def test_a_silent_node_is_left_for_the_next() -> None:
    """Node 0 sends one chunk, then nothing (stopped, its connection open): with
    ``silence`` the loop leaves it (StreamSilent) and node 1 serves the rest."""
    copy: list[int] = []
    breaks: list[tuple[int, str]] = []

    async def stream(node: int):
        start = len(copy)
        if node == 0:
            yield start
            await asyncio.sleep(3600)  # silent
        for item in range(start, 5):
            yield item

    def write(item: int) -> bool:
        copy.append(item)
        return True

    asyncio.run(
        asyncio.wait_for(
            follow(
                FailoverPolicy(2),
                stream,
                write,
                done=lambda: len(copy) == 5,
                on_break=lambda node, error, progressed, delay: breaks.append(
                    (node, type(error).__name__)
                ),
                silence=0.2,
            ),
            10,
        )
    )
    assert copy == [0, 1, 2, 3, 4]
    assert breaks == [(0, "StreamSilent")]


def test_cancelling_a_follow_with_a_silence_limit_always_stops_it() -> None:
    """A subscriber stops by cancelling its follow; with a wait_for around each read,
    Python 3.11 swallowed that cancellation when a chunk arrived at the same moment (212
    stops of 300 were lost), and the subscriber never stopped."""

    async def stream(node: int):
        i = 0
        while True:
            await asyncio.sleep(0)
            i += 1
            yield i

    async def trials() -> int:
        lost = 0
        for trial in range(300):
            task = asyncio.create_task(
                follow(FailoverPolicy(1), stream, lambda item: True, silence=5.0)
            )
            for _ in range(trial % 17 + 1):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=0.5)
            lost += not done
        return lost

    loop = asyncio.new_event_loop()  # not asyncio.run: it would wait for lost tasks for good
    lost = loop.run_until_complete(trials())
    if not lost:
        loop.close()
    assert lost == 0
