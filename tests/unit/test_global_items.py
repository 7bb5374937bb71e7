"""The encoder's global item graph (GCE-GNN's idea, model/global_items.py): each item the encoder
reads is its row plus a learned share of its Item-KNN neighbours' rows. What is trained at every
prefix is what the exported graphs (full and incremental, with the mixed table baked in) serve;
an untrained gate is the plain model; the table, a resumed run, the refit and vocabulary growth
keep it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.model import SessionTransformer, TorchEncoder, TrainConfig, build_vocab, train_model  # noqa: E402
from stream_rec.model.export import check_onnx_parity, export_onnx, random_inputs  # noqa: E402
from stream_rec.model.global_items import encoder_view, mixed_table, set_neighbours  # noqa: E402
from stream_rec.model.incremental import check_incremental_parity, export_incremental  # noqa: E402

from .tiny_model import spread as spread_weights  # noqa: E402
from .tiny_model import successor_corpus, tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS, LENGTH, K = 60, 12, 4  # tiny_config's max_len is 12


def _graph_sessions(seed: int = 0) -> list[np.ndarray]:
    """Sessions of item rows in which items i, i+1, i+2 (mod N_ITEMS) co-occur."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(1, N_ITEMS + 1, size=400)
    return [np.array([(s + j - 1) % N_ITEMS + 1 for j in range(3)], np.int64) for s in starts]


def _model(seed: int = 0, spread: bool = True) -> SessionTransformer:
    torch.manual_seed(seed)
    model = SessionTransformer(tiny_config(N_ITEMS, n_layers=2, global_neighbours=K))
    set_neighbours(model, _graph_sessions())
    # Untrained weights and a zero gate would hide the graph; spread them.
    return spread_weights(model) if spread else model.eval()


def _tensors(batch: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    inputs = random_inputs(N_ITEMS, 64, batch, length, seed, lengths=[length] * batch)
    return tuple(torch.from_numpy(a) for a in (inputs.items, inputs.types, inputs.queries))


def test_the_table_holds_co_occurring_items_with_weights_summing_to_one():
    model = _model(spread=False)
    rows, weights = model.neighbour_rows.numpy(), model.neighbour_weights.numpy()
    assert rows.shape == weights.shape == (N_ITEMS + 1, K)
    assert (rows[0] == 0).all() and (weights[0] == 0).all()  # row 0 ("no item") has none
    for item in range(1, N_ITEMS + 1):
        linked = set(rows[item][weights[item] > 0].tolist())
        around = {(item - 1 + d) % N_ITEMS + 1 for d in (-2, -1, 1, 2)}
        assert linked and linked <= around, item
        assert weights[item].sum() == pytest.approx(1.0, abs=1e-5)


def test_an_untrained_gate_is_the_plain_model():
    model = _model(spread=False)
    plain = SessionTransformer(tiny_config(N_ITEMS, n_layers=2)).eval()
    state = {k: v for k, v in model.state_dict().items() if k in plain.state_dict()}
    plain.load_state_dict(state)
    items, types, queries = _tensors(5, LENGTH, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(
            model.position_vectors(items, types, queries),
            plain.position_vectors(items, types, queries),
            atol=0,
            rtol=0,
        )


def test_every_prefix_is_trained_as_it_is_served():
    model = _model()
    items, types, queries = _tensors(6, LENGTH, seed=2)
    with torch.no_grad():
        every = model.position_vectors(items, types, queries)
        for t in range(1, LENGTH + 1):
            served = model.session_vector(items[:, :t], types[:, :t], queries[:, :t])
            torch.testing.assert_close(served, every[:, t - 1], atol=2e-6, rtol=0)


def test_the_graph_moves_session_vectors_and_only_the_encoder_reads_it():
    model = _model()
    assert model.global_gate.abs().sum() > 0
    view = encoder_view(model)
    assert view is not model and view.config.global_neighbours == 0
    # Scoring keeps the plain table; the view's table is the mixed one.
    torch.testing.assert_close(view.item_emb.weight, mixed_table(model), atol=0, rtol=0)
    assert (view.item_emb.weight - model.item_emb.weight).abs().max() > 1e-2
    items, types, queries = _tensors(5, LENGTH, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(
            view.session_vector(items, types, queries),
            model.session_vector(items, types, queries),
            atol=2e-6,
            rtol=0,
        )
    plain = SessionTransformer(tiny_config(N_ITEMS, n_layers=2)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    with torch.no_grad():
        moved = plain.session_vector(items, types, queries) - model.session_vector(
            items, types, queries
        )
    assert moved.abs().max() > 1e-2
    assert encoder_view(plain) is plain


def test_onnx_of_the_view_matches_the_model_at_every_prefix_length(tmp_path):
    model = _model()
    path = export_onnx(encoder_view(model), tmp_path / "encoder.onnx")
    worst = check_onnx_parity(
        model, path, shapes=[(5, n) for n in range(1, LENGTH + 1)] + [(3, 30)], atol=1e-5
    )
    assert worst <= 1e-5


def test_a_repeat_head_over_the_graph_exports_what_it_trains(tmp_path):
    # The repeat head's keys read the items as the encoder does (the mixed rows), so the view's
    # baked table gives the same bonuses; before, a trained run failed its export check (0.097).
    torch.manual_seed(0)
    model = SessionTransformer(tiny_config(N_ITEMS, n_layers=2, global_neighbours=K, repeat=True))
    set_neighbours(model, _graph_sessions())
    model = spread_weights(model)
    path = export_onnx(encoder_view(model), tmp_path / "encoder.onnx")
    worst = check_onnx_parity(model, path, shapes=[(5, n) for n in range(1, LENGTH + 1)], atol=1e-5)
    assert worst <= 1e-5


def test_mixed_scoring_scores_items_as_the_encoder_reads_them():
    torch.manual_seed(0)
    config = tiny_config(N_ITEMS, n_layers=2, global_neighbours=K, mixed_scoring=True)
    model = SessionTransformer(config)
    set_neighbours(model, _graph_sessions())
    model = spread_weights(model)
    plain = torch.nn.functional.normalize(model.item_emb.weight[1:], dim=-1)
    mixed = torch.nn.functional.normalize(mixed_table(model)[1:], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(model.item_vectors()[1:], mixed, atol=1e-6, rtol=0)
        assert (model.item_vectors()[1:] - plain).abs().max() > 1e-2
        # the exported view's table is the scoring table too (the bundle's item vectors)
        view = encoder_view(model).item_vectors()
        torch.testing.assert_close(view, model.item_vectors(), atol=1e-6, rtol=0)
    # training reaches the gate through the scores as well: a loss on the session vectors alone
    # (no item entering the encoder) still moves it
    model.train()
    model.global_gate.grad = None
    session = torch.nn.functional.normalize(torch.randn(4, model.config.dim), dim=-1)
    model.loss(session, torch.tensor([0, 5, 9, 20])).backward()
    assert model.global_gate.grad is not None and model.global_gate.grad.abs().sum() > 0


def test_the_incremental_graph_of_the_view_matches_the_model(tmp_path):
    model = _model()
    export_incremental(encoder_view(model), tmp_path)
    assert check_incremental_parity(model, tmp_path) <= 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    sessions, ids = successor_corpus(300, 80, mixed=True)
    vocab = build_vocab(ids)
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        epochs=2,
        batch_size=32,
        lr=3e-3,
        seed=0,
        threads=1,
        patience=0,
        negatives=40,
        checkpoint_dir=str(run),
    )
    lines: list[str] = []
    model, metrics = train_model(
        sessions, vocab, tiny_config(len(vocab), global_neighbours=K), config, progress=lines.append
    )
    return model, vocab, sessions, config, lines


def test_training_builds_the_graph_and_learns_its_gate(trained):
    model, vocab, _, _, lines = trained
    assert any(line.startswith("global item graph: ") for line in lines)
    assert (model.neighbour_rows[1:, 0] > 0).sum() > len(vocab) // 2
    assert model.global_gate.abs().max() > 0


def test_a_resumed_run_keeps_the_graph(trained):
    model, vocab, sessions, config, _ = trained
    lines: list[str] = []
    again, _ = train_model(
        sessions, vocab, tiny_config(len(vocab), global_neighbours=K), config, progress=lines.append
    )
    assert any(line.startswith("resumed from") for line in lines)
    for name in ("neighbour_rows", "neighbour_weights", "global_gate"):
        torch.testing.assert_close(
            again.state_dict()[name], model.state_dict()[name], atol=0, rtol=0
        )


def test_the_refit_graph_includes_the_validation_slice(trained):
    # The refit (train_model's last step) rebuilds the graph from every session it may learn.
    model, vocab, sessions, _, _ = trained
    from stream_rec.model.examples import featurize_sessions

    rows = [f[0] for f in featurize_sessions(sessions, vocab, model.config.query_buckets)]
    fresh = SessionTransformer(model.config)
    set_neighbours(fresh, rows)
    torch.testing.assert_close(model.neighbour_rows, fresh.neighbour_rows, atol=0, rtol=0)


def test_a_grown_vocabulary_gives_new_items_no_neighbours(trained):
    from stream_rec.learn.vocab import grow

    model, vocab, _, _, _ = trained
    rows = np.zeros((2, model.config.dim), np.float32)
    grown, grown_vocab = grow(model, vocab, ["new-a", "new-b"], rows)
    assert grown.neighbour_rows.shape == (len(grown_vocab) + 1, K)
    assert (grown.neighbour_rows[-2:] == 0).all() and (grown.neighbour_weights[-2:] == 0).all()
    torch.testing.assert_close(grown.neighbour_rows[: len(vocab) + 1], model.neighbour_rows)
    x = random_inputs(len(vocab), 64, 4, 6, seed=5)
    want = TorchEncoder(model).encode(x)
    torch.testing.assert_close(
        torch.from_numpy(TorchEncoder(grown).encode(x)), torch.from_numpy(want), atol=1e-6, rtol=0
    )


def test_mixed_scoring_without_the_graph_is_refused_in_one_line(capsys):
    from stream_rec.cli import main

    assert main(["train", "--dataset", "sessions", "--mixed-scoring"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--global-neighbours" in err[0]
    # Diginetica's recipe has both: taking its graph away says how to turn the scoring off
    assert main(["train", "--dataset", "diginetica", "--global-neighbours", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-mixed-scoring" in err[0]


def test_the_sampled_mixed_loss_reads_only_its_columns_and_equals_the_whole_tables():
    # With negatives, mixed scoring mixes only the columns the loss reads (the targets, the
    # negatives, the teacher's); the value and every gradient are the whole table's, with the
    # same dropout mask drawn from the same random stream.
    from stream_rec.model.loss import session_cross_entropy

    torch.manual_seed(0)
    config = tiny_config(N_ITEMS, n_layers=2, global_neighbours=K, mixed_scoring=True)
    model = SessionTransformer(config)
    set_neighbours(model, _graph_sessions())
    model = spread_weights(model).train()
    session = torch.nn.functional.normalize(torch.randn(6, config.dim), dim=-1)
    targets = torch.tensor([0, 5, 9, 20, 33, 5])
    negatives = torch.tensor([1, 2, 5, 11, 40, 41, 59])
    soft_cols = torch.tensor([[3, 7, -1]] * 6)
    soft_probs = torch.tensor([[0.6, 0.4, 0.0]] * 6)

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [model.item_emb.weight.grad.clone(), model.global_gate.grad.clone()]

    torch.manual_seed(3)
    compact = model.loss(session, targets, negatives=negatives, soft=(soft_cols, soft_probs, 0.3))
    compact_grads = grads(compact)
    torch.manual_seed(3)
    w = torch.nn.functional.normalize(model.item_dropout(model.scoring_table()[1:]), dim=-1)
    whole = session_cross_entropy(
        session * config.scale, w, targets, bound=config.scale, negatives=negatives,
        soft_cols=soft_cols, soft_probs=soft_probs, soft_weight=0.3,
    )
    torch.testing.assert_close(compact, whole, atol=1e-6, rtol=0)
    for got, want in zip(compact_grads, grads(whole), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_the_sampled_mixed_loss_of_the_last_output_readout_has_no_item_dropout():
    # The "last" readout has no item dropout: its compact table is the whole one's rows as they are.
    from stream_rec.model.loss import session_cross_entropy

    torch.manual_seed(0)
    config = tiny_config(N_ITEMS, n_layers=2, global_neighbours=K, mixed_scoring=True,
                         readout="last")
    model = SessionTransformer(config)
    set_neighbours(model, _graph_sessions())
    model = spread_weights(model).train()
    session = torch.nn.functional.normalize(torch.randn(4, config.dim), dim=-1)
    targets, negatives = torch.tensor([0, 5, 9, 20]), torch.tensor([1, 2, 5, 11, 40])
    whole = session_cross_entropy(
        session * config.scale, torch.nn.functional.normalize(model.scoring_table()[1:], dim=-1),
        targets, bound=config.scale, negatives=negatives,
    )
    torch.testing.assert_close(model.loss(session, targets, negatives=negatives), whole,
                               atol=1e-6, rtol=0)
