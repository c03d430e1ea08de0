"""Hides secret values in what a worker publishes: log lines, errors, outputs.

Each secret is looked for in the encodings a task is likely to print it in:
- as it is, and in any letter case (`ABC`, `abc`, `AbC`);
- JSON-escaped (`"` `\\` control and non-ASCII characters as `json.dumps` writes them);
- URL-encoded, as `quote` (with and without `/` kept) and `quote_plus` write it;
- hex of its UTF-8 bytes, in any letter case;
- base64 and base64url of its UTF-8 bytes, alone (with or without padding) or inside a
  longer base64 text: a secret starting 0, 1 or 2 bytes into a base64 block encodes to
  three different character runs, and each run is masked (the 1-2 characters at its
  edges that mix in neighbouring bytes stay: they give away a few bits, not the secret).
  Base64 is matched in its exact case (another case decodes to other bytes);
- each line of a multi-line secret on its own, since log lines arrive one at a time.

All forms of all secrets are compiled into one regular expression built from a trie of
the forms, so the cost per line grows little with the number of secrets (see
docs/benchmarks.md). Matchers are cached per set of secret values: a worker's secrets
do not change while it runs, so one is built per worker, not per attempt.

What cannot be caught is listed in docs/security.md ("Tasks and secrets"): reversed,
spaced-out, split, encrypted or hashed copies, and secrets shorter than
`MIN_MASKED_SECRET_CHARS`.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "******"
# Shorter secret values are not masked: replacing every "a" or "42" would make logs
# unreadable while protecting nothing (such a value is guessed in a few tries anyway).
MIN_MASKED_SECRET_CHARS = 3
# A base64 run shorter than this (a secret of 4 bytes or less, shifted in its block) is
# not masked: 4-5 characters of base64 turn up by chance in ordinary text.
MIN_BASE64_RUN_CHARS = 6
# PostgreSQL rejects NUL in text and jsonb; one would crash-loop the indexer.
NUL = "\x00"
REPLACEMENT_CHARACTER = "\ufffd"
# Distinct secret sets whose matcher is kept: a worker has one; tests build a few.
CACHED_MATCHERS = 16


def _base64_runs(data: bytes) -> set[str]:
    """The base64 and base64url characters `data` fixes alone, at each of the three
    offsets it can start at in a base64 block, plus its whole padded encodings."""
    runs = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        # Characters are 6 bits: the first ones mix in the `shift` bytes before the
        # secret, the last one the bytes after it.
        start = -(-8 * shift // 6)
        end = 8 * (shift + len(data)) // 6
        run = encoded[start:end]
        if len(run) >= MIN_BASE64_RUN_CHARS:
            runs.add(run)
    whole = base64.b64encode(data).decode()
    runs.add(whole)
    runs |= {run.translate(_URLSAFE) for run in runs}
    return runs


_URLSAFE = str.maketrans("+/", "-_")


def secret_forms(value: str) -> tuple[set[str], set[str]]:
    """The texts to mask for one secret: (matched in any case, matched exactly)."""
    any_case: set[str] = set()
    exact: set[str] = set()
    pieces = [value, *value.splitlines()] if "\n" in value or "\r" in value else [value]
    for piece in pieces:
        if len(piece) < MIN_MASKED_SECRET_CHARS:
            continue
        data = piece.encode("utf-8", errors="surrogatepass")
        any_case |= {
            piece,
            # IGNORECASE folds one character at a time: "ß" would not match "SS".
            piece.upper(),
            piece.lower(),
            json.dumps(piece)[1:-1],
            json.dumps(piece, ensure_ascii=False)[1:-1],
            quote(piece, safe=""),
            quote(piece),
            quote_plus(piece),
            data.hex(),
        }
        exact |= _base64_runs(data)
    return any_case, exact


def _fold(char: str) -> str:
    """`char` in lower case when that is one character (what IGNORECASE compares)."""
    lower = char.lower()
    return lower if len(lower) == 1 else char


def _trie_pattern(words: Iterable[str], *, any_case: bool) -> str | None:
    """A regular expression matching any of `words`, longest first, as a trie: at each
    position the engine follows one branch instead of trying every word in turn.
    `any_case`: letters are folded, so that `ABC` and `abcdef` share a branch (as two
    branches, IGNORECASE would stop at whichever comes first, maybe the shorter)."""
    root: dict[str, Any] = {}
    for word in words:
        if not word:
            continue
        node = root
        for char in word:
            node = node.setdefault(_fold(char) if any_case else char, {})
        node[""] = {}  # the end of a word
    if not root:
        return None

    def build(node: dict[str, Any]) -> str:
        branches = []
        for char in sorted(key for key in node if key):
            # A chain of single-child nodes is one literal: recursion only at branch
            # points, however long a secret is.
            literal, child = char, node[char]
            while len(child) == 1 and "" not in child:
                (next_char,) = child
                literal += next_char
                child = child[next_char]
            rest = build(child) if any(key for key in child) else ""
            branches.append(re.escape(literal) + rest)
        ends_here = "" in node
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends_here else body

    return build(root)


@functools.lru_cache(maxsize=CACHED_MATCHERS)
def _matcher(values: frozenset[str]) -> re.Pattern[str] | None:
    any_case: set[str] = set()
    exact: set[str] = set()
    for value in values:
        forms = secret_forms(value)
        any_case |= forms[0]
        exact |= forms[1]
    parts = []
    insensitive = _trie_pattern(any_case, any_case=True)
    if insensitive is not None:
        parts.append(f"(?i:{insensitive})")
    sensitive = _trie_pattern(exact - any_case, any_case=False)
    if sensitive is not None:
        parts.append(sensitive)
    return re.compile("|".join(parts)) if parts else None


class Masker:
    """Makes text publishable: masks every form of the secret values (the longest match
    at each position, so a secret containing another hides whole) and replaces NUL."""

    def __init__(self, values: Iterable[str]) -> None:
        self._pattern = _matcher(frozenset(values))

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return text.replace(NUL, REPLACEMENT_CHARACTER)

    def value(self, item: Any) -> Any:
        """`item` with every string in it (dict keys too, at any depth) made publishable."""
        if isinstance(item, str):
            return self(item)
        if isinstance(item, dict):
            return {
                self(key) if isinstance(key, str) else key: self.value(sub)
                for key, sub in item.items()
            }
        if isinstance(item, list | tuple):
            return [self.value(sub) for sub in item]
        return item
