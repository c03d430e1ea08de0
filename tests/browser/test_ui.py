"""The web UI in headless Chromium against a real stack, as a data engineer uses it:
sign in, write a flow (an error shown inline, fixed), save, start, watch it succeed live,
read its logs, kill a long execution, restart a failed one; and each page's filters,
tabs, keyboard access and labels. The names looked up are the UI's test contract (the
accessible names of headings, regions, controls)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from headrace.api_client import ApiClient, ApiError
from tests.browser.conftest import EXPECT_TIMEOUT_MS, Ui
from tests.integration.stacks import put_flows
from tests.integration.waiting import wait_until

expect.set_options(timeout=EXPECT_TIMEOUT_MS)
# An execution watched until it ends: the services are processes on a busy 2-core machine.
RUN_TIMEOUT_MS = 60_000
# The states an execution ends in.
ENDED = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}


def new_namespace(tag: str) -> str:
    return f"ui.{tag}{uuid.uuid4().hex[:6]}"


# Line 10 holds a property the `log` task does not have.
HELLO_WITH_ERROR = """\
id: ui-hello
namespace: {namespace}
inputs:
  - id: who
    type: STRING
tasks:
  - id: greet
    type: log
    message: "hello {{{{ inputs.who }}}} from the browser"
    colour: blue
"""
HELLO = HELLO_WITH_ERROR.replace("    colour: blue\n", "")
SLEEPS = """\
id: ui-sleeps
namespace: {namespace}
tasks:
  - id: nap
    type: sleep
    duration: PT60S
"""
# Fails on its first attempt, succeeds when restarted (attempt numbers go on).
FAILS_ONCE = """\
id: ui-fails-once
namespace: {namespace}
tasks:
  - id: check
    type: shell
    commands:
      - echo "attempt {{{{ taskrun.attempt }}}}"
      - test {{{{ taskrun.attempt }}}} -gt 1
"""
APPROVAL = """\
id: ui-approval
namespace: {namespace}
tasks:
  - id: wait
    type: flow.pause
    onResume:
      - id: reason
        type: STRING
  - id: said
    type: log
    message: "resumed because {{{{ outputs.wait.onResume.reason }}}}"
"""
NIGHTLY = """\
id: {flow_id}
namespace: {namespace}
description: {description}
inputs:
  - id: day
    type: STRING
    defaults: today
tasks:
  - id: load
    type: log
    message: "loading {{{{ inputs.day }}}}"
triggers:
  - id: nightly
    type: schedule
    cron: "0 3 * * *"
"""
FAILS = """\
id: ui-fails
namespace: {namespace}
tasks:
  - id: boom
    type: shell
    commands: ["exit 3"]
"""


def put(api: ApiClient, namespace: str, source: str, **values: str) -> str:
    """Create or update a flow from `source` (a `str.format` template: braces doubled):
    its id."""
    text = source.format(namespace=namespace, **values)
    flow_id = re.search(r"^id: (\S+)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    put_flows(api, namespace, {flow_id: text})
    return flow_id


def run_to_end(api: ApiClient, namespace: str, flow_id: str) -> dict:
    """Start an execution through the API and wait for its end: the execution."""
    started = api.request("POST", f"/executions/{namespace}/{flow_id}")

    def ended() -> dict | None:
        try:  # the index has it a moment after the start
            execution = api.request("GET", f"/executions/{started['id']}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return execution if execution["state"]["current"] in ENDED else None

    return wait_until(ended, timeout_s=60, what=f"execution {started['id']} of {flow_id} to end")


async def eventually(
    condition: Callable[[], Any], timeout_s: float = 20, what: str = "condition"
) -> Any:
    """Poll `condition` (blocking: run in a thread) until it gives a truthy value."""
    deadline = time.monotonic() + timeout_s
    while not (value := await asyncio.to_thread(condition)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return value


def execution_link(page: Page, execution_id: str) -> Locator:
    return page.locator(f'a[href="/ui/executions/{execution_id}"]')


def editor(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Flow YAML")


async def replace_yaml(page: Page, text: str, *, click: bool = True) -> None:
    """Select the editor's whole text and type `text` in its place (as a paste: no
    auto-indentation of the typed lines); return once the server checked that text.
    `click=False`: with the keyboard only (focus, select all, type)."""
    box = editor(page)
    async with page.expect_response(
        lambda r: r.url.endswith("/flows/validate") and r.request.post_data == text
    ):
        if click:
            await box.click()
        else:
            await box.focus()
        await page.keyboard.press("ControlOrMeta+a")
        await page.keyboard.press("Delete")
        await page.keyboard.insert_text(text)


async def expect_problems(page: Page, text: str) -> None:
    """The Problems region shows `text` for the checked text (no check under way)."""
    problems = page.get_by_role("region", name="Problems")
    await expect(problems).not_to_contain_text("checking")
    await expect(problems).to_contain_text(text)


def state_of(page: Page) -> Locator:
    return page.get_by_test_id("execution-state")


async def start_from_flow_page(ui: Ui, flow_id: str, inputs: dict[str, str] | None = None) -> str:
    """Open the flow's Start dialog, fill its inputs, start: the new execution's id."""
    page = ui.page
    await page.get_by_role("button", name="Start", exact=True).click()
    dialog = page.get_by_role("dialog", name=f"Start {flow_id}")
    await expect(dialog).to_be_visible()
    for name, value in (inputs or {}).items():
        await dialog.get_by_label(name).fill(value)
    await ui.shot(f"start-{flow_id}-dialog")
    await dialog.get_by_role("button", name="Start execution").click()
    await expect(page).to_have_url(re.compile(r"/ui/executions/[^/?#]+$"))
    return page.url.rsplit("/", 1)[1]


async def expect_toast(page: Page, text: str) -> None:
    await expect(page.get_by_role("status").filter(has_text=text)).to_be_visible()


def action(page: Page, name: str) -> Locator:
    return page.get_by_role("button", name=name, exact=True)


async def confirm_if_asked(page: Page, verb: str, *, keyboard: bool = False) -> None:
    """A destructive action may ask first: accept its dialog (the button named `verb`),
    with a click or (`keyboard`) by focusing it and pressing Enter."""
    dialog = page.get_by_role("dialog")
    if not (await dialog.count() and await dialog.first.is_visible()):
        return
    button = dialog.first.get_by_role("button", name=re.compile(verb, re.IGNORECASE))
    if keyboard:
        await button.focus()
        await page.keyboard.press("Enter")
    else:
        await button.click()


# ---------------------------------------------------------------------------------------
# The scenario


async def test_write_run_watch_kill_and_restart_a_flow(
    ui: Ui, api: ApiClient, api_token: str
) -> None:
    page = ui.page
    namespace = new_namespace("scenario")

    # Signed out, any page asks for credentials; a wrong token is refused.
    await ui.goto("/ui/flows")
    await page.get_by_label("Token").fill("not-the-token")
    ui.expect_console_error(r"status of 401")  # the browser logs the refused request
    await page.get_by_role("button", name="Sign in").click()
    # The form says so, and keeps what was typed.
    refused = page.get_by_role("alert")
    await expect(refused).to_have_text("Those credentials were refused.")
    await expect(page.get_by_label("Token")).to_have_value("not-the-token")
    await expect(page.get_by_role("heading", name="Sign in to headrace")).to_be_visible()
    await ui.shot("signin-refused")
    ui.expected.clear()
    await page.get_by_label("Token").fill(api_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Flows", level=1)).to_be_visible()
    await ui.shot("flows-signed-in")

    # A new flow, typed with an error: shown at its line, and saving is refused.
    await page.get_by_role("link", name="New flow").first.click()
    await expect(page).to_have_url(re.compile(r"/ui/flows/new"))
    await expect(page.get_by_role("heading", name="New flow")).to_be_visible()
    await replace_yaml(page, HELLO_WITH_ERROR.format(namespace=namespace))
    await expect_problems(page, "Line 10: unknown property 'colour'")
    line_10 = editor(page).locator(".cm-line").nth(9)
    await expect(line_10).to_contain_text("colour: blue")
    await expect(line_10.locator(".cm-lintRange-error, .cm-lintPoint-error").first).to_be_visible()
    await expect(action(page, "Save")).to_be_disabled()
    await ui.shot("editor-error-inline")

    # Fixed: no problem left, saved as revision 1, and the page is the flow's own.
    await replace_yaml(page, HELLO.format(namespace=namespace))
    await expect_problems(page, "No problems")
    await expect(editor(page).locator(".cm-lintRange-error, .cm-lintPoint-error")).to_have_count(0)
    await action(page, "Save").click()
    await expect_toast(page, "Saved revision 1")
    await expect(page).to_have_url(re.compile(rf"/ui/flows/{re.escape(namespace)}/ui-hello$"))
    await expect(page.get_by_role("heading", name="ui-hello", level=1)).to_be_visible()
    assert api.request("GET", f"/flows/{namespace}/ui-hello")["revision"] == 1
    await ui.shot("flow-saved")

    # Started with a typed input; the execution page shows it succeed live, and its logs.
    execution_id = await start_from_flow_page(ui, "ui-hello", {"who": "ada"})
    await expect(page.get_by_role("heading", level=1)).to_contain_text("ui-hello")
    await expect(state_of(page)).to_have_text("SUCCESS", timeout=RUN_TIMEOUT_MS)
    await expect(
        page.get_by_role("region", name="Task runs")
        .locator('[data-state="SUCCESS"]', has_text="greet")
        .first
    ).to_be_visible()
    logs = page.get_by_role("region", name="Logs")
    await expect(logs).to_contain_text("hello ada from the browser")
    await expect(page.get_by_role("region", name="Inputs")).to_contain_text("ada")
    await expect(page.get_by_role("region", name="Outputs")).to_be_visible()
    await expect(action(page, "Kill")).to_be_disabled()
    await expect(action(page, "Restart")).to_be_disabled()
    await expect(action(page, "Replay")).to_be_enabled()
    assert api.request("GET", f"/executions/{execution_id}")["inputs"] == {"who": "ada"}
    await ui.shot("execution-success")

    # A long execution, killed from its page.
    sleeps = put(api, namespace, SLEEPS)
    await ui.goto(f"/ui/flows/{namespace}/{sleeps}")
    long_id = await start_from_flow_page(ui, sleeps)
    await expect(state_of(page)).to_have_text("RUNNING", timeout=RUN_TIMEOUT_MS)
    await expect(action(page, "Kill")).to_be_enabled()
    await ui.shot("execution-running")
    await action(page, "Kill").click()
    await confirm_if_asked(page, "kill")
    await expect(state_of(page)).to_have_text("KILLED", timeout=RUN_TIMEOUT_MS)
    task_runs = page.get_by_role("region", name="Task runs")
    await expect(task_runs.locator('[data-state="KILLED"]', has_text="nap")).to_have_count(1)
    await expect(action(page, "Kill")).to_be_disabled()
    await expect(action(page, "Restart")).to_be_enabled()
    assert api.request("GET", f"/executions/{long_id}")["state"]["current"] == "KILLED"
    await ui.shot("execution-killed")

    # A failed execution, restarted from its page: it runs again and succeeds.
    fails_once = put(api, namespace, FAILS_ONCE)
    await ui.goto(f"/ui/flows/{namespace}/{fails_once}")
    failed_id = await start_from_flow_page(ui, fails_once)
    await expect(state_of(page)).to_have_text("FAILED", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_role("region", name="Logs")).to_contain_text("attempt 1")
    await ui.shot("execution-failed")
    await action(page, "Restart").click()
    await confirm_if_asked(page, "restart")
    await expect(state_of(page)).not_to_have_text("FAILED", timeout=RUN_TIMEOUT_MS)
    await expect(state_of(page)).to_have_text("SUCCESS", timeout=RUN_TIMEOUT_MS)
    logs = page.get_by_role("region", name="Logs")
    await expect(logs).to_contain_text("attempt 2")
    assert api.request("GET", f"/executions/{failed_id}")["state"]["current"] == "SUCCESS"
    await ui.shot("execution-restarted")

    # Its logs by level, then by text: the failure is the one ERROR line.
    level = logs.get_by_label("Level", exact=True)
    await expect(level).to_have_value(re.compile("^(INFO|ALL)$"))
    await level.select_option("ERROR")
    await expect(logs).to_contain_text("task 'check' failed")
    await expect(logs).not_to_contain_text("attempt 2")
    await ui.shot("logs-errors-only")
    await level.select_option("INFO")
    await logs.get_by_label("Search logs").fill("attempt 2")
    await expect(logs).not_to_contain_text("attempt 1")
    await expect(logs).to_contain_text("attempt 2")


async def test_resume_a_paused_execution_with_its_inputs(
    ui: Ui, api: ApiClient, api_token: str
) -> None:
    page = ui.page
    namespace = new_namespace("pause")
    flow_id = put(api, namespace, APPROVAL)
    started = api.request("POST", f"/executions/{namespace}/{flow_id}")
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/executions/{started['id']}")
    await expect(state_of(page)).to_have_text("PAUSED", timeout=RUN_TIMEOUT_MS)
    await expect(action(page, "Resume")).to_be_enabled()
    await expect(action(page, "Kill")).to_be_enabled()
    await expect(action(page, "Restart")).to_be_disabled()
    await expect(action(page, "Replay")).to_be_disabled()
    await action(page, "Resume").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("reason").fill("the numbers add up")
    await ui.shot("resume-dialog")
    await dialog.get_by_role("button", name="Resume execution").click()
    await expect(state_of(page)).to_have_text("SUCCESS", timeout=RUN_TIMEOUT_MS)
    await expect(page.get_by_role("region", name="Logs")).to_contain_text(
        "resumed because the numbers add up"
    )
    await expect(page.get_by_role("region", name="Outputs")).to_be_visible()
    await ui.shot("resumed")
    # Replayed: a new execution of the same flow, which pauses again.
    await action(page, "Replay").click()
    await expect(page).not_to_have_url(re.compile(rf"/ui/executions/{started['id']}$"))
    await expect(page).to_have_url(re.compile(r"/ui/executions/[^/?#]+$"))
    await expect(state_of(page)).to_have_text("PAUSED", timeout=RUN_TIMEOUT_MS)
    replayed = api.request("GET", f"/executions/{page.url.rsplit('/', 1)[1]}")
    assert replayed["flowId"] == flow_id and replayed["trigger"]["type"] == "replay"


async def test_kill_with_the_keyboard_and_a_hovered_task_run_follows_its_state(
    ui: Ui, api: ApiClient, api_token: str
) -> None:
    page = ui.page
    namespace = new_namespace("kill")
    flow_id = put(api, namespace, SLEEPS)
    started = api.request("POST", f"/executions/{namespace}/{flow_id}")
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/executions/{started['id']}")
    await expect(state_of(page)).to_have_text("RUNNING", timeout=RUN_TIMEOUT_MS)
    # The pointer rests on the task run: its tooltip says it runs.
    task_runs = page.get_by_role("region", name="Task runs")
    await task_runs.get_by_role("button", name=re.compile(r"^nap\b")).hover()
    tooltip = page.get_by_role("tooltip")
    await expect(tooltip).to_contain_text("RUNNING")
    # Killed with the keyboard (the pointer stays where it is), confirmed if asked.
    await action(page, "Kill").focus()
    await page.keyboard.press("Enter")
    await confirm_if_asked(page, "kill", keyboard=True)
    await expect(state_of(page)).to_have_text("KILLED", timeout=RUN_TIMEOUT_MS)
    await expect(task_runs.locator('[data-state="KILLED"]', has_text="nap")).to_have_count(1)
    await ui.shot("killed-by-keyboard")
    # The open tooltip follows the task run it describes (it said RUNNING until reopened).
    await expect(tooltip).to_contain_text("KILLED")
    await expect(tooltip).not_to_contain_text("still running")


# ---------------------------------------------------------------------------------------
# Lists, tabs, blueprints, dashboard


@dataclass
class Catalog:
    """Flows in two namespaces of their own, and ended executions of them."""

    orders: str
    billing: str
    succeeded: dict
    failed: dict


@pytest.fixture(scope="module")
def catalog(api: ApiClient) -> Catalog:
    orders, billing = new_namespace("orders"), new_namespace("billing")
    for namespace, flow_id, description in (
        (orders, "orders-daily", "Loads the day's orders"),
        (orders, "orders-hourly", "Loads the last hour's orders"),
        (billing, "billing-sync", "Copies invoices to the warehouse"),
    ):
        put(api, namespace, NIGHTLY, flow_id=flow_id, description=description)
    put(api, billing, FAILS)
    succeeded = run_to_end(api, orders, "orders-daily")
    failed = run_to_end(api, billing, "ui-fails")
    assert (succeeded["state"]["current"], failed["state"]["current"]) == ("SUCCESS", "FAILED")
    return Catalog(orders, billing, succeeded, failed)


async def test_flows_list_filters_by_namespace_and_searches(
    ui: Ui, catalog: Catalog, api_token: str
) -> None:
    page = ui.page
    await ui.sign_in(api_token)
    await ui.goto("/ui/flows")
    await expect(page.get_by_role("heading", name="Flows", level=1)).to_be_visible()
    await expect(page.get_by_role("link", name="New flow").first).to_have_attribute(
        "href", "/ui/flows/new"
    )
    rows = page.get_by_role("row")
    await expect(rows.filter(has_text="billing-sync")).to_have_count(1)
    await page.get_by_label("Namespace").select_option(catalog.orders)
    flows = page.get_by_role("link", name=re.compile(r"^(orders|billing)-"))
    await expect(flows).to_have_text(["orders-daily", "orders-hourly"])
    await ui.shot("flows-by-namespace")
    await page.get_by_label("Search flows").fill("hourly")
    await expect(flows).to_have_text(["orders-hourly"])
    await expect(flows).to_have_attribute("href", f"/ui/flows/{catalog.orders}/orders-hourly")
    await ui.shot("flows-searched")
    await flows.click()
    await expect(page.get_by_role("heading", name="orders-hourly", level=1)).to_be_visible()
    await expect(page).to_have_url(
        re.compile(rf"/ui/flows/{re.escape(catalog.orders)}/orders-hourly$")
    )


async def test_flows_search_matches_descriptions(ui: Ui, catalog: Catalog, api_token: str) -> None:
    page = ui.page
    await ui.sign_in(api_token)
    await ui.goto("/ui/flows")
    await page.get_by_label("Search flows").fill("invoices")
    await expect(page.get_by_role("link", name=re.compile(r"^(orders|billing)-"))).to_have_text(
        ["billing-sync"]
    )


async def test_executions_list_filtered_by_state_from_the_url(
    ui: Ui, catalog: Catalog, api_token: str
) -> None:
    page = ui.page
    failed, succeeded = catalog.failed["id"], catalog.succeeded["id"]
    await ui.sign_in(api_token)
    await ui.goto("/ui/executions?state=FAILED")
    await expect(page.get_by_role("heading", name="Executions", level=1)).to_be_visible()
    await expect(execution_link(page, failed)).to_be_visible()
    await expect(execution_link(page, failed)).to_have_text(re.compile(rf"^{failed[:8]}"))
    await expect(execution_link(page, succeeded)).to_have_count(0)
    badges = page.get_by_role("table").locator(".state")
    await expect(badges.first).to_be_visible()
    for badge in await badges.all():
        await expect(badge).to_have_class(re.compile(r"\bstate-failed\b"))
    await ui.shot("executions-failed")
    # Filters are in the URL: the namespace narrows it to the one failure.
    await ui.goto(f"/ui/executions?state=FAILED&namespace={catalog.billing}")
    await expect(execution_link(page, failed)).to_be_visible()
    await expect(page.get_by_role("table").locator("tbody tr")).to_have_count(1)
    await expect(page.get_by_text(re.compile(r"^1 executions?$"))).to_be_visible()
    for name in ("Namespace", "Flow", "From", "To", "Labels", "Search"):
        await expect(page.get_by_label(name, exact=True)).to_have_count(1)
    # The states: one labelled control, or a group of boxes named "State"; FAILED is on.
    states = page.get_by_label("State", exact=True).or_(
        page.get_by_role("group", name="State", exact=True)
    )
    await expect(states).to_have_count(1)
    failed_box = states.get_by_role("checkbox", name="FAILED").or_(
        states.get_by_role("option", name="FAILED")
    )
    await expect(failed_box).to_be_checked()
    await expect(page.get_by_label("Namespace", exact=True)).to_have_value(catalog.billing)
    await expect(action(page, "Previous")).to_be_disabled()
    await expect(action(page, "Next")).to_be_disabled()
    await execution_link(page, failed).click()
    await expect(state_of(page)).to_have_text("FAILED")
    await expect(action(page, "Restart")).to_be_enabled()


async def test_executions_list_updates_live(ui: Ui, api: ApiClient, api_token: str) -> None:
    page = ui.page
    namespace = new_namespace("live")
    flow_id = put(api, namespace, FAILS)
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/executions?namespace={namespace}")
    await expect(page.get_by_text(re.compile(r"^0 executions$"))).to_be_visible()
    # Started elsewhere (the API): the list on screen shows it, then its end, unreloaded.
    started = api.request("POST", f"/executions/{namespace}/{flow_id}")
    await expect(execution_link(page, started["id"])).to_be_visible(timeout=RUN_TIMEOUT_MS)
    row = page.get_by_role("row").filter(has=execution_link(page, started["id"]))
    await expect(row.locator(".state")).to_have_class(
        re.compile(r"\bstate-failed\b"), timeout=RUN_TIMEOUT_MS
    )
    await expect(page.get_by_text(re.compile(r"^1 executions?$"))).to_be_visible()


async def test_revisions_tab_shows_the_diff_after_a_second_save(
    ui: Ui, api: ApiClient, api_token: str
) -> None:
    page = ui.page
    namespace = new_namespace("revs")
    put(api, namespace, HELLO)
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/flows/{namespace}/ui-hello")
    await expect(editor(page)).to_contain_text("from the browser")
    await replace_yaml(
        page, HELLO.format(namespace=namespace).replace("the browser", "revision two")
    )
    await expect_problems(page, "No problems")
    await action(page, "Save").click()
    await expect_toast(page, "Saved revision 2")
    await page.get_by_role("tab", name="Revisions").click()
    await expect(page.get_by_role("tab", name="Revisions")).to_have_attribute(
        "aria-selected", "true"
    )
    panel = page.get_by_role("tabpanel")
    # Both sides of the changed line are on screen, marked as changed.
    await expect(panel.get_by_text("from the browser").first).to_be_visible()
    await expect(panel.get_by_text("from revision two").first).to_be_visible()
    changed = panel.locator(
        ".cm-changedLine, .cm-deletedChunk, .cm-insertedLine, .cm-deletedLine, "
        ".diff-added, .diff-removed, ins, del"
    )
    await expect(changed.first).to_be_visible()
    await ui.shot("revisions-diff")


async def test_keyboard_reaches_the_nav_and_saves(ui: Ui, api: ApiClient, api_token: str) -> None:
    page = ui.page
    namespace = new_namespace("keys")
    put(api, namespace, HELLO)
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/flows/{namespace}/ui-hello")
    await expect(editor(page)).to_contain_text("from the browser")
    # From the start of the page (a fresh load: nothing focused yet), Tab goes to the
    # skip link, then on to the main navigation.
    assert await page.evaluate("document.activeElement === document.body")
    visited = []
    for _ in range(8):
        await page.keyboard.press("Tab")
        visited.append(await page.evaluate("document.activeElement.textContent.trim()"))
        if await page.get_by_role("navigation", name="Main").evaluate(
            "(nav) => nav.contains(document.activeElement)"
        ):
            break
    else:
        raise AssertionError(f"Tab from the page start never reached the main nav: {visited}")
    assert visited[0] == "Skip to content", visited
    # Edit with the keyboard; leave the editor with Escape, then Shift+Tab back up to
    # Save (above the editor) and press Enter.
    changed = HELLO.format(namespace=namespace) + "    level: WARN\n"
    await replace_yaml(page, changed, click=False)
    await expect_problems(page, "No problems")
    save = action(page, "Save")
    await expect(save).to_be_enabled()
    await page.keyboard.press("Escape")
    for _ in range(20):
        await page.keyboard.press("Shift+Tab")
        if await save.evaluate("(button) => button === document.activeElement"):
            break
    else:
        raise AssertionError("Save is not reachable with Escape, Shift+Tab from the editor")
    await ui.shot("keyboard-save-focused")
    await page.keyboard.press("Enter")
    await expect_toast(page, "Saved revision 2")
    assert "level: WARN" in api.request("GET", f"/flows/{namespace}/ui-hello")["source"]


async def test_triggers_tab_lists_schedules_and_switches_them(
    ui: Ui, api: ApiClient, catalog: Catalog, api_token: str
) -> None:
    page = ui.page
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/flows/{catalog.orders}/orders-daily")
    await page.get_by_role("tab", name="Triggers").click()
    panel = page.get_by_role("tabpanel")
    row = panel.get_by_role("row").filter(has_text="nightly")
    await expect(row).to_contain_text("schedule")
    switch = panel.get_by_role("switch", name="Enabled nightly")
    await expect(switch).to_be_checked()
    await expect(row).to_contain_text(re.compile(r"\d{4}|\d{1,2}:\d{2}"))  # its next fire time
    await ui.shot("triggers")
    await switch.click()
    await expect(switch).not_to_be_checked()

    # The switch changed the trigger on the server, not only on screen.
    def nightly_disabled() -> bool:
        query = {"namespace": catalog.orders, "flowId": "orders-daily"}
        triggers = api.request("GET", "/triggers", params=query)["results"]
        return [t["disabled"] for t in triggers if t["triggerId"] == "nightly"] == [True]

    await eventually(nightly_disabled, what="the trigger disabled through the API")


async def test_a_blueprint_copied_with_one_click_lands_on_its_flow(
    ui: Ui, api: ApiClient, api_token: str
) -> None:
    page = ui.page
    namespace = new_namespace("bp")
    await ui.sign_in(api_token)
    await ui.goto("/ui/blueprints")
    await expect(page.get_by_role("heading", name="Blueprints", level=1)).to_be_visible()
    # One card, with its "Use" button, per blueprint the API lists.
    blueprints = api.request("GET", "/blueprints")["results"]
    uses = page.get_by_role("button", name=re.compile(r"^Use "))
    await expect(uses).to_have_count(len(blueprints))
    assert {b["id"] for b in blueprints} >= {"hello", "approval", "flaky"}
    await ui.shot("blueprints")
    await page.get_by_role("button", name="Use hello", exact=True).click()
    field = page.get_by_label("Namespace", exact=True)
    await field.fill(namespace)
    await field.press("Enter")
    await expect(page).to_have_url(re.compile(rf"/ui/flows/{re.escape(namespace)}/hello$"))
    await expect(page.get_by_role("heading", name="hello", level=1)).to_be_visible()
    assert api.request("GET", f"/flows/{namespace}/hello")["namespace"] == namespace
    await ui.shot("blueprint-copied")


async def test_a_file_uploaded_into_a_namespace_folder_is_listed_and_stored(
    ui: Ui, api: ApiClient, api_token: str
) -> None:
    """What `headrace namespace files upload FILE ns --to sql` does, in the browser."""
    page = ui.page
    namespace = new_namespace("files")
    await ui.sign_in(api_token)
    await ui.goto(f"/ui/namespaces/{namespace}")
    await expect(page.get_by_role("heading", name=namespace, level=1)).to_be_visible()
    await page.get_by_label("Into folder").fill("/sql")
    content = b"SELECT 1;\n"
    await page.get_by_label("Files to upload").set_input_files(
        {"name": "daily.sql", "mimeType": "text/plain", "buffer": content}
    )
    await page.get_by_role("button", name="Upload", exact=True).click()
    # The page then shows the folder it uploaded into, with the file.
    await expect(page).to_have_url(re.compile(r"\?path=%2Fsql$"))
    await expect(page.get_by_role("cell", name="daily.sql", exact=True)).to_be_visible()
    await ui.shot("namespace-file-uploaded")
    files = f"/namespaces/{namespace}/files"
    with api.download(files, params={"path": "/sql/daily.sql"}) as download:
        assert download.read(1024) == content


async def test_dashboard_renders_its_tiles(ui: Ui, catalog: Catalog, api_token: str) -> None:
    page = ui.page
    await ui.sign_in(api_token)
    await ui.goto("/ui/dashboard")
    await expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    main = page.get_by_role("main")
    for tile in ("Running", "Queued", "Paused", "Task runs running"):
        await expect(main.get_by_text(tile, exact=True).first).to_be_visible()
    # This session's executions are counted: the catalog's failure at least.
    await expect(main.get_by_role("link", name=re.compile(r"^[1-9]\d* Failed"))).to_be_visible()
    # The stack's services expose metrics: the worker's activity is shown.
    workers = main.locator("section, div").filter(
        has=page.get_by_role("heading", name="Workers", exact=True)
    )
    await expect(workers.last).to_contain_text("worker")
    await ui.shot("dashboard")


# ---------------------------------------------------------------------------------------
# Every page: no console error, every control named


CONTROL_ROLES = (
    "button|checkbox|combobox|link|listbox|radio|searchbox|slider|spinbutton|switch|tab|textbox"
)
UNNAMED = re.compile(rf'^\s*- ({CONTROL_ROLES})(?!\s+")(?:\s*\[[^\]]*\])*\s*(?::.*)?$')


async def unnamed_controls(page: Page) -> list[str]:
    """Controls without an accessible name, as Chromium's accessibility tree has them,
    plus form fields no <label>, aria-label or aria-labelledby names."""
    tree = await page.locator("body").aria_snapshot()
    found = [line.strip() for line in tree.splitlines() if UNNAMED.match(line)]
    found += await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
          .filter((el) => el.type !== 'hidden' && el.getClientRects().length)
          .filter((el) => !(el.labels?.length || el.getAttribute('aria-label')
              || el.getAttribute('aria-labelledby') || el.title))
          .map((el) => el.outerHTML.slice(0, 160))"""
    )
    return found


@pytest.fixture(scope="module")
def pages(api: ApiClient, catalog: Catalog) -> dict[str, str]:
    execution = catalog.succeeded["id"]
    return {
        "home": "/",
        "flows": "/ui/flows",
        "flow": f"/ui/flows/{catalog.orders}/orders-daily",
        "new-flow": f"/ui/flows/new?namespace={catalog.orders}",
        "executions": "/ui/executions",
        "execution": f"/ui/executions/{execution}",
        "dashboard": "/ui/dashboard",
        "blueprints": "/ui/blueprints",
        "namespaces": "/ui/namespaces",
        "namespace": f"/ui/namespaces/{catalog.orders}",
        "plugins": "/ui/plugins",
        "plugin": "/ui/plugins/shell",
    }


HEADINGS = {
    "home": "Home",
    "flows": "Flows",
    "flow": "orders-daily",
    "new-flow": "New flow",
    "executions": "Executions",
    "execution": "orders-daily",
    "dashboard": "Dashboard",
    "blueprints": "Blueprints",
    "namespaces": "Namespaces",
    "namespace": "ui.",  # the catalog's namespace
    "plugins": "Plugins",
    "plugin": "shell",
}


@pytest.fixture
async def signed_in(ui: Ui, api_token: str) -> AsyncIterator[Ui]:
    await ui.sign_in(api_token)
    yield ui


@pytest.mark.parametrize("name", list(HEADINGS))
async def test_every_page_loads_cleanly_with_named_controls(
    signed_in: Ui, pages: dict[str, str], name: str
) -> None:
    ui, page = signed_in, signed_in.page
    await ui.goto(pages[name])
    await expect(page.get_by_role("heading", level=1)).to_contain_text(HEADINGS[name])
    await page.wait_for_load_state("networkidle")
    await ui.shot(f"page-{name}")
    assert await unnamed_controls(page) == [], f"controls without a name on {name}"
    if name == "home":
        for section in ("Flows", "Recent executions"):
            await expect(page.get_by_role("heading", name=section)).to_be_visible()
    if name == "flow":
        await check_every_tab(ui)
    ui.assert_no_errors()


async def check_every_tab(ui: Ui) -> None:
    """Each tab of the flow page: selected by click, its panel's controls named; and
    the Start dialog's."""
    page = ui.page
    tabs = page.get_by_role("tablist").get_by_role("tab")
    await expect(tabs).to_have_text(["Editor", "Topology", "Revisions", "Triggers", "Executions"])
    for tab in await tabs.all():
        title = await tab.inner_text()
        await tab.click()
        await expect(tab).to_have_attribute("aria-selected", "true")
        await expect(page.get_by_role("tabpanel")).to_be_visible()
        await page.wait_for_load_state("networkidle")
        await ui.shot(f"flow-tab-{title.lower()}")
        assert await unnamed_controls(page) == [], f"controls without a name on tab {title}"
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.get_by_role("dialog", name="Start orders-daily")).to_be_visible()
    assert await unnamed_controls(page) == [], "controls without a name in the Start dialog"
