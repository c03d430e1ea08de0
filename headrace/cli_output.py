"""`-o json` for the CLI's listing commands: the items as the API gives them, for scripts
(`jq`) and CI, instead of lines meant for people."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
TEXT, JSON = "text", "json"


def output_option(
    command: F | None = None,
    *,
    help: str = "json: the items as a JSON array, as the API gives them.",
) -> Any:
    """`-o/--output text|json` on a command, given to it as `output`; as a decorator,
    bare or with another `help`."""

    def decorate(function: F) -> F:
        return click.option(
            "-o",
            "--output",
            type=click.Choice([TEXT, JSON]),
            default=TEXT,
            show_default=True,
            help=help,
        )(function)

    return decorate if command is None else decorate(command)


def echo_json(value: Any) -> None:
    """`value` as indented JSON on stdout (dates as the API wrote them)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))
