#!/usr/bin/env bash
# Look at a catbert report in a real browser: headless Chromium (Debian package `chromium`)
# renders the HTML file to a PNG, with the network off, so anything the report failed to
# inline would be missing from the picture.
# Usage: scripts/render-report.sh REPORT.html OUT.png [WIDTHxHEIGHT, default 1200x2600]
set -euo pipefail
html=$(realpath "$1")
png=$(realpath -m "$2")
size=${3:-1200x2600}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "chromium is needed: apt-get install chromium" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless=new --no-sandbox --disable-gpu --user-data-dir="$profile" \
  --proxy-server=127.0.0.1:9 --hide-scrollbars --window-size="${size/x/,}" \
  --screenshot="$png" "file://$html" >/dev/null 2>&1
[ -s "$png" ] || { echo "no picture was rendered" >&2; exit 1; }
echo "rendered $html -> $png"
