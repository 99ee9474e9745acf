"""Typed exceptions and warnings.

Every error raised for bad input is a :class:`SimcompareError`; its message says what
to change. The CLI prints the message on one line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataFormatError",
    "DataNotFoundError",
    "LowSNRWarning",
    "PSFSizeWarning",
    "RangeError",
    "SimcompareError",
    "SimcompareWarning",
    "WorkspaceBusyError",
]


class SimcompareError(RuntimeError):
    """Base class of every error simcompare raises on purpose."""


class ConfigError(SimcompareError, ValueError):
    """A descriptor, option or configuration value is wrong or missing."""


class RangeError(SimcompareError, ValueError):
    """A value lies outside its allowed range.

    Parameters
    ----------
    message : str
        What is wrong and what to change.
    value, min, max : float, optional
        The offending value and the allowed bounds.
    """

    def __init__(
        self, message: str, value: float | None = None, min: float | None = None,
        max: float | None = None,
    ) -> None:
        super().__init__(message)
        self.value = value
        self.min = min
        self.max = max


class DataNotFoundError(SimcompareError, FileNotFoundError):
    """An input file or directory does not exist."""


class DataFormatError(SimcompareError, ValueError):
    """An input file exists but is corrupt, truncated or of the wrong layout."""


class WorkspaceBusyError(SimcompareError):
    """Another ``simcompare score`` (a live process) holds the workspace's lock."""


class SimcompareWarning(UserWarning):
    """Base class of simcompare's warnings."""


class LowSNRWarning(SimcompareWarning):
    """An image has too little signal for a measurement to mean anything."""


class PSFSizeWarning(SimcompareWarning):
    """The PSF (or simulation smoothing) is too large or small for the stamp."""
