#!/usr/bin/env bash
# tests/tokenizer/parity.sh: the tokenizer acceptance test (tests/tokenizer/parity.mjs) for tests/run.sh.
# Missing npm fixtures are a FAIL, never a skip: without them nothing shows the encoder is right.
set -u
cd "$(dirname "$0")/../.."
if ! command -v node >/dev/null 2>&1; then echo "  node is not installed (scripts/deps.sh)" >&2; echo "FAIL tokenizer_parity"; exit 1; fi
if [ ! -d tests/fixtures/node/node_modules ]; then
  echo "  tests/fixtures/node/node_modules is missing: run scripts/deps.sh --npm" >&2
  echo "FAIL tokenizer_parity"; exit 1
fi
exec node tests/tokenizer/parity.mjs
