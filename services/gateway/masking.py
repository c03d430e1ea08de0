"""Webhook keys hidden from readers, in a flow's source and in its parsed fields.

A webhook's key is the only credential its URL needs, so a caller who may only read
flows must not learn it. Writers see keys: they could set them anyway, and `flow export`
then `flow apply` must give back the same flows.

Every literal occurrence of a key in the source is replaced (the trigger's `key:`, and
any copy in a comment or a description), then the result is parsed again: when a key
is still in it (written with YAML escapes), or the revision no longer loads, the source
is withheld from readers rather than shown with its key. The mask itself is refused as
a key (`triggers.MASKED_WEBHOOK_KEY`): a masked source applied by mistake is refused
instead of setting a key everyone knows.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow
from headrace.flow.triggers import (
    MASKED_WEBHOOK_KEY,
    MIN_WEBHOOK_KEY_LENGTH,
    WEBHOOK,
    WebhookTrigger,
)

MASK = MASKED_WEBHOOK_KEY
WITHHELD = (
    "# source withheld: it may hold a webhook key this gateway could not mask for a reader; "
    "a caller with the writer role sees it\n"
)


def webhook_keys(flow: Flow) -> list[str]:
    keys = []
    for trigger in flow.triggers:
        if trigger.kind == WEBHOOK:
            spec = trigger.spec()
            assert isinstance(spec, WebhookTrigger)
            keys.append(spec.key)
    return keys


def _may_name_a_key(source: str) -> bool:
    # `key` as written, or hidden in a double-quoted escape (`"\x6bey"`): all need a
    # backslash. A source with neither declares no key, and costs no parsing.
    return "key" in source or "\\" in source


def mask_source(source: str, flow: Flow | None) -> str:
    """The source as a reader may see it; `flow` is the parsed source, None when it
    did not load."""
    if not _may_name_a_key(source):
        return source
    if flow is None:
        try:
            flow = load_flow(source)
        except FlowValidationError:
            return WITHHELD
    keys = webhook_keys(flow)
    if any(len(key) < MIN_WEBHOOK_KEY_LENGTH for key in keys):
        # A short key is likely to occur elsewhere too (`key: team` in `company.team`),
        # and where the mask lands would tell it: such a source is withheld.
        return WITHHELD
    masked = source
    for key in sorted(keys, key=len, reverse=True):  # a key inside another goes after it
        masked = masked.replace(key, MASK)
    return WITHHELD if keys and _still_holds(masked, keys) else masked


def _still_holds(text: str, keys: list[str]) -> bool:
    """Whether any parsed value of `text` holds a key. The text has the structure of a
    flow that loaded, whose size and depth the loader bounded."""
    try:
        tree = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return True  # cannot tell: assume the worst
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            if any(key in node for key in keys):
                return True
        elif isinstance(node, dict):
            pending += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            pending += node
    return False


def mask_flow_json(body: dict[str, Any], flow: Flow | None) -> dict[str, Any]:
    """A flow's JSON (`flow_json`) as a reader may see it."""
    for trigger in body.get("triggers", []):
        if "key" in trigger:
            trigger["key"] = MASK
    if "source" in body:
        body["source"] = mask_source(body["source"], flow)
    return body
