"""Incremental encoding: a new event costs one position, not the whole session (issue 25).

One ONNX graph, ``encoder_step.onnx``, exported beside ``encoder.onnx`` when the model allows it
(the core readout, forward positions, no repeat head, no recency bias; see :func:`unsupported`):
a session's new events on top of its cached positions::

    items, types (B, T) int64, queries (B, T, 3) int64   new events, right-padded
    new_len (B,) int64                                    real new events per session
    idx (B, P) int64, past_len (B,) int64                 slab rows of the cached positions
    slab_k0, slab_v0, ..., slab_rkey (N, D), slab_aux (N, 2)   the cache (every user's rows)
    -> session (B, T, D): the session vector after each new event
       k0, v0, ..., rkey (B, T, D), aux (B, T, 2): the new positions' cache parts

A position's cache holds what a later position reads from it: each block's attention key and
value, the readout's key, and ``aux`` (its weight logit and item row, a float: exact below 2**24
rows). ONNX Runtime reads the slabs in place, so a step copies only the rows it attends to. A
session seen afresh is the same graph with no cached position (``past_len`` 0), and several
events of one user in a batch are one row of it. With forward positions a new event changes no
earlier position's state (the model is causal and positions count from the first event), so the
result equals the full encoding of every prefix; :func:`check_incremental_parity` measures it.
:class:`stream_rec.runtime.incremental.IncrementalEncoder` keeps the caches per user.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BundleError
from ..serving.bundle import INCREMENTAL_STEP
from .export import OPSET, random_inputs
from .sasrec import _MASKED, Block, SessionTransformer

__all__ = [
    "STEP_FILE",
    "part_names",
    "unsupported",
    "StepGraph",
    "export_incremental",
    "check_incremental_parity",
]

STEP_FILE = INCREMENTAL_STEP
_MAX_ROWS = 1 << 24  # item rows travel as float32 in the cache


def unsupported(model: SessionTransformer) -> str | None:
    """Why ``model`` cannot be encoded incrementally, or None when it can."""
    cfg = model.config
    if cfg.readout != "core":
        return "the last-output readout (only the core readout is incremental)"
    if cfg.positions != "forward":
        return "reverse positions (a new event moves every earlier position)"
    if cfg.repeat:
        return "a repeat head"
    if cfg.recency:
        return "a recency bias"
    if cfg.n_items + 1 >= _MAX_ROWS:
        return f"{cfg.n_items:,} items (the cache carries rows as float32)"
    return None


def _session(
    model: SessionTransformer, summed: torch.Tensor, any_item: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    # torch.where(any_item, summed, h) as arithmetic (summed is 0 without an item): ONNX
    # Runtime's broadcasting Where costs more than one block's matmuls here.
    has = any_item.to(h.dtype)
    if model.config.transition:
        summed = summed + model.transition(h) * has
    session = summed + h * (1.0 - has)  # no item yet: the output itself
    return F.normalize(session, dim=-1) if model.config.normalize else session


def part_names(model: SessionTransformer) -> list[str]:
    """The cache's parts, in graph order: each block's keys and values, the readout keys, and
    ``aux`` (weight logit, item row)."""
    return [f"{kind}{i}" for i in range(model.config.n_layers) for kind in ("k", "v")] + [
        "rkey",
        "aux",
    ]


class StepGraph(nn.Module):
    """New events on top of each session's cached positions (none for a session seen afresh),
    gathered from the cache's slabs (one (N, D) or (N, 2) tensor per part) by row numbers."""

    def __init__(self, model: SessionTransformer):
        super().__init__()
        self.model = model

    def forward(
        self,
        items: torch.Tensor,
        types: torch.Tensor,
        queries: torch.Tensor,
        new_len: torch.Tensor,
        idx: torch.Tensor,
        past_len: torch.Tensor,
        *slabs: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m, cfg = self.model, self.model.config
        b, t = items.shape
        p = idx.shape[1]
        d, n_heads = cfg.dim, cfg.n_heads
        dh = d // n_heads
        steps = torch.arange(t, device=items.device)
        pos = (past_len.unsqueeze(1) + steps.unsqueeze(0)).clamp(max=cfg.max_len - 1)  # (B, T)
        x = m.item_repr(items) + m.type_emb(types) + m.query_emb(queries).sum(dim=2)
        x = x + m.pos_emb(pos)  # (B, T, D)
        past_real = torch.arange(p, device=idx.device).unsqueeze(0) < past_len.unsqueeze(
            1
        )  # (B, P)
        new_real = steps.unsqueeze(0) < new_len.unsqueeze(1)  # (B, T): right padding after
        causal = steps.unsqueeze(0) <= steps.unsqueeze(1)  # (T, T): key s <= query t
        attend = torch.cat(
            (past_real.unsqueeze(1).expand(b, t, p), causal.unsqueeze(0) & new_real.unsqueeze(1)),
            dim=2,
        )  # (B, T, P + T)
        # Additive masks: ONNX Runtime's broadcasting Where costs more than the masked arithmetic.
        hide = ((~attend).to(torch.float32) * _MASKED).unsqueeze(1)  # (B, 1, T, P + T)
        new = []
        for i, block in enumerate(cast(list[Block], list(m.blocks))):
            qkv = block.attn.qkv(block.ln1(x)).view(b, t, 3, n_heads, dh).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, Dh)
            pk = slabs[2 * i][idx].view(b, p, n_heads, dh).transpose(1, 2)  # (B, H, P, Dh)
            pv = slabs[2 * i + 1][idx].view(b, p, n_heads, dh).transpose(1, 2)
            keys = torch.cat((pk, k), dim=2)  # (B, H, P + T, Dh)
            values = torch.cat((pv, v), dim=2)
            scores = q @ keys.transpose(-2, -1) / math.sqrt(dh) + hide  # (B, H, T, P + T)
            y = (
                (torch.softmax(scores, dim=-1) @ values).transpose(1, 2).reshape(b, t, d)
            )  # (B, T, D)
            x = x + block.attn.out(y)
            x = x + block.ffn(block.ln2(x))
            new += [k.transpose(1, 2).reshape(b, t, d), v.transpose(1, 2).reshape(b, t, d)]
        h = m.ln_out(x)  # (B, T, D)
        logit = m.weight_logit(h)  # (B, T, 1)
        rkey = m.weight_key(h) if cfg.attend else torch.zeros_like(h)  # (B, T, D)
        aux = slabs[-1][idx]  # (B, P, 2): weight logit, item row
        every = torch.cat(
            (aux[..., 1].round().long() * past_real, items * new_real), dim=1
        )  # (B, P + T)
        allowed = attend & (every > 0).unsqueeze(1)  # (B, T, P + T)
        scores = torch.cat((aux[..., 0], logit.squeeze(-1)), dim=1).unsqueeze(1)  # (B, 1, P + T)
        if cfg.attend:
            keys = torch.cat((slabs[-2][idx], rkey), dim=1)  # (B, P + T, D)
            scores = scores + m.weight_query(h) @ keys.transpose(1, 2) / d**0.5  # (B, T, P + T)
        mask = allowed.to(torch.float32)
        weights = torch.softmax(scores + (1.0 - mask) * _MASKED, dim=-1) * mask  # (B, T, P + T)
        summed = weights @ m.item_repr(every)  # (B, T, D)
        session = _session(m, summed, allowed.any(dim=-1, keepdim=True), h)
        new += [rkey, torch.cat((logit, items.to(h.dtype).unsqueeze(-1)), dim=-1)]
        return (session, *new)


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def export_incremental(model: SessionTransformer, directory: str | os.PathLike[str]) -> Path:
    """Write ``model``'s ``encoder_step.onnx`` into ``directory``; returns its path."""
    import onnx

    reason = unsupported(model)
    if reason is not None:
        raise BundleError(f"this model cannot be encoded incrementally: {reason}")
    path = Path(directory) / STEP_FILE
    names = part_names(model)
    was_training = model.training
    model.eval()
    try:
        ex = random_inputs(
            model.config.n_items, model.config.query_buckets, batch=2, length=3, seed=0
        )
        new = tuple(torch.from_numpy(a) for a in (ex.items, ex.types, ex.queries))
        d = model.config.dim
        kv = [torch.randn(8, d) for _ in names[:-1]]
        aux = torch.stack(
            (torch.randn(8), torch.arange(8.0) % model.config.n_items), dim=1
        )  # logit, row
        slabs = (*kv, aux)
        idx = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
        args = (*new, torch.tensor([3, 2]), idx, torch.tensor([4, 2]), *slabs)
        rows, steps = {0: "batch"}, {0: "batch", 1: "steps"}
        _export(
            StepGraph(model),
            args,
            path,
            [
                "items",
                "types",
                "queries",
                "new_len",
                "idx",
                "past_len",
                *(f"slab_{n}" for n in names),
            ],
            ["session", *names],
            {
                "items": steps,
                "types": steps,
                "queries": steps,
                "new_len": rows,
                "idx": {0: "batch", 1: "past"},
                "past_len": rows,
                "session": steps,
                **{n: steps for n in names},
                **{f"slab_{n}": {0: "rows"} for n in names},
            },
        )
    finally:
        model.train(was_training)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def check_incremental_parity(
    model: SessionTransformer,
    directory: str | os.PathLike[str],
    sessions: int = 24,
    max_length: int = 12,
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Max abs difference between the incremental encoder (ONNX, through its per-user cache)
    and PyTorch's full encoding, at every prefix of random sessions (every event type, unknown
    items, searches): one event at a time, several events of a user in one batch, and restarts
    from a cache miss; raises :class:`BundleError` above ``atol``."""
    from ..core.features import ModelInputs
    from ..runtime.incremental import IncrementalEncoder
    from .torch_encoder import TorchEncoder

    enc = IncrementalEncoder(
        Path(directory) / STEP_FILE,
        max_len=model.config.max_len,
        cache_bytes=64 << 20,
        providers="cpu",
    )
    reference = TorchEncoder(model)
    length = min(max_length, model.config.max_len)
    full = random_inputs(
        model.config.n_items,
        model.config.query_buckets,
        sessions,
        length,
        seed,
        lengths=[length] * sessions,
    )
    keys = [f"u{i}" for i in range(sessions)]
    worst = 0.0

    def check(rows: list[int], t: int) -> None:
        nonlocal worst
        prefix = ModelInputs(full.items[rows, :t], full.types[rows, :t], full.queries[rows, :t])
        got = enc.encode_keyed([keys[r] for r in rows], prefix)
        worst = max(worst, float(np.abs(got - reference.encode(prefix)).max()))

    half = list(range(sessions // 2))
    for t in range(1, length + 1):  # one event at a time
        check(half, t)
        if t == length // 2:
            for key in keys[: sessions // 4]:
                enc.forget(key)  # the next event is a miss
    rest = list(range(sessions // 2, sessions))
    for t in range(1, length + 1, 3):  # three events per user per batch, a user's rows together
        check([r for r in rest for _ in range(3)], t)  # (the same prefix thrice: one encoding)
        check(sorted(rest * 2), min(t + 2, length))
    if enc.stats()["steps"] == 0:
        raise BundleError("incremental parity check: no step was taken")
    if not worst <= atol:
        raise BundleError(
            f"incremental encoder differs from PyTorch by {worst:.3g} (expected <= {atol})"
        )
    return worst
