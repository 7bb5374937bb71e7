"""The search threads a worker takes by default (`--index-threads 0`)."""

import os

import pytest

from stream_rec.kafka.supervisor import child_settings
from stream_rec.runtime.cores import MAX_AUTO_THREADS, auto_index_threads, available_cores
from stream_rec.settings import Settings


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", None),  # no quota: the affinity
        ("50000 100000\n", 1),  # half a CPU still runs one thread
        ("100000 100000\n", 1),
        ("150000 100000\n", 2),  # 1.5 CPUs: two threads may run
    ],
)
def test_the_cgroup_quota_caps_the_affinity(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    want = _affinity() if expected is None else min(_affinity(), expected)
    assert available_cores(path) == want


def test_no_cgroup_file_means_the_affinity(tmp_path):
    assert available_cores(tmp_path / "absent") == _affinity()
    (tmp_path / "garbled").write_text("not numbers")
    assert available_cores(tmp_path / "garbled") == _affinity()


@pytest.mark.parametrize(
    ("processes", "cores", "threads"),
    [(1, 1, 1), (1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 8, 4), (1, 64, MAX_AUTO_THREADS)],
)
def test_processes_share_the_cores(processes, cores, threads):
    assert auto_index_threads(processes, cores=cores) == threads


def test_supervised_children_get_their_share_unless_the_setting_is_given():
    auto = Settings(index_threads=0)
    assert child_settings(auto, 0, processes=2).index_threads == auto_index_threads(2)
    assert child_settings(auto, 1, processes=1).index_threads == auto_index_threads(1)
    assert child_settings(Settings(index_threads=3), 0, processes=2).index_threads == 3
    assert Settings().index_threads == 0  # the default is auto
