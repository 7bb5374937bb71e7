"""The faust worker's changelog barrier: the marker record goes out alone, after every state write.

On the embedded broker (Tansu 0.6) a partition's end offset is its last produce batch's base
offset + 1, so a marker that shared a batch with a state write left faust's recovery one record
short, or (restarting on local RocksDB) crashed it with "persisted offset ... is higher than the
last offset in that topic" (seen in test_state_survives_restart_and_moving_host[faust] under load:
faust's ``producer.flush()`` returns after 0.1 s without a send, not when its buffer is empty).
"""

import asyncio

from topologies.worker import BARRIER_KEY, ChangelogBarrier


async def _spin() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


class _Table:
    """A faust table's ``send_changelog``: each send returns a future the test resolves."""

    def __init__(self, log: list[tuple]) -> None:
        self.log = log

    def send_changelog(self, partition, key, value, *args, **kwargs):
        future = asyncio.get_running_loop().create_future()
        self.log.append(("send", partition, key, future))
        return future


def test_markers_wait_for_every_write_and_are_waited_for():
    async def run():
        log: list[tuple] = []
        table = _Table(log)
        barrier = ChangelogBarrier(table)
        w1 = table.send_changelog(0, b"u1", b"s1")  # table[key] = value goes through the tracker
        w2 = table.send_changelog(1, b"u2", b"s2")
        closing = asyncio.ensure_future(barrier.close({1, 0}))
        await _spin()
        assert [entry[2] for entry in log] == [b"u1", b"u2"]  # no marker while a write is out
        w1.set_result(None)
        await _spin()
        assert len(log) == 2
        w2.set_result(None)
        await _spin()
        markers = log[2:]
        assert [(p, k) for _, p, k, _ in markers] == [(0, BARRIER_KEY), (1, BARRIER_KEY)]
        assert not closing.done()  # ... and the markers themselves are waited for
        for *_, future in markers:
            future.set_result(None)
        await asyncio.wait_for(closing, 1)
        assert barrier.pending == []

    asyncio.run(run())


def test_a_failed_write_does_not_hang_the_barrier():
    async def run():
        table = _Table([])
        barrier = ChangelogBarrier(table)
        table.send_changelog(0, b"u1", b"s1").set_exception(RuntimeError("broker down"))
        closing = asyncio.ensure_future(barrier.close({0}))
        await _spin()
        for *_, future in table.log[1:]:
            future.set_result(None)
        await asyncio.wait_for(closing, 1)

    asyncio.run(run())
