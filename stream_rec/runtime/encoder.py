"""Session encoders: a padded batch of sessions in, one vector per session out.

Implementations: :class:`OnnxEncoder` (ONNX Runtime, CUDA provider when a GPU is
usable, else CPU) for serving, and ``stream_rec.model.TorchEncoder`` (PyTorch
reference; needs the ``train`` extra) for training and parity tests.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..core.features import MAX_QUERY_TOKENS, ModelInputs
from ..errors import BundleError, ConfigError

__all__ = ["OnnxEncoder", "PROVIDERS", "open_session"]

log = logging.getLogger("stream_rec.encoder")

PROVIDERS = ("auto", "cpu", "cuda")
_CUDA, _CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
# onnxruntime's own logger: 2 = warning is its default, 4 = fatal only.
_ORT_DEFAULT_SEVERITY, _ORT_FATAL = 2, 4


class OnnxEncoder:
    """A :class:`SessionEncoder` running an exported ``encoder.onnx`` with ONNX Runtime.

    ``providers``: "cuda" requires a usable CUDA provider (else :class:`ConfigError`);
    "cpu" uses the CPU provider; "auto" tries CUDA when onnxruntime lists it and falls
    back to CPU with one warning line. ``.providers`` lists the providers actually active.
    Thread counts of 0 let onnxruntime choose.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: str = "auto",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
    ):
        self._session, self.providers = open_session(path, providers, intra_op_threads, inter_op_threads)

        names = [i.name for i in self._session.get_inputs()]
        if names != ["items", "types", "queries"]:
            raise BundleError(
                f"ONNX encoder {os.fspath(path)!r} must take inputs items, types, queries; got {names}"
            )
        out = self._session.get_outputs()[0]
        if len(out.shape) != 2 or not isinstance(out.shape[1], int):
            raise BundleError(
                f"ONNX encoder {os.fspath(path)!r} must output (batch, dim) with a fixed dim; "
                f"got shape {out.shape}"
            )
        self._dim = int(out.shape[1])
        outputs = [o.name for o in self._session.get_outputs()]
        # A second output "repeat" (B, L): the repeat head's logit bonus per position.
        self.repeat = outputs[1:] == ["repeat"]
        if len(outputs) > 1 and not self.repeat:
            raise BundleError(
                f"ONNX encoder {os.fspath(path)!r} must output session[, repeat]; got {outputs}"
            )
        self._outputs = outputs[:2]

    def input_shapes(self) -> list[list[int | str | None]]:
        """The ONNX inputs' declared shapes (a str or None for a dynamic axis)."""
        return [list(i.shape) for i in self._session.get_inputs()]

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, inputs: ModelInputs) -> np.ndarray:
        return self.encode_sessions(inputs)[0]

    def encode_sessions(self, inputs: ModelInputs) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, dim) session vectors and, with a repeat head, the (B, L) repeat bonuses."""
        if inputs.queries.ndim != 3 or inputs.queries.shape[-1] != MAX_QUERY_TOKENS:
            raise ValueError(
                f"queries must be (B, L, {MAX_QUERY_TOKENS}); got {tuple(inputs.queries.shape)}"
            )
        if len(inputs) == 0:
            empty = np.zeros((0, self._dim), np.float32)
            return empty, (np.zeros((0, inputs.items.shape[1]), np.float32) if self.repeat else None)
        feed = {
            "items": np.ascontiguousarray(inputs.items, dtype=np.int64),
            "types": np.ascontiguousarray(inputs.types, dtype=np.int64),
            "queries": np.ascontiguousarray(inputs.queries, dtype=np.int64),
        }
        out = self._session.run(self._outputs, feed)
        vectors = np.asarray(out[0], dtype=np.float32)
        return vectors, (np.asarray(out[1], dtype=np.float32) if self.repeat else None)


def open_session(
    path: str | os.PathLike[str], providers: str = "auto", intra_op_threads: int = 0, inter_op_threads: int = 0
) -> tuple[Any, list[str]]:
    """An ONNX Runtime session of ``path`` and the providers actually active (see OnnxEncoder)."""
    import onnxruntime as ort  # not needed to import this module

    if providers not in PROVIDERS:
        raise ConfigError(f"encoder providers must be 'auto', 'cpu' or 'cuda'; got {providers!r}")
    if not os.path.isfile(path):
        raise BundleError(f"ONNX encoder file {os.fspath(path)!r} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3  # errors only from the session itself

    available = ort.get_available_providers()
    want_cuda = providers == "cuda" or (providers == "auto" and _CUDA in available)
    if providers == "cuda" and _CUDA not in available:
        raise ConfigError(
            f"encoder providers='cuda' but this onnxruntime offers only {', '.join(available)}"
        )
    requested = [_CUDA, _CPU] if want_cuda else [_CPU]
    if want_cuda:
        # A CUDA provider that cannot load (no GPU, no cuDNN) logs several error lines
        # from onnxruntime's process-wide logger; we report the outcome in one line below.
        ort.set_default_logger_severity(_ORT_FATAL)
    try:
        session = ort.InferenceSession(os.fspath(path), options, providers=requested)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise BundleError(f"cannot load ONNX encoder {os.fspath(path)!r}: {exc}") from exc
    finally:
        if want_cuda:
            ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    active: list[str] = list(session.get_providers())
    if want_cuda and _CUDA not in active:
        if providers == "cuda":
            raise ConfigError(
                "encoder providers='cuda' but the CUDA provider could not start "
                f"(no GPU or missing CUDA/cuDNN libraries); active: {', '.join(active)}"
            )
        log.warning("onnxruntime: CUDA unavailable, using %s", _CPU)
    return session, active
