"""A seeded, generated shop and its shoppers' event stream, and JSONL event files.

- :mod:`.config`: :class:`GeneratorConfig`, the size of the shop and how shoppers behave.
- :mod:`.catalogue`: :class:`Catalogue`, the shop (categories, popularity, related items, words).
- :mod:`.stream`: :class:`EventGenerator`, shoppers' sessions as time-ordered events and records.
- :mod:`.invalid`: :func:`invalid_record`, one corrupt record per kind of :data:`INVALID_KINDS`.
- :mod:`.jsonl`: :func:`write_jsonl` and :func:`read_jsonl`, the file event source and sink.
"""

from .catalogue import Catalogue
from .config import GeneratorConfig
from .invalid import INVALID_KINDS, invalid_record
from .jsonl import read_jsonl, write_jsonl
from .stream import EventGenerator

__all__ = [
    "GeneratorConfig",
    "Catalogue",
    "EventGenerator",
    "INVALID_KINDS",
    "invalid_record",
    "write_jsonl",
    "read_jsonl",
]
