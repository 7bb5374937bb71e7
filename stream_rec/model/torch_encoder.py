"""The PyTorch reference :class:`~stream_rec.encoder.SessionEncoder` of a trained
:class:`~.sasrec.SessionTransformer` (eval mode, no grad): what the ONNX graphs are checked
against."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.features import MAX_QUERY_TOKENS, ModelInputs

if TYPE_CHECKING:
    from .sasrec import SessionTransformer

__all__ = ["TorchEncoder"]


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


class TorchEncoder:
    """The PyTorch reference session encoder (eval mode, no grad)."""

    def __init__(self, model: SessionTransformer):
        self.model = model

    @property
    def dim(self) -> int:
        return self.model.config.dim

    @property
    def repeat(self) -> bool:
        return self.model.config.repeat

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        return self.encode_sessions(inputs)[0]

    def encode_sessions(self, inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, D) session vectors and, with a repeat head, the (B, L) repeat bonuses."""
        if inputs.queries.shape[-1] != MAX_QUERY_TOKENS:
            raise ValueError(
                f"queries must be (B, L, {MAX_QUERY_TOKENS}); got {tuple(inputs.queries.shape)}"
            )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(
                    _as_tensor(inputs.items), _as_tensor(inputs.types), _as_tensor(inputs.queries)
                )
        finally:
            self.model.train(was_training)
        if isinstance(out, tuple):
            return _as_float(out[0]), _as_float(out[1])
        return _as_float(out), None


def _as_float(t: torch.Tensor) -> np.ndarray:
    return t.numpy().astype(np.float32, copy=False)
