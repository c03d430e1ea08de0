"""Execution ids: a random UUID's 128 bits in base62 (`headrace.ids`), 22 URL-safe
characters, sortable only by chance."""

from __future__ import annotations

import uuid

from headrace.ids import ID_LENGTH, base62

__all__ = ["ID_LENGTH", "new_execution_id"]


def new_execution_id() -> str:
    return base62(uuid.uuid4().int)
