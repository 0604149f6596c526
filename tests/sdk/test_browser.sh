#!/usr/bin/env bash
# tests/sdk/test_browser.sh: the two HTML pages opened in a real headless browser (Debian's chromium,
# installed by scripts/deps.sh): `prefcap report` at one event and at a store with exports, pairs and an
# erasure, and the trainer's report.html (build/tests/report_driver). For each: no console error while
# it loads (a planted page with console.error proves the check sees one), the expected charts in the DOM
# as the browser built it (--dump-dom), and a screenshot that is not blank (decoded PNG: more than one
# colour, and a share of non-white pixels, after undoing PNG's row filters). SKIP when chromium is not installed.
set -u
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
check() { local name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi; }
CHROME=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROME" ]; then echo "SKIP browser: chromium is not installed (scripts/deps.sh installs it)"; exit 0; fi
run_chrome() {  # run_chrome PAGE: DOM to PAGE.dom, console log to PAGE.log, screenshot to PAGE.png
  timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$T/profile" \
    --enable-logging=stderr --v=0 --dump-dom "file://$1" > "$1.dom" 2> "$1.log"
  timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$T/profile" --hide-scrollbars \
    --window-size=1000,1400 --screenshot="$1.png" "file://$1" >/dev/null 2>&1
}
no_console_errors() { ! grep -E 'CONSOLE|Uncaught|ERR_' "$1.log" | grep -v -E 'dbus|Fontconfig' | grep -q .; }
has_charts() {  # has_charts PAGE N ID...: at least N <svg> in the DOM, and each id
  local page=$1 n=$2; shift 2
  [ "$(grep -o '<svg' "$page.dom" | wc -l)" -ge "$n" ] || { echo "  fewer than $n svg in $page"; return 1; }
  local id; for id in "$@"; do grep -q "id=\"$id\"" "$page.dom" || { echo "  no #$id in $page"; return 1; }; done
}
not_blank() {
  /usr/bin/python3 - "$1.png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
i, idat, w, h = 8, b"", 0, 0
while i < len(data):
    n, kind = struct.unpack(">I4s", data[i:i + 8]); body = data[i + 8:i + 8 + n]; i += 12 + n
    if kind == b"IHDR": w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body[:13]); assert interlace == 0 and depth == 8
    if kind == b"IDAT": idat += body
raw = zlib.decompress(idat)
bpp = {2: 3, 6: 4, 0: 1, 4: 2}[ctype] * depth // 8
stride = w * bpp
prev, pix, off = bytearray(stride), [], 0
for r in range(h):  # undo the PNG row filters (None, Sub, Up, Average, Paeth)
    f, row = raw[off], bytearray(raw[off + 1:off + 1 + stride]); off += 1 + stride
    for x in range(stride):
        a = row[x - bpp] if x >= bpp else 0; b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
        if f == 1: row[x] = (row[x] + a) & 255
        elif f == 2: row[x] = (row[x] + b) & 255
        elif f == 3: row[x] = (row[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    pix.append(bytes(row)); prev = row
colours = set()
nonwhite = 0
for row in pix[::4]:  # every fourth row is plenty for a share
    for x in range(0, stride, bpp):
        px = row[x:x + 3]; colours.add(px)
        nonwhite += min(px) < 0xf0
share = nonwhite / (w * len(pix[::4]))
print(f"# {sys.argv[1].rsplit('/', 1)[-1]}: {w}x{h}, {share:.2%} non-white pixels, {len(colours)} colours")
sys.exit(0 if share > 0.005 and len(colours) > 4 else 1)
PY
}
IDS=(events-per-day pairs-by-signal pairs-by-source ai-fraction top-regenerated exports erasures versions)

# the dashboard at one event
echo '{"type":"generation","id":"g1","prompt":"hi","completion":"hello","model":"m","model_version":"v1"}' | "$P" ingest --db "$T/one.db" 2>/dev/null
"$P" report --db "$T/one.db" --out "$T/one.html" >/dev/null
run_chrome "$T/one.html"
check "report at one event: no console errors" no_console_errors "$T/one.html"
check "report at one event: the eight charts in the DOM" has_charts "$T/one.html" 8 "${IDS[@]}"
check "report at one event: screenshot not blank" not_blank "$T/one.html"
check "report: nothing loaded from elsewhere, no script" bash -c "! grep -q -E '<script|src=|href=\"http|@import|url\\(' '$T/one.html'"

# the dashboard of a working store: a backend's traffic, an export, an erasure
"$BUILD/examples/chat_backend" --db "$T/s.db" --threads 2 --users 10 --turns 6 --seed 3 >/dev/null
"$P" export --db "$T/s.db" --since-last nightly --out "$T/p.jsonl" --quiet
"$P" forget --db "$T/s.db" --user "$(sqlite3 "$T/s.db" 'SELECT user_id FROM generations LIMIT 1')" >/dev/null 2>&1
out=$("$P" report --db "$T/s.db" --out "$T/s.html")
check "report prints its path" test "$out" = "$T/s.html"
run_chrome "$T/s.html"
check "report of a store: no console errors" no_console_errors "$T/s.html"
check "report of a store: the eight charts, with bars" has_charts "$T/s.html" 8 "${IDS[@]}"
check "report of a store: bars drawn for exports and erasures" bash -c "grep -A3 'id=\"exports\"' '$T/s.html.dom' | grep -q 'class=\"bar\"' && grep -A3 'id=\"erasures\"' '$T/s.html.dom' | grep -q 'class=\"bar\"'"
check "report of a store: screenshot not blank" not_blank "$T/s.html"

# the trainer's report.html
/usr/bin/python3 -c '
import json, math
with open("'"$T"'/metrics.jsonl", "w") as f:
    for s in range(1, 21):
        f.write(json.dumps({"step": s, "epoch": s / 20, "loss": 0.69 * math.exp(-s / 20), "rewards/chosen": 0.01 * s,
            "rewards/rejected": -0.02 * s, "rewards/accuracies": min(1.0, 0.5 + s / 80), "rewards/margins": 0.03 * s,
            "logps/chosen": -50 + s, "logps/rejected": -60 - s, "grad_norm": 1.0 / s, "learning_rate": 1e-4, "tokens_per_s": 1234.5}) + "\n")
'
"$BUILD/tests/report_driver" report "$T/metrics.jsonl" "$T/train.html" "demo run" >/dev/null 2>&1
run_chrome "$T/train.html"
check "trainer report: no console errors" no_console_errors "$T/train.html"
check "trainer report: four charts in the DOM" has_charts "$T/train.html" 4
check "trainer report: screenshot not blank" not_blank "$T/train.html"

# the checks can fail: a page with a console error, and a blank page
printf '<!DOCTYPE html><html><body><script>console.error("planted")</script></body></html>' > "$T/bad.html"
run_chrome "$T/bad.html"
check "(a planted console error is seen)" bash -c "$(declare -f no_console_errors); ! no_console_errors '$T/bad.html'"
check "(a blank page is seen as blank)" bash -c "$(declare -f not_blank); ! not_blank '$T/bad.html' >/dev/null"
exit $((fails > 0))
