"""A connector shipped as its own package: the template in examples/ installs, is found
through its entry point, and passes its own tests with the test kit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).parents[2] / "examples" / "connector-template"


def test_the_connector_template_installs_registers_and_passes_its_tests(tmp_path: Path) -> None:
    source = tmp_path / "template"
    shutil.copytree(TEMPLATE, source)  # pip builds in the tree: not in the repository's
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*install, "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    described = subprocess.run(
        [sys.executable, "-m", "headrace", "plugins", "describe", "json.value"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert described.returncode == 0, described.stderr
    assert described.stdout.startswith("json.value (connector)\n")
    assert "  url (string, required)" in described.stdout
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout
