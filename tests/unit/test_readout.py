"""The session readouts (last output, CORE's weighted item sum) and position schemes: what is
trained at every position is what serving computes for that prefix, in PyTorch and in ONNX."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, SEARCH  # noqa: E402
from stream_rec.model import SessionTransformer  # noqa: E402
from stream_rec.model.export import check_onnx_parity, export_onnx, random_inputs  # noqa: E402
from stream_rec.runtime.encoder import OnnxEncoder  # noqa: E402

from .tiny_model import spread, tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS, LENGTH = 60, 12  # tiny_config's max_len is 12
RECENCY_ATTEND = {"recency": True, "attend": True}
VARIANTS = [
    ("core", "forward", RECENCY_ATTEND),
    ("core", "forward", {"attend": False}),
    ("core", "forward", {"transition": True}),
    ("core", "reverse", {}),
    ("last", "forward", {}),
]


def _model(readout: str, positions: str, seed: int = 0, **extra: bool) -> SessionTransformer:
    torch.manual_seed(seed)
    model = SessionTransformer(
        tiny_config(N_ITEMS, n_layers=2, readout=readout, positions=positions, **extra)
    )
    # Untrained weights give near-uniform position weights; spread them so the test can see order.
    return spread(model)


def _tensors(batch: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    inputs = random_inputs(N_ITEMS, 64, batch, length, seed, lengths=[length] * batch)
    return tuple(torch.from_numpy(a) for a in (inputs.items, inputs.types, inputs.queries))


@pytest.mark.parametrize(
    ("readout", "extra"),
    [("core", RECENCY_ATTEND), ("core", {"attend": False}), ("core", {"transition": True}),
     ("last", {})],
)
def test_forward_positions_train_every_prefix_as_it_is_served(readout, extra):
    model = _model(readout, "forward", **extra)
    items, types, queries = _tensors(6, LENGTH, seed=1)
    with torch.no_grad():
        every = model.position_vectors(items, types, queries)  # (B, L, D)
        for t in range(1, LENGTH + 1):
            served = model.session_vector(items[:, :t], types[:, :t], queries[:, :t])  # (B, D)
            torch.testing.assert_close(served, every[:, t - 1], atol=2e-6, rtol=0)


def test_reverse_positions_do_not_have_that_parity():
    # Why forward positions exist: counted from the end, a training position t < L sees other
    # position embeddings than the same prefix does when it is served.
    model = _model("last", "reverse")
    items, types, queries = _tensors(4, LENGTH, seed=2)
    with torch.no_grad():
        every = model.position_vectors(items, types, queries)
        served = model.session_vector(items[:, :5], types[:, :5], queries[:, :5])
    assert (served - every[:, 4]).abs().max() > 1e-2


@pytest.mark.parametrize(("readout", "positions", "extra"), VARIANTS)
def test_onnx_matches_pytorch_at_every_prefix_length(readout, positions, extra, tmp_path):
    model = _model(readout, positions, **extra)
    path = export_onnx(model, tmp_path / "encoder.onnx")
    worst = check_onnx_parity(
        model, path, shapes=[(5, n) for n in range(1, LENGTH + 1)] + [(3, 30)], atol=1e-5
    )
    assert worst <= 1e-5


def test_a_trailing_search_or_event_type_reweights_the_core_sum():
    # Without `attend` a new search (no item) could not change a forward-position session at all.
    model = _model("core", "forward")
    items = torch.tensor([[3, 9, 0]])
    types = torch.tensor([[CLICK, CLICK, SEARCH]])
    queries = torch.zeros(1, 3, MAX_QUERY_TOKENS, dtype=torch.long)
    with torch.no_grad():
        before = model.session_vector(items[:, :2], types[:, :2], queries[:, :2])
        queries[0, 2, 0] = 17
        searched = model.session_vector(items, types, queries)
        queries[0, 2, 0] = 18
        other = model.session_vector(items, types, queries)
    assert (searched - before).abs().max() > 1e-3 and (searched - other).abs().max() > 1e-3


@pytest.mark.parametrize("positions", ["forward", "reverse"])
def test_core_session_vector_is_a_weighted_sum_of_its_own_item_embeddings(positions):
    model = _model("core", positions, attend=False)
    items, types, queries = _tensors(4, LENGTH, seed=3)
    with torch.no_grad():
        h = model.hidden(items, types, queries)  # (B, L, D)
        logits = model.weight_logit(h).squeeze(-1).masked_fill(items == 0, -torch.inf)  # (B, L)
        weights = torch.softmax(logits, dim=-1)
        want = torch.nn.functional.normalize(weights.unsqueeze(1) @ model.item_emb(items), dim=-1)[
            :, 0
        ]
        torch.testing.assert_close(
            model.session_vector(items, types, queries), want, atol=1e-6, rtol=0
        )
    assert (weights[items == 0] == 0).all()  # searches and unknown items carry no weight


def test_core_padding_and_batch_mates_do_not_change_a_session(tmp_path):
    model = _model("core", "forward", **RECENCY_ATTEND)
    encoder = OnnxEncoder(export_onnx(model, tmp_path / "e.onnx"), providers="cpu")
    inputs = random_inputs(N_ITEMS, 64, 4, 9, seed=4, lengths=[9, 3, 6, 1])
    together = encoder.encode(inputs)
    for b, n in enumerate([9, 3, 6, 1]):
        alone = random_inputs(N_ITEMS, 64, 1, n, seed=4)  # shapes only; fill with row b's events
        alone.items[0], alone.types[0] = inputs.items[b, 9 - n :], inputs.types[b, 9 - n :]
        alone.queries[0] = inputs.queries[b, 9 - n :]
        np.testing.assert_allclose(encoder.encode(alone)[0], together[b], atol=1e-5, rtol=0)


def test_core_prefix_of_searches_only_falls_back_to_the_encoder_output():
    model = _model("core", "forward", **RECENCY_ATTEND)
    items = torch.tensor([[0, 0, 7]])
    types = torch.tensor([[SEARCH, SEARCH, CLICK]])
    queries = torch.zeros(1, 3, MAX_QUERY_TOKENS, dtype=torch.long)
    queries[0, :2, 0] = 11
    with torch.no_grad():
        every = model.position_vectors(items, types, queries)  # (1, 3, D)
        h = torch.nn.functional.normalize(model.hidden(items, types, queries), dim=-1)
        item = torch.nn.functional.normalize(model.item_emb.weight[7], dim=-1)
    torch.testing.assert_close(every[0, :2], h[0, :2], atol=1e-6, rtol=0)  # no item yet
    torch.testing.assert_close(every[0, 2], item, atol=1e-6, rtol=0)  # one item: its own vector
