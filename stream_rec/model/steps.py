"""One training step's loss, shared by training, the refit pass and the learner's updates."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .examples import Example, pad_examples
from .sasrec import SessionTransformer

__all__ = ["batch_loss", "train_passes"]


def batch_loss(
    model: SessionTransformer,
    items: torch.Tensor,
    types: torch.Tensor,
    queries: torch.Tensor,
    targets: torch.Tensor,
    negatives: int,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
    distill: float = 0.0,
) -> torch.Tensor:
    """The loss of every position with a target (full or sampled softmax, repeat head if any)."""
    cfg = model.config
    h, session = model.session_states(items, types, queries)  # (B, L, D) each
    mask = targets >= 0  # (B, L)
    extra_cols = extra_bias = None
    if cfg.repeat:
        cols, bonus = model.repeat_bonus(h, items)  # (B, L, L) each
        extra_cols, extra_bias = cols[mask], bonus[mask]  # (N, L)
    neg = None
    if 0 < negatives < cfg.n_items:
        neg = torch.randperm(cfg.n_items)[:negatives].sort().values
    soft = (
        None if teacher is None or distill <= 0 else (teacher[0][mask], teacher[1][mask], distill)
    )
    return model.loss(session[mask], targets[mask], neg, extra_cols, extra_bias, soft)


def train_passes(
    model: SessionTransformer,
    examples: list[Example],
    lr: float,
    passes: int,
    batch_size: int,
    negatives: int,
    weight_decay: float,
    after_each: Callable[[int], None] | None = None,
) -> None:
    """``passes`` chronological passes over ``examples`` at ``lr`` (one optimiser), the refit's
    unit of work; ``after_each(n)`` after pass n, the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    for n in range(1, passes + 1):
        model.train()
        for lo in range(0, len(examples), batch_size):
            items, types, queries, targets = pad_examples(examples[lo : lo + batch_size])
            loss = batch_loss(model, items, types, queries, targets, negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        if after_each is not None:
            after_each(n)
