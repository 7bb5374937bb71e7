"""Learning from the stream (issue 23): vocabulary growth, row initialisation, fine-tuning that
makes a new item recommendable, the guard, the incremental evaluation's windows, and the
bundle's trainable weights."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.events import Event  # noqa: E402
from stream_rec.errors import ConfigError  # noqa: E402
from stream_rec.learn.cases import hr_mrr, prefix_cases, ranks  # noqa: E402
from stream_rec.learn.guard import guard  # noqa: E402
from stream_rec.learn.incremental import IncrementalOptions, run_incremental, window_bounds  # noqa: E402
from stream_rec.learn.update import UpdateConfig, fine_tune, replay_sample  # noqa: E402
from stream_rec.learn.vocab import admit, grow, initial_rows, new_item_counts  # noqa: E402
from stream_rec.learn.weights import load_model  # noqa: E402
from stream_rec.model.bundle_writer import write_bundle  # noqa: E402
from stream_rec.model.sasrec import SessionTransformer  # noqa: E402
from stream_rec.model.train import build_vocab, item_popularity  # noqa: E402
from stream_rec.model.training_data import session_arrays  # noqa: E402
from stream_rec.serving.bundle import ModelBundle  # noqa: E402

from .tiny_model import successor_corpus, train_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_ITEMS = 40


def _events(items: list[str], key: str, t0: int = 0) -> tuple[Event, ...]:
    return tuple(
        Event(f"{key}-{j}", key, "click", t0 + j * 1000, item_id=i, session_id=key)
        for j, i in enumerate(items)
    )


def _chain(start: int, length: int, n: int = N_ITEMS) -> list[str]:
    return [f"i{(start + j) % n}" for j in range(length)]


@pytest.fixture(scope="module")
def trained():
    sessions, ids = successor_corpus(600, N_ITEMS, seed=1)
    vocab = build_vocab(ids)
    model, _ = train_tiny(sessions, vocab)
    return sessions, ids, vocab, model


def _with_new_item(rng: np.random.Generator, n: int, t0: int = 0) -> list[tuple[Event, ...]]:
    """Sessions where the new item "fresh" always follows i5 (and i6 follows it)."""
    out = []
    for s in range(n):
        start = int(rng.integers(N_ITEMS))
        chain = _chain(start, int(rng.integers(3, 8)))
        if s % 2 == 0:
            chain = ["i3", "i4", "i5", "fresh", "i6"]
        out.append(_events(chain, f"u{t0}-{s}", t0 + s * 100_000))
    return out


def test_new_items_are_counted_and_admitted_past_the_threshold(trained):
    _, _, vocab, _ = trained
    sessions = [_events(["i1", "a", "b"], "s1"), _events(["a", "b", "c", "a"], "s2")]
    counts = new_item_counts(sessions, vocab)
    assert counts == Counter({"a": 3, "b": 2, "c": 1})
    assert admit(counts, 2) == ["a", "b"]
    assert admit(counts, 1, limit=2) == ["a", "b"]
    assert admit(counts, 4) == []


def test_growth_keeps_every_known_row_and_session_vector(trained):
    sessions, _, vocab, model = trained
    rows = initial_rows(model, vocab, ["x", "y"], [], "mean")
    grown, grown_vocab = grow(model, vocab, ["x", "y"], rows)
    assert grown.config.n_items == len(vocab) + 2 == len(grown_vocab)
    assert grown_vocab.item_ids[: len(vocab)] == vocab.item_ids
    hashes = np.asarray(sessions[0][0])
    assert np.array_equal(vocab.rows_for_hashes(hashes), grown_vocab.rows_for_hashes(hashes))
    with torch.no_grad():
        assert torch.equal(grown.item_vectors()[: len(vocab) + 1], model.item_vectors())
    cases_old = prefix_cases(sessions[:20], vocab, model.config.query_buckets, model.config.max_len)
    cases_new = prefix_cases(
        sessions[:20], grown_vocab, grown.config.query_buckets, grown.config.max_len
    )
    assert np.array_equal(ranks(model, cases_old), ranks(grown, cases_new))


def test_cooccurrence_init_points_a_new_row_at_its_context(trained):
    _, _, vocab, model = trained
    rows = initial_rows(model, vocab, ["z"], [_events(["i7", "z"], "s")], "cooccurrence")
    with torch.no_grad():
        table = model.item_emb.weight[1:].numpy()
    i7 = table[vocab.item_ids.index("i7")]
    cos = float(rows[0] @ i7 / np.linalg.norm(rows[0]) / np.linalg.norm(i7))
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(rows[0]) == pytest.approx(np.linalg.norm(table, axis=1).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="expected one of"):
        initial_rows(model, vocab, ["z"], [], "category")


def test_an_update_makes_a_new_item_recommendable(trained):
    _, _, vocab, model = trained
    rng = np.random.default_rng(0)
    window = _with_new_item(rng, 200)
    new = admit(new_item_counts(window, vocab), 3)
    assert new == ["fresh"]
    # the mean row: what the update itself learns shows (co-occurrence starts it near i5 already)
    grown, grown_vocab = grow(model, vocab, new, initial_rows(model, vocab, new, window, "mean"))
    probe = [session_arrays(_events(["i3", "i4", "i5", "fresh", "i6"], "p"))]
    cases = prefix_cases(probe, grown_vocab, grown.config.query_buckets, grown.config.max_len)
    assert ranks(model, prefix_cases(probe, vocab, 64, 12))[2] == 0  # unknown to the old model
    before = ranks(grown, cases)[2]  # the case whose target is "fresh"
    older = [session_arrays(_events(_chain(i, 5), f"o{i}")) for i in range(100)]
    stats = fine_tune(
        grown,
        grown_vocab,
        [session_arrays(s) for s in window],
        older,
        UpdateConfig(epochs=8, lr=3e-3, batch_size=32, negatives=0),
    )
    assert stats.sessions == 200 and stats.replayed == 100 and stats.steps > 0
    after = ranks(grown, cases)[2]
    assert 1 <= after <= 3 and (before == 0 or after < before)
    assert not grown.training


def test_replay_sample_is_bounded_and_ordered():
    older = [(np.array([i]), np.array([0]), np.zeros((1, 4))) for i in range(10)]
    rng = np.random.default_rng(0)
    picked = replay_sample(older, 4, rng)
    assert len(picked) == 4 and [int(p[0][0]) for p in picked] == sorted(
        int(p[0][0]) for p in picked
    )
    assert len(replay_sample(older, 50, rng)) == 10
    with pytest.raises(ConfigError, match="replay"):
        UpdateConfig(replay=-1)


def test_unknown_targets_are_misses_not_skipped(trained):
    _, _, vocab, model = trained
    arrays = [session_arrays(_events(["i1", "nope", "i3"], "s"))]
    cases = prefix_cases(arrays, vocab, 64, 12)
    assert len(cases) == 2 and cases.target_rows[0] == 0
    r = ranks(model, cases)
    assert r[0] == 0
    hr, _ = hr_mrr(r)
    assert hr <= 50.0


def test_guard_publishes_an_equal_model_and_refuses_a_broken_one(trained):
    _, _, vocab, model = trained
    held_out = [session_arrays(_events(_chain(i, 6), f"h{i}")) for i in range(60)]
    same = guard((model, vocab), (model, vocab), held_out, margin=0.5)
    assert same.publish and same.cases == 300 and same.candidate_hr == same.serving_hr
    torch.manual_seed(3)
    broken = SessionTransformer(model.config).eval()
    refused = guard((broken, vocab), (model, vocab), held_out, margin=0.5)
    assert not refused.publish and "HR@20" in refused.reason
    assert refused.serving_hr > refused.candidate_hr + 0.5
    assert not guard((model, vocab), (model, vocab), [], margin=0.5).publish
    # the shortfall is weighed against its noise: the same cases, the per-case differences
    assert same.hr_se == 0.0 and refused.hr_se > 0
    lenient = guard((broken, vocab), (model, vocab), held_out, margin=0.5, z=1_000.0)
    assert lenient.publish and "standard errors" in lenient.reason
    gap = refused.serving_hr - refused.candidate_hr
    z_edge = (gap - 0.5) / refused.hr_se
    assert not guard((broken, vocab), (model, vocab), held_out, 0.5, z=0.9 * z_edge).publish


def test_the_guards_standard_error_is_paired():
    from stream_rec.learn.guard import _paired_se

    a = np.array([100.0, 0, 100, 0])
    assert _paired_se(a, a) == 0.0  # the same hits: no doubt about the difference
    b = np.array([0.0, 0, 100, 0])
    assert _paired_se(a, b) == pytest.approx(np.std([100, 0, 0, 0], ddof=1) / 2)
    assert _paired_se(a, b[:3]) > 0  # different case lists: unpaired


def test_windows_by_position_and_by_time():
    stream = [_events(["a", "b"], f"s{i}", t0=i * 60_000) for i in range(10)]
    assert window_bounds(stream, IncrementalOptions(windows=3)) == [(0, 3), (3, 7), (7, 10)]
    assert window_bounds(stream, IncrementalOptions(window_ms=180_000)) == [
        (0, 3),
        (3, 6),
        (6, 9),
        (9, 10),
    ]
    with pytest.raises(ConfigError, match="--windows must be >= 2"):
        window_bounds(stream, IncrementalOptions(windows=1))


def test_incremental_evaluation_learns_what_the_frozen_model_cannot(trained):
    sessions, ids, vocab, model = trained
    rng = np.random.default_rng(5)
    stream = _with_new_item(rng, 240)
    history = [_events(s, f"h{n}") for n, s in enumerate(ids[:200])]
    report = run_incremental(
        model,
        vocab,
        history,
        stream,
        IncrementalOptions(
            windows=3,
            blend_weight=0.3,
            update=UpdateConfig(epochs=6, lr=3e-3, batch_size=32, negatives=0),
        ),
    )
    rows = report["windows"]
    assert [r["window"] for r in rows] == [1, 2, 3] and "update" not in rows[-1]
    assert rows[0]["update"]["items_added"] == 1 and rows[0]["items"] == len(vocab)
    assert all(r["unseen_share"] > 0 for r in rows)
    assert rows[0]["incremental"] == rows[0]["frozen"]  # nothing learned before the first window
    for r in rows[1:]:
        assert r["incremental"]["hr@20"] > r["frozen"]["hr@20"]
        assert r["incremental_hr@20_unseen"] > 0
    assert {"frozen_served", "incremental_served", "vsknn_frozen"} <= set(rows[1])
    assert "vsknn" in rows[0] and set(report["mean"]) >= {
        "all",
        "after_first",
        "update_seconds_mean",
    }


def test_bundles_carry_trainable_weights(trained, tmp_path):
    sessions, _, vocab, model = trained
    info = {"data": "successor", "sessions": len(sessions), "events": 1, "epochs": 4, "seed": 0}
    path = write_bundle(tmp_path / "b", model, vocab, item_popularity(sessions, vocab), info, {})
    bundle = ModelBundle.load(path)
    loaded = load_model(bundle)
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    # a bundle written before weights.pt existed: no such file, none in the manifest's list
    (path / "weights.pt").unlink()
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]["weights.pt"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="--checkpoint-dir"):
        load_model(ModelBundle.load(path))


def test_the_blend_at_weight_zero_ranks_as_exact_search(trained):
    sessions, _, vocab, model = trained
    from stream_rec.core.item_neighbours import ItemNeighbours
    from stream_rec.learn.cases import ItemBlend

    table = ItemNeighbours.build([vocab.rows_for_hashes(s[0]) for s in sessions], len(vocab))
    cases = prefix_cases(sessions[:50], vocab, model.config.query_buckets, model.config.max_len)
    plain = ranks(model, cases)
    assert np.array_equal(ranks(model, cases, ItemBlend(table, 0.0, model.config.scale)), plain)
    blended = ranks(model, cases, ItemBlend(table, 0.9, model.config.scale))
    assert (blended > 0).mean() >= 0.5 and not np.array_equal(blended, plain)


# ---- the window and the learner (no broker: topologies/learner.py feeds it in the live test)
def test_window_groups_sessions_bounds_itself_and_reopens(tmp_path):
    from stream_rec.learn.window import SessionWindow

    w = SessionWindow(tmp_path / "w", capacity=3, session_gap_ms=60_000)
    for j in range(3):
        w.add(Event(f"a{j}", "u1", "click", j * 1000, f"i{j}"))
    w.add(Event("b", "u1", "click", 10_000_000, "i9"))  # past the gap: a new session
    w.add(Event("c", "u2", "click", 0, "i5", session_id="S"))
    w.add(Event("d", "u2", "click", 99_000_000, "i6", session_id="S"))  # same id: same session
    assert [[e.item_id for e in s] for s in w.sessions()] == [
        ["i0", "i1", "i2"],
        ["i9"],
        ["i5", "i6"],
    ]
    w.add(Event("e", "u3", "click", 0, "i7"))  # a fourth session: the oldest goes
    assert len(w) == 3 and [s[0].item_id for s in w.sessions()] == ["i9", "i5", "i7"]
    w.set_mark(w.next_seq - 1)
    w.close()
    again = SessionWindow(tmp_path / "w", capacity=3, session_gap_ms=60_000)
    assert again.mark == 3 and len(again) == 3
    again.add(
        Event("f", "u2", "click", 99_100_000, "i8", session_id="S")
    )  # continues after restart
    assert [e.item_id for e in again.sessions(again.mark)[0]] == ["i7"]
    assert [e.item_id for e in again.sessions()[1]] == ["i5", "i6", "i8"]


@pytest.fixture
def base_bundle(trained, tmp_path):
    sessions, _, vocab, model = trained
    info = {"data": "successor", "sessions": len(sessions), "events": 1, "epochs": 4, "seed": 0}
    return write_bundle(
        tmp_path / "bundles", model, vocab, item_popularity(sessions, vocab), info, {}
    )


def _learner(base_bundle, tmp_path, **kw):
    from stream_rec.learn.learner import Learner, LearnOptions
    from stream_rec.learn.window import SessionWindow

    opts = LearnOptions(
        every_events=100,
        min_count=3,
        update=UpdateConfig(epochs=8, lr=3e-3, batch_size=32, negatives=0),
        **kw,
    )
    return Learner(base_bundle.parent, SessionWindow(tmp_path / "window"), opts)


def test_an_update_publishes_a_grown_bundle_that_recommends_the_new_item(base_bundle, tmp_path):
    learner = _learner(base_bundle, tmp_path, margin=5.0)
    for s in _with_new_item(np.random.default_rng(2), 200):
        for e in s:
            learner.observe(e)
    assert learner.due()
    out = learner.update()
    assert out.decision is not None and out.decision.publish, out.decision
    assert out.items_added == 1 and out.published is not None
    from stream_rec.serving.bundle import bundles_newest_first

    assert bundles_newest_first(base_bundle.parent)[0] == out.published == learner.serving
    assert not (base_bundle.parent / ".learn-staging").exists()
    bundle = ModelBundle.load(out.published)
    assert (
        bundle.vocab.item_ids[-1] == "fresh"
        and bundle.manifest["training"]["base"] == base_bundle.name
    )
    model = load_model(bundle)
    probe = [session_arrays(_events(["i3", "i4", "i5", "fresh"], "p"))]
    assert 1 <= ranks(model, prefix_cases(probe, bundle.vocab, 64, 12))[2] <= 3
    assert learner.window.mark == learner.window.next_seq
    assert learner.update().skipped == "0 new sessions (< 20)"


def test_a_refused_update_changes_nothing(base_bundle, tmp_path):
    learner = _learner(base_bundle, tmp_path, margin=-100.0)  # must gain 100 points: never
    for s in _with_new_item(np.random.default_rng(4), 100):
        for e in s:
            learner.observe(e)
    before = sorted(p.name for p in base_bundle.parent.iterdir())
    out = learner.update()
    assert out.decision is not None and not out.decision.publish and out.published is None
    assert "points below" in out.decision.reason
    assert sorted(p.name for p in base_bundle.parent.iterdir()) == before
    assert learner.serving == base_bundle


def test_a_refused_fine_tune_still_publishes_the_new_items_rows(base_bundle, tmp_path, monkeypatch):
    """The guard refuses a fine-tune that broke the model; the serving model with the admitted
    items' rows alone passes the same guard and is published: the new item is recommendable."""
    import torch

    import stream_rec.learn.learner as learner_module

    real = learner_module.fine_tune

    def broken(model, *args, **kwargs):
        stats = real(model, *args, **kwargs)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("item_emb"):
                    p.copy_(torch.randn_like(p) * 3)
        return stats

    monkeypatch.setattr(learner_module, "fine_tune", broken)
    learner = _learner(base_bundle, tmp_path, margin=0.5, guard_z=0.0)  # 20 held-out sessions
    for s in _with_new_item(np.random.default_rng(2), 200):
        for e in s:
            learner.observe(e)
    out = learner.update()
    assert out.decision is not None and not out.decision.publish, out.decision
    assert out.fallback is not None and out.fallback.publish, out.fallback
    assert out.published is not None and out.items_added == 1 and out.stats is None
    bundle = ModelBundle.load(out.published)
    assert bundle.vocab.item_ids[-1] == "fresh"
    training = bundle.manifest["training"]
    assert training["items_only"] is True and training["epochs"] == 0
    assert training["guard"] == out.fallback.as_dict()
    model = load_model(bundle)
    base = load_model(ModelBundle.load(base_bundle))
    for name, p in base.state_dict().items():  # the serving weights, only the table grew
        if not name.startswith("item_emb"):
            assert torch.equal(p, model.state_dict()[name]), name
    probe = [session_arrays(_events(["i3", "i4", "i5", "fresh"], "p"))]
    assert ranks(model, prefix_cases(probe, bundle.vocab, 64, 12))[2] >= 1  # in the top 20
    from stream_rec.learn.metrics import LearnerMetrics

    metrics = LearnerMetrics()
    metrics.record(out)
    assert b'stream_rec_learner_updates_total{outcome="items_only"} 1.0' in metrics.exposition()


def test_a_blend_bundle_is_guarded_and_published_as_served(base_bundle, tmp_path):
    from stream_rec.core.item_neighbours import ItemNeighbours
    from stream_rec.learn.cases import ItemBlend
    from stream_rec.model.bundle_writer import with_item_neighbours

    base = ModelBundle.load(base_bundle)
    sessions, _ = successor_corpus(300, N_ITEMS, seed=5)
    table = ItemNeighbours.build(
        [base.vocab.rows_for_hashes(s[0]) for s in sessions], len(base.vocab)
    )
    chosen = {"rule": "test", "model_ef": 48, "tried": []}  # its ef chosen through the blend
    served = with_item_neighbours(
        base,
        base_bundle.parent,
        table.with_recent(3),
        0.5,
        {"rule": "test"},
        hnsw={**base.manifest["hnsw"], "ef": 20, "ef_selection": chosen},
    )
    learner = _learner(base_bundle, tmp_path, margin=5.0)
    assert learner.serving == served
    stream = _with_new_item(np.random.default_rng(6), 200)
    for s in stream:
        for e in s:
            learner.observe(e)
    out = learner.update()
    d = out.decision
    assert d is not None and out.published is not None
    # the serving side was scored with its blend: recompute it on the same held-out sessions
    held = [session_arrays(s) for s in stream[-max(1, int(len(stream) * 0.1)) :]]
    model = load_model(ModelBundle.load(served))
    cases = prefix_cases(held, base.vocab, 64, 12)
    blend = ItemBlend(ModelBundle.load(served).item_neighbours(), 0.5, model.config.scale)
    assert hr_mrr(ranks(model, cases, blend)) == pytest.approx((d.serving_hr, d.serving_mrr))
    new = ModelBundle.load(out.published)
    nb = new.manifest["item_neighbours"]
    assert nb["weight"] == 0.5 and nb["recent"] == 3 and nb["items"] == len(new.vocab)
    assert new.item_neighbours().rows.shape[0] == len(new.vocab) + 1
    # the served ef and the model alone's carry over
    assert new.manifest["hnsw"]["ef"] == 20 and new.manifest["hnsw"]["ef_selection"] == chosen
    assert new.serving_ef() == 20 and new.serving_ef(blended=False) == 48


def test_a_forgotten_user_leaves_the_window(tmp_path):
    from stream_rec.learn.window import SessionWindow

    w = SessionWindow(tmp_path / "w", capacity=10)
    for user in ("u1", "u2", "u1"):
        w.add(Event(f"{user}-{len(w)}", user, "click", len(w) * 10**8, "i1"))
    assert w.forget("u1") == 2 and w.forget("nobody") == 0
    assert [s[0].user_id for s in w.sessions()] == ["u2"]
    w.add(Event("again", "u1", "click", 10**12, "i2"))  # a new session after the forget
    assert [[e.item_id for e in s] for s in w.sessions()] == [["i1"], ["i2"]]


def test_the_bundle_fetcher_skips_malformed_and_hostile_records(tmp_path):
    import orjson

    from stream_rec.kafka.bundle_topic import BundleFetcher
    from stream_rec.settings import Settings

    fetcher = BundleFetcher(Settings.from_env({}, bundles_topic="b"), bundles_dir=tmp_path / "b")
    for key, value in [
        (b"c/../../escape/000000", b"x"),  # a path in the version: never written
        (b"c//abs/000000", b"x"),
        (b"c/v1/12", b"x"),  # not a 6-digit chunk number
        (b"v/v1", b"not json"),
        (b"v/v1", orjson.dumps({"chunks": 10**9, "bytes": 5, "sha256": "0"})),
        (b"zzz", b"?"),
    ]:
        fetcher._take(key, value)  # logged and skipped, never raised
    assert len(fetcher.refused) == 6 and not fetcher.notes
    assert not (tmp_path / "escape").exists() and not list(tmp_path.rglob("000000"))


def test_a_session_open_at_an_update_is_learned_again_when_it_goes_on(tmp_path):
    from stream_rec.learn.window import SessionWindow

    w = SessionWindow(tmp_path / "w", capacity=10, session_gap_ms=60_000)
    first = w.add(Event("a", "u1", "click", 0, "i1"))
    w.add(Event("b", "u2", "click", 0, "i9"))
    w.set_mark(w.next_seq)  # an update read both sessions while they were open
    assert w.continued_sessions() == (set(), [])
    w.add(Event("c", "u1", "click", 1000, "i2"))  # u1's session goes on
    seqs, sessions = w.continued_sessions()
    assert seqs == {first} and [[e.item_id for e in s] for s in sessions] == [["i1", "i2"]]
    w.set_mark(w.next_seq, seqs)  # the next update learned it again
    assert w.continued_sessions() == (set(), [])


def test_a_newly_admissible_item_brings_a_timed_update_forward(base_bundle, tmp_path):
    from stream_rec.learn.learner import Learner, LearnOptions
    from stream_rec.learn.window import SessionWindow

    opts = LearnOptions(every_events=None, every_ms=10_000, min_count=3, early_fraction=0.25)
    learner = Learner(base_bundle.parent, SessionWindow(tmp_path / "w"), opts)
    learner.last_update = time.monotonic() - 3.0  # 3 s of a 10 s interval
    learner.observe(Event("k", "u1", "click", 0, "i1"))  # a known item: nothing early
    assert not learner.due()
    for j in range(3):
        learner.observe(Event(f"n{j}", f"u{j}", "click", j, "brand-new"))
    assert learner.admissible == 1 and learner.due()  # 3 s >= a quarter of 10 s
    learner.last_update = time.monotonic() - 1.0
    assert not learner.due()
    with pytest.raises(ConfigError, match="early_fraction"):
        LearnOptions(early_fraction=2.0)


def test_prune_keeps_the_newest_learned_bundles_and_every_trained_one(tmp_path):
    from stream_rec.learn.learner import prune_learned

    made = []

    def bundle(name: str, data: str):
        d = tmp_path / name
        d.mkdir()
        created = f"2026-12-06T00:00:{len(made):02d}.000+00:00"
        (d / "manifest.json").write_text(
            json.dumps({"version": name, "created": created, "training": {"data": data}})
        )
        made.append(d)
        return d

    trained = bundle("diginetica-20261206T000000-aaaaaa", "diginetica")
    learned = [bundle(f"learn-20261206T00000{i}-bbbbb{i}", "learn") for i in range(5)]
    gone = prune_learned(tmp_path, keep_newest=2, keep={learned[0]})
    assert trained.exists() and learned[0].exists()  # trained, and the one protected
    assert all(p.exists() for p in learned[3:]) and not any(p.exists() for p in learned[1:3])
    assert sorted(gone) == sorted(p.name for p in learned[1:3])
    assert prune_learned(tmp_path, keep_newest=0) == []


def test_the_learners_table_mixes_old_and_window_rows_by_their_sessions():
    from stream_rec.core.features import ItemVocab
    from stream_rec.core.item_neighbours import ItemNeighbours
    from stream_rec.learn.table import table_sessions, updated_table

    old_sessions = [np.array([1, 2]), np.array([1, 2]), np.array([1, 3])] * 10  # 30 sessions
    old = ItemNeighbours.build(old_sessions, 4, n_neighbors=3).with_recent(3)
    vocab = ItemVocab(["a", "b", "c", "d", "new"])  # row 5 is new
    window = [np.array([1, 4]), np.array([5, 2])] * 5  # 10 sessions
    table = updated_table(old, 30, vocab, window)
    assert table.recent == 3 and table.rows.shape == (6, 3)
    row1 = dict(zip(table.rows[1], table.scores[1]))
    # item 1: the old neighbours (2 twice as often as 3) at 3/4, the window's (4) at 1/4
    assert set(row1) - {0} == {2, 3, 4}
    assert row1[4] == pytest.approx(0.25, abs=1e-6) and row1[2] > row1[3] > 0
    assert table.scores[1].sum() == pytest.approx(1.0)
    assert list(table.rows[5][table.rows[5] > 0]) == [2]  # the new item: the window's row
    assert list(table.rows[3][table.rows[3] > 0]) == [1]  # not in the window: the old row
    manifest = {"item_neighbours": {"selection": {"sessions": 40}}, "training": {"sessions": 9}}
    assert table_sessions(manifest) == 40
    assert table_sessions({"training": {"train_sessions": 27, "sessions": 30}}) == 27
