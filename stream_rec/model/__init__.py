"""The session Transformer: model, training and ONNX export (needs the ``train`` extra: torch).

Serving code never imports this package; it loads the exported ONNX graph through
:mod:`stream_rec.bundle` and :class:`stream_rec.encoder.OnnxEncoder`.
"""

from .export import check_onnx_parity, export_onnx
from .sasrec import SASRecConfig, SessionTransformer, TorchEncoder
from .train import TrainConfig, TrainMetrics, build_vocab, item_popularity, train_model

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
