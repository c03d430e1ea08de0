"""Open every page of the web UI in Firefox and check that it renders: a by-hand check
beside the Chromium tests (tests/browser), which Playwright cannot run on a stock Firefox.

    pip install marionette-driver          # Mozilla's client for Firefox's Marionette
    apt-get install firefox-esr            # or any Firefox on PATH as `firefox`
    python tools/firefox_check.py http://127.0.0.1:8080 "$(headrace auth token)"

For each page it waits for the page's heading, counts what the page listed, saves a
screenshot to firefox-shots/ and reports the script errors the page raised; it exits 1
when a page did not render or raised one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from marionette_driver.marionette import Marionette

PAGES = [
    ("/", "Home"),
    ("/ui/flows", "Flows"),
    ("/ui/flows/new", "New flow"),
    ("/ui/executions", "Executions"),
    ("/ui/dashboard", "Dashboard"),
    ("/ui/namespaces", "Namespaces"),
    ("/ui/blueprints", "Blueprints"),
    ("/ui/plugins", "Plugins"),
]
WAIT_S = 15
# In the page's own window (no sandbox), so that the page's errors are seen.
GO = """
window.__errors = window.__errors || [];
if (!window.__listening) {
  window.__listening = true;
  addEventListener("error", (e) => window.__errors.push(String(e.message)));
  addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));
}
history.pushState(null, "", arguments[0]);
dispatchEvent(new PopStateEvent("popstate"));
"""
HEADING = "const h = document.querySelector('main h1'); return h ? h.textContent : null;"


def main(base: str, token: str) -> int:
    firefox = shutil.which("firefox-esr") or shutil.which("firefox")
    if firefox is None:
        print("no Firefox found: apt-get install firefox-esr", file=sys.stderr)
        return 2
    shots = Path("firefox-shots")
    shots.mkdir(exist_ok=True)
    command = [firefox, "--headless", "--marionette", "--window-size=1366,800"]
    browser = subprocess.Popen(
        [*command, "--profile", tempfile.mkdtemp(), "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    failed = False
    try:
        client = Marionette(host="127.0.0.1", port=2828)
        client.start_session()
        client.navigate(f"{base}/#token={token}")
        for path, heading in PAGES:
            client.execute_script(GO, script_args=[path], sandbox=None)
            text = None
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and not (text or "").startswith(heading):
                time.sleep(0.2)
                text = client.execute_script(HEADING, sandbox=None)
            time.sleep(0.5)  # the page's own lists, after its heading
            count = client.execute_script(
                "return document.querySelectorAll('main tr, main li, main .card').length;",
                sandbox=None,
            )
            errors = client.execute_script("return window.__errors;", sandbox=None) or []
            name = path.strip("/").replace("/", "-") or "home"
            (shots / f"{name}.png").write_bytes(client.screenshot(format="binary"))
            ok = (text or "").startswith(heading) and not errors
            failed |= not ok
            print(
                f"{'ok ' if ok else 'BAD'} {path}: heading {text!r}, {count} items, errors {errors}"
            )
        client.delete_session()
    finally:
        browser.terminate()
        browser.wait(20)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1].rstrip("/"), sys.argv[2]))
