#!/usr/bin/env bash
# The browser the web UI's tests drive (tests/browser): Debian's or Ubuntu's chromium.
# Nothing to do when one is found; as root with apt-get, installs the package; otherwise
# says what to install and fails, so the test command stops before a long run.
set -euo pipefail
for candidate in "${HEADRACE_TEST_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then exit 0; fi
done
if command -v chromium > /dev/null; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
  echo "installing chromium for the browser tests (apt-get install chromium)..." >&2
  apt-get install -y -q chromium > /dev/null || { apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null; }
  exit 0
fi
echo "the browser tests need Chromium: run 'sudo apt-get install chromium' (Debian, Ubuntu)," >&2
echo "or set HEADRACE_TEST_CHROMIUM to a Chromium or Chrome executable" >&2
exit 1
