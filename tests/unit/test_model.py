"""The session Transformer and its training: targets, masking, learning a pattern, determinism."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, item_hash  # noqa: E402
from stream_rec.errors import ConfigError  # noqa: E402
from stream_rec.model import (  # noqa: E402
    SessionTransformer,
    TrainConfig,
    build_vocab,
    item_popularity,
    train_model,
)
from stream_rec.model.examples import next_item_targets  # noqa: E402

from .tiny_model import TINY, successor_corpus, tiny_config, train_tiny  # noqa: E402

N_ITEMS = 120

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus():
    sessions, ids = successor_corpus(700, N_ITEMS, mixed=True)
    return sessions, build_vocab(ids)


@pytest.fixture(scope="module")
def trained(corpus):
    lines: list[str] = []
    model, metrics = train_tiny(*corpus, progress=lines.append)
    return model, metrics, lines


def test_targets_are_the_next_known_item_skipping_searches_and_unknown_items():
    rows = np.array([5, 0, 7, 0, 0, 9, 0])  # 0: search or unknown item
    assert next_item_targets(rows).tolist() == [6, 6, 8, 8, 8, -1, -1]  # columns = row - 1


def test_padding_rows_are_finite_and_real_positions_never_see_padding():
    torch.manual_seed(0)
    model = SessionTransformer(tiny_config(10)).eval()
    items = torch.tensor([[0, 0, 3, 4], [0, 0, 0, 0]])
    types = torch.tensor([[0, 0, CLICK, CLICK], [0, 0, 0, 0]])
    queries = torch.zeros(2, 4, MAX_QUERY_TOKENS, dtype=torch.long)
    with torch.no_grad():
        h = model.position_vectors(items, types, queries)  # (B, L, D)
        short = model.position_vectors(items[:1, 2:], types[:1, 2:], queries[:1, 2:])
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h[0, 2:], short[0], atol=1e-6, rtol=0)


def test_session_vector_is_the_last_position_of_the_all_positions_pass():
    from stream_rec.model.export import random_inputs

    torch.manual_seed(0)
    model = SessionTransformer(tiny_config(50, n_layers=2)).eval()
    x = random_inputs(50, TINY["query_buckets"], batch=8, length=12, seed=0)
    args = [torch.from_numpy(a) for a in (x.items, x.types, x.queries)]
    with torch.no_grad():
        torch.testing.assert_close(model.session_vector(*args), model.position_vectors(*args)[:, -1])


def test_item_vectors_are_tied_normalised_and_row0_is_zero():
    torch.manual_seed(0)
    model = SessionTransformer(tiny_config(10))
    v = model.item_vectors()
    assert v.shape == (11, TINY["dim"])
    assert torch.all(v[0] == 0)
    torch.testing.assert_close(v[1:].norm(dim=1), torch.ones(10))
    s = torch.nn.functional.normalize(torch.randn(3, TINY["dim"]), dim=-1)
    torch.testing.assert_close(model.logits(s), 16.0 * s @ v[1:].T)


def test_training_learns_the_successor_pattern_and_beats_popularity(trained):
    _, metrics, lines = trained
    assert metrics.valid_cases > 50
    assert metrics.valid_hr20 >= 0.9, metrics
    # The core readout scores by closeness to the session's own items, so on a pure successor
    # chain the last item and its predecessor rank next to the successor (the last readout: >= 0.5).
    assert metrics.valid_mrr20 >= 0.33, metrics
    assert metrics.valid_hr20 > metrics.pop_hr20 + 0.5
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == metrics.epochs_run == 4
    assert all("loss" in line and "hr@20" in line for line in epochs)
    assert lines[len(epochs):] == [line for line in lines if line.startswith("refit")]  # then the refit


def test_the_last_readout_learns_the_successor_order(corpus):
    from stream_rec.model import train_model

    from .tiny_model import tiny_config

    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0, threads=1)
    _, metrics = train_model(*corpus, tiny_config(len(corpus[1]), readout="last", positions="reverse"), config)
    assert metrics.valid_hr20 >= 0.9 and metrics.valid_mrr20 >= 0.5, metrics


def test_training_is_deterministic_for_a_seed(corpus, trained):
    model, metrics, _ = trained
    again, metrics2 = train_tiny(*corpus, seed=0)
    def curve(m):
        return [(h["loss"], h["hr@20"], h["mrr@20"]) for h in m.history]

    assert curve(metrics2) == curve(metrics)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_time_budget_stops_training_early(corpus):
    sessions, vocab = corpus
    _, metrics = train_model(sessions, vocab, tiny_config(len(vocab)), TrainConfig(epochs=5, max_seconds=0.0, threads=1))
    assert metrics.epochs_run == 1


def test_model_size_must_match_the_vocabulary(corpus):
    sessions, vocab = corpus
    with pytest.raises(ConfigError, match="vocabulary size"):
        train_model(sessions, vocab, tiny_config(len(vocab) + 1))


def test_build_vocab_orders_by_count_and_popularity_counts_rows():
    vocab = build_vocab([["b", "a", "b"], ["c", "a", "b"], ["d"]], min_count=2)
    assert vocab.item_ids == ["b", "a"]
    assert build_vocab({"x": 1, "y": 3}).item_ids == ["y", "x"]
    sessions = [(np.array([item_hash("a"), 0, item_hash("b"), item_hash("zzz")]), None, None)]
    assert item_popularity(sessions, vocab).tolist() == [0.0, 1.0, 1.0]


def _examples(lengths):
    from stream_rec.model.examples import Example

    return [Example(np.full(n, i), np.zeros(n), np.zeros((n, 1)), np.zeros(n)) for i, n in enumerate(lengths)]


def test_chronological_batches_run_through_time_and_shuffled_ones_cover_every_example():
    from stream_rec.model.examples import _SORT_POOL, length_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 20, size=4 * 4 * _SORT_POOL + 7)
    examples = _examples(lengths)
    pool = 4 * _SORT_POOL  # batch size 4
    for chronological in (False, True):
        batches = length_batches(examples, 4, np.random.default_rng(1), chronological=chronological)
        seen = sorted(int(e.items[0]) for b in batches for e in b)
        assert seen == list(range(len(examples)))  # every example once
        pools = [{int(e.items[0]) // pool for e in b} for b in batches]
        if chronological:  # a batch never mixes pools, and the pools come in time order
            assert all(len(p) == 1 for p in pools)
            order = [p.pop() for p in pools]
            assert order == sorted(order)
        else:  # batches from anywhere in time, in any order
            assert any(len(p) > 1 for p in pools)


def test_unknown_batch_order_is_a_config_error():
    with pytest.raises(ConfigError, match="order must be one of shuffled, chronological"):
        TrainConfig(order="random")


@pytest.mark.parametrize("rates", [(0.0,), (1e-3, 2.0), (-1e-4,)])
def test_refit_rates_outside_zero_to_one_are_a_config_error(rates):
    with pytest.raises(ConfigError, match=r"refit rates must be in \(0, 1\]"):
        TrainConfig(refit_rates=rates)


def test_refit_rates_flag_takes_comma_separated_rates_and_says_what_is_wrong(capsys):
    from stream_rec.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--refit-rates", "5e-4,3e-4"]).refit_rates == (5e-4, 3e-4)
    for bad in ("0", "5e-4,x", "", "2"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--refit-rates", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "expected comma-separated learning rates in (0, 1]" in err[0]
    assert parser.parse_args(["train", "--refit-tail", "2"]).refit_tail == 2.0
    for bad in ("-1", "150", "x"):  # refused by the flag, before any data loads
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--refit-tail", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "a number from 0 to 100" in err[0]


def test_a_refit_tail_outside_zero_to_a_hundred_is_a_config_error():
    with pytest.raises(ConfigError, match=r"refit_tail must be in \[0, 100\]"):
        TrainConfig(refit_tail=-0.5)


@pytest.mark.parametrize("dataset", ["generated", "diginetica", "nowplaying", "sessions", "events"])
def test_every_recipes_refit_settings_are_a_valid_train_config(dataset):
    from stream_rec.model.recipes import TrainOptions

    recipe = TrainOptions(dataset=dataset).recipe()
    config = TrainConfig(refit_rates=recipe.refit_rates, refit_tail=recipe.refit_tail,
                         refit_soup=recipe.refit_soup, order=recipe.order)
    assert all(0 < r <= 1 for r in config.refit_rates) and config.refit_tail >= 0
