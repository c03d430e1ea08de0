"""Finds connectors through the `headrace.connectors` entry-point group.

Third-party packages add task types by declaring an entry point in that group; the name
is the `type` used in flows. Loaded once per process.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from headrace.connectors.base import Connector

ENTRY_POINT_GROUP = "headrace.connectors"


@cache
def connector_classes() -> dict[str, type[Connector]]:
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_types() -> frozenset[str]:
    return frozenset(connector_classes())
