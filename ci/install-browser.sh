#!/usr/bin/env bash
# Debian's chromium for the Playwright browser tests (tests/test_dashboard_browser.py).
# Playwright drives it through executable_path: no browser is downloaded by playwright.
# Safe to run repeatedly: does nothing when chromium is already installed.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium
/usr/bin/chromium --version
