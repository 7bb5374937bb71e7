"""Offline evaluation: prefixes through the serving state path, metrics checked by hand, exact vs
HNSW, and `stream-rec evaluate --json` on a tiny event log (no full data set needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from stream_rec.cli import main
from stream_rec.core.events import Event
from stream_rec.core.features import ItemVocab, ModelInputs, featurize
from stream_rec.core.session import SessionPolicy, SessionState, apply_event
from stream_rec.datasets.eventlog import ProtocolOptions, SessionSplit, split_event_log
from stream_rec.evaluation.cases import prefix_states, split_test_events
from stream_rec.evaluation.offline import encode_states, evaluate_bundle, rank_cases
from stream_rec.model.bundle_writer import write_bundle
from stream_rec.model.sasrec import SASRecConfig, SessionTransformer
from stream_rec.runtime.index import ExactIndex
from stream_rec.serving.bundle import ModelBundle
from stream_rec.settings import Settings

LOG = Path(__file__).resolve().parents[1] / "fixtures" / "events_tiny.jsonl"
LOG_PROTOCOL = ProtocolOptions(min_item_count=2, test_days=1)  # see test_eventlog_protocol.py

# A hand-checkable scorer over items a, b, c, d (rows 1..4, one-hot vectors): the session vector
# is the last item's vector plus 0.5, 0.25, 0.1 of the next three items in the cycle a b c d, so
# the ranking after "x" is x, next(x), next(next(x)), ...
ITEMS = ["a", "b", "c", "d"]


class CycleEncoder:
    """A SessionEncoder whose ranking can be worked out by hand (reads only the last item)."""

    dim = 4

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        last = inputs.items[:, -1] - 1  # (B,) column of the last event's item
        out = np.zeros((len(inputs), 4), np.float32)
        for step, weight in enumerate((1.0, 0.5, 0.25, 0.1)):
            out[np.arange(len(inputs)), (last + step) % 4] = weight
        return out


def _clicks(key: str, items: list[str]) -> tuple[Event, ...]:
    return tuple(Event(f"{key}-{j}", key, "click", 1000 + j, item_id=i, session_id=key)
                 for j, i in enumerate(items))


def test_metrics_of_the_serving_path_match_a_hand_check():
    split = SessionSplit(train_sessions=[ITEMS], test_sessions=[["a", "b", "c"], ["c", "c", "a"]],
                         items=tuple(ITEMS))
    sessions = split_test_events(split)  # synthesized click events, one user per session
    assert [[e.item_id for e in s] for s in sessions] == split.test_sessions
    cases, states = prefix_states(sessions, SessionPolicy())
    # SR-GNN's pairs, in the same order: per session, every prefix (ours shortest first).
    assert [(c.target, c.prefix_length) for c in cases] == [("b", 1), ("c", 2), ("c", 1), ("a", 2)]
    assert [c.repeat for c in cases] == [False, False, True, False]  # c -> c goes back to c
    assert cases[0].event_id == sessions[0][0].event_id  # the answer to the prefix's last event
    vocab = ItemVocab(ITEMS)
    vectors = encode_states(CycleEncoder(), vocab, states, max_len=50, query_buckets=16)
    index = ExactIndex(np.vstack([np.zeros((1, 4)), np.eye(4)]).astype(np.float32))
    acc, ranks, lists = rank_cases(index, vectors, cases, vocab, k=2)
    assert lists == [["a", "b"], ["b", "c"], ["c", "d"], ["c", "d"]]
    # a->b: b ranks 2; ab->c: 2; c->c: 1; cc->a: a is c's next-but-one, rank 3 > k.
    assert ranks.tolist() == [2, 2, 1, 0]
    s = acc.summary(percent=True)
    assert s["hr@2"] == pytest.approx(75.0)
    assert s["mrr@2"] == pytest.approx(100 * (0.5 + 0.5 + 1.0) / 4)
    assert s["ndcg@2"] == pytest.approx(100 * (2 / math.log2(3) + 1.0) / 4)
    assert s["coverage@2"] == 100.0  # top-2 lists: ab, bc, cd, cd
    by_length = s["hr@2_by_length"]
    assert (by_length["1"], by_length["2"]) == (100.0, 50.0)
    assert math.isnan(by_length["3-5"]) and math.isnan(by_length["6+"])
    assert s["by_target"]["in_prefix"] == {"hr@2": 100.0, "mrr@2": 100.0, "prefixes": 1}
    assert s["by_target"]["new"]["hr@2"] == pytest.approx(100 * 2 / 3)


def test_prefix_states_fold_searches_and_purchases_like_serving():
    split, _ = split_event_log(LOG, LOG_PROTOCOL)
    sessions = split_test_events(split)
    cases, states = prefix_states(sessions, SessionPolicy(), split.item_types)
    expected = split.test_event_prefixes()  # (events before the target, target), SR-GNN order
    by_event = {(p[-1].event_id, t) for p, t in expected}
    assert {(c.event_id, c.target) for c in cases} == by_event
    assert sorted(c.prefix_length for c in cases) == sorted(len(p) for p in split.test_prefixes)
    for case, state in zip(cases, states):
        events = sessions[case.session]
        end = next(j for j, e in enumerate(events) if e.event_id == case.event_id) + 1
        folded = SessionState.empty()
        for e in events[:end]:
            folded = apply_event(folded, e, SessionPolicy())
        assert np.array_equal(state.item_hashes, folded.item_hashes)
        assert np.array_equal(state.types, folded.types)


# ------------------------------------------------------------------------- a real tiny bundle
def _tiny_model(n_items: int, seed: int = 0) -> SessionTransformer:
    torch.manual_seed(seed)
    model = SessionTransformer(SASRecConfig(n_items=n_items, dim=16, n_layers=1, ffn_dim=32))
    with torch.no_grad():  # spread the item vectors, so no two scores are near-ties
        model.item_emb.weight.normal_(0.0, 1.0)
        model.item_emb.weight[0].zero_()
    return model.eval()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[SessionSplit, Path, SessionTransformer]:
    rng = np.random.default_rng(5)
    items = [f"i{n:02d}" for n in range(40)]
    train = [list(rng.choice(items, size=int(rng.integers(2, 8)))) for _ in range(60)]
    seen = list(dict.fromkeys(i for s in train for i in s))
    test = [list(rng.choice(seen, size=int(rng.integers(2, 9)))) for _ in range(25)]
    split = SessionSplit(train_sessions=train, test_sessions=test, items=tuple(seen))
    vocab = ItemVocab(seen)
    model = _tiny_model(len(vocab))
    path = write_bundle(tmp_path_factory.mktemp("bundles"), model, vocab,
                        np.ones(len(vocab) + 1, np.float32), {"data": "synthetic"}, {})
    return split, path, model


def test_bundle_metrics_equal_an_independent_torch_reference(synthetic):
    split, path, model = synthetic
    bundle = ModelBundle.load(path)
    result = evaluate_bundle(bundle, split, Settings.from_env({}), progress=None)
    # Reference: rows straight from each session's item sequence (no events, no state), the
    # PyTorch model, scores over every item; rank = 1 + items scoring higher, 0 beyond k.
    vocab, k = bundle.vocab, 20
    expected = {}
    with torch.no_grad():
        for s, seq in enumerate(split.test_sessions):
            for n in range(1, len(seq)):
                items = torch.tensor([[vocab.row(i) for i in seq[:n]]])
                vec = model.session_vector(items, torch.ones_like(items),
                                           torch.zeros(1, n, 3, dtype=torch.long))
                scores = model.logits(vec)[0].numpy()
                rank = 1 + int((scores > scores[vocab.row(seq[n]) - 1]).sum())
                expected[(s, n)] = rank if rank <= k else 0
    ours = {(c.session, c.prefix_length): int(r) for c, r in zip(result.cases, result.ranks["exact"])}
    assert result.report["prefixes"] == len(split.test_prefixes) == len(expected)
    assert ours == expected
    ranks = np.array(list(expected.values()))
    exact = result.report["index"]["exact"]
    assert exact["hr@20"] == pytest.approx(100 * np.mean(ranks > 0))
    assert exact["mrr@20"] == pytest.approx(100 * np.mean(np.where(ranks > 0, 1 / np.maximum(ranks, 1), 0)))


def test_exact_and_hnsw_agree_on_a_tiny_catalogue(synthetic):
    split, path, _ = synthetic
    result = evaluate_bundle(ModelBundle.load(path), split, Settings.from_env({}), progress=None)
    assert np.array_equal(result.ranks["exact"], result.ranks["hnsw"])
    exact, hnsw = result.report["index"]["exact"], result.report["index"]["hnsw"]
    for m in ("hr@20", "mrr@20", "ndcg@20", "coverage@20"):
        assert exact[m] == hnsw[m]
    assert hnsw["ef"] == 128  # settings 0: the bundle's, HnswParams.ef for one written without validation


def test_encoding_in_length_sorted_batches_changes_no_vector(synthetic):
    split, path, _ = synthetic
    bundle = ModelBundle.load(path)
    _, states = prefix_states(split_test_events(split), SessionPolicy())
    enc = bundle.encoder(providers="cpu", intra_op_threads=1)
    batched = encode_states(enc, bundle.vocab, states, max_len=50, query_buckets=bundle.query_buckets,
                            batch_size=7)
    one = np.concatenate([enc.encode(featurize([s.sequence()], bundle.vocab, bundle.query_buckets, 50))
                          for s in states])
    np.testing.assert_allclose(batched.vectors, one, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------- CLI
def test_train_and_evaluate_an_event_log_from_the_cli(tmp_path, capsys):
    common = ["--dataset", "events", "--events-file", str(LOG), "--min-item-count", "2",
              "--test-days", "1", "--bundles-dir", str(tmp_path)]
    assert main(["train", *common, "--epochs", "1", "--dim", "8", "--threads", "1"]) == 0
    bundle = capsys.readouterr().out.strip().splitlines()[-1]
    manifest = ModelBundle.load(bundle).manifest
    assert manifest["training"]["data"] == "events:events_tiny.jsonl:min_count=2:test_days=1"
    assert manifest["training"]["split"]["test_prefixes"] == 3

    assert main(["evaluate", *common, "--bundle", bundle, "--json", "--baselines"]) == 0
    report = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"hr@20", "mrr@20", "ndcg@20", "coverage@20", "prefixes", "index"} <= set(report)
    assert report["prefixes"] == 3 and report["data"]["test_prefixes"] == 3
    assert set(report["index"]) == {"exact", "hnsw"} and report["serving_index"] == "hnsw"
    assert report["hr@20"] == report["index"]["hnsw"]["hr@20"]
    assert set(report["hr@20_by_length"]) == {"1", "2", "3-5", "6+"}
    assert set(report["baselines"]) == {"POP", "Item-KNN", "SKNN", "V-SKNN"}
    assert {"hr@10", "mrr@10"} <= set(report) and report["hr@10"] <= report["hr@20"]
    # Three items in the catalogue: every list holds all of them, every target is found.
    assert report["hr@20"] == 100.0 and report["baselines"]["POP"]["hr@20"] == 100.0
    assert report["by_target"]["in_prefix"]["prefixes"] + report["by_target"]["new"]["prefixes"] == 3
    assert main(["evaluate", *common, "--bundle", bundle]) == 0  # the table, with the split
    table = capsys.readouterr().out
    assert "3 prefixes of events; model" in table and "targets in / not in their prefix" in table


def test_evaluate_scores_the_baselines_alone_without_a_bundle(tmp_path, capsys):
    common = ["--dataset", "events", "--events-file", str(LOG), "--min-item-count", "2",
              "--test-days", "1", "--bundles-dir", str(tmp_path / "none")]
    assert main(["evaluate", *common, "--baselines-only", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["baselines"]) == {"POP", "Item-KNN", "SKNN", "V-SKNN"}
    assert report["prefixes"] == 3 and "index" not in report and "model_version" not in report
    assert main(["evaluate", *common, "--baselines-only"]) == 0
    assert "V-SKNN" in capsys.readouterr().out
    assert main(["evaluate", *common, "--baselines-only", "--streaming"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_a_cooccurrence_bundle_blends_alike_in_serving_and_offline(synthetic, tmp_path):
    from stream_rec.model.build import neighbours_for
    from stream_rec.model.bundle_writer import with_cooccurrence
    from stream_rec.serving.compose import build_recommender

    split, path, _ = synthetic
    base = ModelBundle.load(path)
    bundle = ModelBundle.load(with_cooccurrence(base, tmp_path, neighbours_for(base.vocab, split.train_sessions), 0.6))
    assert bundle.cooccurrence_weight == 0.6 and bundle.manifest["derived_from"] == base.version
    settings = Settings.from_env({}, index="exact", filter_purchased=False, cold_start_trending=False)
    blended = evaluate_bundle(bundle, split, settings, indexes=("exact",), progress=None)
    plain = evaluate_bundle(bundle, split, settings.with_(cooccurrence_weight=0.0), indexes=("exact",), progress=None)
    assert blended.lists["exact"] != plain.lists["exact"]  # the blend changes rankings
    assert plain.lists["exact"] == evaluate_bundle(base, split, settings, indexes=("exact",),
                                                   progress=None).lists["exact"]
    # The serving core, fed the same prefix states, answers with the offline lists.
    core = build_recommender(bundle, settings)
    assert core.neighbours is not None
    _, states = prefix_states(split_test_events(split), SessionPolicy(max_len=bundle.max_len))
    events = [Event(f"e{i}", "u", "click", 1000 + i, item_id="x") for i in range(len(states))]
    recs = core.recommend(list(zip(events, states)), now_ms=0).to_list()
    assert [[s.item_id for s in r.items] for r in recs] == blended.lists["exact"]
