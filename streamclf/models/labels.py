"""Label lists: Kinetics-400 in pytorchvideo's order, and user class maps."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from streamclf.errors import ConfigError
from streamclf.paths import input_file_problem

__all__ = ["ClassMap", "kinetics400_labels", "load_classmap"]

ClassMap = Mapping[str, int] | Sequence[str] | str | Path

_KINETICS_FILE = Path(__file__).with_name("kinetics400_labels.txt")


@lru_cache(maxsize=1)
def kinetics400_labels() -> tuple[str, ...]:
    """The 400 Kinetics class names, index i = output i of the zoo checkpoints.

    The order is pytorchvideo's (alphabetical); see ``../shared/data/labels/PROVENANCE.md``
    where four independent public copies agree.
    """
    names = tuple(
        line.strip() for line in _KINETICS_FILE.read_text(encoding="utf-8").splitlines()
    )
    return tuple(n for n in names if n)


def _labels_from_mapping(mapping: Mapping[str, int], origin: str) -> tuple[str, ...]:
    wrong = [k for k, v in mapping.items() if isinstance(v, bool) or not isinstance(v, int)]
    if wrong:
        raise ConfigError(f"classmap {origin}: the index of {str(wrong[0])!r} must be an "
                          f"integer, got {mapping[wrong[0]]!r}")
    indices = sorted(mapping.values())
    if indices != list(range(len(indices))):
        raise ConfigError(
            f"classmap {origin}: indices must be 0..{len(indices) - 1} with no gaps or repeats"
        )
    by_index = {int(v): str(k).strip().strip('"') for k, v in mapping.items()}
    return tuple(by_index[i] for i in range(len(by_index)))


def load_classmap(classmap: ClassMap) -> tuple[str, ...]:
    """Turn a user class map into a label tuple (index i = model output i).

    Args:
        classmap: a dict ``name -> index``, a sequence of names in index order, or a
            path to a JSON file holding either, or to a text file with one name per line.

    Raises:
        ConfigError: the file is missing, unreadable or malformed, the indices are not
            0..N-1, or a class name appears twice.
    """
    names = _load_classmap(classmap)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"classmap: class name {name!r} appears twice; names must be "
                              "unique")
        seen.add(name)
    return names


def _load_classmap(classmap: ClassMap) -> tuple[str, ...]:
    """:func:`load_classmap` before the check for repeated names."""
    if isinstance(classmap, Mapping):
        return _labels_from_mapping(classmap, "dict")
    if isinstance(classmap, (str, Path)):
        path = Path(classmap)
        problem = input_file_problem(path)
        if problem:
            raise ConfigError(f"classmap file not found: {path}" if problem == "file not found"
                              else f"classmap {path} {problem}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"classmap {path}: not a UTF-8 text or JSON file") from None
        except OSError as exc:
            raise ConfigError(f"classmap {path}: cannot read ({exc.strerror or exc})") from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"classmap {path}: invalid JSON ({exc.msg})") from None
            if isinstance(data, dict):
                return _labels_from_mapping(data, str(path))
            if isinstance(data, list) and all(isinstance(x, str) for x in data):
                return tuple(data)
            raise ConfigError(f"classmap {path}: expected a JSON object name->index or a list")
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not names:
            raise ConfigError(f"classmap {path}: no class names")
        return names
    names = tuple(str(x) for x in classmap)
    if not names:
        raise ConfigError("classmap: no class names")
    return names
