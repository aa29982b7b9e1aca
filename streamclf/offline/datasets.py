"""Labelled video datasets: a CSV (``path,label``) or a folder tree (``class_name/video.ext``).

Example::

    from streamclf.offline.datasets import match_labels, read_dataset
    items = read_dataset("reverse_video_search.csv")       # id,path,label
    classes = match_labels({it.label for it in items}, clf.labels)

Functions here are pure apart from reading the file system; thread-safe.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamclf.errors import ConfigError, DataError

__all__ = [
    "LABEL_COLUMNS",
    "PATH_COLUMNS",
    "VIDEO_EXTENSIONS",
    "DatasetItem",
    "match_labels",
    "normalize_label",
    "read_dataset",
]

log = logging.getLogger(__name__)

#: Column names tried, in order, when no ``path_column`` is given (case-insensitive).
PATH_COLUMNS = ("path", "file", "video")
#: Column names tried, in order, when no ``label_column`` is given (case-insensitive).
LABEL_COLUMNS = ("label", "class")
#: File name endings taken as videos in a folder tree (case-insensitive).
VIDEO_EXTENSIONS = frozenset({
    ".3gp", ".avi", ".flv", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ogv",
    ".ts", ".webm", ".wmv",
})


@dataclass(frozen=True)
class DatasetItem:
    """One labelled video.

    Attributes:
        path: the file; a CSV's relative paths are resolved against the CSV's folder.
        label: the ground-truth label as the dataset writes it (not yet matched to a class).
        id: the CSV's ``id`` column when it has one, else ``None``.
    """

    path: Path
    label: str
    id: str | None = None


def normalize_label(label: str) -> str:
    """The form labels and class names are compared in: case-folded, underscores as
    spaces, double quotes dropped, runs of white space collapsed.

    ``"Arm_Wrestling"``, ``" arm  wrestling"`` and ``'"arm wrestling"'`` all give
    ``"arm wrestling"``.
    """
    return " ".join(label.replace("_", " ").replace('"', " ").casefold().split())


def match_labels(labels: Iterable[str], classes: Sequence[str]) -> dict[str, str | None]:
    """Map each dataset label to the model's class name it means, or ``None``.

    Labels and class names are compared after :func:`normalize_label`. When two class
    names normalise alike (never in the zoo's label lists), the first one wins.
    """
    by_key: dict[str, str] = {}
    for name in classes:
        by_key.setdefault(normalize_label(name), name)
    return {label: by_key.get(normalize_label(label)) for label in labels}


def read_dataset(
    data: str | os.PathLike[str],
    path_column: str | None = None,
    label_column: str | None = None,
) -> list[DatasetItem]:
    """Read the labelled videos of ``data``, in a stable order.

    Args:
        data: a CSV file with a header row, or a folder whose sub-folders are class names
            holding the videos (at any depth below the class folder). A CSV's row order is
            kept; a folder tree is sorted by class, then path.
        path_column: the CSV column holding the video paths (default: the first of
            :data:`PATH_COLUMNS` present). An ``id`` column, when present, is kept.
        label_column: the CSV column holding the labels (default: the first of
            :data:`LABEL_COLUMNS` present).

    Raises:
        DataError: ``data`` is missing, unreadable, or holds no videos; a row has an
            empty path or label.
        ConfigError: the CSV lacks the path or label column (the message lists the
            columns it has); column options given with a folder.
    """
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: dataset not found (expected a CSV file or a folder of "
                        "class folders)")
    if root.is_dir():
        if path_column or label_column:
            raise ConfigError("--path-column/--label-column apply to a CSV, not to a folder "
                              f"tree ({root})")
        return _read_tree(root)
    return _read_csv(root, path_column, label_column)


def _pick_column(
    fields: Sequence[str], wanted: str | None, defaults: Sequence[str], what: str, csv_path: Path
) -> str:
    by_folded = {f.strip().casefold(): f for f in fields}
    for name in [wanted] if wanted else defaults:
        if name.strip().casefold() in by_folded:
            return by_folded[name.strip().casefold()]
    expected = repr(wanted) if wanted else " or ".join(repr(d) for d in defaults)
    found = ", ".join(repr(f) for f in fields) or "none"
    raise ConfigError(f"{csv_path}: no {what} column {expected} (columns: {found}); "
                      f"choose one with --{what}-column")


def _read_csv(
    csv_path: Path, path_column: str | None, label_column: str | None
) -> list[DatasetItem]:
    base = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            if not fields:
                raise DataError(f"{csv_path}: empty CSV (no header row)")
            path_key = _pick_column(fields, path_column, PATH_COLUMNS, "path", csv_path)
            label_key = _pick_column(fields, label_column, LABEL_COLUMNS, "label", csv_path)
            id_key = next((f for f in fields if f.strip().casefold() == "id"), None)
            items = []
            for row in reader:
                items.append(_row_item(row, path_key, label_key, id_key, base,
                                       f"{csv_path}:{reader.line_num}"))
    except UnicodeDecodeError:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{csv_path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    if not items:
        raise DataError(f"{csv_path}: no rows (the dataset is empty)")
    return items


def _row_item(
    row: dict[str, str | None], path_key: str, label_key: str, id_key: str | None,
    base: Path, where: str,
) -> DatasetItem:
    raw_path = (row.get(path_key) or "").strip()
    label = (row.get(label_key) or "").strip()
    if not raw_path:
        raise DataError(f"{where}: empty {path_key!r}")
    if not label:
        raise DataError(f"{where}: empty {label_key!r} for {raw_path}")
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        path = base / path
    ident = (row.get(id_key) or "").strip() if id_key else ""
    return DatasetItem(path=path, label=label, id=ident or None)


def _is_video(path: Path) -> bool:
    """A video by its name. FIFOs, broken or looping symlinks and unreadable files count
    too: they are evaluated, so that each is listed in ``failed`` with what is wrong with
    it rather than skipped in silence. Folders do not count."""
    return (path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")
            and not path.is_dir())


def _read_tree(root: Path) -> list[DatasetItem]:
    items: list[DatasetItem] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = sorted(p for p in folder.rglob("*") if _is_video(p))
        items.extend(DatasetItem(path=v, label=folder.name) for v in videos)
    loose = sorted(p for p in root.iterdir() if _is_video(p))
    if not items:
        found = f"; {len(loose)} lie directly in it, with no class folder" if loose else ""
        raise DataError(f"{root}: no videos found in class folders (expected "
                        f"class_name/video.ext, with extensions "
                        f"{', '.join(sorted(VIDEO_EXTENSIONS))}){found}")
    if loose:
        log.warning("%d video file(s) directly in %s have no class folder and are not "
                    "evaluated (e.g. %s)", len(loose), root, loose[0].name)
    return items
