"""When training stops early: after ``patience`` epochs without a better validation score, but
a decayed learning rate gets ``patience`` epochs of its own, and training never stops on the
epoch before a decay (the lower rate gets its chance)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from stream_rec.model.train import TrainConfig, stops_early  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DECAY_EVERY_5 = TrainConfig(epochs=20, lr_decay_every=5, patience=2)


@pytest.mark.parametrize(
    ("epoch", "stale", "stops"),
    [
        (3, 1, False),  # not stale long enough
        (3, 2, True),
        (4, 2, True),
        (5, 2, False),  # the epoch before the decay: the rate 10x lower comes next
        (5, 4, False),
        (6, 3, False),  # the decayed rate's first epoch
        (7, 4, True),  # its second
        (10, 2, False),
        (12, 2, True),
        (20, 0, False),  # the last epoch ends training anyway, not as an early stop
    ],
)
def test_training_stops_early_except_before_a_decay_and_early_in_a_new_rate(epoch, stale, stops):
    assert stops_early(DECAY_EVERY_5, epoch, stale) is stops


def test_without_decay_or_patience():
    assert stops_early(TrainConfig(epochs=20, lr_decay_every=0, patience=2), 5, 2)
    assert not stops_early(TrainConfig(epochs=20, lr_decay_every=0, patience=0), 5, 9)


def test_a_run_that_learns_nothing_goes_on_through_a_decay_and_says_so():
    from stream_rec.model import build_vocab

    from .tiny_model import successor_corpus, train_tiny

    sessions, ids = successor_corpus(60, 12)
    lines: list[str] = []
    # lr 0: every epoch scores the same, so from epoch 2 none is better than the first
    _, metrics = train_tiny(sessions, build_vocab(ids), lines.append, epochs=8, lr=0.0,
                            lr_decay_every=3, patience=2, refit=False)
    assert metrics.epochs_run == 5  # 3 is before a decay, 4 the decayed rate's first: 5 stops
    going_on = [x for x in lines if x.startswith("no better validation")]
    assert len(going_on) == 2 and "a lower learning rate gets its epochs first" in going_on[0]
    assert any(x.startswith("early stop: ") for x in lines)
