"""Retention of event clips: ``clips.max_gb`` and ``clips.max_days``, oldest first.

Only files the clip writer names are ever considered, by :data:`CLIP_NAME`: a stream id,
``-``, an alert id (:func:`streamclf.live.alerts.new_alert_id`: ``20261202T101500.123Z-0001``)
and ``.mp4`` or ``.jpg`` (:meth:`streamclf.sections.ClipsConfig.paths`), or the same with
``.partial`` while it is written. Anything else in the folder (a user's files, other
folders, links) is never touched. A clip and its snapshot are one *entry*: they are deleted
together, and an entry's age is that of its newest file.

Deletion, in this order: every entry older than ``max_days``; then, while the entries
together take more than ``max_gb`` (10^9 bytes), the oldest. Each deletion is one INFO log
line naming the file and why. An entry being written (``keep``) is never deleted.

Thread-safety: :func:`enforce_retention` holds no state; two calls on one folder at once may
both try to delete a file (the second finds it gone, which is fine), but the clip writer
calls it from its one thread.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CLIP_NAME", "ClipEntry", "enforce_retention", "list_clips"]

log = logging.getLogger(__name__)

#: The names the clip writer gives files: ``STREAM-ALERTID.mp4`` / ``.jpg`` (+ ``.partial``).
CLIP_NAME = re.compile(
    r"(?P<base>[A-Za-z0-9_-]{1,64}-\d{8}T\d{6}\.\d{3}Z-\d{4,12})\.(?:mp4|jpg)(?:\.partial)?")
GB = 1_000_000_000
DAY_S = 86_400.0


@dataclass
class ClipEntry:
    """One alert's files in the clips folder (clip, snapshot, unfinished parts)."""

    base: str
    files: list[Path] = field(default_factory=list)
    size: int = 0
    mtime: float = 0.0  # the newest file's


def list_clips(folder: str | Path) -> list[ClipEntry]:
    """The clip entries in ``folder`` (regular files named by :data:`CLIP_NAME` only),
    oldest first; ``[]`` when the folder does not exist."""
    entries: dict[str, ClipEntry] = {}
    try:
        scan = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for item in scan:
        match = CLIP_NAME.fullmatch(item.name)
        if match is None:
            continue
        try:
            info = item.stat(follow_symlinks=False)
        except OSError:  # deleted meanwhile
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        entry = entries.setdefault(match["base"], ClipEntry(match["base"]))
        entry.files.append(Path(item.path))
        entry.size += info.st_size
        entry.mtime = max(entry.mtime, info.st_mtime)
    return sorted(entries.values(), key=lambda e: (e.mtime, e.base))


def enforce_retention(folder: str | Path, max_gb: float, max_days: float, *,
                      keep: Collection[str] = (), now: float | None = None) -> list[Path]:
    """Delete the oldest clip entries of ``folder`` until none is older than ``max_days``
    and all take at most ``max_gb``; returns the files deleted, oldest first.

    Args:
        folder: the clips folder (a missing folder has nothing to delete).
        max_gb: the most the entries may take together, in 10^9 bytes.
        max_days: the oldest an entry may be (its newest file's mtime), in days.
        keep: entry bases (``STREAM-ALERTID``) never deleted: the clips being written.
        now: the time to measure ages from (default ``time.time()``).
    """
    now = time.time() if now is None else now
    found = list_clips(folder)
    total = sum(e.size for e in found)  # the clips being written count, but stay
    entries = [e for e in found if e.base not in keep]
    deleted: list[Path] = []
    for entry in entries:  # oldest first
        too_old = now - entry.mtime > max_days * DAY_S
        too_big = total > max_gb * GB
        if not (too_old or too_big):
            break
        why = (f"older than {max_days:g} days" if too_old else
               f"the clips take {total / GB:.3g} GB, more than {max_gb:g}")
        for path in sorted(entry.files):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("clips retention: cannot delete %s: %s", path, exc)
                continue
            deleted.append(path)
            log.info("clips retention: deleted %s (%s)", path, why)
        total -= entry.size
    return deleted
