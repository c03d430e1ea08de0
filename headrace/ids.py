"""Base62 ids: the one encoding of a 128-bit number as 22 URL-safe characters.

Used by the core (ids derived from hashes) and the gateway (ids from random UUIDs), so
every id in the system has the same alphabet and length.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 22  # 62**22 > 2**128: every 128-bit number fits, every id has the same length
# Two digits per division: the executor derives one id per task run, on its hot path.
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]
_PAIR_BASE = len(_PAIRS)
_LIMIT = 62**ID_LENGTH


def looks_like_id(text: str) -> bool:
    """Whether `text` has an id's form (22 base62 digits): a cheap first check of ids
    that come from outside."""
    return len(text) == ID_LENGTH and all(char in _DIGITS for char in text)


_DIGITS = frozenset(ALPHABET)


def base62(number: int) -> str:
    """`number` (0 <= number < 62**22, e.g. any 128-bit value) as 22 base62 digits."""
    if not 0 <= number < _LIMIT:
        raise ValueError(f"{number} does not fit in {ID_LENGTH} base62 digits")
    pairs = []
    for _ in range(ID_LENGTH // 2):
        number, pair = divmod(number, _PAIR_BASE)
        pairs.append(_PAIRS[pair])
    return "".join(reversed(pairs))
