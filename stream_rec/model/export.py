"""Export a :class:`SessionTransformer` to ONNX and check it against PyTorch with ONNX Runtime.

Graph contract (what :class:`stream_rec.runtime.encoder.OnnxEncoder` feeds and reads)::

    items   (B, L)    int64     types (B, L) int64     queries (B, L, 3) int64
    session (B, D)    float32   B and L dynamic
    repeat  (B, L)    float32   only with a repeat head: the logit bonus of each position's item
                                (meaningful at its item's most recent occurrence)

The default exporter is the TorchScript one (``dynamo=False``): on torch 2.13 it
exports this model in ~0.3 s without log noise, against ~5 s for the dynamo
exporter. Both give the same graph contract; ``exporter="dynamo"`` is covered by
the parity tests, so switching is one argument when the TorchScript path goes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..core.features import MAX_QUERY_TOKENS, PURCHASE, SEARCH, ModelInputs
from ..errors import BundleError
from .sasrec import SessionTransformer
from .torch_encoder import TorchEncoder

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "REPEAT_OUTPUT",
    "OPSET",
    "export_onnx",
    "random_inputs",
    "check_onnx_parity",
]

INPUT_NAMES = ("items", "types", "queries")
OUTPUT_NAME = "session"
REPEAT_OUTPUT = "repeat"
OPSET = 17
Exporter = Literal["torchscript", "dynamo"]


def _example_inputs(model: SessionTransformer) -> tuple[torch.Tensor, ...]:
    # Length 5 (not 0/1) so the exporter does not specialise dynamic dimensions.
    inputs = random_inputs(model.config.n_items, model.config.query_buckets, batch=2, length=5, seed=0)
    return tuple(torch.from_numpy(a) for a in (inputs.items, inputs.types, inputs.queries))


def export_onnx(model: SessionTransformer, path: str | os.PathLike[str], exporter: Exporter = "torchscript") -> Path:
    """Write ``model`` (in eval mode) as a single self-contained ONNX file; returns the path."""
    import onnx  # training extra only

    path = Path(path)
    was_training = model.training
    model.eval()
    args = _example_inputs(model)
    outputs = [OUTPUT_NAME, REPEAT_OUTPUT] if model.config.repeat else [OUTPUT_NAME]
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates the TorchScript exporter; the choice is documented above.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", category=DeprecationWarning, message="The feature will be removed")
            if exporter == "torchscript":
                dyn = {0: "batch", 1: "length"}
                torch.onnx.export(
                    model,
                    args,
                    str(path),
                    input_names=list(INPUT_NAMES),
                    output_names=outputs,
                    dynamic_axes={"items": dyn, "types": dyn, "queries": dyn, OUTPUT_NAME: {0: "batch"},
                                  **({REPEAT_OUTPUT: dyn} if model.config.repeat else {})},
                    opset_version=OPSET,
                    dynamo=False,
                )
            elif exporter == "dynamo":
                # Internal deprecations of torch.export (reported from typing_extensions) and
                # notes about merged dynamic axis names: nothing a caller can act on.
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
                warnings.filterwarnings("ignore", category=UserWarning, message=".*axis name")
                batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=4096)
                dims = {0: batch, 1: length}
                program = torch.onnx.export(
                    model,
                    args,
                    input_names=list(INPUT_NAMES),
                    output_names=outputs,
                    dynamic_shapes=(dims, dims, dims),
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
                assert program is not None
                program.save(str(path), external_data=False)
            else:
                raise ValueError(f"exporter must be 'torchscript' or 'dynamo'; got {exporter!r}")
    finally:
        model.train(was_training)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def random_inputs(
    n_items: int, query_buckets: int, batch: int, length: int, seed: int, lengths: Sequence[int] | None = None
) -> ModelInputs:
    """A left-padded batch of random sessions with every event type, queries and unknown items.

    ``lengths`` gives each session's real length (default: random in 1..length).
    """
    rng = np.random.default_rng(seed)
    if lengths is None:
        lengths = rng.integers(1, length + 1, size=batch).tolist()
    items = np.zeros((batch, length), np.int64)
    types = np.zeros((batch, length), np.int64)
    queries = np.zeros((batch, length, MAX_QUERY_TOKENS), np.int64)
    for b, n in enumerate(lengths):
        t = rng.integers(1, PURCHASE + 1, size=n)
        it = rng.integers(0, n_items + 1, size=n)  # 0 here: an item outside the vocabulary
        it[t == SEARCH] = 0
        q = rng.integers(0, query_buckets, size=(n, MAX_QUERY_TOKENS))
        q[t != SEARCH] = 0
        items[b, length - n :], types[b, length - n :], queries[b, length - n :] = it, t, q
    return ModelInputs(items=items, types=types, queries=queries)


def check_onnx_parity(
    model: SessionTransformer,
    path: str | os.PathLike[str],
    shapes: Sequence[tuple[int, int]] = ((1, 1), (3, 7), (8, 50)),
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch on random padded batches.

    Raises :class:`BundleError` when it exceeds ``atol``.
    """
    from ..runtime.encoder import OnnxEncoder

    onnx_enc, torch_enc = OnnxEncoder(path, providers="cpu"), TorchEncoder(model)
    worst = 0.0
    for i, (b, length) in enumerate(shapes):
        inputs = random_inputs(model.config.n_items, model.config.query_buckets, b, length, seed + i)
        (got, got_repeat), (want, want_repeat) = (
            onnx_enc.encode_sessions(inputs), torch_enc.encode_sessions(inputs))
        worst = max(worst, float(np.abs(got - want).max()))
        if (got_repeat is None) != (want_repeat is None):
            raise BundleError(f"ONNX encoder {path}: repeat output present in one of ONNX and PyTorch only")
        if got_repeat is not None and want_repeat is not None:
            worst = max(worst, float(np.abs(got_repeat - want_repeat).max()))
    if not worst <= atol:
        raise BundleError(f"ONNX encoder {path} differs from PyTorch by {worst:.3g} (expected <= {atol})")
    return worst
