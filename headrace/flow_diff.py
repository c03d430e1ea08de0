"""Unified diffs of flow sources, as `diff -u` prints them: what `flow apply` shows for an
update and what `flow diff` (and `GET /api/v1/flows/{namespace}/{id}/diff`) answers."""

from __future__ import annotations

import difflib
import re

NO_NEWLINE = "\\ No newline at end of file\n"
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def _lines(text: str) -> list[str]:
    # On "\n" only, as diff does: YAML sources may hold other line separators in values.
    lines = _LINE.findall(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n" + NO_NEWLINE
    return lines


def unified_diff(old: str, new: str, old_name: str, new_name: str, context: int = 3) -> str:
    """The unified diff from `old` to `new` (empty when they are equal), its headers
    naming them `old_name` and `new_name`."""
    return "".join(difflib.unified_diff(_lines(old), _lines(new), old_name, new_name, n=context))
