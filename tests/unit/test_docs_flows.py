"""docs/flows.md stays true: every YAML example loads, every invalid one fails as shown.

A block whose first line is `# expect: STATE` is also run by
`tests/integration/test_docs_examples.py`; `Example` and `runnable_examples` are shared
with it. A block may hold several YAML documents separated by `---` (a subflow example
and the flow it calls): all are loaded, the last one is the one that runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from headrace.flow import FlowValidationError, load_flow
from headrace.states import State

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "flows.md"
EXAMPLES = ROOT / "examples"
# A ```yaml block, optionally marked `invalid`, and for those the ```text block after it.
BLOCK = re.compile(
    r"^```yaml(?P<invalid> invalid)?\n(?P<yaml>.*?)^```\n"
    r"(?:\s*^```text\n(?P<error>.*?)^```\n)?",
    re.DOTALL | re.MULTILINE,
)
EXPECT = re.compile(r"\A# expect: (?P<state>[A-Z]+)\n")
RESUME = re.compile(r"^# resume: (?P<body>\{.*\})$", re.MULTILINE)
DOCUMENT_SEPARATOR = re.compile(r"^---\n", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    yaml: str
    invalid: bool
    error: str | None

    @property
    def documents(self) -> list[str]:
        return [part for part in DOCUMENT_SEPARATOR.split(self.yaml) if part.strip()]

    @property
    def flow_id(self) -> str:
        """The id of the flow that runs: the last document's."""
        found = re.search(r"^id: (\S+)", self.documents[-1], re.MULTILINE)
        return found[1] if found else "?"

    @property
    def expect(self) -> str | None:
        found = EXPECT.match(self.yaml)
        return found["state"] if found else None

    @property
    def resume(self) -> dict[str, Any] | None:
        """The JSON body to resume the execution with when it pauses (None: never)."""
        found = RESUME.search(self.yaml)
        return json.loads(found["body"]) if found else None


def examples() -> list[Example]:
    text = DOC.read_text(encoding="utf-8")
    return [
        Example(match["yaml"], bool(match["invalid"]), match["error"])
        for match in BLOCK.finditer(text)
    ]


def runnable_examples() -> list[Example]:
    return [example for example in examples() if example.expect is not None]


def _ids() -> list[str]:
    return [("invalid-" if e.invalid else "") + e.flow_id for e in examples()]


def test_the_reference_has_examples_for_every_section() -> None:
    blocks = examples()
    assert len(blocks) >= 30
    assert sum(example.invalid for example in blocks) >= 3
    # Every ```yaml fence was understood: none is silently skipped.
    fences = re.findall(r"^```yaml", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(fences) == len(blocks)


def test_runnable_examples_have_unique_ids_and_known_states() -> None:
    runnable = runnable_examples()
    ids = [example.flow_id for example in runnable]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for example in runnable:
        assert State(example.expect).is_terminal, example.flow_id
        # Every flow of a block is applied: their ids must not clash with other blocks'.
        for document in example.documents[:-1]:
            child = re.search(r"^id: (\S+)", document, re.MULTILINE)
            assert child and child[1] not in ids, example.flow_id
    # A marker anywhere else than the first line would be silently ignored.
    marked = re.findall(r"^# expect: ", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(marked) == len(runnable)


@pytest.mark.parametrize("example", examples(), ids=_ids())
def test_every_example_behaves_as_documented(example: Example) -> None:
    if not example.invalid:
        for document in example.documents:
            assert load_flow(document, "flow.yaml").tasks
        return
    assert example.error is not None, "an invalid example must be followed by a ```text block"
    with pytest.raises(FlowValidationError) as caught:
        load_flow(example.yaml, "flow.yaml")
    assert str(caught.value) == example.error.strip()


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_file_loads(path: Path) -> None:
    assert load_flow(path.read_text(encoding="utf-8"), str(path)).tasks
