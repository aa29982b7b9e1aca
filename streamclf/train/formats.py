"""Parsers for the public action datasets' own split files: UCF101, HMDB51, Jester.

Each parser returns labelled entries in file order; every malformed line, unknown class
or missing video is reported as ``FILE:LINE: what is wrong``. Paths are checked by
:func:`streamclf.train.data.load_data`, which reports missing ones with the same
``FILE:LINE`` prefix.

* UCF101 (``ucfTrainTestlist/``): ``classInd.txt`` (``1 ApplyEyeMakeup``),
  ``trainlist0N.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``),
  ``testlist0N.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``, the class is the
  folder). Videos live under ``UCF-101/<class>/`` (or beside the lists).
* HMDB51 (``testTrainMulti_7030_splits/``): one ``<class>_test_splitN.txt`` per class,
  lines ``<video> <id>`` with id 1 = train, 2 = test, 0 = unused. Videos live under
  ``<class>/<video>`` (or ``hmdb51_org/<class>/``).
* Jester (20BN-Jester v1): ``jester-v1-train.csv`` / ``jester-v1-validation.csv`` with
  lines ``<id>;<label>``, ``jester-v1-labels.csv`` with one label a line; each video is a
  folder of JPEG frames ``20bn-jester-v1/<id>/00001.jpg`` recorded at 12 fps.

Pure functions apart from reading files; thread-safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from streamclf.errors import DataError

__all__ = [
    "JESTER_FPS",
    "Entry",
    "find_hmdb51_splits",
    "find_ucf101_lists",
    "read_hmdb51",
    "read_jester",
    "read_ucf101",
]

#: Frame rate of the Jester frame folders.
JESTER_FPS = 12.0
_HMDB_SPLIT = re.compile(r"^(?P<cls>.+)_test_split(?P<n>\d+)\.txt$")


@dataclass(frozen=True)
class Entry:
    """One labelled video as a split file names it.

    Attributes:
        rel: the video path as written (relative to the dataset's video root).
        label: class name.
        where: ``"FILE:LINE"`` of the line that named it, for error messages.
    """

    rel: str
    label: str
    where: str


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file with their 1-based numbers (stripped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _search_dirs(root: Path) -> list[Path]:
    """``root`` and its direct sub-folders: where split files are looked for."""
    return [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]


def find_ucf101_lists(root: Path) -> Path | None:
    """The folder holding ``classInd.txt`` (``root`` or a direct sub-folder), if any."""
    return next((d for d in _search_dirs(root) if (d / "classInd.txt").is_file()), None)


def find_hmdb51_splits(root: Path, split: int) -> list[Path]:
    """The ``*_test_split<split>.txt`` files in ``root`` or its first sub-folder that has any."""
    for d in _search_dirs(root):
        files = sorted(d.glob(f"*_test_split{split}.txt"))
        if files:
            return files
    return []


def read_ucf101(
    lists: Path, split: int
) -> tuple[tuple[str, ...], list[Entry], list[Entry]]:
    """Read UCF101's ``classInd.txt``, ``trainlist0<split>.txt`` and ``testlist0<split>.txt``.

    Returns:
        ``(labels in classInd order, train entries, test entries)``.

    Raises:
        DataError: a missing list file, or a malformed line (file and line named).
    """
    index_file = lists / "classInd.txt"
    by_index: dict[int, str] = {}
    for n, line in _lines(index_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{index_file}:{n}: expected 'INDEX CLASS', got {line!r}")
        by_index[int(parts[0])] = parts[1]
    if not by_index:
        raise DataError(f"{index_file}: no classes")
    labels = tuple(by_index[i] for i in sorted(by_index))
    names = set(labels)
    sets: list[list[Entry]] = []
    for stem, labelled in ((f"trainlist{split:02d}", True), (f"testlist{split:02d}", False)):
        path = lists / f"{stem}.txt"
        if not path.is_file():
            raise DataError(f"{path}: split file not found (UCF101 split {split})")
        entries = []
        for n, line in _lines(path):
            where = f"{path}:{n}"
            parts = line.split()
            rel = parts[0].replace("\\", "/")
            folder = rel.split("/", 1)[0] if "/" in rel else ""
            if labelled:
                if len(parts) != 2 or not parts[1].isdigit():
                    raise DataError(f"{where}: expected 'CLASS/VIDEO INDEX', got {line!r}")
                label = by_index.get(int(parts[1]))
                if label is None:
                    raise DataError(f"{where}: class index {parts[1]} is not in {index_file.name}")
            else:
                if len(parts) != 1 or not folder:
                    raise DataError(f"{where}: expected 'CLASS/VIDEO', got {line!r}")
                if folder not in names:
                    raise DataError(f"{where}: class {folder!r} is not in {index_file.name}")
                label = folder
            entries.append(Entry(rel=rel, label=label, where=where))
        sets.append(entries)
    return labels, sets[0], sets[1]


def read_hmdb51(
    files: list[Path],
) -> tuple[tuple[str, ...], list[Entry], list[Entry]]:
    """Read HMDB51 ``<class>_test_splitN.txt`` files (1 = train, 2 = test, 0 = unused).

    Entries' ``rel`` is ``<class>/<video>``.

    Returns:
        ``(labels sorted by name, train entries, test entries)``.

    Raises:
        DataError: a malformed line (file and line named).
    """
    labels: list[str] = []
    train: list[Entry] = []
    test: list[Entry] = []
    for path in files:
        match = _HMDB_SPLIT.match(path.name)
        if match is None:  # pragma: no cover - the glob guarantees the pattern
            raise DataError(f"{path}: not an HMDB51 split file name")
        cls = match["cls"]
        labels.append(cls)
        for n, line in _lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
                raise DataError(f"{path}:{n}: expected 'VIDEO 0|1|2', got {line!r}")
            entry = Entry(rel=f"{cls}/{parts[0]}", label=cls, where=f"{path}:{n}")
            if parts[1] == "1":
                train.append(entry)
            elif parts[1] == "2":
                test.append(entry)
    return tuple(sorted(labels)), train, test


def read_jester(
    csv_path: Path, labels_file: Path | None = None
) -> tuple[tuple[str, ...] | None, list[Entry]]:
    """Read a Jester ``<id>;<label>`` file (and the label list, when given).

    Returns:
        ``(labels from labels_file or None, entries)``; entries' ``rel`` is the id.

    Raises:
        DataError: a malformed line or a label missing from ``labels_file``.
    """
    known: tuple[str, ...] | None = None
    if labels_file is not None:
        known = tuple(line for _, line in _lines(labels_file))
    names = set(known or ())
    entries = []
    for n, line in _lines(csv_path):
        where = f"{csv_path}:{n}"
        ident, sep, label = line.partition(";")
        if not sep or not ident.strip() or not label.strip() or ";" in label:
            raise DataError(f"{where}: expected 'ID;LABEL', got {line!r}")
        label = label.strip()
        if known is not None and label not in names:
            raise DataError(f"{where}: label {label!r} is not in {labels_file}")
        entries.append(Entry(rel=ident.strip(), label=label, where=where))
    if not entries:
        raise DataError(f"{csv_path}: no entries")
    return known, entries
