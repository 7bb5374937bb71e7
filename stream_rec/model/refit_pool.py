"""A soup's refits side by side: one process per core, one torch thread each.

A soup's members (:mod:`.refit`) are independent: the same start, rate, passes and sessions,
each with its own seed. With ``--threads N`` (N > 1) they run in N spawned processes of one
intra-op thread each instead of one after another on N intra-op threads. At the refit's sizes
(d = 64, batches of 128) the work is many small kernels, which a second intra-op thread barely
shares; a second process takes a whole core. A member computed here is the one a run on one
thread computes with the same seed (tests/unit/test_refit_pool.py).

Processes are spawned, not forked: a fork after torch has started its intra-op threads can
hang the child. Each worker receives the start and the sessions once (the pool's initializer).
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import torch

from ..errors import StreamRecError
from .examples import Example
from .sasrec import SessionTransformer
from .steps import train_passes

__all__ = ["pooled_refits"]

_START: SessionTransformer | None = None
_EXAMPLES: list[Example] = []


def _init(start: SessionTransformer, examples: list[Example]) -> None:
    global _START, _EXAMPLES
    torch.set_num_threads(1)
    _START, _EXAMPLES = start, examples


def _member(
    seed: int, lr: float, passes: int, batch_size: int, negatives: int, weight_decay: float
) -> tuple[dict[str, torch.Tensor], float]:
    """One refit of the worker's start (its state and the seconds it took)."""
    assert _START is not None, "the pool's initializer sets the start"
    t0 = time.perf_counter()
    member = copy.deepcopy(_START)
    torch.manual_seed(seed)
    train_passes(member, _EXAMPLES, lr, passes, batch_size, negatives, weight_decay)
    return member.state_dict(), time.perf_counter() - t0


def pooled_refits(
    start: SessionTransformer,
    examples: list[Example],
    seeds: Sequence[int],
    lr: float,
    passes: int,
    batch_size: int,
    negatives: int,
    weight_decay: float,
    processes: int,
    done: Callable[[int, float], None] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """One refit of ``start`` per seed in ``processes`` worker processes; their states in the
    order of ``seeds``. ``done(k, seconds)`` after the k-th to finish (the member's own time)."""
    try:
        return _pooled(start, examples, seeds, (lr, passes, batch_size, negatives, weight_decay),
                       processes, done)
    except BrokenProcessPool as e:  # a worker killed (out of memory, a signal) or crashed
        raise StreamRecError(
            "a refit worker process ended without its result (out of memory?); the trained "
            "model is in the run's checkpoint: `stream-rec train --resume RUN --threads 1` "
            "refits it in one process"
        ) from e


def _pooled(
    start: SessionTransformer,
    examples: list[Example],
    seeds: Sequence[int],
    how: tuple[float, int, int, int, float],
    processes: int,
    done: Callable[[int, float], None] | None,
) -> list[dict[str, torch.Tensor]]:
    states: list[dict[str, torch.Tensor] | None] = [None] * len(seeds)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(processes, len(seeds)),
        mp_context=context,
        initializer=_init,
        initargs=(start, examples),
    ) as pool:
        futures = {
            pool.submit(_member, seed, *how): i
            for i, seed in enumerate(seeds)
        }
        for k, future in enumerate(as_completed(futures), start=1):
            state, seconds = future.result()
            states[futures[future]] = state
            if done is not None:
                done(k, seconds)
    return [s for s in states if s is not None]
