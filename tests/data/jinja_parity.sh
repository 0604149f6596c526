#!/usr/bin/env bash
# tests/data/jinja_parity.sh: the chat-template acceptance test (tests/data/jinja_parity.mjs) for
# tests/run.sh. Missing references are a FAIL, never a skip: without them nothing shows the renderer right.
set -u
cd "$(dirname "$0")/../.."
if ! command -v node >/dev/null 2>&1; then echo "  node is not installed (scripts/deps.sh)" >&2; echo "FAIL jinja_parity"; exit 1; fi
if ! /usr/bin/python3 -c 'import jinja2' 2>/dev/null; then echo "  python3-jinja2 is not installed (scripts/deps.sh)" >&2; echo "FAIL jinja_parity"; exit 1; fi
if [ ! -d tests/fixtures/node/node_modules/@huggingface/jinja ]; then
  echo "  tests/fixtures/node/node_modules is missing: run scripts/deps.sh --npm" >&2; echo "FAIL jinja_parity"; exit 1
fi
exec node tests/data/jinja_parity.mjs
