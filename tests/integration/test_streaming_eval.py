"""Streaming evaluation: Diginetica test sessions replayed through broker + worker (RocksDB state,
ONNX, HNSW) score what the offline HNSW evaluation scores, prefix by prefix."""

from __future__ import annotations

import pytest

from stream_rec.datasets.diginetica import diginetica_dir, load_standard_split
from stream_rec.evaluation.offline import evaluate_bundle
from stream_rec.evaluation.streaming import StreamingOptions, streaming_evaluate
from stream_rec.model.build import TrainOptions, train_bundle
from stream_rec.serving.bundle import ModelBundle
from stream_rec.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEST_SESSIONS = 300  # ~1,400 events, ~1,100 scored prefixes


@pytest.fixture(scope="module")
def split():
    if not (diginetica_dir() / "train_sessions.txt").is_file():
        pytest.skip(f"the Diginetica split is not at {diginetica_dir()} (set STREAM_REC_DATA_ROOT)")
    return load_standard_split()


@pytest.fixture(scope="module")
def small_bundle(split, tmp_path_factory):
    """A tiny model on the last 4,000 training sessions: fast. Its top-20 lists still differ
    from session to session, so any difference on the way (state, features, encoder, index)
    between the pipeline and the offline path shows up in the list comparison."""
    settings = Settings.from_env({}, bundles_dir=str(tmp_path_factory.mktemp("bundles")))
    opts = TrainOptions(dataset="diginetica", max_sessions=4000, epochs=2, dim=16, lr=0.01, threads=1)
    return train_bundle(settings, opts)


def test_streaming_replay_agrees_with_offline_hnsw(broker, split, small_bundle, tmp_path):
    settings = Settings.from_env({}, bootstrap_servers=broker, partitions=2)
    offline = evaluate_bundle(ModelBundle.load(small_bundle), split, settings,
                              indexes=("hnsw",), max_sessions=TEST_SESSIONS, progress=None)
    live = streaming_evaluate(settings, small_bundle, split, max_sessions=TEST_SESSIONS,
                              options=StreamingOptions(timeout_s=60, run_dir=str(tmp_path)),
                              progress=None)
    replay = live.report["replay"]
    assert replay["unanswered"] == 0 and replay["answered"] == replay["events"]  # every event
    assert live.report["unanswered_prefixes"] == 0
    hnsw = offline.report["index"]["hnsw"]
    assert live.report["prefixes"] == hnsw["prefixes"] == offline.report["prefixes"] > 1000
    assert hnsw["hr@20"] > 0  # some hits, so equal hit rates are not 0 == 0
    assert abs(live.report["hr@20"] - hnsw["hr@20"]) <= 0.3
    assert abs(live.report["mrr@20"] - hnsw["mrr@20"]) <= 0.3
    # Prefix by prefix: the same top-20 came off the recommendations topic as offline HNSW found.
    agreement = live.agreement(offline.cases, offline.ranks["hnsw"], offline.lists["hnsw"])
    assert agreement["same_list_prefixes"] >= 0.99 * len(offline.cases), agreement
    assert agreement["same_rank_prefixes"] >= 0.99 * len(offline.cases), agreement
