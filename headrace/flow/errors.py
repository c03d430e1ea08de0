"""What is wrong with a flow, said so that its author can fix it without guessing.

Every problem carries the path a user would point at (`tasks[2].retry.interval`, with the
camelCase names written in YAML), the line and column in the source, and a hint when
there is an obvious fix. The loader collects all of them before raising.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from headrace.errors import HeadraceError


@dataclass(frozen=True, slots=True)
class FlowError:
    """One problem in a flow. `line` and `column` are 1-based, None when unknown."""

    path: str
    line: int | None
    column: int | None
    message: str
    hint: str | None = None

    def format(self, source: str) -> str:
        where = source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class FlowValidationError(HeadraceError):
    """A flow could not be loaded: invalid YAML or a definition that breaks the rules."""

    def __init__(self, source: str, errors: list[FlowError]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(error.format(self.source) for error in self.errors)

    def to_json(self) -> list[dict[str, Any]]:
        """The errors as JSON objects (`path`, `line`, `column`, `message`, `hint`)."""
        return [asdict(error) for error in self.errors]
