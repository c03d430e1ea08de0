"""docs/flows.md stays true: every YAML example loads, every invalid one fails as shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from headrace.flow import FlowValidationError, load_flow

DOC = Path(__file__).resolve().parents[2] / "docs" / "flows.md"
# A ```yaml block, optionally marked `invalid`, and for those the ```text block after it.
BLOCK = re.compile(
    r"^```yaml(?P<invalid> invalid)?\n(?P<yaml>.*?)^```\n"
    r"(?:\s*^```text\n(?P<error>.*?)^```\n)?",
    re.DOTALL | re.MULTILINE,
)


def _blocks() -> list[tuple[str, bool, str | None]]:
    text = DOC.read_text(encoding="utf-8")
    return [
        (match["yaml"], bool(match["invalid"]), match["error"]) for match in BLOCK.finditer(text)
    ]


def _ids() -> list[str]:
    ids = []
    for yaml, invalid, _ in _blocks():
        found = re.search(r"^id: (\S+)", yaml, re.MULTILINE)
        ids.append(("invalid-" if invalid else "") + (found[1] if found else "?"))
    return ids


def test_the_reference_has_examples_for_every_section() -> None:
    blocks = _blocks()
    assert len(blocks) >= 12
    assert sum(invalid for _, invalid, _ in blocks) >= 3
    # Every ```yaml fence was understood: none is silently skipped.
    fences = re.findall(r"^```yaml", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(fences) == len(blocks)


@pytest.mark.parametrize(("yaml", "invalid", "error"), _blocks(), ids=_ids())
def test_every_example_behaves_as_documented(yaml: str, invalid: bool, error: str | None) -> None:
    if not invalid:
        flow = load_flow(yaml, "flow.yaml")
        assert flow.tasks
        return
    assert error is not None, "an invalid example must be followed by a ```text block"
    with pytest.raises(FlowValidationError) as caught:
        load_flow(yaml, "flow.yaml")
    assert str(caught.value) == error.strip()
