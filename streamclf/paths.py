"""What is wrong with an input path, said precisely: "file not found", "is a directory", "is
not a regular file (a FIFO)", "is a symlink loop", "cannot be read (permission denied)".

Used wherever a file is read (sources, checkpoints, class maps, configs, datasets), so that
every command names the same problem the same way before anything is opened. A FIFO is
refused rather than opened: reading one blocks until a writer appears.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["input_file_problem"]


def input_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a regular file, or None when it can (thread-safe)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file not found" if not os.path.islink(path) else "is a broken symlink"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        if exc.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        if exc.errno == errno.ENAMETOOLONG:
            return "file name too long"
        return f"cannot be read ({exc.strerror})"
    except ValueError:  # an embedded NUL byte
        return "is not a valid path"
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
        return f"is not a regular file ({kind})"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None
