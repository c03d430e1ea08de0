"""Fixtures of the web UI's tests in a real browser: Debian's Chromium driven by Playwright
against a real stack (the five services as processes, on the session's broker and
PostgreSQL), one stack per module and one browser per session.

Chromium: `HEADRACE_TEST_CHROMIUM`, else /usr/bin/chromium, else `chromium` on PATH
(Playwright's own browser download is never used). Screenshots of every step go to
`HEADRACE_TEST_ARTIFACTS` (default `test-artifacts/` at the repository's root), under `ui/`.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright

from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import running_stack

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1366, "height": 800}
# Generous: the services run as processes on a 2-core machine next to the browser.
EXPECT_TIMEOUT_MS = 15_000
INSTALL_HINT = (
    "no Chromium found for the web UI's browser tests: install it (`apt-get install "
    "chromium` on Debian/Ubuntu) or set HEADRACE_TEST_CHROMIUM to its executable"
)


def chromium_executable() -> str:
    """HEADRACE_TEST_CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH; fails
    the test (never skips it) when there is none."""
    configured = os.environ.get("HEADRACE_TEST_CHROMIUM")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(
                f"HEADRACE_TEST_CHROMIUM={configured}: no such file; {INSTALL_HINT}", pytrace=False
            )
        return configured
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The screenshots' folder, emptied of an earlier run's: a run's pictures are its own."""
    base = os.environ.get("HEADRACE_TEST_ARTIFACTS")
    folder = (Path(base) if base else ROOT / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("[0-9][0-9]*-*.png"):
        old.unlink()
    return folder


# Playwright's async API, on the session's event loop: its sync API would keep a loop
# marked running in this thread, and the fixtures' `asyncio.run` (databases, the stack's
# migrations) would then refuse to run.
@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    # Chromium refuses to start its sandbox as root (containers, CI): only then without.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=args
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Metrics ports for the services: the dashboard shows the workers' activity.
    with running_stack(settings, tmp_path_factory, "ui-stack-logs", metrics_port=0) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    """The stack's REST API with the session's token (HEADRACE_TOKEN)."""
    return ApiClient(stack.url, timeout_s=60)


# One numbering for the whole session: the files sort in the order the steps ran.
_shot_numbers = itertools.count(1)


@dataclass
class Ui:
    """A browser tab on the stack, recording what must not happen (console errors,
    uncaught exceptions) and taking a screenshot at each step."""

    page: Page
    base_url: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    # Console errors a step provokes on purpose (the browser logs a refused request).
    expected: list[re.Pattern[str]] = field(default_factory=list)
    taken: list[Path] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = f"console error at {self.page.url}: {message.text} ({message.location})"
        if not any(pattern.search(message.text) for pattern in self.expected):
            self.errors.append(text)

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"page error at {self.page.url}: {error.message}\n{error.stack}")

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base_url + path)

    async def sign_in(self, token: str) -> None:
        """What `headrace server local`'s one-click link does: the token in the fragment."""
        await self.goto(f"/#token={token}")
        await self.page.get_by_role("heading", name="Home", exact=True).wait_for()

    async def shot(self, step: str) -> Path:
        """A full-page screenshot named `NN-step.png`."""
        path = self.shots / f"{next(_shot_numbers):02d}-{step}.png"
        await self.page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        return path

    def expect_console_error(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def assert_no_errors(self) -> None:
        assert not self.errors, "the browser reported errors:\n" + "\n".join(self.errors)


@pytest.fixture
async def ui(browser: Browser, stack: LocalStack, artifacts: Path) -> AsyncIterator[Ui]:
    """A fresh tab (its own sessionStorage: signed out) at 1366x800; the test fails if
    the browser reported an error."""
    context = await browser.new_context(viewport=VIEWPORT, base_url=stack.url)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    page = await context.new_page()
    tab = Ui(page, stack.url, artifacts)
    page.on("console", tab.on_console)
    page.on("pageerror", tab.on_page_error)
    try:
        yield tab
    finally:
        await context.close()
    tab.assert_no_errors()
