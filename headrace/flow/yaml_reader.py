"""Reads a flow's YAML text into plain values and the position of each, within limits.

A flow comes from anyone who can reach the API, so reading it must stay cheap whatever
the text: the size is checked first, then libyaml (through ruamel.yaml's C parser; the
pure-Python parser when the C one is not installed, same results, slower) turns the text
into a stream of events, and this module builds the values from that stream without
recursion, counting as it goes. A document that nests deeper than `MAX_DEPTH`, holds
more than `MAX_ALIASES` aliases, or expands (aliases included: "billion laughs") to more
than `MAX_NODES` values is refused as soon as the event that crosses the line arrives
(`headrace.flow.limits`). So is a number JSON cannot carry: an integer beyond 64 bits,
`.inf` or `.nan`.

Values are plain `dict`, `list`, `str`, `int`, `float`, `bool` and `None` (YAML 1.2
rules unless the document says `%YAML 1.1`; timestamps become ISO-8601 text: flows
travel as JSON). `Marks` keeps the 1-based line and column of every value and every
mapping key, so that a problem found later can point at its source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from headrace.flow.errors import FlowError
from headrace.flow.limits import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_FLOW_BYTES,
    MAX_INTEGER,
    MAX_NODES,
    MIN_INTEGER,
)

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
# Explicit tags a flow may use (`!!str 10`); others (`!!python/...`, `!custom`) are refused.
_SCALAR_TAGS = frozenset(
    _TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")
)

Position = tuple[int, int]


@dataclass(slots=True)
class Marks:
    """Where a mapping or list and everything in it is written (1-based line, column)."""

    at: Position
    items: dict[Any, Marks | Position] = field(default_factory=dict)  # key or index
    keys: dict[Any, Position] = field(default_factory=dict)  # mapping keys themselves

    def position(self, loc: tuple[Any, ...], on_key: bool = False) -> Position:
        """The value at `loc` (its key with `on_key`), or its nearest existing parent."""
        node: Marks | Position = self
        at = self.at
        for i, part in enumerate(loc):
            if not isinstance(node, Marks) or not _is_key(part) or part not in node.items:
                break
            if on_key and i == len(loc) - 1 and part in node.keys:
                return node.keys[part]
            node = node.items[part]
            at = node.at if isinstance(node, Marks) else node
        return at


@dataclass(frozen=True, slots=True)
class Document:
    data: Any
    marks: Marks | Position


class YamlProblem(Exception):
    """The text is not a YAML document we read: `error` says what and where."""

    def __init__(self, error: FlowError) -> None:
        super().__init__(error.message)
        self.error = error


def read_yaml(text: str, *, pure: bool = False) -> Document:
    """The one document in `text`. Raises `YamlProblem` for invalid YAML or a limit.

    `pure` forces the pure-Python parser (what runs where ruamel.yaml.clib is missing).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FLOW_BYTES:
        raise YamlProblem(
            FlowError(
                "",
                None,
                None,
                f"the flow is {size} bytes, over the {MAX_FLOW_BYTES} a flow may take",
                "split it into subflows (flow.subflow)",
            )
        )
    try:
        return _Builder(text, pure).build()
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        if exc.context:
            problem += f" ({exc.context})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise YamlProblem(FlowError("", line, column, f"invalid YAML: {problem}")) from None
    except YAMLError as exc:
        # The reader's errors (e.g. control characters) give a character offset only.
        line = column = None
        position = getattr(exc, "position", None)
        if isinstance(position, int):
            line = text.count("\n", 0, position) + 1
            column = position - text.rfind("\n", 0, position)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise YamlProblem(FlowError("", line, column, f"invalid YAML: {reason}")) from None


def _is_key(value: Any) -> bool:
    return isinstance(value, Hashable) and not isinstance(value, tuple)


def _position(event: Any) -> Position:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _tag(event: Any) -> str | None:
    tag = getattr(event, "ctag", None) or event.tag  # pure parser: a Tag; C parser: text
    if tag is None:
        return None
    text = str(tag)
    return None if text == "!" else text


_STR = _TAG + "str"
_MISSING = object()
Implicit = dict[str | None, list[tuple[str, re.Pattern[str]]]]


@lru_cache(maxsize=4)
def _implicit_types(version: tuple[int, ...] | None) -> Implicit:
    """First character -> [(tag, pattern)] of plain scalars, for a YAML version.

    ruamel's own table, read once: its resolver builds a tag object per scalar, which
    cost more than the rest of the reading.
    """
    table = VersionedResolver(version=version).versioned_resolver
    return {
        first: [(str(tag), pattern) for tag, pattern in rules] for first, rules in table.items()
    }


def _constructor(version: tuple[int, ...] | None) -> SafeConstructor:
    """ruamel's constructor of plain values, reading numbers by `version`'s rules."""
    # It asks its loader for a resolver only to learn the version (`010` is 8 in 1.1).
    loader = SimpleNamespace(_resolver=VersionedResolver(version=version))
    return SafeConstructor(loader=loader)


@dataclass(slots=True)
class _Open:
    """A mapping or list being built."""

    value: dict | list
    marks: Marks
    size: int  # values in it so far, itself included (what an alias of it adds)
    anchor: str | None
    pending_key: Any = None
    has_key: bool = False
    key_at: Position | None = None
    merged: list[tuple[dict, Marks]] = field(default_factory=list)
    explicit: set = field(default_factory=set)


class _Builder:
    def __init__(self, text: str, pure: bool) -> None:
        self._text = text
        self._yaml = YAML(typ="safe", pure=pure)  # one per read: not thread-safe
        self._version: tuple[int, ...] | None = None  # None: YAML 1.2
        self._implicit = _implicit_types(None)
        self._scalars: dict[tuple[str, str], Any] = {}  # (tag, text) -> value: read once
        self._constructor = _constructor(None)
        self._anchors: dict[str, tuple[Any, Marks | Position, int]] = {}
        self._stack: list[_Open] = []
        self._nodes = 0
        self._aliases = 0
        self._documents = 0
        self._result: Document | None = None

    def build(self) -> Document:
        for event in self._yaml.parse(self._text):
            if isinstance(event, ScalarEvent):
                value = self._scalar(event)
                self._count(1, event)
                self._add(value, _position(event), 1, event.anchor, event)
            elif isinstance(event, SequenceStartEvent | MappingStartEvent):
                self._start(event)
            elif isinstance(event, SequenceEndEvent | MappingEndEvent):
                self._end()
            elif isinstance(event, AliasEvent):
                self._alias(event)
            elif isinstance(event, DocumentStartEvent):
                self._documents += 1
                if self._documents > 1:
                    self._fail(event, "a flow is one YAML document; found a second one (---)")
                version = event.version
                self._version = tuple(version) if version else None
                self._implicit = _implicit_types(self._version)
                self._constructor = _constructor(self._version)
        return self._result or Document(None, (1, 1))

    def _fail(self, event: Any, message: str) -> None:
        line, column = _position(event)
        raise YamlProblem(FlowError("", line, column, message))

    def _count(self, nodes: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            self._fail(event, f"the document expands to more than {MAX_NODES} values")

    def _scalar(self, event: ScalarEvent) -> Any:
        tag = _tag(event)
        if tag is None:
            tag = _STR
            if event.implicit[0]:  # plain (unquoted): the version's rules pick the type
                table = self._implicit
                for candidate, pattern in table.get(event.value[:1], []) + table.get(None, []):
                    if pattern.match(event.value):
                        tag = candidate
                        break
        if tag == _STR:
            return event.value
        if tag == _MERGE:
            return _MergeKey
        if tag not in _SCALAR_TAGS:
            self._fail(event, f"invalid YAML: unsupported tag {tag!r} (write plain values)")
        known = self._scalars.get((tag, event.value), _MISSING)
        if known is not _MISSING:
            return known
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark)
        try:
            value = self._constructor.yaml_constructors[tag](self._constructor, node)
        except (ConstructorError, ValueError) as exc:
            self._fail(event, f"invalid YAML: {tag.removeprefix(_TAG)} value: {exc}")
        if isinstance(value, datetime | date):
            value = value.isoformat()  # flows travel as JSON
        elif isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
            self._fail(event, f"the integer {event.value} is beyond 64 bits: write it as text")
        elif isinstance(value, float) and not math.isfinite(value):
            self._fail(event, f"{event.value} is not a finite number, which JSON cannot carry")
        self._scalars[(tag, event.value)] = value
        return value

    def _start(self, event: Any) -> None:
        tag = _tag(event)
        is_map = isinstance(event, MappingStartEvent)
        expected = _TAG + ("map" if is_map else "seq")
        if tag is not None and tag != expected:
            self._fail(event, f"invalid YAML: unsupported tag {tag!r} (write plain values)")
        if len(self._stack) >= MAX_DEPTH:
            self._fail(event, f"the document nests deeper than {MAX_DEPTH} levels")
        self._count(1, event)
        self._stack.append(_Open({} if is_map else [], Marks(_position(event)), 1, event.anchor))

    def _end(self) -> None:
        done = self._stack.pop()
        if isinstance(done.value, dict):
            for source, source_marks in done.merged:  # explicit keys win, earlier merges win
                for key, item in source.items():
                    if key not in done.value:
                        done.value[key] = item
                        done.marks.items[key] = source_marks.items[key]
                        if key in source_marks.keys:
                            done.marks.keys[key] = source_marks.keys[key]
        self._add(done.value, done.marks, done.size, done.anchor, None)

    def _alias(self, event: AliasEvent) -> None:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            self._fail(event, f"the document uses more than {MAX_ALIASES} aliases")
        found = self._anchors.get(event.anchor)
        if found is None:
            self._fail(event, f"invalid YAML: found undefined alias {event.anchor!r}")
        value, marks, size = found
        self._count(size, event)
        # The same value object, not a copy: its size was counted just above.
        self._add(value, marks, size, None, event)

    def _add(self, value: Any, marks: Marks | Position, size: int, anchor: Any, event: Any) -> None:
        if anchor is not None:
            self._anchors[anchor] = (value, marks, size)
        if not self._stack:
            self._result = Document(value, marks)
            return
        parent = self._stack[-1]
        parent.size += size
        if isinstance(parent.value, list):
            parent.marks.items[len(parent.value)] = marks
            parent.value.append(value)
            return
        if not parent.has_key:
            if isinstance(value, dict | list):
                at = marks.at if isinstance(marks, Marks) else marks
                raise YamlProblem(
                    FlowError(
                        "", *at, "a mapping key must be text or a number, not a mapping or list"
                    )
                )
            parent.pending_key, parent.has_key = value, True
            parent.key_at = marks if isinstance(marks, tuple) else marks.at
            return
        key, parent.has_key = parent.pending_key, False
        if key is _MergeKey:
            self._merge(parent, value, marks)
            return
        if key in parent.explicit:
            line, column = parent.key_at or parent.marks.at
            raise YamlProblem(
                FlowError("", line, column, f"invalid YAML: found duplicate key {key!r}")
            )
        parent.explicit.add(key)
        parent.value[key] = value
        parent.marks.items[key] = marks
        if parent.key_at is not None:
            parent.marks.keys[key] = parent.key_at

    def _merge(self, parent: _Open, value: Any, marks: Marks | Position) -> None:
        """`<<: *base` or `<<: [*a, *b]`: keys the mapping does not set itself."""
        sources = [(value, marks)] if isinstance(value, dict) else []
        if isinstance(value, list) and isinstance(marks, Marks):
            sources = [(item, marks.items[i]) for i, item in enumerate(value)]
        line, column = parent.key_at or parent.marks.at
        if not sources or not all(
            isinstance(item, dict) and isinstance(item_marks, Marks) for item, item_marks in sources
        ):
            raise YamlProblem(
                FlowError("", line, column, "invalid YAML: `<<` merges a mapping or a list of them")
            )
        parent.merged.extend(sources)  # type: ignore[arg-type]


class _MergeKeyType:
    """The `<<` key: its value's keys are merged into the mapping, not stored under it."""

    def __repr__(self) -> str:
        return "'<<'"


_MergeKey = _MergeKeyType()
