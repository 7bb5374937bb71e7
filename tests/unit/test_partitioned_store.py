"""The direct engine's per-partition RocksDB tables: atomic writes, changelog offsets, one memory budget."""

import os
import time

import pytest

from stream_rec.runtime.partitioned_store import PartitionedSessionDB


def test_write_is_read_back_with_its_changelog_offset_and_survives_reopening(tmp_path):
    db = PartitionedSessionDB(tmp_path)
    assert db.changelog_offset(0) == -1
    db.write(0, [(b"u1", b"a"), (b"u2", b"b")], changelog_offset=7)
    db.write(1, [(b"u3", b"c")])
    db.write(0, [(b"u2", None)], changelog_offset=8)  # None deletes
    assert db.get_many(0, [b"u1", b"u2", b"u3"]) == [b"a", None, None]
    db.close_all()
    again = PartitionedSessionDB(tmp_path)
    assert again.get_many(0, [b"u1"]) == [b"a"] and again.changelog_offset(0) == 8
    assert again.get_many(1, [b"u3"]) == [b"c"] and again.changelog_offset(1) == -1
    again.drop(0)
    assert again.get_many(0, [b"u1"]) == [None]
    again.close_all()


def test_every_partition_shares_one_bounded_memory_budget(tmp_path):
    """RocksDB's defaults grow with the data (memtables per database, a cache each); here
    40 MB written across four partitions stay inside the 8 MB budget. Memtables being flushed
    stay charged until their flush ends, so on a loaded machine the usage has to settle inside
    it (9.5 MB right after the writes with two trainings running beside the tests)."""
    budget = 8 << 20
    db = PartitionedSessionDB(tmp_path, memory_bytes=budget)
    value = os.urandom(1000)
    for round_ in range(10):
        for p in range(4):
            db.write(p, [(b"u%d-%d" % (round_, i), value) for i in range(1000)])
            db.get_many(p, [b"u%d-%d" % (round_, i) for i in range(0, 1000, 7)])
    deadline = time.monotonic() + 10.0
    while db.memory_usage() > budget * 1.1 and time.monotonic() < deadline:
        time.sleep(0.05)  # background flushes release what they still hold
    assert 0 < db.memory_usage() <= budget * 1.1
    db.close_all()


def test_a_budget_below_4_mb_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 4 MB"):
        PartitionedSessionDB(tmp_path, memory_bytes=1 << 20)
