"""The streamclf exception tree.

Every error a user can cause (bad input, bad config, unreachable source, wrong
checkpoint) is one of these; the CLI prints ``str(error)`` as one line and exits
non-zero. Anything else escaping is a bug.

::

    StreamclfError
    ├── ConfigError        bad option, config file or value (names the key and what is allowed)
    ├── SourceError        a video source cannot be opened or was lost
    ├── DataError          a file is missing, not a video, corrupt or truncated; a bad dataset entry
    └── ModelError         unknown model, unusable device, inference failure
        └── WeightsError   a checkpoint cannot be downloaded, read or matched to the model
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "SourceError",
    "StreamclfError",
    "WeightsError",
]


class StreamclfError(Exception):
    """Base of every error streamclf raises on purpose."""


class ConfigError(StreamclfError):
    """A configuration value, file or command-line option is invalid."""


class SourceError(StreamclfError):
    """A live or file source cannot be opened, or stopped delivering frames."""


class DataError(StreamclfError):
    """A video file or dataset entry is missing, unreadable, corrupt or truncated."""


class ModelError(StreamclfError):
    """A model cannot be built or run (unknown name, unavailable device, ...)."""


class WeightsError(ModelError):
    """A checkpoint cannot be downloaded, loaded, or does not fit the model."""
