"""The session Transformer: model, training, ONNX export and bundle writing.

``sasrec``, ``train``, ``loss`` and ``export`` need the ``train`` extra (torch); ``build`` (the
training recipes) and ``bundle_writer`` import it only when they train or export, so importing
this package loads no torch: the names below are resolved on first use. Serving code never
imports this package; it loads the exported ONNX graph through :mod:`stream_rec.serving.bundle`
and :class:`stream_rec.runtime.encoder.OnnxEncoder`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .export import check_onnx_parity, export_onnx
    from .sasrec import SASRecConfig, SessionTransformer
    from .torch_encoder import TorchEncoder
    from .train import TrainConfig, TrainMetrics, build_vocab, item_popularity, train_model

_HOME = {
    "SASRecConfig": "sasrec",
    "SessionTransformer": "sasrec",
    "TorchEncoder": "torch_encoder",
    "TrainConfig": "train",
    "TrainMetrics": "train",
    "build_vocab": "train",
    "item_popularity": "train",
    "train_model": "train",
    "export_onnx": "export",
    "check_onnx_parity": "export",
}

__all__ = [
    "SASRecConfig",
    "SessionTransformer",
    "TorchEncoder",
    "TrainConfig",
    "TrainMetrics",
    "build_vocab",
    "item_popularity",
    "train_model",
    "export_onnx",
    "check_onnx_parity",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
