"""Issue 5's guard: the optimised serving path keeps HR@20 / MRR@20 within 0.2 points of the
unoptimised one.

Optimised (what serves users): state folded event by event, ONNX encoder, length-sorted encode
batches, a last block that computes the last position only, HNSW at the serving ef. Unoptimised
reference: PyTorch, one prefix at a time, every position through every block, scores against
every item. Data: sessions over 800 items with a noisy successor pattern and a popularity skew,
so rankings are neither trivial nor random.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stream_rec.core.features import CLICK, MAX_QUERY_TOKENS, ItemVocab, item_hash  # noqa: E402
from stream_rec.datasets.eventlog import SessionSplit  # noqa: E402
from stream_rec.evaluation.offline import evaluate_bundle  # noqa: E402
from stream_rec.model.bundle_writer import write_bundle  # noqa: E402
from stream_rec.model.train import item_popularity  # noqa: E402
from stream_rec.serving.bundle import ModelBundle  # noqa: E402
from stream_rec.settings import Settings  # noqa: E402

from .tiny_model import train_tiny  # noqa: E402

N_ITEMS = 800


def _sessions(n: int, rng: np.random.Generator) -> list[list[str]]:
    popular = rng.zipf(1.3, size=20 * n) % N_ITEMS
    out, p = [], 0
    for _ in range(n):
        cur, items = int(rng.integers(N_ITEMS)), []
        for _ in range(int(rng.integers(2, 9))):
            items.append(f"i{cur}")
            if rng.random() < 0.6:
                cur = (cur + 1) % N_ITEMS
            else:
                cur, p = int(popular[p]), p + 1
        out.append(items)
    return out


def _as_training(sessions: list[list[str]]):
    return [
        (np.array([item_hash(i) for i in s], np.int64), np.full(len(s), CLICK, np.uint8),
         np.zeros((len(s), MAX_QUERY_TOKENS), np.uint32))
        for s in sessions
    ]


def test_serving_path_is_within_0_2_points_of_the_unoptimised_path(tmp_path, one_torch_thread):
    rng = np.random.default_rng(11)
    train, test = _sessions(3000, rng), _sessions(250, rng)
    vocab = ItemVocab(list(dict.fromkeys(i for s in train for i in s)))
    test = [[i for i in s if vocab.row(i) > 0] for s in test]
    test = [s for s in test if len(s) >= 2]
    model, _ = train_tiny(_as_training(train), vocab, epochs=3)
    path = write_bundle(tmp_path, model, vocab, item_popularity(_as_training(train), vocab),
                        {"data": "quality-guard"}, {})
    split = SessionSplit(train_sessions=train, test_sessions=test, items=vocab.item_ids)
    result = evaluate_bundle(ModelBundle.load(path), split, Settings.from_env({}), progress=None)

    model.eval()
    ranks = []
    with torch.no_grad():
        for seq in test:
            for n in range(1, len(seq)):
                rows = torch.tensor([[vocab.row(i) for i in seq[:n]]])
                zeros = torch.zeros(1, n, MAX_QUERY_TOKENS, dtype=torch.long)
                h = model.position_vectors(rows, torch.full_like(rows, CLICK), zeros)[:, -1]
                scores = model.logits(h)[0]
                rank = 1 + int((scores > scores[vocab.row(seq[n]) - 1]).sum())
                ranks.append(rank if rank <= 20 else 0)
    ranks_a = np.array(ranks)
    reference_hr = 100 * np.mean(ranks_a > 0)
    reference_mrr = 100 * np.mean(np.where(ranks_a > 0, 1 / np.maximum(ranks_a, 1), 0))
    assert result.report["prefixes"] == len(ranks) > 500
    assert 5 < reference_hr < 95  # a ranking worth guarding
    for index in ("exact", "hnsw"):
        got = result.report["index"][index]
        assert abs(got["hr@20"] - reference_hr) <= 0.2, (index, got, reference_hr)
        assert abs(got["mrr@20"] - reference_mrr) <= 0.2, (index, got, reference_mrr)
