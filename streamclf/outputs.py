"""Protecting a run's inputs and other files from its outputs, before anything is opened.

A run writes an event log (appended) and overlay videos (overwritten). Neither may be:

* an input of the same run (``--output`` equal to ``--source`` once destroyed the input);
* the same file as another output;
* an existing directory, or an existing file that is not of the kind being written: a video
  output may replace only a video (an MP4/MOV ``ftyp`` box or an AVI ``RIFF`` header), an
  event log may append only to an empty file or one whose first line is a JSON object, an
  event store (``db``) only to an SQLite file.

:func:`check_outputs` raises :class:`~streamclf.errors.ConfigError` naming the key and the
path; it reads at most a few bytes of each existing file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from streamclf.config import RunConfig
from streamclf.errors import ConfigError

__all__ = ["check_outputs"]


def check_outputs(config: RunConfig, extra_inputs: Iterable[str] = ()) -> None:
    """Check every output of ``config`` against its inputs and the files already there.

    Args:
        config: the run (its ``events`` and each stream's ``output`` and ``source``).
        extra_inputs: more files the run reads (e.g. ``weights``, ``classmap``).

    Raises:
        ConfigError: an output that is an input, another output, a directory, or an existing
            file of another kind.
    """
    from streamclf.media.sources import parse_spec

    inputs: dict[Path, str] = {}
    for stream in config.streams:
        kind, target = parse_spec(stream.source)
        if kind == "file":
            inputs[_key(str(target))] = f"the source of stream {stream.id!r}"
    for name, value in (("weights", config.weights), ("classmap", config.classmap),
                        *(("input", x) for x in extra_inputs)):
        if value and Path(value).is_file():
            inputs[_key(value)] = f"the {name} file"
    outputs: list[tuple[str, str, str]] = []
    if config.events:
        outputs.append(("events", config.events, "log"))
    if config.db:
        outputs.append(("db", config.db, "db"))
    outputs += [(f"output of stream {s.id!r}", s.output, "video")
                for s in config.streams if s.output]
    seen: dict[Path, str] = {}
    for what, path, kind in outputs:
        key = _key(path)
        if key in inputs:
            raise ConfigError(f"{what} {path} is {inputs[key]}; refusing to overwrite an "
                              "input of the run")
        if key in seen:
            raise ConfigError(f"{what} {path} is also the {seen[key]}; give each its own file")
        seen[key] = what
        _check_existing(what, Path(path), kind)


#: Box types an MP4/MOV file starts with (``ftyp`` almost always).
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _key(path: str) -> Path:
    """A path's identity: resolved (symlinks followed, relative to the working directory)."""
    return Path(os.path.realpath(path))  # never raises (a symlink loop stays as written)


def _check_existing(what: str, path: Path, kind: str) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot check it ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is a directory; give a file path")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file; refusing to write to it")
    if info.st_size == 0:
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    if kind == "log" and not head.lstrip().startswith(b"{"):
        raise ConfigError(f"{what} {path} exists and is not a JSON Lines event log; refusing "
                          "to append to it")
    if kind == "db" and head[:16] != b"SQLite format 3\x00":
        raise ConfigError(f"{what} {path} exists and is not an event store (not SQLite); "
                          "refusing to write to it")
    if kind == "video" and not (head[4:8] in _MP4_BOXES or head[:4] == b"RIFF"):
        raise ConfigError(f"{what} {path} exists and is not a video; refusing to overwrite it")
