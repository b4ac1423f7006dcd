"""The errors a user can fix, each shown as one line with no traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """A mistake the user can fix (config, data, deployment): shown as one line, no traceback."""


class ConfigError(PipelineError):
    pass


class DataError(PipelineError, ValueError):
    pass


class BusyError(PipelineError):
    """Another pipeline run holds the lock."""
