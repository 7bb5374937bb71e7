"""Session encoders: a padded batch of sessions in, one vector per session out.

Implementations: :class:`OnnxEncoder` (ONNX Runtime, CUDA provider when a GPU is
usable, else CPU) for serving, and ``stream_rec.model.TorchEncoder`` (PyTorch
reference; needs the ``train`` extra) for training and parity tests.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .features import ModelInputs

__all__ = ["SessionEncoder"]


@runtime_checkable
class SessionEncoder(Protocol):
    """Encodes sessions into vectors whose inner product with item vectors is the score."""

    @property
    def dim(self) -> int: ...

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        """(B, L) left-padded inputs -> (B, dim) float32 session vectors."""
        ...
