"""Finds connectors through the `headrace.connectors` entry-point group.

Third-party packages add task types by declaring an entry point in that group; the name
is the `type` used in flows, and a connector's `aliases` are other names for it. Loaded
once per process.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from headrace.connectors.base import Connector, aliases_of
from headrace.errors import HeadraceError

ENTRY_POINT_GROUP = "headrace.connectors"


class ConnectorConflict(HeadraceError):
    """Two installed connectors claim one name: which one a flow meant cannot be told."""


@cache
def connector_classes() -> dict[str, type[Connector]]:
    """Task type -> connector class, from every installed package's entry points.

    Raises `ConnectorConflict` when two packages declare one type.
    """
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            raise ConnectorConflict(
                f"task type {ep.name!r} is declared twice, by {found[ep.name].value} and"
                f" {ep.value}: uninstall one of the packages that provide them"
            )
        found[ep.name] = ep
    return {name: ep.load() for name, ep in found.items()}


def alias_table(
    classes: dict[str, type[Connector]], reserved: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Alias -> task type, from the `aliases` of `classes` (task type -> connector).
    `reserved`: names taken already (the flowable types and their aliases).

    Raises `ConnectorConflict` when a name is claimed twice.
    """
    for name in classes:
        if name in reserved:
            raise ConnectorConflict(f"task type {name!r} is a built-in type's name")
    aliases: dict[str, str] = {}
    for name, connector_class in classes.items():
        for alias in aliases_of(connector_class):
            if alias in reserved:
                raise ConnectorConflict(
                    f"connector {name!r} claims {alias!r}, a built-in type's name"
                )
            claimed_by = aliases.get(alias) or (alias if alias in classes else None)
            if claimed_by is not None:
                raise ConnectorConflict(
                    f"task type name {alias!r} is claimed by two connectors, {claimed_by!r}"
                    f" and {name!r}: uninstall one of the packages that provide them"
                )
            aliases[alias] = name
    return aliases
