"""A soup's refits side by side (model/refit_pool.py): each member is the one a run on one
thread computes with its seed, so ``--threads N`` changes the refit's speed, not its result."""

from __future__ import annotations

import copy
import os
from multiprocessing import resource_tracker

import numpy as np
import pytest
import torch

from stream_rec.errors import StreamRecError
from stream_rec.model.examples import training_examples
from stream_rec.model.refit import refit
from stream_rec.model.refit_pool import pooled_refits
from stream_rec.model.sasrec import SASRecConfig, SessionTransformer
from stream_rec.model.steps import train_passes

# multiprocessing's resource tracker, a helper process every pool starts once and keeps for the
# life of its parent (as `stream-rec train` does): started here, before the leak check's count
resource_tracker.ensure_running()


def rows(*items: int):
    a = np.asarray(items, np.int64)
    return a, np.zeros(len(a), np.int64), np.zeros((len(a), 1), np.int64)


def model() -> SessionTransformer:
    torch.manual_seed(0)
    return SessionTransformer(
        SASRecConfig(n_items=12, dim=8, n_layers=1, n_heads=2, ffn_dim=16, max_len=10,
                     query_buckets=5)
    ).eval()


TRAIN = [rows(1, 2, 3, 4), rows(2, 3, 4, 5), rows(5, 6, 7)] * 3
VALID = [rows(1, 2, 3), rows(3, 4, 5, 6), rows(6, 7, 8), rows(2, 3, 4), rows(7, 8, 9, 10)] * 2


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pooled_members_equal_the_same_seeds_run_one_after_another(one_thread):
    start = model()
    examples = training_examples(VALID, 10)
    finished: list[int] = []
    states = pooled_refits(start, examples, [4, 5, 6], 1e-2, 2, 4, 0, 0.0, processes=2,
                           done=lambda k, seconds: finished.append(k))
    assert finished == [1, 2, 3] and len(states) == 3
    for seed, state in zip([4, 5, 6], states):
        member = copy.deepcopy(start)
        torch.manual_seed(seed)
        train_passes(member, examples, 1e-2, 2, 4, 0, 0.0)
        for name, value in member.state_dict().items():
            assert torch.equal(value, state[name]), (seed, name)
    # the start itself is untouched: each worker refits its own copy
    for name, value in model().state_dict().items():
        assert torch.equal(value, start.state_dict()[name]), name


def test_a_soup_in_two_processes_is_the_soup_on_one_thread(one_thread):
    lines: list[str] = []
    a, b = model(), model()
    torch.manual_seed(11)  # the trials draw from the generator as it stands
    ra = refit(a, TRAIN, VALID, (1e-2,), 4, 0, 0.0, max_passes=2, soup=3, seed=3)
    torch.manual_seed(11)
    rb = refit(b, TRAIN, VALID, (1e-2,), 4, 0, 0.0, max_passes=2, soup=3, seed=3, processes=2,
               progress=lines.append)
    assert (ra.lr, ra.passes, ra.soup) == (rb.lr, rb.passes, rb.soup)
    assert ra.half_scores == rb.half_scores
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    # each member still says it is done, the pool's finishing order numbered 1..3
    older = [x for x in lines if x.startswith("refit of the older half ")]
    assert [x.split()[5] for x in older] == ["1/3", "2/3", "3/3"]
    assert "min left)" in older[0] and "min left" not in older[-1]


class _DiesOnArrival:
    """Unpickled in a worker, it ends that process: a worker killed before it answers."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_worker_that_dies_is_one_clear_error():
    with pytest.raises(StreamRecError, match="refit worker process ended.*--threads 1"):
        pooled_refits(model(), [_DiesOnArrival()], [1, 2], 1e-2, 1, 4, 0, 0.0, processes=2)
