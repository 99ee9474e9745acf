#!/bin/sh
# Install headless Chromium from Debian's packages for the report's browser test.
# Needs root and apt-get; prints the browser path and exits 0 when it is available.
set -eu
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        exit 0
    fi
done
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install chromium: needs root and apt-get" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || {
    apt-get update >/dev/null 2>&1
    apt-get install -y --no-install-recommends chromium >/dev/null
}
command -v chromium
