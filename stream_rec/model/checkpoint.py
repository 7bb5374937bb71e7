"""Per-epoch training checkpoints, so a stopped run continues where it stopped.

After every completed epoch the training loop writes ``checkpoint.pt`` into its run directory:
the model, the optimiser and the learning-rate schedule, both random generators (numpy's batch
order, torch's dropout and negatives), the best state so far with its score and the early-stop
count, the validation history, and the wall and CPU seconds spent. A resumed run loads it and
goes on with the next epoch, so it ends with the same model as a run that was never stopped
(same seed, same thread count). A partial epoch (a crash, a kill, the time cap) is never
written: resuming repeats that epoch from its start. The file is replaced atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "CHECKPOINT", "FitState", "save_checkpoint", "load_checkpoint", "selected_model", "save_fit",
    "save_weights", "load_weights",
]

CHECKPOINT = "checkpoint.pt"


@dataclass
class FitState:
    """Where the epoch loop stands after ``epoch`` completed epochs."""

    epoch: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    numpy_rng: Mapping[str, Any]  # numpy Generator.bit_generator.state
    torch_rng: torch.Tensor
    best_state: dict[str, Any] | None
    best_score: float
    best_epoch: int
    best_metrics: tuple[float, float]  # validation HR@20, MRR@20 of the best epoch
    stale: int
    finished: bool  # the loop ended (all epochs, early stop): a resume goes on to the refit
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # wall seconds of the epochs so far, all runs together
    cpu_seconds: float = 0.0
    n_items: int = 0  # checked on load: a resume over other data is refused


def save_checkpoint(directory: str | os.PathLike[str], state: FitState) -> Path:
    """Write ``state`` as ``directory/checkpoint.pt`` (a temporary file, then an atomic rename)."""
    path = Path(directory) / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CHECKPOINT}.tmp")
    torch.save(state.__dict__, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike[str], n_items: int) -> FitState | None:
    """The run's last completed epoch, or None when it has none yet."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
        state = FitState(**raw)
    except Exception as exc:  # a truncated or foreign file: say which, do not train over it
        raise ConfigError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
            "expected one written by `stream-rec train`"
        ) from exc
    if state.n_items != n_items:
        raise ConfigError(
            f"checkpoint {path} is for {state.n_items:,} items but the data gives "
            f"{n_items:,}: resume with the options and data of the run that wrote it"
        )
    return state


def selected_model(directory: str | os.PathLike[str], n_items: int) -> Any:
    """The run's selected model (its best epoch, before any refit) in eval mode, built from the
    run's options; None when the run has no checkpoint with a selected model yet."""
    from .recipes import load_options, model_config_for
    from .sasrec import SessionTransformer

    state = load_checkpoint(directory, n_items)
    if state is None or state.best_state is None:
        return None
    model = SessionTransformer(model_config_for(load_options(os.fspath(directory)), n_items))
    model.load_state_dict(state.best_state)
    return model.eval()


def save_fit(
    directory: str,
    state: FitState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.StepLR | None,
    rng: np.random.Generator,
) -> None:
    """The loop's ``state`` with the model, optimiser, schedule and generators as they are now."""
    state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
    state.scheduler = scheduler.state_dict() if scheduler is not None else None
    state.numpy_rng, state.torch_rng = rng.bit_generator.state, torch.get_rng_state()
    save_checkpoint(directory, state)


def save_weights(model: Any, path: str | os.PathLike[str]) -> None:
    """The model's config and state dict: a bundle's ``weights.pt`` (what
    :func:`stream_rec.learn.weights.load_model` reads) and a student's kept teacher."""
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict()}, path)


def load_weights(path: str | os.PathLike[str]) -> Any:
    """The model :func:`save_weights` wrote, in eval mode (tensors only: never arbitrary code)."""
    from .sasrec import SASRecConfig, SessionTransformer

    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = SessionTransformer(SASRecConfig(**raw["config"]))
    model.load_state_dict(raw["state_dict"])
    return model.eval()
