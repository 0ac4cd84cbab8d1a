#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the console's browser tests (Playwright drives it; no
# browser is downloaded). Installs the `chromium` package when missing (root and apt-get only); otherwise
# the browser tests skip and say why. BRIDGE_CHROMIUM may point at another Chromium binary.
if [ -z "${BRIDGE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "ensure-chromium: installing Chromium from Debian's packages" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "ensure-chromium: could not install chromium; the console browser tests will be skipped" >&2
  else
    echo "ensure-chromium: no chromium and no root apt-get; the console browser tests will be skipped" >&2
  fi
fi
