#!/usr/bin/env bash
# report.html in a real browser. Aligns two layers of the bundled MNIST-1D study, builds their report with
# `convergent report`, opens it in headless Chromium with every network host unresolvable, and reads the
# status line the page writes once Vega has rendered every view: it must say "ok", with as many figures
# rendered as the report holds and none of zero size; any console error or warning, uncaught exception
# or failed load turns it to "error". Keeps a screenshot of the first screen.
# Usage: browser_check.sh CONVERGENT_CLI SOURCE_DIR WORK_DIR
set -euo pipefail
cli=$1 source_dir=$2 work=$3

fail() { echo "FAIL: $*" >&2; exit 1; }
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || fail "chromium not found; scripts/test installs it (apt-get install chromium)"

rm -rf "$work"
mkdir -p "$work"
for layer in conv3 dense; do
  "$cli" align "$source_dir"/examples/mnist1d/$layer/*.npy --out "$work/$layer" --threads 2 >"$work/align-$layer.log" 2>&1 ||
    fail "align $layer: $(cat "$work/align-$layer.log")"
done
"$cli" report "$work/conv3" "$work/dense" --out "$work/report.html" >"$work/report.log" 2>&1 ||
  fail "report: $(cat "$work/report.log")"
cat "$work/report.log"
figures=$(sed -n 's/^report: .*, \([0-9]*\) figures, .*/\1/p' "$work/report.log")
[ -n "$figures" ] && [ "$figures" -gt 0 ] || fail "report did not say how many figures it holds"

# Self-contained: no element or style may point at the network.
if grep -Eqi '(src|href)=["'"'"']?(https?:)?//|url\((https?:)?//' "$work/report.html"; then
  fail "report.html refers to a network resource: $(grep -Eoi '(src|href)=["'"'"']?(https?:)?//[^"'"'"' >]*' "$work/report.html" | head -3)"
fi

browser=("$chromium" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars
         --no-first-run --user-data-dir="$work/profile" --host-resolver-rules="MAP * ~NOTFOUND"
         --virtual-time-budget=30000)
url="file://$(cd "$work" && pwd)/report.html"
timeout 180 "${browser[@]}" --dump-dom "$url" >"$work/dom.html" 2>"$work/chromium-dom.log" ||
  fail "chromium --dump-dom failed: $(tail -5 "$work/chromium-dom.log")"
status=$(grep -o '<p id="status"[^>]*>[^<]*' "$work/dom.html" || true)
echo "page status: $status"
case "$status" in
  *'data-state="ok"'*"$figures figures rendered, 0 of zero size"*) ;;
  *) fail "the page did not render all $figures figures cleanly: ${status:-no status element}" ;;
esac

timeout 180 "${browser[@]}" --window-size=1280,1000 --screenshot="$work/report-first-screen.png" "$url" \
  >"$work/chromium-shot.log" 2>&1 || fail "chromium --screenshot failed: $(tail -5 "$work/chromium-shot.log")"
[ "$(head -c 8 "$work/report-first-screen.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] ||
  fail "no PNG screenshot"
echo "ok: $figures figures rendered; first screen in $work/report-first-screen.png ($(stat -c %s "$work/report-first-screen.png") bytes)"
