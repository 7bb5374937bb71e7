"""Fixtures for the unit tier (the broker fixtures of ``tests/conftest.py`` apply too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module: fast and steady on a shared CPU (no OpenMP spin-waiting).

    Not autouse: a module that trains or runs a model asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``, so the others never import torch.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
