"""Where the Diginetica files are: the data root (``$STREAM_REC_DATA_ROOT``) and its subfolder."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import DataError

__all__ = ["DATA_ROOT_ENV", "data_root", "diginetica_dir", "require_file"]

DATA_ROOT_ENV = "STREAM_REC_DATA_ROOT"


def data_root(root: str | Path | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$STREAM_REC_DATA_ROOT``, else
    ``../shared/data`` relative to the repository root."""
    if root is None:
        root = (
            os.environ.get(DATA_ROOT_ENV)
            or Path(__file__).resolve().parents[3].parent / "shared" / "data"
        )
    return Path(root)


def diginetica_dir(root: str | Path | None = None) -> Path:
    return data_root(root) / "diginetica"


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"{what} not found at {str(path)!r}; set {DATA_ROOT_ENV} or pass the data root"
        )
    return path
