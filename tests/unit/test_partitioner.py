"""The worker's cached partitioner puts every key where Kafka's default partitioner does."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream_rec.kafka.partitioning import CachedPartitioner, partition_for


@pytest.mark.parametrize("partitions", [1, 3, 7, 12])
def test_same_partition_as_the_default_for_every_key(partitions):
    cached, default = CachedPartitioner(max_keys=50), DefaultPartitioner()
    everyone = list(range(partitions))
    keys = [f"user-{i}".encode() for i in range(120)] + ["ü-é-ø".encode(), b"", b"x" * 300]
    for _ in range(2):  # the second pass reads hashes back (and the cache was emptied on the way)
        for key in keys:
            want = default(key, everyone, everyone)
            assert cached(key, everyone, everyone) == want == partition_for(key, partitions)


def test_memory_is_bounded_and_none_keys_are_random_available():
    cached = CachedPartitioner(max_keys=10)
    for i in range(1000):
        cached(str(i).encode(), [0, 1, 2], [0, 1, 2])
    assert len(cached._hashes) <= 10
    assert {cached(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert {cached(None, [0, 1], []) for _ in range(200)} == {0, 1}
    with pytest.raises(ValueError, match="max_keys"):
        CachedPartitioner(max_keys=0)
