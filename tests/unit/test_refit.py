"""The refit pass (model/refit.py): rows no training session touched start from their
co-occurring items, and the refit's rate is chosen on the validation slice's halves."""

from __future__ import annotations

import numpy as np
import torch

from stream_rec.model.refit import cooccurrence_init, refit, untouched_rows
from stream_rec.model.sasrec import SASRecConfig, SessionTransformer


def rows(*items: int):
    a = np.asarray(items, np.int64)
    return a, np.zeros(len(a), np.int64), np.zeros((len(a), 1), np.int64)


def model(n_items: int = 12) -> SessionTransformer:
    torch.manual_seed(0)
    return SessionTransformer(
        SASRecConfig(
            n_items=n_items, dim=8, n_layers=1, n_heads=2, ffn_dim=16, max_len=10, query_buckets=5
        )
    ).eval()


def test_untouched_rows_are_the_items_no_session_contains():
    assert untouched_rows([rows(1, 2, 3), rows(3, 5)], n_items=6).tolist() == [4, 6]


def test_a_fresh_row_starts_at_the_mean_of_its_co_occurring_items_at_the_trained_norm():
    m = model()
    before = m.item_emb.weight.detach().clone()
    n = cooccurrence_init(m, np.asarray([11, 12]), [rows(1, 11, 2), rows(3, 11), rows(5, 6)])
    after = m.item_emb.weight.detach()
    assert n == 1  # 12 co-occurs with nothing: left as it was
    assert torch.equal(after[12], before[12]) and torch.equal(after[:11], before[:11])
    mean = (before[1] + before[2] + before[3]) / 3
    cos = torch.nn.functional.cosine_similarity(after[11], mean, dim=0)
    assert float(cos) > 0.999
    trained_norm = before[1:11].norm(dim=1).mean()
    assert abs(float(after[11].norm()) - float(trained_norm)) < 1e-4


def test_refit_chooses_its_rate_on_the_halves_and_reports_it():
    m = model()
    train_f = [rows(1, 2, 3, 4), rows(2, 3, 4, 5), rows(5, 6, 7)] * 3
    valid_f = [rows(1, 2, 11, 3), rows(2, 11, 3), rows(4, 5, 6), rows(6, 7, 11), rows(1, 2, 3)] * 2
    report = refit(m, train_f, valid_f, (1e-4, 1e-2), batch_size=4, negatives=0, weight_decay=0.0)
    assert set(report.half_scores) == {
        f"{lr} x{n}" for lr in ("0.0001", "0.01") for n in range(1, 6)
    }
    assert 1 <= report.passes <= 5
    assert report.lr in (1e-4, 1e-2) and report.rows_initialised == 1  # item 11
    assert not m.training


def test_one_candidate_rate_and_pass_skips_the_halves():
    m = model()
    report = refit(
        m, [rows(1, 2, 3)], [rows(1, 2, 3), rows(2, 3)], (1e-3,), 4, 0, 0.0, max_passes=1
    )
    assert report.lr == 1e-3 and report.passes == 1 and report.half_scores == {}
