"""Spec text -> plain data, within limits: the only way spec YAML or JSON becomes Python objects.

A spec may hold only plain values: text, integers, floats, booleans, null, lists and mappings
with text keys. :func:`load_spec_data` reads YAML with :class:`SpecLoader`, a ``SafeLoader``
that refuses ``!!binary``, ``!!timestamp``, ``!!set``, ``!!omap``, ``!!pairs`` and every other
tag (python tags included) with the line, reads unquoted dates as text (as YAML 1.2 does) and
refuses duplicate keys. The limits (:data:`MAX_TEXT_BYTES`, :data:`MAX_DEPTH`,
:data:`MAX_ALIASES`, :data:`MAX_NODES`) are checked while the node tree is composed, counting
each alias as the whole subtree it repeats, so an alias bomb is refused in milliseconds, before
any Python object is made. :func:`check_plain` applies the same rules to data parsed elsewhere
(a JSON body, a study's stored spec, a dict built in code).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import yaml
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from search.errors import SpecError

MAX_TEXT_BYTES = 256 * 1024
MAX_DEPTH = 20
MAX_ALIASES = 100
MAX_NODES = 10_000
MAX_QUOTE = 200
INT64_MAX = 2**63 - 1

_TAG = "tag:yaml.org,2002:"
_REFUSED_TAGS = ("binary", "timestamp", "set", "omap", "pairs")
_PLAIN_HINT = "a spec holds only text, numbers, true/false, null, lists and mappings"


def quote(value: Any, limit: int = MAX_QUOTE) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages never echo a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _at(source: str, node_or_event: Any) -> str:
    mark = getattr(node_or_event, "start_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else "spec"
    return f"{source}: {where}"


class SpecLoader(yaml.SafeLoader):
    """A SafeLoader for specs: plain types only, limits checked on the node tree."""

    def __init__(self, stream: str, source: str = "spec") -> None:
        super().__init__(stream)
        self.source = source
        self._aliases = 0
        self._nodes = 0  # nodes composed so far, each alias counted as the subtree it repeats
        self._heights: list[int] = []  # per open node: the height of its tallest child so far
        self._sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)

    def _too_many(self, what: str, limit: int, event: Any) -> SpecError:
        return SpecError(
            f"{_at(self.source, event)}: more than {limit} {what}; {_PLAIN_HINT}, and a real "
            "spec needs far fewer: write the values out"
        )

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            anchor = str(event.anchor)
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise self._too_many("aliases (*name)", MAX_ALIASES, event)
            if anchor in self.anchors and anchor not in self._sizes:
                raise SpecError(
                    f"{_at(self.source, event)}: alias *{quote(anchor, 40)} refers to a node "
                    "that contains it (a recursive structure); write the values out"
                )
            size, height = self._sizes.get(anchor, (1, 1))
            self._grow(size, height, event)
            return super().compose_node(parent, index)
        if isinstance(event, ScalarEvent | SequenceStartEvent | MappingStartEvent):
            self._heights.append(0)
            if len(self._heights) > MAX_DEPTH:
                raise self._too_many("levels of nesting", MAX_DEPTH, event)
            before = self._nodes
            self._grow(1, 0, event)
            node = super().compose_node(parent, index)
            height = 1 + self._heights.pop()
            if self._heights:
                self._heights[-1] = max(self._heights[-1], height)
            if event.anchor is not None:
                self._sizes[str(event.anchor)] = (self._nodes - before, height)
            return node
        return super().compose_node(parent, index)

    def _grow(self, nodes: int, height: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise self._too_many("values (aliases count as what they repeat)", MAX_NODES, event)
        if self._heights:
            self._heights[-1] = max(self._heights[-1], height)
            if len(self._heights) + height > MAX_DEPTH:
                raise self._too_many("levels of nesting (aliases included)", MAX_DEPTH, event)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _TAG + "merge":
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                raise SpecError(
                    f"{_at(self.source, key_node)}: a key must be text, got {quote(shown)}; "
                    "write the key as a plain word"
                )
            if key_node.value in seen:
                raise SpecError(
                    f"{_at(self.source, key_node)}: key {quote(key_node.value)} appears twice in "
                    "the same mapping; keep one"
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise SpecError(
                f"{_at(self.source, node)}: the number {quote(node.value, 40)} is too long; "
                f"numbers in a spec fit in 64 bits"
            ) from None


def _refuse(loader: SpecLoader, node: Node) -> Any:
    tag = str(node.tag).replace(_TAG, "!!")
    raise SpecError(
        f"{_at(loader.source, node)}: {quote(tag, 60)} values are not allowed; {_PLAIN_HINT} "
        "(quote a value to make it text)"
    )


for _name in _REFUSED_TAGS:
    SpecLoader.add_constructor(_TAG + _name, _refuse)
SpecLoader.add_constructor(None, _refuse)  # any other tag: !!python/..., !custom
SpecLoader.add_constructor(_TAG + "int", SpecLoader.construct_yaml_int)
# YAML 1.2 has no implicit dates: an unquoted 2024-01-01 stays text
SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TAG + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_error(exc: yaml.YAMLError, source: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = " ".join(str(getattr(exc, "problem", None) or "not valid YAML").split())
    if isinstance(exc, yaml.reader.ReaderError):
        problem = f"character #x{exc.character:04x} is not allowed in YAML"
        where = f" at character {exc.position + 1}"
    return SpecError(f"{source}: {problem[:MAX_QUOTE]}{where}; fix the YAML syntax")


def load_spec_data(text: str | bytes, *, source: str = "spec", as_json: bool = False) -> Any:
    """Spec text (YAML, or JSON when ``as_json``) as plain data, within the limits."""
    size = len(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise SpecError(
            f"{source}: longer than the limit of {MAX_TEXT_BYTES} bytes; a spec is a few "
            "hundred bytes: remove what does not belong in it"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(
                f"{source}: not UTF-8 text (byte {exc.start}); save the spec as UTF-8"
            ) from None
    if as_json:
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except (RecursionError, ValueError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise SpecError(f"{source}: not a valid spec ({quote(reason)[1:-1]})") from None
    else:
        try:
            loader = SpecLoader(text, source)  # reads the text: may refuse a character
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, source) from None
    check_plain(data, source, strict=True)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a spec can hold")


def _path(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + quote(p, 40).strip("'")
    return out or "spec"


_FORBIDDEN = {
    bytes: "binary data (YAML !!binary)",
    bytearray: "binary data",
    datetime.date: "a date (YAML !!timestamp)",
    datetime.datetime: "a date and time (YAML !!timestamp)",
    datetime.time: "a time",
    set: "a set (YAML !!set)",
    frozenset: "a set",
}


def check_plain(data: Any, source: str = "spec", *, strict: bool = False) -> None:
    """Raise a SpecError unless ``data`` is plain spec data within :data:`MAX_DEPTH` and
    :data:`MAX_NODES` (shared objects count once per use, cycles are refused). ``strict``
    allows nothing but plain types; otherwise other objects (a ``Path`` from code) pass."""
    sizes: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()

    def fail(path: tuple[str | int, ...], what: str) -> SpecError:
        return SpecError(f"{source}: {_path(path)}: {what}")

    def walk(obj: Any, path: tuple[str | int, ...], depth: int) -> tuple[int, int]:
        if depth > MAX_DEPTH:
            raise fail(path, f"more than {MAX_DEPTH} levels of nesting; a spec needs far fewer")
        if isinstance(obj, str):
            if "\x00" in obj:
                raise fail(path, "contains a NUL character; remove it")
            return 1, 1
        if isinstance(obj, float) and obj != obj:
            raise fail(path, "NaN is not a value a spec can hold; give a number")
        if isinstance(obj, bool) or obj is None or isinstance(obj, float):
            return 1, 1
        if isinstance(obj, int):
            if abs(obj) > INT64_MAX:
                raise fail(path, f"the number {quote(obj, 40)} does not fit in 64 bits")
            return 1, 1
        for kind, what in _FORBIDDEN.items():
            if isinstance(obj, kind):
                raise fail(path, f"{what} is not allowed; {_PLAIN_HINT}")
        if not isinstance(obj, dict | list | tuple):
            if strict:
                raise fail(path, f"a {type(obj).__name__} is not allowed; {_PLAIN_HINT}")
            return 1, 1
        key = id(obj)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise fail(path, "contains itself (a recursive structure); write the values out")
        open_.add(key)
        total, height = 1, 0
        if isinstance(obj, dict):
            items: list[tuple[str | int, Any]] = []
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise fail(path, f"a key must be text, got {quote(k)}")
                items.append((k, v))
        else:
            items = list(enumerate(obj))
        for k, v in items:
            n, h = walk(v, (*path, k), depth + 1)
            total, height = total + n, max(height, h)
            if total > MAX_NODES:
                raise fail(path, f"more than {MAX_NODES} values; a spec needs far fewer")
            if depth + height > MAX_DEPTH:
                raise fail(path, f"more than {MAX_DEPTH} levels of nesting; a spec needs far fewer")
        open_.discard(key)
        sizes[key] = (total, height + 1)
        return sizes[key]

    walk(data, (), 1)
