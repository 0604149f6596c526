#!/usr/bin/python3
"""tests/gpu/train_parity.py: `prefcap-dpo train --device cuda` against `--device cpu`, run by
tests/gpu/emu.sh on the CPU emulation of the CUDA kernels (build-emu/prefcap-dpo, docs/cuda.md), or on
a GPU with PREFCAP_DPO pointing at the GPU build.

Checks (each a PASS/FAIL line):
  - traj_*: 10-step runs in fp32 mode (PREFCAP_CUDA_FP32=1) give every metric of metrics.jsonl (the
    training and the evaluation lines; all but tokens_per_s) within TRAJ_TOL of the CPU trainer's. A
    covering set, not the full product: every family (GPT-2 tied; Llama with GQA and llama3 RoPE
    scaling; Mistral with a sliding window shorter than the sequences; Qwen2 with q/k/v biases; Qwen3
    with q/k norms and head_dim != hidden/heads), every loss, LoRA and full fine-tuning, --recompute
    on and off, gradient accumulation and clipping each appear at least once.
  - traj_sensitivity: the same comparison fails against a CPU run whose learning rate is 1% higher
    (the check can fail).
  - grads_*: the first step's gradients (--dump-grads) within GRAD_TOL of the CPU's, tensor by tensor.
  - bf16_*: the default bf16 mode (bf16 matmul operands) within BF16_TOL; a full fine-tune, so that
    weights stepped by AdamW must reach the bf16 copies the matmuls read (a stale copy leaves the
    log-probs where they started and fails this by far).
  - memory_*: the planned peak (run.json) is enough: a device of exactly that many bytes
    (PREFCAP_CUDA_EMU_MEM, emulation only) runs to the end; one byte less is refused before training
    with the bytes needed and the options that would fit, and nothing is written but run.json.
  - failure_*: a device failure planted at step 4 (PREFCAP_CUDA_EMU_FAIL, emulation only) stops the run
    naming the op and the step; checkpoints 1..3 stay, no checkpoint-4, no metrics line for step 4, no
    NaN anywhere, run.json says "failed"; --resume from checkpoint-3 ends where the uninterrupted run
    does.

Tokenizer: a byte-level BPE with no merges (256 byte tokens + EOS, written here), so the models' LM
heads are 257 wide: the emulation runs every CUDA thread as a fiber, and a real vocabulary (150k)
would spend the test's time budget on the LM head alone.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import torch
except ImportError:
    print("FAIL train_parity_torch: /usr/bin/python3 cannot import torch (install python3-torch)")
    sys.exit(1)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests/model"))
import hfmodels as hf  # noqa: E402

CLI = os.environ.get("PREFCAP_DPO") or os.path.join(ROOT, os.environ.get("BUILD", "build") + "-emu", "prefcap-dpo")
EMULATED = os.environ.get("PREFCAP_CUDA_EMU") == "1"

# fp32 mode against the CPU: every op agrees within 1e-5 (test_cuda_ops); a log-prob sum over ~30
# tokens through two layers, then ten AdamW steps, drift to ~1e-6 relative (observed: at most 3e-6).
# Values that start at exactly 0 (rewards and margins of a full fine-tune at step 1, the learning rate
# of a warmup) get an absolute floor: beta (<= 2) times a difference of log-prob sums (<= 200 in
# magnitude, to ~1e-7 relative) is below 1e-5.
TRAJ_TOL, TRAJ_ABS = 1e-4, 1e-5
# Gradients: relative by tensor norm. Each op holds 1e-5 elementwise; the first step's gradients
# (before any update can amplify anything) are observed within 1e-6.
GRAD_TOL = 1e-5
# bf16 mode: matmul operands rounded to 8 bits of mantissa (relative error 2^-9 each) move each token's
# log-prob by ~1e-3 relative, and a sequence's sum (same-signed terms) no more; ten AdamW steps carry
# that along (observed: 2e-3 on llama, 1e-2 on GPT-2 LoRA). So the bf16 runs are held to the CPU's on
# the log-probs (BF16_KEYS: every line's mean chosen and rejected log-prob, train and eval) within 3e-2
# relative, and the loss within 3e-2 + 2e-2 absolute (it falls towards 0, where a relative error means
# little). Rewards, margins and accuracies are differences of nearly equal sums (accuracy flips when a
# pair's margin is near 0), so they are left to the fp32 check. A stale bf16 copy of a stepped weight
# leaves the log-probs where step 1 had them: 30% off by step 10 (llama full: -36 -> -25 nats).
BF16_TOL, BF16_ABS = 3e-2, 2e-2
BF16_KEYS = ("logps/chosen", "logps/rejected", "eval_logps/chosen", "eval_logps/rejected", "loss", "eval_loss")

failures = 0
T0 = time.time()


def report(name, ok, detail=""):
    global failures
    failures += not ok
    print(f"PASS train_parity_{name}" if ok else f"FAIL train_parity_{name}: {detail}", flush=True)
    if detail and ok and os.environ.get("TRAIN_TEST_VERBOSE"):
        sys.stderr.write(f"  {name}: {detail}\n")


def note(msg):
    sys.stderr.write(f"  [{time.time() - T0:5.1f}s] {msg}\n")


# ---- models and data ---------------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte-to-character table (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_byte_tokenizer(d):
    b2u = bytes_to_unicode()
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                     "vocab": {b2u[b]: b for b in range(256)}, "merges": []}}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "bos_token": None, "model_max_length": 1024}, f)


def make_models(tmp):
    gen = torch.Generator().manual_seed(99)
    V = 257
    specs = {
        "gpt2": hf.make_config("gpt2", vocab_size=V, n_embd=32, n_head=4, n_layer=2, n_positions=256),
        "llama": hf.make_config("llama", vocab_size=V, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=48, rope_theta=500000.0,
                                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
        "mistral": hf.make_config("mistral", vocab_size=V, hidden_size=48, num_attention_heads=6,
                                  num_key_value_heads=2, intermediate_size=40, sliding_window=5),
        "qwen2": hf.make_config("qwen2", vocab_size=V, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                intermediate_size=48, rope_theta=1000000.0),
        "qwen3": hf.make_config("qwen3", vocab_size=V, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=16, intermediate_size=48, rope_theta=1000000.0, tie_word_embeddings=True,
                                attention_bias=False),
    }
    out = {}
    for fam, cfg in specs.items():
        d = os.path.join(tmp, "model_" + fam)
        hf.write_model(d, cfg, hf.random_weights(cfg, gen, prefix="transformer."), "F32", tokenizer=None)
        write_byte_tokenizer(d)
        out[fam] = d
    return out


ROWS = [
    {"prompt": "Capital of France?", "chosen": " Paris.", "rejected": " Lyon, I think."},
    {"prompt": "2+2=", "chosen": "4", "rejected": "5, or 22"},
    {"prompt": "A primary color:", "chosen": " Blue.", "rejected": " Purple"},
    {"prompt": "Is the sun a star?", "chosen": " Yes.", "rejected": " No, never."},
]
EVAL_ROWS = [{"prompt": "Moon rhymes with", "chosen": " spoon", "rejected": " sun"}]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- runs ----------------------------------------------------------------------------------------------

def train(model, data, out, device, opts, env_extra=None, extra=()):
    args = [CLI, "train", "--model", model, "--data", data, "--out", out, "--device", device, "--threads", "2",
            "--no-shuffle", "--max-steps", "10"] + opts + list(extra)
    env = dict(os.environ, **(env_extra or {}))
    env.setdefault("PREFCAP_CUDA_FP32", "1")
    try:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", "(test) timed out")


def metrics(out):
    return [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]


def compare(got, want, tol, floor, keys=None):
    """Every metric but tokens_per_s (or those of keys): |got - want| <= tol |want| + floor. Returns
    (problems, worst)."""
    bad, worst = [], 0.0
    if len(got) != len(want):
        bad.append(f"{len(got)} metrics lines, the CPU has {len(want)}")
    for g, w in zip(got, want):
        names = (set(g) | set(w)) - {"tokens_per_s"}
        for k in sorted(names if keys is None else names & set(keys)):
            a, b = g.get(k), w.get(k)
            if a is None or b is None:
                bad.append(f"step {w.get('step')}: {k} only on one side")
                continue
            if not (isinstance(a, (int, float)) and math.isfinite(a)):
                bad.append(f"step {w.get('step')}: {k} = {a}")
                continue
            e = abs(a - b)
            worst = max(worst, e / max(abs(b), floor / tol))
            if e > tol * abs(b) + floor:
                bad.append(f"step {w['step']}{' eval' if 'eval_loss' in w else ''}: {k} cuda {a!r} cpu {b!r}")
    return bad, worst


# ---- the checks ----------------------------------------------------------------------------------------

def lora_opts(fam):
    targets = "c_attn,c_proj,c_fc" if fam == "gpt2" else "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    return ["--lora-r", "4", "--lora-alpha", "8", "--lora-targets", targets, "--lr", "5e-2"]


FULL = ["--lora-r", "0", "--lr", "2e-3"]

# (name, family, loss options, lora?, recompute?, other options)
CASES = [
    ("gpt2_full_sigmoid", "gpt2", ["--loss", "sigmoid"], False, False, ["--batch-size", "2", "--grad-accum", "2"]),
    ("llama_lora_ipo_recompute", "llama", ["--loss", "ipo"], True, True, ["--batch-size", "2"]),
    ("mistral_full_hinge_recompute", "mistral", ["--loss", "hinge"], False, True,
     ["--batch-size", "2", "--max-grad-norm", "0.5", "--weight-decay", "0.1"]),
    ("qwen2_lora_robust", "qwen2", ["--loss", "robust", "--label-smoothing", "0.2"], True, False,
     ["--batch-size", "2", "--scheduler", "cosine", "--warmup-steps", "2"]),
    ("qwen3_full_simpo_recompute", "qwen3", ["--loss", "simpo"], False, True, ["--batch-size", "2"]),
    ("qwen3_lora_sigmoid_eval", "qwen3", ["--loss", "sigmoid"], True, False, ["--batch-size", "2", "--eval-steps", "5"]),
]


def case_opts(fam, loss, lora, recompute, other):
    return loss + (lora_opts(fam) if lora else FULL) + (["--recompute"] if recompute else []) + other


def check_trajectories(tmp, models, data, evald):
    cpu_runs = {}
    for name, fam, loss, lora, rc, other in CASES:
        o = case_opts(fam, loss, lora, rc, other) + ["--eval-data", evald]
        cpu, dev = os.path.join(tmp, f"traj_{name}_cpu"), os.path.join(tmp, f"traj_{name}_cuda")
        # the CPU run never recomputes: --recompute on the device must give what the plain run gives
        p = train(models[fam], data, cpu, "cpu", [x for x in o if x != "--recompute"])
        q = train(models[fam], data, dev, "cuda", o)
        if p.returncode != 0 or q.returncode != 0:
            report(f"traj_{name}", False, f"cpu exit {p.returncode}: {p.stderr.strip()[-300:]} | cuda exit "
                   f"{q.returncode}: {q.stderr.strip()[-400:]}")
            continue
        bad, worst = compare(metrics(dev), metrics(cpu), TRAJ_TOL, TRAJ_ABS)
        report(f"traj_{name}", not bad, "; ".join(bad[:4]) + f" (worst relative {worst:.1e}, tol {TRAJ_TOL})")
        note(f"traj {name}: worst relative {worst:.1e}")
        cpu_runs[name] = (fam, o, dev)
    # the check can fail: a CPU run 1% off in the learning rate is not the device's run
    if "qwen2_lora_robust" in cpu_runs:
        fam, o, dev = cpu_runs["qwen2_lora_robust"]
        o2 = [x for x in o if x != "--recompute"]
        o2[o2.index("--lr") + 1] = repr(float(o2[o2.index("--lr") + 1]) * 1.01)
        off = os.path.join(tmp, "traj_sensitivity_cpu")
        p = train(models[fam], data, off, "cpu", o2)
        bad, _ = compare(metrics(dev), metrics(off), TRAJ_TOL, TRAJ_ABS) if p.returncode == 0 else (["ran"], 0)
        report("traj_sensitivity", p.returncode == 0 and len(bad) > 0,
               f"a 1% different learning rate passed the comparison (exit {p.returncode})")


def check_grads(tmp, models, data):
    for name, fam, lora in (("gpt2_full", "gpt2", False), ("qwen3_lora", "qwen3", True), ("mistral_full", "mistral", False)):
        o = ["--loss", "sigmoid", "--batch-size", "4"] + (lora_opts(fam) if lora else FULL)
        files = {}
        for dev in ("cpu", "cuda"):
            g = os.path.join(tmp, f"grads_{name}_{dev}.safetensors")
            p = train(models[fam], data, os.path.join(tmp, f"grads_{name}_{dev}"), dev, o,
                      extra=["--max-steps", "1", "--dump-grads", g])
            if p.returncode != 0:
                report(f"grads_{name}", False, f"{dev} exit {p.returncode}: {p.stderr.strip()[-400:]}")
                break
            files[dev] = hf.st_read(g)
        if len(files) != 2:
            continue
        a, b = files["cuda"], files["cpu"]
        bad, worst = [], 0.0
        if set(a) != set(b):
            bad.append(f"tensor names differ: {sorted(set(a) ^ set(b))[:4]}")
        for n in sorted(set(a) & set(b)):
            d, s = (a[n] - b[n]).norm().item(), b[n].norm().item()
            e = d / s if s > 0 else d
            worst = max(worst, e)
            if not e <= GRAD_TOL:
                bad.append(f"{n}: relative {e:.2e}")
        report(f"grads_{name}", not bad and len(b) > 0, "; ".join(bad[:4]) + f" (worst {worst:.1e}, tol {GRAD_TOL})")
        note(f"grads {name}: worst relative {worst:.1e} over {len(b)} tensors")


def check_bf16(tmp, models, data):
    for name, fam, lora in (("llama_full", "llama", False), ("gpt2_lora", "gpt2", True)):
        o = ["--loss", "sigmoid", "--batch-size", "2"] + (lora_opts(fam) if lora else FULL)
        if lora:  # a gentler rate than the fp32 checks': the loss stays away from 0 for ten steps
            o[o.index("--lr") + 1] = "1e-2"
        cpu, dev = os.path.join(tmp, f"bf16_{name}_cpu"), os.path.join(tmp, f"bf16_{name}_cuda")
        p = train(models[fam], data, cpu, "cpu", o)
        q = train(models[fam], data, dev, "cuda", o, env_extra={"PREFCAP_CUDA_FP32": "0"})
        if p.returncode != 0 or q.returncode != 0:
            report(f"bf16_{name}", False, f"exit {p.returncode}/{q.returncode}: {q.stderr.strip()[-400:]}")
            continue
        bad, worst = compare(metrics(dev), metrics(cpu), BF16_TOL, BF16_ABS, BF16_KEYS)
        report(f"bf16_{name}", not bad, "; ".join(bad[:4]) + f" (worst relative {worst:.1e}, tol {BF16_TOL})")
        note(f"bf16 {name}: worst relative {worst:.1e}")


def check_memory(tmp, models, data):
    fam = "llama"
    o = ["--loss", "sigmoid", "--batch-size", "4", "--max-steps", "2"] + FULL
    first = os.path.join(tmp, "mem_plan")
    p = train(models[fam], data, first, "cuda", o)
    if p.returncode != 0:
        report("memory_plan", False, f"exit {p.returncode}: {p.stderr.strip()[-400:]}")
        return
    run = json.load(open(os.path.join(first, "run.json")))
    peak = run.get("memory", {}).get("peak_bytes")
    report("memory_recorded", isinstance(peak, (int, float)) and peak > 0 and "memory on cuda: peak" in p.stderr
           and run.get("device", {}).get("emulated") is True,
           f"run.json memory {run.get('memory')}, device {run.get('device')}, stderr {p.stderr[-300:]!r}")
    if not peak:
        return
    fits = os.path.join(tmp, "mem_fits")
    q = train(models[fam], data, fits, "cuda", o, env_extra={"PREFCAP_CUDA_EMU_MEM": str(int(peak))})
    report("memory_plan_is_enough", q.returncode == 0,
           f"a device of the planned {int(peak)} bytes: exit {q.returncode}: {q.stderr.strip()[-400:]}")
    tight = os.path.join(tmp, "mem_tight")
    r = train(models[fam], data, tight, "cuda", o, env_extra={"PREFCAP_CUDA_EMU_MEM": str(int(peak) - 1)})
    written = sorted(os.listdir(tight)) if os.path.isdir(tight) else []
    ok = (r.returncode == 1 and "not enough memory" in r.stderr and f"needs {int(peak)} bytes" in r.stderr and
          "Options that fit:" in r.stderr and "--recompute (" in r.stderr and "--lora-r 16 (" in r.stderr and
          not any(f.startswith(("metrics", "checkpoint")) for f in written))
    report("memory_refused", ok, f"exit {r.returncode}, files {written}, stderr {r.stderr.strip()[-600:]!r}")


def check_failure(tmp, models, data):
    """lp_finish_kernel runs once per forward here (fewer than 1024 scored rows): the two reference
    batches, then one per step; the 6th launch is step 4's forward."""
    fam = "qwen3"
    o = ["--loss", "sigmoid", "--batch-size", "2", "--save-steps", "1"] + lora_opts(fam)
    whole = os.path.join(tmp, "fail_whole")
    p = train(models[fam], data, whole, "cuda", o)
    out = os.path.join(tmp, "fail_run")
    q = train(models[fam], data, out, "cuda", o, env_extra={"PREFCAP_CUDA_EMU_FAIL": "lp_finish_kernel:6"})
    if p.returncode != 0:
        report("failure_planted", False, f"the run without a failure: exit {p.returncode}: {p.stderr[-300:]}")
        return
    lines = metrics(out) if os.path.exists(os.path.join(out, "metrics.jsonl")) else []
    text = open(os.path.join(out, "metrics.jsonl")).read() if lines else ""
    status = json.load(open(os.path.join(out, "run.json"))).get("status") if os.path.exists(os.path.join(out, "run.json")) else None
    ckpts = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-")) if os.path.isdir(out) else []
    ok = (q.returncode == 1 and "step 4:" in q.stderr and "logprob" in q.stderr and "planted failure" in q.stderr and
          [l["step"] for l in lines] == [1, 2, 3] and "NaN" not in text and "nan" not in text and status == "failed" and
          ckpts == ["checkpoint-1", "checkpoint-2", "checkpoint-3"])
    report("failure_stops_and_names", ok, f"exit {q.returncode}, steps {[l['step'] for l in lines]}, status {status}, "
           f"checkpoints {ckpts}, stderr {q.stderr.strip()[-400:]!r}")
    r = subprocess.run([CLI, "train", "--resume", out, "--threads", "2"], capture_output=True, text=True,
                       env=dict(os.environ, PREFCAP_CUDA_FP32="1"), timeout=300)
    same = r.returncode == 0 and [dict(l, tokens_per_s=0) for l in metrics(out)] == \
        [dict(l, tokens_per_s=0) for l in metrics(whole)]
    report("failure_resume", same, f"exit {r.returncode}: {r.stderr.strip()[-400:]}")


def main():
    if not os.path.exists(CLI):
        print(f"FAIL train_parity: {CLI} is not built")
        return 1
    tmp = tempfile.mkdtemp(prefix="train_parity_")
    try:
        models = make_models(tmp)
        data = write_jsonl(os.path.join(tmp, "pairs.jsonl"), ROWS)
        evald = write_jsonl(os.path.join(tmp, "eval.jsonl"), EVAL_ROWS)
        # a device backend without its training ops: say so once, as a SKIP, not as a dozen FAILs
        p = train(models["gpt2"], data, os.path.join(tmp, "probe"), "cuda", FULL, extra=["--max-steps", "1"])
        if p.returncode != 0 and "not built yet" in p.stderr:
            print("SKIP train_parity: the CUDA backend cannot train yet (its backward ops are not all written): "
                  + p.stderr.strip().splitlines()[-1])
            return 0
        want = set(sys.argv[1:]) or {"traj", "grads", "bf16", "memory", "failure"}
        if "traj" in want:
            check_trajectories(tmp, models, data, evald)
        if "grads" in want:
            check_grads(tmp, models, data)
        if "bf16" in want:
            check_bf16(tmp, models, data)
        if EMULATED and "memory" in want:
            check_memory(tmp, models, data)
        if EMULATED and "failure" in want:
            check_failure(tmp, models, data)
        note("done")
    finally:
        if not os.environ.get("TRAIN_PARITY_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            note(f"kept {tmp}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
