"""Softmax cross-entropy over the whole catalogue, fused for CPU training, and its sampled form.

Why fused: with ~43k items, ``F.cross_entropy(scale * s @ W.T, t)`` spends most of a
training step outside the three matrix products it needs: a scale pass, a
log-softmax pass, its backward pass and a zero-filled one-hot gradient, each over
the (N, n_items) matrix (profiled: ~60% of a step at batch 128 on 2 cores).
:func:`logsumexp_rows` computes the per-row normaliser and its gradients touching that
matrix only in the products, one in-place ``exp`` and one row sum; row scalings are
applied to the small (N, D) and (n_items, D) operands instead.

Why sampled: even fused, the catalogue products are ~90% of a step on a CPU.
:func:`session_cross_entropy` with ``negatives`` estimates the same normaliser from ``K``
negatives drawn uniformly without replacement and shared by the batch (each weighted by
``(V - 1) / K``),
so a step costs ``K / V`` of the products. With several thousand negatives it trains to
the same quality (QUALITY.md: SASRec with 3,000 negatives matched full cross-entropy) in a
fraction of the time, so more epochs fit into the same CPU budget.

It takes optional per-row *extra* logit terms on a few columns (the repeat scores of the
session's own items): ``extra_cols`` (N, M) with ``extra_bias`` (N, M) adds ``bias`` to the
logit of that column (masked entries have column -1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["softmax_cross_entropy", "logsumexp_rows", "session_cross_entropy", "used_columns"]

_MAX_BOUND = 40.0


class _LogSumExpRows(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, session: torch.Tensor, items: torch.Tensor, bound: float | None
    ) -> torch.Tensor:
        # session (N, D) already scaled; items (V, D) -> (N,) log sum_v exp(session @ items[v]).
        if bound is None:  # no known bound on the logits: shift each row by its max
            logits = session @ items.T  # (N, V)
            shift = logits.max(dim=1, keepdim=True).values  # (N, 1)
            logits.sub_(shift)
        else:  # |logit| <= bound (scaled cosines): one shift for all, folded into the product
            shift = torch.full((session.shape[0], 1), bound, dtype=session.dtype)
            logits = torch.addmm(-shift[:1], session, items.T)  # (N, V) = s @ W.T - bound
        exp = logits.exp_()  # (N, V), in place
        total = exp.sum(dim=1)  # (N,)
        ctx.save_for_backward(session, items, exp, total)
        return shift.squeeze(1) + total.log()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # type: ignore[override]
        session, items, exp, total = ctx.saved_tensors
        row = grad / total  # (N,): d lse_n / d logit_nv = softmax_nv
        grad_session = (exp @ items) * row.unsqueeze(1)  # (N, D)
        grad_items = exp.T @ (session * row.unsqueeze(1))  # (V, D)
        return grad_session, grad_items, None


def logsumexp_rows(session: torch.Tensor, items: torch.Tensor, bound: float | None = None) -> torch.Tensor:
    """(N,) ``logsumexp(session @ items.T, dim=1)`` without materialising more than one (N, V) matrix.

    ``bound``, when given, must bound every logit's absolute value (e.g. the scale of cosine
    scores); it saves a pass.
    """
    if session.shape[0] == 0:
        raise ValueError("logsumexp_rows needs at least one row")
    if bound is not None and bound > _MAX_BOUND:  # exp(-2 * bound) would underflow float32
        bound = None
    return _LogSumExpRows.apply(session, items, bound)


def softmax_cross_entropy(
    session: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, bound: float | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``softmax(session @ items.T)`` against ``targets``.

    ``session`` (N, D) and ``items`` (V, D) are the (already scaled) operands of the
    logits; ``targets`` (N,) are column indices. Equal to
    ``F.cross_entropy(session @ items.T, targets)`` in value and gradients.
    """
    if session.shape[0] == 0:
        raise ValueError("softmax_cross_entropy needs at least one row")
    target_logit = (session * items[targets]).sum(dim=1)  # (N,)
    return (logsumexp_rows(session, items, bound) - target_logit).mean()


def session_cross_entropy(
    session: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    *,
    bound: float | None = None,
    negatives: torch.Tensor | None = None,
    extra_cols: torch.Tensor | None = None,
    extra_bias: torch.Tensor | None = None,
    soft_cols: torch.Tensor | None = None,
    soft_probs: torch.Tensor | None = None,
    soft_weight: float = 0.0,
    catalogue: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy with logits ``session @ items.T`` (+ ``extra_bias`` on ``extra_cols``).

    Full softmax when ``negatives`` is None, else the sampled estimate (``negatives`` sorted,
    distinct). ``extra_cols`` (N, M) must list each column at most once per row (-1 = unused).
    With ``soft_cols`` / ``soft_probs`` (N, C; a teacher's distribution, -1 / 0 = unused) the
    target is ``(1 - soft_weight)`` the one-hot next item plus ``soft_weight`` the teacher's
    distribution (rows without a teacher keep the one-hot); sampled, the teacher's columns join
    the normaliser exactly. Sampled, ``items`` may hold only the columns read (every index
    remapped to its rows) when ``catalogue`` gives the catalogue's size.
    """
    if session.shape[0] == 0:
        raise ValueError("session_cross_entropy needs at least one row")
    soft_term = has_soft = None
    if soft_cols is not None and soft_probs is not None and soft_weight > 0:
        used_soft = soft_cols >= 0
        soft_logit = torch.einsum("nd,ncd->nc", session, items[soft_cols.clamp(min=0)])  # (N, C)
        soft_term = (soft_probs * used_soft * soft_logit).sum(dim=1)  # (N,)
        has_soft = used_soft.any(dim=1)
        if negatives is not None and extra_cols is None:  # count the teacher's columns exactly
            extra_cols, extra_bias = soft_cols, torch.zeros_like(soft_probs)
    lse, target_logit = _lse_and_target(
        session, items, targets, bound, negatives, extra_cols, extra_bias, catalogue
    )
    if soft_term is not None and has_soft is not None:
        weight = soft_weight * has_soft.to(session.dtype)  # (N,)
        target_logit = (1.0 - weight) * target_logit + weight * soft_term
    return (lse - target_logit).mean()


def _lse_and_target(
    session: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    bound: float | None,
    negatives: torch.Tensor | None,
    extra_cols: torch.Tensor | None,
    extra_bias: torch.Tensor | None,
    catalogue: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) normaliser (log-sum-exp over the catalogue, exact or sampled) and target logits."""
    target_logit = (session * items[targets]).sum(dim=1)  # (N,)
    if extra_cols is None or extra_bias is None:
        if negatives is None:
            return logsumexp_rows(session, items, bound), target_logit
        # Sampled without extra columns: the general path below with none.
        extra_cols = torch.zeros((session.shape[0], 0), dtype=torch.int64)
        extra_bias = torch.zeros((session.shape[0], 0), dtype=session.dtype)
    used = extra_cols >= 0  # (N, M)
    cols = extra_cols.clamp(min=0)
    extra_logit = torch.einsum("nd,nmd->nm", session, items[cols])  # (N, M)
    on_target = used & (extra_cols == targets.unsqueeze(1))  # (N, M)
    target_logit = target_logit + (extra_bias * on_target).sum(dim=1)
    if negatives is None:
        # Replace exp(l) by exp(l + b) for each extra column: lse += log1p(sum p_j (e^b_j - 1)).
        lse = logsumexp_rows(session, items, bound)
        share = torch.exp(extra_logit - lse.unsqueeze(1)) * torch.expm1(extra_bias)
        return lse + torch.log1p((share * used).sum(dim=1).clamp(min=-1 + 1e-6)), target_logit
    # Sampled: the target and the extra columns exactly, the negatives for everything else.
    v, k = catalogue or items.shape[0], negatives.shape[0]
    neg_logits = session @ items[negatives].T + math.log((v - 1) / k)  # (N, K)
    hits = torch.zeros(neg_logits.shape, dtype=torch.int64)
    for c, use in ((targets.unsqueeze(1), torch.ones_like(targets.unsqueeze(1), dtype=torch.bool)),
                   (cols, used)):
        pos = torch.searchsorted(negatives, c).clamp(max=k - 1)  # (N, M)
        hits.scatter_add_(1, pos, (use & (negatives[pos] == c)).long())
    taken = hits > 0  # (N, K): a negative that is the target or an extra column of its row
    neg_logits = neg_logits.masked_fill(taken, -math.inf)
    extra = (extra_logit + extra_bias).masked_fill(~used | on_target, -math.inf)
    lse = torch.logsumexp(torch.cat((target_logit.unsqueeze(1), extra, neg_logits), dim=1), dim=1)
    return lse, target_logit


def used_columns(
    cols: Sequence[torch.Tensor | None],
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The distinct columns ``cols`` read (sorted; -1 = unused, None = absent) and each of
    ``cols`` remapped to their rows, in column order (sorted negatives stay sorted): a sampled
    loss then needs a table of those rows only (``catalogue`` = the catalogue's size)."""
    present = [c for c in cols if c is not None]
    used = torch.unique(torch.cat([c[c >= 0].reshape(-1) for c in present]))
    mapped = [
        None if c is None else torch.where(c >= 0, torch.searchsorted(used, c.clamp(min=0)), -1)
        for c in cols
    ]
    return used, mapped
