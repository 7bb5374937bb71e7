"""`stream-rec bench` end to end, tiny: it runs every phase and ends with its JSON line.

No speed is asserted here: the targets live in the benchmark and docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from .conftest import TINY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOP_LEVEL = ("events_per_s", "baseline_events_per_s", "ratio", "latency_ms", "latency_ms_at_rate", "latency_hops_ms", "rss_mb",
             "state_bytes_per_user", "recs_per_s", "cpu_s_per_1k_events", "rocksdb_bytes_per_1m_users",
             "saturation", "fixed_load", "flat_out", "baseline", "micro", "config", "machine")
CONFIG = ("events", "rate", "workers", "partitions", "items", "dim", "batch_max", "batch_wait_ms", "ef", "engine")


@pytest.mark.parametrize("engine", ["faust", "direct"])
def test_tiny_bench_prints_the_summary_as_its_last_line(broker, tiny_bundle, tmp_path, engine):
    cmd = [
        sys.executable, "-m", "stream_rec.cli", "bench",
        "--bootstrap-servers", broker, "--changelog-barrier", "--session-timeout-s", "4",
        "--bundle", str(tiny_bundle), "--engine", engine,
        "--users", str(TINY["users"]), "--items", str(TINY["items"]),
        "--events", "3000", "--rate", "500", "--rate-seconds", "2", "--workers", "1", "--partitions", "2",
        "--state-users", "2000", "--micro-batches", "1,16", "--micro-efs", "16,64",
        "--micro-seconds", "0.05", "--micro-queries", "200", "--timeout", "60",
        *(["--with-learner", "1000"] if engine == "direct" else []),  # learning beside it
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])
    missing = [k for k in TOP_LEVEL if k not in summary]
    assert not missing, f"summary lacks {missing}"
    assert all(summary["latency_ms"][p] is not None for p in ("p50", "p95", "p99"))
    assert summary["latency_ms_at_rate"]["samples"] > 0
    assert summary["events_per_s"] > 0 and summary["baseline_events_per_s"] > 0
    assert summary["ratio"] == pytest.approx(summary["events_per_s"] / summary["baseline_events_per_s"], abs=6e-5)  # 4 decimals
    assert set(summary["saturation"]["ms_per_1k_events"]) >= {"state", "encode", "search"}
    assert 0 < summary["state_bytes_per_user"] <= summary["state_bytes_per_user_max"]
    assert summary["rocksdb"]["users_written"] == 2000
    assert [r["batch"] for r in summary["micro"]["encoder"]["by_batch"]] == [1, 16]
    assert [r["ef"] for r in summary["micro"]["index"]["by_ef"]] == [16, 64]
    config = summary["config"]
    assert {k: config[k] for k in ("events", "workers", "partitions", "engine")} == {
        "events": 3000, "workers": 1, "partitions": 2, "engine": engine}
    assert all(k in config for k in CONFIG)
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["python"]
    # each worker's consumer fetch wait at the end: the batch wait or its back-off, not faust's 1,500
    assert [w["ms"] is not None and w["ms"] < 1500 for w in summary["fetch_wait"]] == [True]
    assert "[bench]" in proc.stderr  # progress goes to stderr, the summary alone to stdout
    if engine == "direct":
        assert summary["learner"]["every_events"] == 1000 and summary["learner"]["updates"] >= 0
    else:
        assert summary["learner"] is None
    print(f"tiny bench ({engine}) took {took:.0f}s")


def test_bad_arguments_get_one_line(tmp_path):
    for args, needle in ((["--workers", "3", "--partitions", "2"], "--partitions >= 3"),
                         (["--micro-batches", "1,x"], "comma-separated positive integers"),
                         (["--rate", "0"], "--rate must be > 0"),
                         (["--dataset", "diginetica"], "--dataset needs the bundle to serve"),
                         (["--dataset", "events", "--bundle", "b"], "--dataset events needs --events-file")):
        proc = subprocess.run([sys.executable, "-m", "stream_rec.cli", "bench", *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_tiny_learn_bench_times_an_update_and_follows_new_items_live(broker, tmp_path):
    cmd = [
        sys.executable, "-m", "stream_rec.cli", "bench", "--learn",
        "--bootstrap-servers", broker, "--changelog-barrier", "--session-timeout-s", "4",
        "--train-events", "8000", "--epochs", "1", "--learn-events", "6000",
        "--live-seconds", "15", "--learn-rate", "200", "--learn-every", "5",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    update = summary["update"]
    assert update["events"] == 6000 and update["sessions"] > 100 and update["steps"] > 0
    assert set(update["phases_s"]) >= {"read", "grow", "train", "guard"}
    live = summary["live"]
    assert live["events_sent"] == 3000 and live["new_items_seen"] > 0
    assert sum(live["updates"].values()) >= 1
