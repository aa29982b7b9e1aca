"""Checks of a command's inputs that run before its model loads, so that a bad input fails
in a fraction of a second, in one line: files exist, sources parse, outputs can be written,
a display is there for ``--display``, the model name, checkpoint, class map and device make
sense.

Each check raises the :class:`~streamclf.errors.StreamclfError` subclass (and the message)
that the loading code itself would raise later. Light: no heavy library is imported.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from streamclf.config import RunConfig
from streamclf.errors import ConfigError, SourceError, StreamclfError, WeightsError
from streamclf.masking import mask_credentials
from streamclf.media.sources import parse_spec
from streamclf.models.labels import load_classmap
from streamclf.models.registry import get_spec
from streamclf.models.weights import KINETICS400, RANDOM
from streamclf.paths import input_file_problem

__all__ = ["check_backends", "check_device", "check_display", "check_min", "check_model",
           "check_output", "check_output_dir", "check_positive", "check_run", "check_sampling",
           "file_problem", "source_problem"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_min(flag: str, value: float | None, minimum: float, *, integer: bool = False) -> None:
    """``flag``'s ``value`` (None: not given) is at least ``minimum`` (``integer``: the
    message says the flag takes an integer)."""
    if value is not None and not value >= minimum:  # NaN fails too
        kind = "an integer " if integer else ""
        raise ConfigError(f"{flag} must be {kind}>= {minimum:g}, got {value:g}")


def check_positive(flag: str, value: float | None) -> None:
    """``flag``'s ``value`` (None: not given) is above 0."""
    if value is not None and not 0 < value < float("inf"):  # NaN and inf fail too
        raise ConfigError(f"{flag} must be a number > 0, got {value:g}")


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is there is known only once
    torch is loaded)."""
    if not _DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def check_model(model: str, weights: str | None = None, classmap: str | None = None,
                device: str | None = None) -> None:
    """A zoo model name, weights that name a checkpoint file which exists, a class map that
    reads, a device name.

    Raises:
        ModelError, WeightsError, ConfigError: as loading the model would, later.
    """
    get_spec(model)
    if weights is not None and str(weights) not in (KINETICS400, RANDOM):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"checkpoint not found: {path} (use kinetics400, random, or a path to a file)")
    if classmap:
        load_classmap(classmap)
    if device is not None:
        check_device(device)


def file_problem(path: str | Path) -> str | None:
    """Why the video file ``path`` cannot be read (None: it may be read). The message shows
    the path as given, credentials masked (a URL is not a file: it says where streams go)."""
    shown = mask_credentials(str(path))
    if "://" in str(path) and not str(path).startswith("file://"):
        return (f"{shown}: not a file; classify and evaluate read files (use "
                "`streamclf run --source URL` for a stream)")
    problem = input_file_problem(path)
    if problem:
        return f"{shown}: file not found" if problem == "file not found" else \
            f"{shown} {problem}"
    if Path(path).stat().st_size == 0:
        return f"{shown}: empty file (0 bytes)"
    return None


def check_max(flag: str, value: int | None, maximum: int, why: str) -> None:
    """``flag``'s ``value`` (None: not given) is at most ``maximum``."""
    if value is not None and value > maximum:
        raise ConfigError(f"{flag} must be at most {maximum} ({why}), got {value}")


def _writable_folder(folder: Path) -> Path | None:
    """The nearest existing folder at or above ``folder`` when it is writable (parents
    below it can be created), else None."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            ok = candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
            return candidate if ok else None
    return None


def check_output(what: str, path: str | Path, *, make_parents: bool = True) -> None:
    """The file ``path`` can be written (``what`` names it in the message, e.g. ``--report``).
    ``make_parents``: the writer creates missing folders; else the folder must exist."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    if not make_parents and not p.parent.is_dir():
        raise ConfigError(f"{what} {path}: folder {p.parent} does not exist")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{what} {path}: cannot write it (permission denied)")
    if _writable_folder(p.parent) is None:
        raise ConfigError(f"{what} {path}: cannot write in {p.parent} (not a writable folder)")


def check_output_dir(what: str, path: str | Path) -> None:
    """The folder ``path`` exists and is writable, or can be created."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a folder")
    if _writable_folder(p) is None:
        raise ConfigError(f"{what} {path}: cannot write there (not a writable folder)")


def check_display() -> None:
    """A graphical display for ``--display`` (Linux: ``$DISPLAY`` or ``$WAYLAND_DISPLAY``)."""
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise StreamclfError("--display needs a graphical display but DISPLAY is not set "
                             "(headless machine?); use --output FILE.mp4 instead")


def source_problem(spec: str) -> str | None:
    """Why the source ``spec`` cannot open, as far as can be told without opening it: an
    unknown URL scheme, a bad ``synthetic`` spec, a missing or empty file (None: no
    reason known). Webcams and network sources are only known once opened."""
    try:
        kind, target = parse_spec(spec)
    except SourceError as exc:
        return str(exc)
    if kind == "synthetic":
        from streamclf.media.sources import open_source

        try:
            open_source(str(target)).close()  # parses and checks the bounds; no I/O
        except SourceError as exc:
            return str(exc)
    if kind == "file":
        return file_problem(str(target))
    return None


def check_run(config: RunConfig, *, every_source: bool = True) -> None:
    """The inputs of a live run: model, checkpoint, class map, device, event log and store,
    each stream's overlay video and display, and its source.

    Args:
        every_source: a source that cannot open fails the run (``run``: its pipeline
            opens every source before it starts); False: only when no source can open
            (``cluster run``: a stream that fails is logged, the others go on).

    Raises:
        StreamclfError (a subclass): the first problem found, in one line.
    """
    check_model(config.model, config.weights, config.classmap, config.device)
    if config.events:
        check_output("events", config.events)
    if config.db:
        check_output("--db", config.db)
    for stream in config.streams:
        if stream.output:
            check_output("output", stream.output)
    if any(stream.display for stream in config.streams):
        check_display()
    problems = {s.stream_id: source_problem(s.source) for s in config.streams}
    bad = {sid: why for sid, why in problems.items() if why is not None}
    if not bad or (not every_source and len(bad) < len(problems)):
        return
    sid, why = next(iter(bad.items()))
    raise SourceError(why if len(problems) == 1 else f"stream {sid}: {why}")


def check_sampling(sample_type: str | None, num_samples: int | None,
                   time_step: float | None) -> None:
    """``classify``'s towhee-style sampling flags go together."""
    if sample_type is None:
        if num_samples is not None or time_step is not None:
            raise ConfigError("--num-samples and --time-step need --sample-type")
    elif sample_type == "time_step_sample":
        if time_step is None or time_step <= 0:
            raise ConfigError("--sample-type time_step_sample needs --time-step SECONDS > 0")
    elif num_samples is None or num_samples <= 0:
        raise ConfigError(f"--sample-type {sample_type} needs --num-samples N > 0")


def check_backends(specs: Sequence[str], backends: Sequence[str],
                   precisions: Sequence[str]) -> None:
    """``bench --backends``: each ``NAME`` or ``NAME:PRECISION`` is a known pair."""
    for spec in specs:
        name, _, precision = spec.partition(":")
        for value, known, what in ((name, backends, "backend"),
                                   (precision or precisions[0], precisions, "precision")):
            if value not in known:
                close = difflib.get_close_matches(value, list(known), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(f"--backends {spec}: unknown {what} {value!r}; choose one "
                                  f"of {', '.join(known)}{hint}")
