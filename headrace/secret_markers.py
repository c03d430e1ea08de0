"""Secret markers: how `{{ secret('NAME') }}` travels from the executor to the worker.

The executor never holds secret values. While it renders one attempt's task properties,
`secret('NAME')` gives a marker `\\0secret:<nonce>:NAME\\0` and records NAME in the
attempt's `SecretScope`; the `TaskRequest` carries the properties, the nonce
(`secret_nonce`) and the names (`secret_names`). The worker, which holds the secrets,
swaps markers for values just before the task runs (`resolve_secrets`).

Why a nonce: marker text is easy to write, and a value from outside (an execution input,
a webhook or resume body, an upstream task's output) that lands in a property must stay
data. The names alone are not enough: if a flow uses `secret('DB')` in one property, an
input carrying the DB marker that lands in another property (sent over HTTP, or to a
shell) would be resolved too. So a marker only counts when it holds its attempt's nonce,
which nobody outside can know in advance:
- the nonce is derived (`request_nonce`) from a random seed the executor's shell draws
  for each `advance` call (`headrace.core.context.secret_seed`) and the attempt's ids.
  Every value rendered into the properties existed before that seed was drawn, so none
  can hold the nonce. A fresh seed rather than a key-derived nonce (HMAC of the attempt
  id): no key to configure or share, and soundness does not rest on an attempt always
  being rendered from the same data (a key-derived nonce repeats when a batch is redone).
  Replays of the same events are byte-identical only for the same seed, as for `now`;
- distinct per attempt, so a nonce that leaks (`{{ secret('X') | b64encode }}` logs the
  marker's bytes) is useless: its attempt is rendered already;
- templates cannot read the scope (its context key is not a name a template can write),
  and `secret()` is refused inside `render()`, whose text may come from outside.
The worker resolves a marker only if it holds the request's nonce AND its name is in
`secret_names`; any other marker-like text is left as it is. A request without a nonce
(an older executor's) resolves nothing: fail closed.

Markers rendered outside an attempt's properties (flow outputs, for-each values, subflow
inputs) get an empty nonce: they never resolve (`secret()` is for task properties).

Pure: no I/O, no clock, no randomness (the seed comes in).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from headrace.errors import PathError

MARKER_PREFIX = "\x00secret:"
MARKER_SUFFIX = "\x00"
NAME_PATTERN = r"[A-Za-z0-9_.-]+"
_NAME = re.compile(f"^{NAME_PATTERN}$")
# 128 bits of hex: too many to guess, short enough to keep markers readable in a dump.
NONCE_HEX_CHARS = 32
# The render context key of the attempt's `SecretScope`. Not an identifier, so no
# template can read it (and learn the nonce): only `secret()` fetches it.
SCOPE_KEY = "secret scope"


class SecretError(PathError):
    """A marker of the request names a secret the worker does not have."""


@dataclass(slots=True)
class SecretScope:
    """The secrets of one attempt's properties while they render: the marker nonce, and
    the names `secret()` was called for (in order of first call). `reads`: whether
    `read()` made markers too (headrace.stored_reads: they take the same nonce)."""

    nonce: str
    names: list[str] = field(default_factory=list)
    reads: bool = False


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.match(name) is not None


def request_nonce(seed: str, execution_id: str, task_run_id: str, attempt: int) -> str:
    """The nonce of one attempt's markers; "" without a seed (then no marker can resolve)."""
    if not seed:
        return ""
    text = f"{seed}\n{execution_id}\n{task_run_id}\n{attempt}"
    return hashlib.sha256(text.encode()).hexdigest()[:NONCE_HEX_CHARS]


def marker(name: str, nonce: str) -> str:
    return f"{MARKER_PREFIX}{nonce}:{name}{MARKER_SUFFIX}"


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def resolve_secrets(
    value: Any,
    lookup: Callable[[str], str | None],
    *,
    nonce: str,
    names: list[str],
    path: str = "",
) -> tuple[Any, list[str]]:
    """Replace this request's markers in every string of `value` by the secrets' values.

    A marker counts only with `nonce` (non-empty) and a name in `names`; other marker
    text is data and stays as it is. Returns the resolved value and the secret values
    used (each once, in order of first use) so that logs can mask them. Raises
    `SecretError` for a secret `lookup` does not know.
    """
    if not nonce or not names:
        return value, []
    prefix = MARKER_PREFIX + nonce + ":"
    pattern = re.compile(re.escape(prefix) + f"({NAME_PATTERN})" + re.escape(MARKER_SUFFIX))
    allowed = frozenset(names)
    used: list[str] = []

    def resolve(item: Any, where: str) -> Any:
        if isinstance(item, str):
            if prefix not in item:
                return item
            return pattern.sub(lambda match: substitute(match, where), item)
        if isinstance(item, Mapping):
            return {key: resolve(sub, _join(where, key)) for key, sub in item.items()}
        if isinstance(item, list | tuple):
            return [resolve(sub, _join(where, i)) for i, sub in enumerate(item)]
        return item

    def substitute(match: re.Match[str], where: str) -> str:
        name = match.group(1)
        if name not in allowed:
            return match.group(0)
        secret = lookup(name)
        if secret is None:
            raise SecretError(
                where,
                f"secret {name} is not defined: set HEADRACE_SECRET_{name} in the workers'"
                f" environment, or write it to the file {name} in their HEADRACE_SECRETS_DIR",
            )
        if secret not in used:
            used.append(secret)
        return secret

    return resolve(value, path), used
