#!/usr/bin/env bash
# tests/gpu/score_parity.sh: `prefcap-dpo score --device cuda` against `--device cpu` on tiny random
# checkpoints of every family (written by tests/model/hfmodels.py, as tests/model/test_model.py does:
# GPT-2 tied F32 and untied F16, Llama with llama3 rope scaling and GQA in BF16, Qwen2 with q/k/v biases,
# Qwen3 with q/k norms and head_dim != hidden/heads, Mistral with GQA and a sliding window of 7), on
# pairs whose prompts and answers cross the 64-row attention tiles, and which share their prompt (what
# score does: the rejected answer reads the chosen one's prompt rows).
#
# Both modes of the CUDA backend: PREFCAP_CUDA_FP32=1 must give every pair's chosen/rejected log-prob
# sum within 1e-4 relative of the CPU's (the op test holds each op to 1e-5; a sum over a few hundred
# tokens and two layers stays near 1e-6, the tolerance test_model.py holds the CPU to against float64);
# the default bf16 mode within 2e-2 (bf16 matmul operands move each log-prob by ~1e-3 relative, and
# the sums are of same-signed terms, so their relative error is no larger).
#
# Also: `train --device cuda` either trains or, while the backend lacks training ops, says so.
# Without a GPU it prints SKIP and exits 0, unless PREFCAP_CUDA_EMU=1 says that PREFCAP_DPO is the CPU
# emulation's build (build-emu/prefcap-dpo: tests/gpu/emu.sh), which needs none. Needs python3 with torch (hfmodels.py) and the tokenizer
# fixtures of tests/fixtures/node (npm; scripts/deps.sh); PYTHON=... chooses the interpreter.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
CLI=${PREFCAP_DPO:-$ROOT/$BUILD/prefcap-dpo}
PY=${PYTHON:-python3}

if [ "${PREFCAP_CUDA_EMU:-}" != 1 ] && { ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
  echo "SKIP score_parity: no GPU (nvidia-smi finds none)"
  exit 0
fi
if [ ! -x "$CLI" ]; then echo "FAIL score_parity: $CLI is not built"; exit 1; fi
if ! "$PY" -c 'import torch' 2>/dev/null; then echo "FAIL score_parity: $PY cannot import torch"; exit 1; fi

export CLI ROOT
exec "$PY" - <<'EOF'
import json, os, random, subprocess, sys, tempfile

ROOT, CLI = os.environ["ROOT"], os.environ["CLI"]
sys.path.insert(0, os.path.join(ROOT, "tests/model"))
import torch  # noqa: E402
import hfmodels as hf  # noqa: E402

failures = 0


def report(name, ok, detail=""):
    global failures
    failures += not ok
    print(f"PASS {name}" if ok else f"FAIL {name}: {detail}", flush=True)


for tok, d in hf.TOKDIR.items():
    if not os.path.exists(os.path.join(d, "tokenizer.json")):
        report("score_parity_fixtures", False, f"{d}/tokenizer.json missing (run scripts/deps.sh --npm)")
        sys.exit(1)

V = hf.TOK_VOCAB
gen = torch.Generator().manual_seed(4321)
tmp = tempfile.mkdtemp(prefix="score_parity_")
models = []


def add(name, family, tokenizer, dtype, shards=1, prefix="transformer.", **kw):
    cfg = hf.make_config(family, vocab_size=V[tokenizer], **kw)
    d = os.path.join(tmp, name)
    w = hf.random_weights(cfg, gen, prefix=prefix) if family == "gpt2" else hf.random_weights(cfg, gen)
    hf.write_model(d, cfg, w, dtype, shards=shards, tokenizer=tokenizer)
    models.append((name, d))


add("gpt2_tied_f32", "gpt2", "llama3", "F32", n_embd=48, n_head=3, n_layer=2, n_positions=1024)
add("gpt2_untied_f16", "gpt2", "qwen3", "F16", prefix="", n_embd=32, n_head=4, n_layer=2, n_positions=1024,
    tie_word_embeddings=False)
add("llama3_rope_gqa_bf16", "llama", "llama3", "BF16", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=96, rope_theta=500000.0, tie_word_embeddings=True,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64})
add("qwen2_bias_sharded", "qwen2", "qwen3", "F32", shards=2, hidden_size=32, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=64, rope_theta=1000000.0)
add("qwen3_qknorm_headdim", "qwen3", "qwen3", "F32", hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, intermediate_size=64, rope_theta=1000000.0, tie_word_embeddings=True, attention_bias=False)
add("mistral_gqa7_window7", "mistral", "llama3", "F32", hidden_size=56, num_attention_heads=7, num_key_value_heads=1,
    intermediate_size=80, sliding_window=7)

# pairs: prompts from a few words to ~150 tokens, answers from one word to ~100 (several 64-row tiles)
rng = random.Random(7)
words = ("the a rain of cat Paris river model token seven blue runs quickly under über naïve 東京 "
         "hello world data preference chosen rejected answer question why because").split()
rows = []
# the CPU emulation runs every thread of every kernel as a fiber: half the pairs (the same first six)
# keep it near a minute while still crossing the 64-row tiles and the vocabulary chunks
for i in range(6 if os.environ.get("PREFCAP_CUDA_EMU") == "1" else 12):
    pw, cw, rw = rng.choice([2, 10, 60, 120]), rng.choice([1, 5, 40, 90]), rng.choice([1, 8, 30, 80])
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))
    rows.append({"prompt": text(pw), "chosen": " " + text(cw), "rejected": " " + text(rw)})
data = os.path.join(tmp, "pairs.jsonl")
with open(data, "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))


def score(d, device, env_extra, tag):
    out = os.path.join(tmp, f"{os.path.basename(d)}.{tag}.jsonl")
    env = dict(os.environ, **env_extra)
    p = subprocess.run([CLI, "score", "--model", d, "--data", data, "--out", out, "--device", device, "--threads", "4",
                        "--batch-size", "3"], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return [json.loads(l) for l in open(out)], ""


for name, d in models:
    ref, err = score(d, "cpu", {}, "cpu")
    if ref is None:
        report(f"score_parity_{name}_cpu", False, err)
        continue
    for mode, tol, env in (("fp32", 1e-4, {"PREFCAP_CUDA_FP32": "1"}), ("bf16", 2e-2, {"PREFCAP_CUDA_FP32": "0"})):
        got, err = score(d, "cuda", env, mode)
        if got is None:
            report(f"score_parity_{name}_{mode}", False, err)
            continue
        bad, worst = [], 0.0
        for i, (a, b) in enumerate(zip(got, ref)):
            for k in ("chosen", "rejected"):
                x, y = a[k + "_logps"], b[k + "_logps"]
                e = abs(x - y) / max(abs(y), 1e-6)
                worst = max(worst, e) if e == e else float("inf")
                if not e <= tol or a[k + "_tokens"] != b[k + "_tokens"]:
                    bad.append(f"row {i} {k}: cuda {x} ({a[k + '_tokens']} tokens), cpu {y} ({b[k + '_tokens']})")
        if len(got) != len(ref):
            bad.append(f"{len(got)} rows from cuda, {len(ref)} from cpu")
        report(f"score_parity_{name}_{mode}", not bad, "; ".join(bad[:4]) + f" (worst relative {worst:.2e}, tol {tol})")
        sys.stderr.write(f"  {name} {mode}: worst relative error {worst:.2e} (tol {tol})\n")

# while the backend lacks training ops, `train --device cuda` says so (a clear message, not a crash);
# once it has them, it trains (tests/gpu/train_parity.py checks the numbers)
d = models[0][1]
p = subprocess.run([CLI, "train", "--model", d, "--data", data, "--out", os.path.join(tmp, "train_out"), "--device",
                    "cuda", "--max-steps", "1", "--threads", "2", "--batch-size", "1"], capture_output=True, text=True)
report("score_parity_train_cuda", (p.returncode == 1 and "not built yet" in p.stderr) or p.returncode == 0,
       f"exit {p.returncode}, stderr {p.stderr.strip()[-300:]!r}")
sys.exit(1 if failures else 0)
EOF
