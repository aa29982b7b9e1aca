"""Writing report files whole or not at all.

Thread-safety: safe from any thread (each call writes its own temporary file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from streamclf.errors import ConfigError

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (``str``: UTF-8) to ``path`` through a temporary file beside it and a
    rename, so a reader never sees half a file; missing folders are created.

    Raises:
        ConfigError: the file cannot be written (no permission, a full disk, a folder in
            the way); the message names the path.
    """
    target = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return target
