"""`stream-rec bench --bundle B --dataset events`: the served model on real test events, tiny.

The quality in the summary comes from the recommendations topic of the benchmark's own run; it
must be what `evaluate --streaming` finds on the same test events. (The tiny model's near-ties
let batch padding move a few prefixes, so the run's figures may differ by a few prefixes; the
offline HNSW number is further off on this model: ~30% of its lists reorder near-tied items.)
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from stream_rec.bench.hops import HOPS
from stream_rec.core.events import encode_event
from stream_rec.datasets.eventlog import ProtocolOptions
from stream_rec.evaluation.offline import evaluate_bundle, load_split
from stream_rec.evaluation.streaming import StreamingOptions, streaming_evaluate
from stream_rec.generate import EventGenerator, GeneratorConfig
from stream_rec.serving.bundle import ModelBundle
from stream_rec.settings import Settings

from .conftest import TINY

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROTOCOL = ProtocolOptions(min_item_count=1, test_days=1.0)  # ~160 test sessions, ~1,400 events


def test_served_bench_scores_what_arrived_on_the_recommendations_topic(
    broker, tiny_bundle, tmp_path
):
    # Other shoppers of the tiny bundle's catalogue: the model knows their items.
    shoppers = GeneratorConfig(n_users=TINY["users"], n_items=TINY["items"], seed=TINY["seed"] + 1)
    gen = EventGenerator(shoppers)
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(encode_event(e) + b"\n" for e in gen.events(4000)))
    cmd = [
        sys.executable, "-m", "stream_rec.cli", "bench",
        "--bootstrap-servers", broker, "--changelog-barrier", "--session-timeout-s", "4",
        "--bundle", str(tiny_bundle), "--dataset", "events", "--events-file", str(log),
        "--min-item-count", "1", "--test-days", "1", "--partitions", "2",
        "--rate", "500", "--rate-seconds", "1", "--no-micro", "--state-users", "500",
        "--timeout", "60", "--fetch-probe",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])

    split = load_split("events", events_file=log, protocol=PROTOCOL, progress=None)
    settings = Settings.from_env({}, bootstrap_servers=broker, partitions=2, changelog_barrier=True)
    replay = StreamingOptions(timeout_s=60, run_dir=str(tmp_path / "eval"))
    streamed = streaming_evaluate(settings, tiny_bundle, split, options=replay,
                                  progress=None).report
    offline = evaluate_bundle(ModelBundle.load(tiny_bundle), split, settings,
                              indexes=("hnsw",), progress=None).report["index"]["hnsw"]
    quality = summary["quality"]
    assert quality["dataset"] == "events"
    assert quality["unanswered_events"] == 0  # every event answered
    assert quality["unanswered_prefixes"] == 0
    assert quality["prefixes"] == streamed["prefixes"] == offline["prefixes"] > 1000
    assert quality["events"] == summary["config"]["events"] == summary["saturation"]["events"]
    assert streamed["hr@20"] > 0  # some hits, so equal hit rates are not 0 == 0
    for metric in ("hr@20", "mrr@20", "hr@10", "mrr@10"):
        assert summary[metric] == quality[metric]
        got = summary[metric]
        assert abs(got - streamed[metric]) <= 0.5, (metric, got, streamed[metric])
        assert abs(got - offline[metric]) <= 2.0, (metric, got, offline[metric])
    # Speed of the same run, next to its quality.
    assert summary["events_per_s"] > 0 and summary["baseline_events_per_s"] > 0
    ratio = summary["events_per_s"] / summary["baseline_events_per_s"]
    assert summary["ratio"] == pytest.approx(ratio, abs=6e-5)
    assert summary["latency_ms"]["p50"] is not None and summary["cpu_s_per_1k_events"] > 0
    assert summary["rss_mb"] > 0
    # The latency at the offered rate, hop by hop (bench/hops.py): the hops add up to it.
    hops = summary["latency_hops_ms"]["at_rate"]
    assert hops["samples"] == summary["latency_ms_at_rate"]["samples"] > 0
    assert hops["compute_ms_per_batch"] > 0 and hops["events_per_batch"] >= 1
    total = sum(hops[h]["mean"] for h in HOPS)
    assert total == pytest.approx(hops["latency_mean"], abs=2.0)
    # A fetch probe beside the worker splits its hop: the broker's fetch path, then the rest.
    split = hops["broker_to_answer_split"]
    assert 0 < split["samples"] <= hops["samples"]
    parts = split["broker_fetch"]["mean"] + split["worker_after_fetch"]["mean"]
    whole = hops["broker_to_answer"]["mean"]  # over every answer; the split over the probe's
    assert parts == pytest.approx(whole, abs=2.0 + whole / 2)
    assert summary["config"]["dataset"] == "events" and summary["config"]["coalesce"] is False
    assert summary["config"]["fetch_probe"] is True
