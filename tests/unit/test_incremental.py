"""Incremental encoding (issue 25): one position per event, the same vectors as a full encoding.

The step graph against PyTorch's full encoding at every prefix; the per-user cache's rules (a
hit needs the exact prefix, a repeat reuses the vector, a miss refills); its memory bound;
the recommender's answers with and without it; and the bundle's graphs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.features import MAX_QUERY_TOKENS, ModelInputs  # noqa: E402
from stream_rec.core.seams import KeyedEncoder, SessionEncoder  # noqa: E402
from stream_rec.errors import BundleError  # noqa: E402
from stream_rec.model import SessionTransformer, TorchEncoder  # noqa: E402
from stream_rec.model.export import random_inputs  # noqa: E402
from stream_rec.model.incremental import (  # noqa: E402
    STEP_FILE,
    check_incremental_parity,
    export_incremental,
    unsupported,
)
from stream_rec.runtime.incremental import IncrementalEncoder  # noqa: E402

from .tiny_model import spread, tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS, MAX_LEN = 80, 12  # tiny_config's max_len is 12
ATOL = 1e-5


def _model(seed: int = 0, **extra) -> SessionTransformer:
    torch.manual_seed(seed)
    model = SessionTransformer(tiny_config(N_ITEMS, n_layers=2, **extra))
    return spread(model)  # untrained weights spread, so attention and the readout matter


@pytest.fixture(scope="module", params=[{}, {"attend": False}, {"transition": True}],
                ids=["attend", "no-attend", "transition"])
def exported(request, tmp_path_factory):
    model = _model(**request.param)
    directory = tmp_path_factory.mktemp("inc")
    export_incremental(model, directory)
    return model, directory


def _encoder(directory, cache_bytes: int = 16 << 20) -> IncrementalEncoder:
    return IncrementalEncoder(
        directory / STEP_FILE,
        max_len=MAX_LEN,
        cache_bytes=cache_bytes,
        providers="cpu",
    )


def _sessions(n: int, length: int, seed: int) -> ModelInputs:
    """``n`` sessions of ``length`` events: clicks, searches, purchases, unknown items."""
    return random_inputs(N_ITEMS, 64, n, length, seed, lengths=[length] * n)


def _prefix(x: ModelInputs, rows: list[int] | slice, t: int) -> ModelInputs:
    return ModelInputs(x.items[rows, :t], x.types[rows, :t], x.queries[rows, :t])


def test_it_is_a_keyed_session_encoder(exported):
    enc = _encoder(exported[1])
    assert isinstance(enc, SessionEncoder) and isinstance(enc, KeyedEncoder)
    assert enc.dim == exported[0].config.dim and not enc.repeat


def test_every_prefix_stepped_equals_pytorch_full_encoding(exported):
    model, directory = exported
    enc, ref = _encoder(directory), TorchEncoder(model)
    x = _sessions(16, MAX_LEN, seed=3)
    keys = [f"u{i}" for i in range(16)]
    worst = 0.0
    for t in range(1, MAX_LEN + 1):
        prefix = _prefix(x, slice(None), t)
        worst = max(worst, float(np.abs(enc.encode_keyed(keys, prefix) - ref.encode(prefix)).max()))
    assert worst <= ATOL
    stats = enc.stats()
    assert (
        stats["steps"] == 16 * (MAX_LEN - 1) and stats["misses"] == 16
    )  # only the first event is full
    assert stats["users"] == 16 and stats["cached_positions"] == stats["positions"] == 16 * MAX_LEN


def test_the_bundle_check_measures_parity_with_restarts_mid_session(exported):
    model, directory = exported
    assert check_incremental_parity(model, directory) <= ATOL


def test_a_cached_user_is_stepped_only_from_its_exact_prefix(exported):
    model, directory = exported
    enc, ref = _encoder(directory), TorchEncoder(model)
    a, b = _sessions(1, 6, seed=4), _sessions(1, 6, seed=5)
    enc.encode_keyed(["u"], _prefix(a, [0], 4))
    other = _prefix(b, [0], 5)  # one event longer, but another session: a miss, still right
    np.testing.assert_allclose(enc.encode_keyed(["u"], other), ref.encode(other), atol=ATOL, rtol=0)
    assert enc.stats()["steps"] == 0 and enc.stats()["misses"] == 2
    same = enc.encode_keyed(["u"], other)  # the same inputs again (a redelivery): the cached vector
    np.testing.assert_array_equal(same, enc.encode_keyed(["u"], other))
    assert enc.stats()["repeats"] == 2
    longer = _prefix(b, [0], 6)
    np.testing.assert_allclose(
        enc.encode_keyed(["u"], longer), ref.encode(longer), atol=ATOL, rtol=0
    )
    assert enc.stats()["steps"] == 1


def test_a_sliding_window_past_max_len_is_a_miss_never_a_wrong_step(exported):
    model, directory = exported
    enc, ref = _encoder(directory), TorchEncoder(model)
    x = _sessions(1, MAX_LEN + 3, seed=6)
    for end in range(1, MAX_LEN + 4):  # what featurize gives: the last MAX_LEN events
        window = ModelInputs(
            *(a[:, max(0, end - MAX_LEN) : end] for a in (x.items, x.types, x.queries))
        )
        np.testing.assert_allclose(
            enc.encode_keyed(["u"], window), ref.encode(window), atol=ATOL, rtol=0
        )
    assert enc.stats()["steps"] == MAX_LEN - 1 and enc.stats()["misses"] == 4


def test_one_user_twice_in_a_batch_and_left_padding(exported):
    model, directory = exported
    enc, ref = _encoder(directory), TorchEncoder(model)
    x = _sessions(2, 8, seed=7)
    enc.encode_keyed(["a", "b"], _prefix(x, [0, 1], 3))
    # user a at 4 and 5 events in one batch, b at 4; left-padded to 5
    rows = ModelInputs(
        items=np.stack([np.r_[0, x.items[0, :4]], x.items[0, :5], np.r_[0, x.items[1, :4]]]),
        types=np.stack([np.r_[0, x.types[0, :4]], x.types[0, :5], np.r_[0, x.types[1, :4]]]),
        queries=np.stack(
            [
                np.r_[np.zeros((1, MAX_QUERY_TOKENS), np.int64), x.queries[0, :4]],
                x.queries[0, :5],
                np.r_[np.zeros((1, MAX_QUERY_TOKENS), np.int64), x.queries[1, :4]],
            ]
        ),
    )
    np.testing.assert_allclose(
        enc.encode_keyed(["a", "a", "b"], rows), ref.encode(rows), atol=ATOL, rtol=0
    )
    nxt = _prefix(x, [0], 6)  # the cache holds a's later row (5 events): 6 is a step
    np.testing.assert_allclose(enc.encode_keyed(["a"], nxt), ref.encode(nxt), atol=ATOL, rtol=0)
    # a at 4 and 5 are one row of the graph on a's 3 cached events; b at 4; a at 6
    assert enc.stats()["steps"] == 4 and enc.stats()["positions"] == 6 + 3 + 1
    assert enc.stats()["cached_positions"] == 6 + 4


def test_memory_is_bounded_least_recently_used_first_and_answers_stay_right(exported):
    model, directory = exported
    sizes = _encoder(directory, cache_bytes=1)  # the per-user and per-position sizes
    # 4 users, 24 slab rows (row 0 unused)
    budget = 4 * sizes.cache.user_bytes + 24 * sizes.cache.row_bytes
    enc, ref = _encoder(directory, cache_bytes=budget), TorchEncoder(model)
    x = _sessions(12, 6, seed=8)
    keys = [f"u{i}" for i in range(12)]
    for t in range(1, 7):
        for start in range(0, 12, 3):  # 3 users per batch, in turn
            rows = list(range(start, start + 3))
            got = enc.encode_keyed([keys[r] for r in rows], _prefix(x, rows, t))
            np.testing.assert_allclose(got, ref.encode(_prefix(x, rows, t)), atol=ATOL, rtol=0)
            stats = enc.stats()
            assert stats["users"] <= 4 and stats["cached_positions"] <= 23
            assert stats["bytes"] <= stats["limit_bytes"]
            # the batch just encoded is what stays (least recently used go first)
            assert {keys[r] for r in rows} <= set(enc.cache.slot)
    assert stats["evictions"] > 0
    recent = stats["users"]
    enc.forget(keys[-1])
    assert enc.stats()["users"] == recent - 1
    enc.clear()
    assert enc.stats()["users"] == 0 and enc.stats()["cached_positions"] == 0


def test_unkeyed_calls_encode_in_full(exported):
    model, directory = exported
    enc = _encoder(directory)
    x = random_inputs(N_ITEMS, 64, 5, 9, seed=9)  # padded, random lengths
    np.testing.assert_allclose(enc.encode(x), TorchEncoder(model).encode(x), atol=ATOL, rtol=0)
    assert enc.stats()["users"] == 0


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"readout": "last"}, "last-output"),
        ({"positions": "reverse"}, "reverse"),
        ({"repeat": True}, "repeat"),
        ({"recency": True}, "recency"),
    ],
)
def test_models_that_cannot_step_are_refused(extra, reason, tmp_path):
    model = _model(**extra)
    assert reason in (unsupported(model) or "")
    with pytest.raises(BundleError, match="cannot be encoded incrementally"):
        export_incremental(model, tmp_path)


def test_a_graph_that_is_not_an_incremental_encoder_is_a_bundle_error(exported, tmp_path):
    from stream_rec.model import export_onnx

    full = export_onnx(exported[0], tmp_path / "encoder.onnx")
    with pytest.raises(BundleError, match="is not an incremental encoder"):
        IncrementalEncoder(full, max_len=MAX_LEN, cache_bytes=1 << 20, providers="cpu")


# ------------------------------------------------------------------------------ serving
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from stream_rec.model import build_vocab, item_popularity
    from stream_rec.model.bundle_writer import write_bundle
    from stream_rec.serving.bundle import HnswParams, ModelBundle

    from .tiny_model import successor_corpus, train_tiny

    sessions, ids = successor_corpus(300, n_items=120, seed=2, mixed=True)
    vocab = build_vocab(ids)
    model, metrics = train_tiny(sessions, vocab, batch_size=16, lr_decay_every=0)
    info = {
        "data": "successor",
        "sessions": len(sessions),
        "events": 1,
        "epochs": 1,
        "seconds": 1.0,
        "seed": 0,
    }
    path = write_bundle(
        tmp_path_factory.mktemp("b"),
        model,
        vocab,
        item_popularity(sessions, vocab),
        info,
        metrics,
        HnswParams(ef=64),
    )
    return ModelBundle.load(path)


def test_written_bundles_carry_the_graphs_and_their_parity(bundle):
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    info = manifest["incremental"]
    assert "cache" not in info and info["step"] == STEP_FILE and info["parity_max_abs_diff"] <= 1e-4
    assert STEP_FILE in manifest["files"] and bundle.incremental


def test_the_worker_serves_the_same_answers_with_and_without_it(bundle):
    from stream_rec.core.events import Event
    from stream_rec.serving.compose import build_recommender, encoder_cache_stats
    from stream_rec.settings import Settings

    on = build_recommender(bundle, Settings(encoder_cache_mb=8, providers="cpu"))
    off = build_recommender(bundle, Settings(encoder_cache_mb=0, providers="cpu"))
    assert isinstance(on.encoder, IncrementalEncoder) and encoder_cache_stats(off) is None
    on.warm_up()
    rng = np.random.default_rng(0)
    states_on: dict = {}
    states_off: dict = {}
    for step in range(40):
        events = []
        for _ in range(int(rng.integers(1, 9))):
            user = f"u{int(rng.integers(12))}"
            if rng.random() < 0.1:
                events.append(
                    Event(f"e{len(events)}-{step}", user, "search", ts=step, query="red shoes")
                )
            else:
                item = f"i{int(rng.integers(130))}"  # 10 of them unknown to the model
                events.append(Event(f"e{len(events)}-{step}", user, "click", ts=step, item_id=item))
        a = on.step({e.user_id: states_on.get(e.user_id) for e in events}, events, now_ms=step)
        b = off.step({e.user_id: states_off.get(e.user_id) for e in events}, events, now_ms=step)
        states_on.update(a.states)
        states_off.update(b.states)
        np.testing.assert_array_equal(a.answers.rows, b.answers.rows)
        np.testing.assert_allclose(a.answers.scores, b.answers.scores, atol=1e-5, rtol=0)
    stats = encoder_cache_stats(on)
    assert stats is not None and stats["steps"] > 0 and stats["bytes"] <= stats["limit_bytes"]


def test_metrics_export_the_cache(exported):
    from prometheus_client.parser import text_string_to_metric_families

    from stream_rec.serving.metrics import WorkerMetrics

    enc = _encoder(exported[1])
    x = _sessions(3, 4, seed=10)
    for t in (1, 2, 3):
        enc.encode_keyed(["a", "b", "c"], _prefix(x, slice(None), t))
    text = WorkerMetrics(lambda: "v", encoder_cache=enc.stats).exposition().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("stream_rec_encoder_sessions_total", (("path", "step"),))] == 6
    assert samples[("stream_rec_encoder_sessions_total", (("path", "full"),))] == 3
    assert samples[("stream_rec_encoder_cache_users", ())] == 3
    assert (
        0
        < samples[("stream_rec_encoder_cache_bytes", ())]
        <= samples[("stream_rec_encoder_cache_limit_bytes", ())]
    )


def test_stream_rec_incremental_keeps_the_blend_of_the_bundle_it_derives_from(bundle, tmp_path):
    from stream_rec.core.item_neighbours import ItemNeighbours
    from stream_rec.learn.weights import load_model
    from stream_rec.model.bundle_writer import with_incremental, with_item_neighbours
    from stream_rec.serving.bundle import ModelBundle

    from .tiny_model import successor_corpus

    sessions, _ = successor_corpus(200, n_items=120, seed=3)
    table = ItemNeighbours.build(
        [bundle.vocab.rows_for_hashes(s[0]) for s in sessions], len(bundle.vocab)
    )
    served = ModelBundle.load(with_item_neighbours(bundle, tmp_path, table, 0.4, {"rule": "test"}))
    again = ModelBundle.load(with_incremental(served, tmp_path, load_model(served)))
    assert again.incremental and again.item_neighbours_weight == 0.4
    assert again.item_neighbours() is not None  # the table's file came along
    assert again.manifest["derived_from"] == served.version
