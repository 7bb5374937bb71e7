"""One root exception for the package; each message names what was expected and what came."""

from __future__ import annotations

__all__ = ["StreamRecError", "ConfigError", "BundleError", "BrokerError", "DataError"]


class StreamRecError(Exception):
    """Root of every error stream-rec raises on purpose."""


class ConfigError(StreamRecError):
    """A setting or CLI argument has a value we cannot use."""


class BundleError(StreamRecError):
    """A model bundle is missing, incomplete or inconsistent."""


class BrokerError(StreamRecError):
    """The embedded broker could not be started or reached."""


class DataError(StreamRecError):
    """An input file or data set is missing or malformed."""
