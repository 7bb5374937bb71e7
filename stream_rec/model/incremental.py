"""Incremental encoding: a new event costs one position, not the whole session (issue 25).

Two ONNX graphs, exported beside ``encoder.onnx`` when the model allows it (the core readout,
forward positions, no repeat head, no recency bias; see :func:`unsupported`):

``encoder_cache.onnx`` -- the full session, as ``encoder.onnx``, plus every position's cache::

    items (B, L) int64, types (B, L) int64, queries (B, L, 3) int64   left-padded
    -> session (B, D) float32, k0, v0, k1, v1, ..., rkey (B, L, D) float32, aux (B, L, 2) float32

``encoder_step.onnx`` -- one new event on top of a cached prefix::

    item (B,) int64, type (B,) int64, query (B, 3) int64, idx (B, P) int64 (slab rows of the
    past positions, right-padded), past_len (B,) int64,
    slab_k0, slab_v0, ..., slab_rkey (N, D), slab_aux (N, 2)
    -> session (B, D) float32, k0, v0, ..., rkey (B, D), aux (B, 2): the new position's parts

A position's cache holds what a later position reads from it: each block's attention key and
value, the readout's key, and ``aux`` (its weight logit and item row, a float: exact below 2**24
rows), one graph output (B, L, D) per part. The step graph takes the cache as one slab per part,
(N, D) rows shared by every cached user, and the row numbers ``idx`` (B, P) of each session's
positions: ONNX Runtime reads the slabs in place, so a step copies only the rows it attends to.
With forward positions a new event changes no earlier position's state (the model is causal and
positions count from the first event), so a step equals the full encoding of the longer prefix;
:func:`check_incremental_parity` measures it.
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

from ..core.features import MAX_QUERY_TOKENS
from ..errors import BundleError
from ..serving.bundle import INCREMENTAL_CACHE, INCREMENTAL_STEP
from .export import OPSET, random_inputs
from .sasrec import _MASKED, Block, SessionTransformer

__all__ = [
    "CACHE_FILE",
    "STEP_FILE",
    "part_names",
    "unsupported",
    "CacheGraph",
    "StepGraph",
    "export_incremental",
    "check_incremental_parity",
]

CACHE_FILE, STEP_FILE = INCREMENTAL_CACHE, INCREMENTAL_STEP
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
    session = torch.where(any_item, summed, h)  # no item yet: the output itself
    return F.normalize(session, dim=-1) if model.config.normalize else session


def part_names(model: SessionTransformer) -> list[str]:
    """The cache's parts, in graph order: each block's keys and values, the readout keys, and
    ``aux`` (weight logit, item row)."""
    return [f"{kind}{i}" for i in range(model.config.n_layers) for kind in ("k", "v")] + [
        "rkey",
        "aux",
    ]


class CacheGraph(nn.Module):
    """The full encoding of left-padded sessions, and every position's cache parts."""

    def __init__(self, model: SessionTransformer):
        super().__init__()
        self.model = model

    def forward(
        self, items: torch.Tensor, types: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        m = self.model
        b, length = items.shape
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        h = m.hidden(items, types, queries, kv=kv)  # (B, L, D)
        summed = m._core_readout(h, items, last_only=True)[:, -1]  # (B, D); h itself when no item
        session = F.normalize(summed, dim=-1) if m.config.normalize else summed
        parts = []
        for k, v in kv:  # (B, H, L, Dh) each -> (B, L, D)
            parts += [
                k.transpose(1, 2).reshape(b, length, -1),
                v.transpose(1, 2).reshape(b, length, -1),
            ]
        rkey = m.weight_key(h) if m.config.attend else torch.zeros_like(h)  # (B, L, D)
        aux = torch.cat((m.weight_logit(h), items.to(h.dtype).unsqueeze(-1)), dim=-1)  # (B, L, 2)
        return (session, *parts, rkey, aux)


class StepGraph(nn.Module):
    """One new event per session on top of its cached positions, gathered from the cache's
    slabs (one (N, D) or (N, 2) tensor per part) by row numbers ``idx``."""

    def __init__(self, model: SessionTransformer):
        super().__init__()
        self.model = model

    def forward(
        self,
        item: torch.Tensor,
        type_: torch.Tensor,
        query: torch.Tensor,
        idx: torch.Tensor,
        past_len: torch.Tensor,
        *slabs: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m, cfg = self.model, self.model.config
        b, p = idx.shape
        d, n_heads = cfg.dim, cfg.n_heads
        dh = d // n_heads
        pos = past_len.clamp(max=cfg.max_len - 1)  # forward position = events before this one
        x = (
            m.item_emb(item) + m.type_emb(type_) + m.query_emb(query).sum(dim=1) + m.pos_emb(pos)
        )  # (B, D)
        real = torch.arange(p, device=idx.device).unsqueeze(0) < past_len.unsqueeze(1)  # (B, P)
        attend = torch.cat((real, torch.ones_like(real[:, :1])), dim=1)  # (B, P + 1)
        # Additive masks: ONNX Runtime's broadcasting Where costs more than this step's Gemms.
        hide = ((~attend).to(torch.float32) * _MASKED).unsqueeze(-1)  # (B, P + 1, 1)
        new = []
        for i, block in enumerate(cast(list[Block], list(m.blocks))):
            qkv = block.attn.qkv(block.ln1(x)).view(b, 3, n_heads, dh)  # (B, 3, H, Dh)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (B, H, Dh)
            pk = slabs[2 * i][idx].view(b, p, n_heads, dh)  # (B, P, H, Dh)
            pv = slabs[2 * i + 1][idx].view(b, p, n_heads, dh)
            keys = torch.cat((pk, k.unsqueeze(1)), dim=1)  # (B, P + 1, H, Dh)
            values = torch.cat((pv, v.unsqueeze(1)), dim=1)
            scores = (keys * q.unsqueeze(1)).sum(dim=-1) / math.sqrt(dh)  # (B, P + 1, H)
            weights = torch.softmax(scores + hide, dim=1)
            y = (weights.unsqueeze(-1) * values).sum(dim=1).reshape(b, d)  # (B, D)
            x = x + block.attn.out(y)
            x = x + block.ffn(block.ln2(x))
            new += [k.reshape(b, d), v.reshape(b, d)]
        h = m.ln_out(x)  # (B, D)
        logit = m.weight_logit(h)  # (B, 1)
        rkey = m.weight_key(h) if cfg.attend else torch.zeros_like(h)  # (B, D)
        aux = slabs[-1][idx]  # (B, P, 2): weight logit, item row
        items = torch.cat(
            (aux[..., 1].round().long() * real, item.unsqueeze(1)), dim=1
        )  # (B, P + 1)
        scores = torch.cat((aux[..., 0], logit), dim=1)  # (B, P + 1)
        if cfg.attend:
            keys = torch.cat((slabs[-2][idx], rkey.unsqueeze(1)), dim=1)  # (B, P + 1, D)
            scores = scores + (keys * m.weight_query(h).unsqueeze(1)).sum(dim=-1) / d**0.5
        allowed = items > 0
        mask = allowed.to(torch.float32)
        weights = torch.softmax(scores + (1.0 - mask) * _MASKED, dim=-1) * mask  # (B, P + 1)
        summed = (weights.unsqueeze(-1) * m.item_emb(items)).sum(dim=1)  # (B, D)
        session = _session(m, summed, allowed.any(dim=-1, keepdim=True), h)
        new += [rkey, torch.cat((logit, item.to(h.dtype).unsqueeze(1)), dim=1)]
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


def export_incremental(
    model: SessionTransformer, directory: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``encoder_cache.onnx`` and ``encoder_step.onnx`` of ``model`` into ``directory``."""
    import onnx

    reason = unsupported(model)
    if reason is not None:
        raise BundleError(f"this model cannot be encoded incrementally: {reason}")
    directory = Path(directory)
    names = part_names(model)
    was_training = model.training
    model.eval()
    try:
        ex = random_inputs(
            model.config.n_items, model.config.query_buckets, batch=2, length=5, seed=0
        )
        full = tuple(torch.from_numpy(a) for a in (ex.items, ex.types, ex.queries))
        dyn = {0: "batch", 1: "length"}
        _export(
            CacheGraph(model),
            full,
            directory / CACHE_FILE,
            ["items", "types", "queries"],
            ["session", *names],
            {
                "items": dyn,
                "types": dyn,
                "queries": dyn,
                "session": {0: "batch"},
                **{n: dyn for n in names},
            },
        )
        with torch.no_grad():
            parts = CacheGraph(model)(*full)[1:]  # (2, 5, D) each
        slabs = tuple(part.reshape(10, -1) for part in parts)  # rows 0..9
        idx = torch.tensor([[0, 1, 2, 3], [5, 6, 0, 0]])
        step = (full[0][:, -1], full[1][:, -1], full[2][:, -1], idx, torch.tensor([4, 2]), *slabs)
        batch = {0: "batch"}
        _export(
            StepGraph(model),
            step,
            directory / STEP_FILE,
            ["item", "type", "query", "idx", "past_len", *(f"slab_{n}" for n in names)],
            ["session", *names],
            {
                "item": batch,
                "type": batch,
                "query": batch,
                "idx": {0: "batch", 1: "past"},
                "past_len": batch,
                "session": batch,
                **{f"slab_{n}": {0: "rows"} for n in names},
            },
        )
    finally:
        model.train(was_training)
    for name in (CACHE_FILE, STEP_FILE):
        onnx.checker.check_model(onnx.load(str(directory / name)), full_check=True)
    return directory / CACHE_FILE, directory / STEP_FILE


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
    items, searches); raises :class:`BundleError` above ``atol``."""
    from ..core.features import ModelInputs
    from ..runtime.incremental import IncrementalEncoder
    from .sasrec import TorchEncoder

    directory = Path(directory)
    enc = IncrementalEncoder(
        directory / CACHE_FILE,
        directory / STEP_FILE,
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
    for t in range(1, length + 1):
        prefix = ModelInputs(full.items[:, :t], full.types[:, :t], full.queries[:, :t])
        if t == 1 + length // 2:  # half the sessions restart from a cache miss mid-way
            for key in keys[::2]:
                enc.forget(key)
        got = enc.encode_keyed(keys, prefix)
        want = reference.encode(prefix)
        worst = max(worst, float(np.abs(got - want).max()))
    if enc.stats()["steps"] == 0:
        raise BundleError("incremental parity check: no step was taken")
    if not worst <= atol:
        raise BundleError(
            f"incremental encoder differs from PyTorch by {worst:.3g} (expected <= {atol})"
        )
    assert full.queries.shape[-1] == MAX_QUERY_TOKENS
    return worst
