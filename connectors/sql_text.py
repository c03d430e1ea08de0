"""SQL text as PostgreSQL reads it: statements split at `;`, `:name` parameters found.

Both need to know what is code and what is not: a `;` or a `:name` inside a string
('it;s'), a quoted identifier ("a:b"), a comment or a dollar-quoted body ($$ ... $$) is
text, and `::` is a cast. One scanner (`_code_spans`) finds the code between those; the
rest only looks there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def _code_spans(sql: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each stretch of `sql` that is code: not a string, a quoted
    identifier, a comment or a dollar-quoted body."""
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        end = None
        if c in "'\"":
            # E'...' strings take backslash escapes (E'it\'s'); others do not.
            escapes = c == "'" and i > 0 and sql[i - 1] in "eE" and not _after_word(sql, i - 1)
            end = i + 1
            while end < n:  # a doubled quote is a quote inside
                if escapes and sql[end] == "\\":
                    end += 2
                    continue
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:
                        end += 2
                        continue
                    break
                end += 1
            end += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end = n if close < 0 else close + 2
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)) and not _after_word(sql, i):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
        if end is None:
            i += 1
            continue
        if i > start:
            yield start, i
        start = i = end
    if start < n:
        yield start, n


def _after_word(sql: str, i: int) -> bool:
    # `$1` is a parameter, and `a$b$` part of a name: neither opens a dollar quote.
    return i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")


def split_statements(sql: str) -> list[str]:
    """The statements of `sql`, without their `;` and without empty ones."""
    cuts = [
        start + offset
        for start, end in _code_spans(sql)
        for offset, char in enumerate(sql[start:end])
        if char == ";"
    ]
    pieces, begin = [], 0
    for cut in [*cuts, len(sql)]:
        pieces.append(sql[begin:cut])
        begin = cut + 1
    return [piece.strip() for piece in pieces if _has_code(piece)]


def _has_code(piece: str) -> bool:
    return any(piece[start:end].strip() for start, end in _code_spans(piece))


def named_parameters(statement: str) -> tuple[str, list[str]]:
    """`statement` with each `:name` in code replaced by `$n`, and the names in `$n`
    order (a name used twice is one parameter)."""
    names: list[str] = []
    out: list[str] = []
    last = 0
    for start, end in _code_spans(statement):
        for match in _NAMED.finditer(statement, start, end):
            name = match.group(1)
            if name not in names:
                names.append(name)
            out.append(statement[last : match.start()])
            out.append(f"${names.index(name) + 1}")
            last = match.end()
    out.append(statement[last:])
    return "".join(out), names
