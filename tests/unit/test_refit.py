"""The refit pass (model/refit.py): rows no training session touched start from their
co-occurring items, and the refit's rate is chosen on the validation slice's halves."""

from __future__ import annotations

import copy

import numpy as np
import torch

from stream_rec.model.examples import training_examples
from stream_rec.model.refit import average_weights, cooccurrence_init, refit, untouched_rows
from stream_rec.model.sasrec import SASRecConfig, SessionTransformer
from stream_rec.model.steps import train_passes
from stream_rec.model.validation import selection_score


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


def test_average_weights_averages_floats_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average_weights([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 5
    assert average_weights([a])["w"] is a["w"]


SOUP_VALID = [rows(1, 2, 11, 3), rows(2, 11, 3), rows(4, 5, 6), rows(6, 7, 11), rows(1, 2, 3)] * 2
SOUP_TRAIN = [rows(1, 2, 3, 4), rows(2, 3, 4, 5), rows(5, 6, 7)] * 3


def _soup(seed: int) -> tuple[SessionTransformer, object]:
    m = model()  # the blocks' dropout makes the members differ
    report = refit(m, SOUP_TRAIN, SOUP_VALID, (1e-2,), 4, 0, 0.0, max_passes=2, soup=3, seed=seed)
    return m, report


def test_a_soup_is_decided_on_the_halves_and_is_the_members_average():
    m, report = _soup(seed=3)
    key = f"{report.lr:g} x{report.passes}"
    assert {f"{key} single", f"{key} soup of 3"} <= set(report.half_scores)
    one, avg = report.half_scores[f"{key} single"], report.half_scores[f"{key} soup of 3"]
    assert report.soup == (3 if selection_score(*avg) > selection_score(*one) else 1)
    # the members again, by hand: the refitted model is their average (or the first alone)
    start = model()
    cooccurrence_init(start, untouched_rows(SOUP_TRAIN, 12), SOUP_VALID)
    members = [copy.deepcopy(start) for _ in range(report.soup)]
    examples = training_examples(SOUP_VALID, start.config.max_len)
    for i, member in enumerate(members):
        torch.manual_seed(3 + i)
        train_passes(member, examples, report.lr, report.passes, 4, 0, 0.0)
    want = average_weights([x.state_dict() for x in members])
    for name, value in m.state_dict().items():
        assert torch.allclose(value, want[name], atol=1e-6), name


def test_a_soup_is_deterministic_for_its_seed():
    a, _ = _soup(seed=5)
    b, _ = _soup(seed=5)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_one_refit_records_no_soup():
    m = model()
    report = refit(m, SOUP_TRAIN, SOUP_VALID, (1e-2,), 4, 0, 0.0, max_passes=2)
    assert report.soup == 1 and not any("soup" in k for k in report.half_scores)


def test_a_refit_with_a_tail_learns_the_newest_training_sessions_first():
    train_f = [rows(1, 2, 3, 4), rows(2, 3, 4, 5), rows(5, 6, 7), rows(7, 8, 9), rows(8, 9, 10)]
    m = model()
    torch.manual_seed(11)
    report = refit(m, train_f, SOUP_VALID[:4], (1e-2,), 4, 0, 0.0, max_passes=1, tail=0.5)
    assert report.tail_sessions == 2 and report.half_scores == {}
    # by hand: the newest 0.5 x 4 training sessions, then the slice, in one chronological pass
    start = model()
    cooccurrence_init(start, untouched_rows(train_f, 12), SOUP_VALID[:4])
    torch.manual_seed(11)
    train_passes(start, training_examples(train_f[-2:] + SOUP_VALID[:4], 10), 1e-2, 1, 4, 0, 0.0)
    for name, value in m.state_dict().items():
        assert torch.equal(value, start.state_dict()[name]), name
    # the halves' trials get their tail too, and a tail longer than training takes all of it
    report = refit(model(), train_f, SOUP_VALID, (1e-4, 1e-2), 4, 0, 0.0, max_passes=2, tail=3.0)
    assert report.tail_sessions == len(train_f) and len(report.half_scores) == 4


def test_a_refit_says_how_far_it_got():
    # Diginetica's refit runs for ~1.5 hours on one thread: each trial pass and each member is a
    # line, and each step after the trials is announced with an estimate of its length.
    lines: list[str] = []
    refit(model(), SOUP_TRAIN, SOUP_VALID, (1e-4, 1e-2), 4, 0, 0.0, max_passes=2, soup=3, seed=1,
          progress=lines.append)
    trials = [x for x in lines if x.startswith("refit trial on the older half")]
    assert len(trials) == 4 and "lr 0.0001, pass 1: the newer half" in trials[0]
    assert sum(x.startswith("refit of the older half ") for x in lines) == 3
    assert any(x.startswith("refit of the whole slice 1/") for x in lines)
    assert lines[-1].startswith("refit: ")  # the summary comes last
    # What comes next and about how long it takes, from the pace of the step before.
    assert lines[0].startswith("refit: 2 rate(s) x up to 2 passes over the older half")
    ahead = [x for x in lines if x.startswith("refit: next, ")]
    members = 3 if "averaged" in lines[-1] else 1
    assert [x.split(":")[1] for x in ahead] == [
        " next, 3 refits of the older half", f" next, {members} refit(s) of the whole slice"]
    assert all(x.endswith(" min") for x in ahead)
    older = [x for x in lines if x.startswith("refit of the older half ")]
    assert "min left)" in older[0] and "min left" not in older[-1]
