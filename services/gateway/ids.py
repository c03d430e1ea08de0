"""Execution ids: 22 base62 characters from a random UUID (128 bits, URL-safe, sortable
only by chance). The same alphabet and length as `headrace.core.ids`."""

from __future__ import annotations

import uuid

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 22  # 62**22 > 2**128: every uuid fits, every id has the same length


def new_execution_id() -> str:
    number = uuid.uuid4().int
    digits = []
    for _ in range(ID_LENGTH):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))
