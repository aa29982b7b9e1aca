"""Reading a YAML file that may be hostile: bounded size, bounded alias expansion, no
recursion blow-up, one-line errors.

PyYAML's ``safe_load`` builds no Python objects from tags, but it still lets a 1 KB file of
nested aliases (a "billion laughs") expand to billions of nodes, and a deep nesting of
``[`` overflow the stack. So the file is first composed into its node graph (aliases stay
shared there, so that costs only the file's size), the expanded size is counted over that
graph with memoised sizes, and only a document within the budget is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamclf.errors import ConfigError
from streamclf.paths import input_file_problem

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_yaml"]

#: Largest config file read (a run's config is a few KB).
MAX_BYTES = 1 << 20
#: Most nodes the document may expand to, aliases counted at each use.
MAX_NODES = 100_000
#: Deepest nesting of lists and mappings.
MAX_DEPTH = 64


def load_yaml(path: str | Path, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """The document of ``path`` (None for an empty file).

    Raises:
        ConfigError: missing, unreadable, larger than ``max_bytes``, invalid YAML (with the
            line), nested too deeply, or expanding past ``max_nodes`` nodes.
    """
    import yaml

    p = Path(path)
    problem = input_file_problem(p)
    if problem:
        raise ConfigError(f"config file not found: {p}" if problem == "file not found" else
                          f"config file {p} {problem}")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"config file {p}: {size} bytes; the limit is {max_bytes}")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: cannot read it ({exc})") from None
    _check_depth(p, text)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, max_nodes)
        if expanded > max_nodes:
            raise ConfigError(f"config file {p}: expands to more than {max_nodes} values "
                              "(nested aliases?); refusing it")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {p}: invalid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"config file {p}: nested too deeply") from None
    finally:
        loader.dispose()


def _check_depth(path: Path, text: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, from the parser's event stream (a state
    machine: no recursion), before the recursive composer sees the text."""
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"config file {path}: nested more than {MAX_DEPTH} "
                                      "levels deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: invalid YAML{where}") from None


def _expanded_size(root: Any, budget: int) -> int:
    """Nodes of the document with every alias expanded, computed without recursion on the
    node graph (each distinct node visited once); stops counting past ``budget``."""
    import yaml

    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        else:
            kids = list(node.value)
        if children_done:
            total = 1
            for kid in kids:
                total = min(total + sizes.get(id(kid), 1), budget + 1)
            sizes[id(node)] = total
            continue
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if id(kid) not in sizes)
    return sizes[id(root)]

