"""The trainable model behind a bundle: its ``weights.pt``, or a training run's checkpoint.

Bundles written since 2026-12-05 carry ``weights.pt`` (config and state dict). For an older
bundle, ``checkpoint_dir`` (the run directory `stream-rec train` printed) gives the run's selected
model: the model *before* its refit pass on the validation slice, so close to, not equal to, the
served one (the caller is told which it got).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleError, ConfigError
from ..model.sasrec import SessionTransformer
from ..serving.bundle import WEIGHTS, ModelBundle

__all__ = ["load_model", "model_source"]


def load_model(bundle: ModelBundle, checkpoint_dir: str | Path | None = None) -> SessionTransformer:
    """``bundle``'s model in PyTorch (eval mode), from its weights or from ``checkpoint_dir``."""
    path = bundle.path / WEIGHTS
    if path.is_file():
        from ..model.checkpoint import load_weights

        try:
            model = load_weights(path)  # tensors only: never arbitrary code
        except Exception as exc:  # a truncated or foreign file
            raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    elif checkpoint_dir is not None:
        from ..model.checkpoint import selected_model

        found = selected_model(checkpoint_dir, len(bundle.vocab))
        if found is None:
            raise ConfigError(f"{checkpoint_dir} holds no checkpoint with a selected model")
        model = found
    else:
        raise ConfigError(
            f"bundle {bundle.path} has no {WEIGHTS} (written before 2026-12-05): give the run "
            "directory it was trained in (--checkpoint-dir), or train it again"
        )
    if model.config.n_items != len(bundle.vocab) or model.config.dim != bundle.dim:
        raise BundleError(
            f"the weights are for {model.config.n_items:,} items of dim {model.config.dim}; the "
            f"bundle has {len(bundle.vocab):,} of dim {bundle.dim}"
        )
    return model.eval()


def model_source(bundle: ModelBundle) -> str:
    """Where :func:`load_model` takes the weights from: "bundle" or "checkpoint"."""
    return "bundle" if (bundle.path / WEIGHTS).is_file() else "checkpoint"
