"""Reading a YAML file that may be hostile, in bounded time and memory (the species configs).

PyYAML's ``SafeLoader`` builds no arbitrary objects, but a file can still cost without bound: a
huge file, collections nested until the parser's recursion overflows, merge keys (``<<``), which
PyYAML releases without the fix of yaml/pyyaml#897 expand by copying into every mapping that
merges them (nine levels of nine merges: 9**9 entries; ``pyproject.toml`` allows any 6.0), and
integer literals of thousands of digits (quadratic to convert, and Python refuses to print
them). :func:`read_yaml` refuses each of these as a :class:`YamlError` naming the file, the line
and, when the document could be composed, the key under which the problem is.

Aliases are allowed: PyYAML makes an alias the very object of its anchor, so a "billion laughs"
costs only its text here. Whoever checks the values must not walk them deeper than it needs
(:mod:`pipeline.inputs.species_config` looks at one level at most, and quotes values with
:func:`pipeline.model.excerpt`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

import yaml

from ..model import EXCERPT, InputError, excerpt

#: Largest file read (a species config is a few hundred bytes; this holds ~90,000 exclude_runs).
MAX_BYTES = 1 << 20
#: Deepest nesting of YAML nodes (a species config needs 3).
MAX_DEPTH = 20
#: Longest integer literal, in characters.
MAX_INT_CHARS = 30

_Refused = yaml.constructor.ConstructorError


class YamlError(InputError):
    """A file that is not YAML, or not YAML we read. The message names the file and the line."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that also refuses a key given twice in one mapping (PyYAML keeps the last
    silently), nodes nested deeper than :data:`MAX_DEPTH`, merge keys, keys that are lists or
    mappings, and integer literals longer than :data:`MAX_INT_CHARS`."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(None, None, "merge keys ('<<') are not supported", key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused(None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _Refused(None, None, f"key {excerpt(key)} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_CHARS:
            raise _Refused(None, None, f"an integer of {len(node.value)} characters is out of range", node.start_mark)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _key_at(node: Any, index: int, sections: Collection[str]) -> str:
    """The key whose value holds character ``index`` of the text: ``section.key`` inside one of
    ``sections``, else a top-level key ("" when none does)."""
    path: list[str] = []
    while isinstance(node, yaml.MappingNode) and (not path or (len(path) == 1 and path[0] in sections)):
        inside = [(k, v) for k, v in node.value if v.start_mark.index <= index < v.end_mark.index]
        if not inside or not isinstance(inside[0][0], yaml.ScalarNode):
            break
        path.append(str(inside[0][0].value)[:EXCERPT])
        node = inside[0][1]
    return ".".join(path)


def parse_yaml(text: str, where: str, sections: Collection[str] = ()) -> Any:
    """The one YAML document in ``text`` (None when it is empty); YamlError naming ``where``, the
    line and column, and the key under which the problem is when that can be told (a top-level
    key, or ``section.key`` for a top-level key in ``sections``)."""
    loader = _BoundedLoader(text)
    root = None
    try:
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        key = _key_at(root, mark.index, sections) if mark is not None and root is not None else ""
        under = f" (under key {excerpt(key)})" if key else ""
        what = str(getattr(e, "problem", None) or e)[: 4 * EXCERPT]
        raise YamlError(f"{where}: not valid YAML{at}{under}: {what}") from None
    finally:
        loader.dispose()


def read_yaml(path, sections: Collection[str] = ()) -> Any:
    """Read and parse the YAML file ``path`` (UTF-8, at most :data:`MAX_BYTES`); YamlError naming
    the file for a file that cannot be read, is too large, is not UTF-8 or not YAML we read (see
    :func:`parse_yaml` for ``sections``)."""
    where = str(path)
    try:
        with open(Path(path), "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as e:
        raise YamlError(f"{where}: cannot read species config: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise YamlError(f"{where}: larger than {MAX_BYTES} bytes, which no species config is")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(f"{where}: not UTF-8 text (byte {e.start}): {e.reason}") from None
    return parse_yaml(text, where, sections)
