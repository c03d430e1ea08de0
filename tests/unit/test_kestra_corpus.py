"""Every flow of the Kestra corpus (`tests/kestra`) has its expectations, and
`headrace kestra check` gives each the verdict recorded for it."""

from __future__ import annotations

import pytest

from headrace.kestra_check import check_file
from tests.kestra.corpus import FLOWS, NAMESPACE, Case, cases, files


def test_every_flow_has_expectations_and_every_expectation_a_flow() -> None:
    assert sorted(case.file for case in cases()) == files()
    assert len(files()) >= 10


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.file)
def test_the_check_gives_the_recorded_verdict(case: Case) -> None:
    result = check_file(FLOWS / case.file)
    assert result.verdict.name == case.verdict, result.lines()
    assert result.flow == (NAMESPACE, case.flow_id)
