"""Training datasets: find the format, read it, split it, check every entry exists.

``--data`` may be:

* a folder tree ``train/<class>/*.mp4`` + ``val/<class>/*.mp4`` (+ ``predict/*.mp4``,
  unlabelled clips classified after training); without ``val/`` the validation clips
  are split off ``train/``; a folder of class folders alone is split the same way;
* a CSV file ``path,label`` (a header naming the columns, or no header and exactly those
  two columns); an optional ``split`` column (``train``/``val``) fixes the split, else
  ``--val-split`` draws it; relative paths are relative to the CSV's folder;
* a UCF101 folder (``classInd.txt`` + ``trainlist0N.txt``/``testlist0N.txt``), an HMDB51
  folder (``*_test_splitN.txt``), a Jester folder (``jester-v1-train.csv`` ...) or a
  Jester-style ``id;label`` CSV file over frame folders: see :mod:`streamclf.train.formats`.

Every problem (empty class folder, malformed line, missing video) is a :class:`DataError`
naming the file, and the line for list files. Thread-safe; reads the file system only.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamclf.errors import ConfigError, DataError
from streamclf.offline.datasets import PATH_COLUMNS, VIDEO_EXTENSIONS
from streamclf.train import formats
from streamclf.train.formats import Entry

__all__ = ["IMAGE_EXTENSIONS", "Sample", "TrainData", "load_data"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
_LABEL_COLUMNS = ("label", "class")
_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "val"}


@dataclass(frozen=True)
class Sample:
    """One labelled clip source.

    Attributes:
        path: a video file, or a folder of frames when ``frame_fps`` is set.
        label: index into :attr:`TrainData.labels`.
        where: where it was listed (``FILE:LINE`` or the path), for error messages.
        frame_fps: the frame rate of a frame folder (``None`` for a video file).
    """

    path: Path
    label: int
    where: str
    frame_fps: float | None = None


@dataclass(frozen=True)
class TrainData:
    """A dataset ready for training: class names, train and validation clips."""

    labels: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    format: str
    predict: tuple[Path, ...] = field(default=())

    def class_counts(self, samples: Iterable[Sample]) -> dict[str, int]:
        counts = dict.fromkeys(self.labels, 0)
        for s in samples:
            counts[self.labels[s.label]] += 1
        return counts


@dataclass(frozen=True)
class _Item:
    path: Path
    label: str
    where: str
    frame_fps: float | None = None


def load_data(data: str | Path, val_split: float = 0.1, seed: int = 0, split: int = 1) -> TrainData:
    """Read the dataset at ``data`` (see the module doc for the formats).

    Args:
        val_split: share of each class held out for validation when the dataset has no
            validation part of its own, in ``[0, 1)``.
        seed: seeds that draw (the same seed gives the same split).
        split: the official split number of UCF101 / HMDB51 (1, 2 or 3).

    Raises:
        DataError: missing dataset, unknown layout, malformed or missing entries, an
            empty class, a validation class the training part lacks.
        ConfigError: ``val_split`` out of range.
    """
    if not 0.0 <= val_split < 1.0:
        raise ConfigError(f"--val-split must be in [0, 1), got {val_split}")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root}: dataset not found (expected a folder or a CSV file)")
    predict: list[Path] = []
    if root.is_file():
        fmt, train, val = _read_file(root)
    elif (root / "train").is_dir():
        fmt, train, val = "folders", _read_tree(root / "train"), None
        if (root / "val").is_dir():
            val = _read_tree(root / "val")
        if (root / "predict").is_dir():
            predict = _videos_below(root / "predict")
    else:
        fmt, train, val = _read_dir(root, split)
    _check_exist([*train, *(val or [])])
    if val is None:
        train, val = _split(train, val_split, seed, root)
    return _assemble(fmt, train, val, predict, root)


def _read_file(path: Path) -> tuple[str, list[_Item], list[_Item] | None]:
    first = _first_line(path)
    if ";" in first and "," not in first:
        _, entries = formats.read_jester(path)
        frames = _jester_frames(path.parent)
        return "jester", _jester_items(entries, frames), None
    return "csv", *_read_csv(path)


def _read_dir(root: Path, split: int) -> tuple[str, list[_Item], list[_Item] | None]:
    if (lists := formats.find_ucf101_lists(root)) is not None:
        _, train, test = formats.read_ucf101(lists, split)
        base = _video_root(root, lists, [*train, *test], "UCF-101")
        return "ucf101", _items(train, base), _items(test, base)
    if files := formats.find_hmdb51_splits(root, split):
        _, train, test = formats.read_hmdb51(files)
        base = _video_root(root, files[0].parent, [*train, *test], "hmdb51_org")
        return "hmdb51", _items(train, base), _items(test, base)
    jester_train = root / "jester-v1-train.csv"
    if jester_train.is_file():
        labels_path = root / "jester-v1-labels.csv"
        labels_file = labels_path if labels_path.is_file() else None
        frames = _jester_frames(root)
        _, train_entries = formats.read_jester(jester_train, labels_file)
        val_file = root / "jester-v1-validation.csv"
        val = None
        if val_file.is_file():
            val = _jester_items(formats.read_jester(val_file, labels_file)[1], frames)
        return "jester", _jester_items(train_entries, frames), val
    class_dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if class_dirs:
        return "folders", _read_tree(root), None
    raise DataError(
        f"{root}: no dataset found: expected train/<class>/ (+ val/<class>/) folders, "
        "class folders, a CSV file, UCF101 classInd.txt + trainlist0N.txt, HMDB51 "
        "*_test_splitN.txt files or Jester jester-v1-train.csv"
    )


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return fh.readline().strip()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def _videos_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_video(p) and p.is_file())


def _read_tree(root: Path) -> list[_Item]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<video>)")
    items: list[_Item] = []
    for folder in folders:
        videos = _videos_below(folder)
        if not videos:
            raise DataError(f"{folder}: empty class: no videos (extensions "
                            f"{', '.join(sorted(VIDEO_EXTENSIONS))})")
        items.extend(_Item(v, folder.name, str(v)) for v in videos)
    return items


def _read_csv(path: Path) -> tuple[list[_Item], list[_Item] | None]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [(n, row) for n, row in enumerate(csv.reader(fh), 1) if any(c.strip()
                                                                                 for c in row)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty CSV")
    header = [c.strip().casefold() for c in rows[0][1]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
    split_col = header.index("split") if "split" in header else None
    if path_col is None or label_col is None:
        if len(header) != 2:
            raise DataError(f"{path}:1: expected a header with 'path' and 'label' columns, "
                            f"or rows of exactly 'path,label'; got {','.join(rows[0][1])!r}")
        path_col, label_col, split_col = 0, 1, None
    else:
        rows = rows[1:]
    width = 1 + max(i for i in (path_col, label_col, split_col) if i is not None)
    train: list[_Item] = []
    val: list[_Item] = []
    for n, row in rows:
        where = f"{path}:{n}"
        if len(row) < width:
            raise DataError(f"{where}: expected {width} columns, got {len(row)}: {row!r}")
        video, label = row[path_col].strip(), row[label_col].strip()
        if not video or not label:
            raise DataError(f"{where}: empty {'path' if not video else 'label'}")
        target = train
        if split_col is not None:
            part = _SPLITS.get(row[split_col].strip().casefold())
            if part is None:
                raise DataError(f"{where}: split must be train or val, got "
                                f"{row[split_col].strip()!r}")
            target = val if part == "val" else train
        p = Path(video).expanduser()
        target.append(_Item(p if p.is_absolute() else path.parent / p, label, where))
    if not train:
        raise DataError(f"{path}: no training rows")
    return train, (val if split_col is not None else None)


def _video_root(root: Path, lists: Path, entries: list[Entry], subfolder: str) -> Path:
    """The folder the split files' paths are relative to: the first candidate holding the
    first listed video (``root/<subfolder>``, ``root``, the lists' parent ...)."""
    candidates = [root / subfolder, root, lists.parent / subfolder, lists.parent, lists]
    if not entries:
        raise DataError(f"{lists}: the split files list no videos")
    first = entries[0]
    for base in candidates:
        if (base / first.rel).exists():
            return base
    raise DataError(f"{first.where}: video not found: {first.rel} (looked under "
                    f"{', '.join(str(c) for c in dict.fromkeys(candidates))})")


def _items(entries: list[Entry], base: Path) -> list[_Item]:
    return [_Item(base / e.rel, e.label, e.where) for e in entries]


def _jester_frames(root: Path) -> Path:
    sub = root / "20bn-jester-v1"
    return sub if sub.is_dir() else root


def _jester_items(entries: list[Entry], frames: Path) -> list[_Item]:
    return [_Item(frames / e.rel, e.label, e.where, formats.JESTER_FPS) for e in entries]


def _check_exist(items: list[_Item]) -> None:
    missing = []
    for it in items:
        if it.frame_fps is not None:
            ok = it.path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS
                                          for p in it.path.iterdir())
            what = "frame folder not found or holds no images"
        else:
            ok = it.path.is_file()
            what = "video not found"
        if not ok:
            missing.append(f"{it.where}: {what}: {it.path}" if it.where != str(it.path)
                           else f"{it.path}: {what}")
    if missing:
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DataError(missing[0] + more)


def _split(
    items: list[_Item], val_split: float, seed: int, root: Path
) -> tuple[list[_Item], list[_Item]]:
    """Stratified split: ``round(n * val_split)`` clips of each class (at least one when
    the class has two or more and ``val_split > 0``) go to validation."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[_Item]] = {}
    for it in items:
        by_class.setdefault(it.label, []).append(it)
    train: list[_Item] = []
    val: list[_Item] = []
    for label in sorted(by_class):
        group = by_class[label]
        order = rng.permutation(len(group))
        k = round(len(group) * val_split)
        if val_split > 0 and k == 0 and len(group) >= 2:
            k = 1
        k = min(k, len(group) - 1)
        val.extend(group[i] for i in sorted(order[:k]))
        train.extend(group[i] for i in sorted(order[k:]))
    if not val:
        raise DataError(f"{root}: no validation clips: give the dataset a validation part "
                        "(val/ folder, split column) or use --val-split > 0 with at least "
                        "two clips per class")
    return train, val


def _assemble(
    fmt: str, train: list[_Item], val: list[_Item], predict: list[Path], root: Path
) -> TrainData:
    labels = tuple(sorted({it.label for it in train}))
    if len(labels) < 2:
        raise DataError(f"{root}: training needs at least two classes, found "
                        f"{len(labels)} ({', '.join(labels) or 'none'})")
    index = {name: i for i, name in enumerate(labels)}
    for it in val:
        if it.label not in index:
            raise DataError(f"{it.where}: validation class {it.label!r} has no training clips")
    if not val:
        raise DataError(f"{root}: the validation part is empty")

    def samples(items: list[_Item]) -> tuple[Sample, ...]:
        return tuple(Sample(it.path, index[it.label], it.where, it.frame_fps) for it in items)

    return TrainData(labels=labels, train=samples(train), val=samples(val), format=fmt,
                     predict=tuple(predict))
