#!/usr/bin/python3
"""tests/train/test_train.py: the acceptance test of `prefcap-dpo train` against a float64 PyTorch
reference (tests/train/ref_dpo.py, written from docs/training.md and TRL/PEFT/torch semantics).

Checks (each a PASS/FAIL line; sections can be picked on the command line: onemodel grads traj adapter accum
resume bad):
  - dump_tokens (with grads): the tokenized pairs are TRL's (prompt tokens, then the tokens of
    prompt+completion+EOS after them), built here from `prefcap-dpo tokenize`.
  - grads: for tiny random checkpoints of every family (GPT-2 tied, Llama GQA + llama3 rope scaling,
    Mistral with a sliding window shorter than the sequences, Qwen2 with q/k/v biases, Qwen3 with q/k
    norms and head_dim != hidden/heads), full fine-tune and LoRA from the same initial adapter (nonzero
    B), the first step's gradients (--dump-grads) equal torch autograd's for every parameter; every
    loss on one model; and the comparison fails for a wrong beta, mask or reference.
  - traj: 10 steps, --no-shuffle, clipping on (checked to trigger), full FT and LoRA, losses
    sigmoid/ipo/hinge, three schedules, weight decay: every logged metric equals the PyTorch loop
    (torch.optim.AdamW, clip_grad_norm_, HF schedules); the comparison fails without clipping, without
    warmup or with another Adam eps.
  - adapter: OUT/adapter_model.safetensors + adapter_config.json read as PEFT would; the tensors are
    the reference's final A and B (and not those of a run without weight decay); merged in torch they
    score like `prefcap-dpo score --adapter OUT`.
  - accum: --batch-size 1 --grad-accum 4 equals --batch-size 4 --grad-accum 1.
  - resume: a run killed with SIGKILL after a checkpoint, then --resume, gives the uninterrupted run's
    metrics.jsonl bit for bit; so does --from-manifest OUT/run.json.
  - onemodel: there is one model. `score` on the pairs and the reference log-probs inside `train`
    (--dump-ref) are the same bytes (sums written with %.17g), and at step 1 the policy's log-probs
    (metrics.jsonl) equal that reference exactly: rewards exactly 0, logps/chosen exactly the mean of
    the reference's; on GPT-2 (full) and Qwen3 (LoRA, B = 0 at the start).
  - bad input: empty data file, prompts longer than --max-length (keep_start drops them), a NaN weight;
    and, with shuffling, a micro-batch across an epoch boundary keeps each pair's own reference.

Needs Debian's python3-torch (fails, never skips, without it). Exits non-zero on any failure.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import torch
except ImportError:
    print("FAIL train_torch_available: /usr/bin/python3 cannot import torch (install python3-torch)")
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "model"))
import hfmodels as hf  # noqa: E402
import ref_dpo as ref  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
CLI = os.environ.get("PREFCAP_DPO") or os.path.join(hf.ROOT, BUILD, "prefcap-dpo")
VERBOSE = os.environ.get("TRAIN_TEST_VERBOSE")

# Gradient tolerance, relative by tensor norm: ||g_c - g_ref|| / ||g_ref|| <= 1e-4. The C trainer runs
# in float32 (unit roundoff 6e-8); the model test measures its log-probs within ~1e-6 relative of the
# float64 forward, and the backward pass adds a few more float32 reductions (over <= 150k vocabulary
# logits, over sequence positions), so elementwise errors stay ~1e-6..1e-5 of the tensor's scale and
# the norm-wise error ~1e-5 at worst. A real mistake (a wrong beta, mask, loss term, a missed tie or a
# transposed LoRA factor) moves gradients by 1e-2 or more; the sensitivity checks below show two.
GRAD_TOL = 1e-4
# Trajectory tolerance: 1e-3 relative, plus an absolute floor of 1e-4 for values near 0 (rewards and
# margins start at exactly 0 in full fine-tuning; the learning rate is 0 in the first warmup step).
# The floor is ~10x what float32 leaves in a reward: beta (<= 0.5) times a difference of log-prob sums
# of magnitude <= 100 computed to ~1e-6 relative. Ten AdamW steps amplify float32 noise (Adam's first
# update is ~lr*sign(g), so elements whose gradient is within rounding of zero move by a different
# +-lr); observed drift is 1e-5..1e-4, while dropping clipping or warmup, or another Adam eps, breaks
# the 1e-3 (the sensitivity checks).
TRAJ_TOL, TRAJ_ABS = 1e-3, 1e-4
# Grad accumulation: the same pairs summed in another grouping in float32 (observed ~2e-6); rewards
# and margins are measured against the log-probs they are differences of (see accum_check).
ACCUM_TOL = 1e-5
SCORE_TOL = 1e-4
failures = 0
T0 = time.time()


def report(name, ok, detail=""):
    global failures
    if not ok:
        failures += 1
        print(f"FAIL {name}: {detail}", flush=True)
    else:
        print(f"PASS {name}", flush=True)
        if detail and VERBOSE:
            sys.stderr.write(f"  {name}: {detail}\n")


def note(msg):
    sys.stderr.write(f"  [{time.time() - T0:6.1f}s] {msg}\n")


# ---- data and models -------------------------------------------------------------------------------

ROWS = [
    {"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " Lyon, I think."},
    {"prompt": "2+2=", "chosen": "4", "rejected": "5, or maybe 22"},
    {"prompt": "Name a primary color.", "chosen": " Blue.", "rejected": " Purple"},
    {"prompt": "Translate 'chat' to English: ", "chosen": "cat", "rejected": "Katze"},
    {"prompt": "Is the sun a star?", "chosen": " Yes, it is.", "rejected": " No."},
    {"prompt": "Write a word that rhymes with moon", "chosen": ": spoon", "rejected": ": sun"},
]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_models(tmp):
    """{family: (cfg, stored weights, dir)}: every family, F32 (the trainer's own precision, so that the
    reference starts from exactly the values the C trainer trains)."""
    gen = torch.Generator().manual_seed(2024)
    V = hf.TOK_VOCAB
    specs = {
        "gpt2": (hf.make_config("gpt2", vocab_size=V["qwen3"], n_embd=32, n_head=4, n_layer=2), "qwen3"),
        "llama": (hf.make_config("llama", vocab_size=V["llama3"], hidden_size=32, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=48, rope_theta=500000.0,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
                  "llama3"),
        "mistral": (hf.make_config("mistral", vocab_size=V["llama3"], hidden_size=48, num_attention_heads=6,
                                   num_key_value_heads=2, intermediate_size=40, sliding_window=5), "llama3"),
        "qwen2": (hf.make_config("qwen2", vocab_size=V["qwen3"], hidden_size=32, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=48, rope_theta=1000000.0), "qwen3"),
        "qwen3": (hf.make_config("qwen3", vocab_size=V["qwen3"], hidden_size=32, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=16, intermediate_size=48, rope_theta=1000000.0,
                                 tie_word_embeddings=True, attention_bias=False), "qwen3"),
    }
    out = {}
    for fam, (cfg, tok) in specs.items():
        d = os.path.join(tmp, "model_" + fam)
        st = hf.write_model(d, cfg, hf.random_weights(cfg, gen, prefix="transformer."), "F32", tokenizer=tok)
        out[fam] = (cfg, st, d)
    return out


def make_adapter(tmp, tag, cfg, stored, r=4, alpha=8, targets=None, seed=7):
    targets = targets or ref.DEFAULT_TARGETS["gpt2" if cfg["model_type"] == "gpt2" else "llama"]
    gen = torch.Generator().manual_seed(seed)
    d = os.path.join(tmp, "adapter_" + tag)
    st = ref.write_adapter(d, cfg, r, alpha, ref.random_adapter(cfg, stored, targets, r, gen), targets)
    return d, st, targets


# ---- running the CLI -------------------------------------------------------------------------------

def train_args(model_dir, data, out, o, adapter_dir=None, extra=()):
    a = [CLI, "train", "--model", model_dir, "--data", data, "--out", out, "--threads", "2",
         "--loss", o.loss, "--beta", repr(o.beta), "--lr", repr(o.lr), "--weight-decay", repr(o.weight_decay),
         "--scheduler", o.scheduler, "--warmup-steps", str(o.warmup_steps), "--max-grad-norm", repr(o.max_grad_norm),
         "--batch-size", str(o.batch_size), "--grad-accum", str(o.grad_accum), "--max-steps", str(o.max_steps),
         "--no-shuffle", "--lora-r", str(o.lora_r)]
    if o.label_smoothing:
        a += ["--label-smoothing", repr(o.label_smoothing)]
    if o.loss == "simpo":
        a += ["--simpo-gamma", repr(o.simpo_gamma)]
    if o.lora_r:
        a += ["--lora-alpha", repr(o.lora_alpha), "--lora-targets", ",".join(o.lora_targets)]
        if adapter_dir:
            a += ["--init-adapter", adapter_dir]
    return a + list(extra)


def run(args, timeout=300):
    # These checks are of the computation, bit for bit: the reference cache (tests/train/test_refcache.py)
    # would hand a run the sums another section computed in another batch packing, and would write to
    # the user's ~/.cache.
    if len(args) > 1 and args[1] == "train":
        args = list(args) + ["--no-ref-cache"]
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"(test) timed out after {timeout}s: {' '.join(args)}")


@contextlib.contextmanager
def section(name):
    """A section that raises (a missing output file, a malformed line) is one FAIL, not a crash."""
    try:
        yield
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        report(f"train_{name}_section", False, f"{type(e).__name__}: {e}")


def read_metrics(path, evals=False):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if ("eval_loss" in r) == evals]


def rel_norm(a, b):
    d = (a - b).norm().item()
    n = b.norm().item()
    return d / n if n > 0 else (0.0 if d == 0 else float("inf"))


# ---- tokenization ----------------------------------------------------------------------------------

def check_dump_tokens(name, model_dir, rows, dump):
    """The dumped pairs are TRL's: prompt tokens + (prompt+completion+EOS tokens)[len(prompt):]."""
    eos = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))["eos_token"]
    if isinstance(eos, dict):
        eos = eos["content"]
    texts = []
    for r in rows:
        texts += [r["prompt"]] + [r["prompt"] + c + ("" if c.endswith(eos) else eos) for c in (r["chosen"], r["rejected"])]
    p = subprocess.run(
        [CLI, "tokenize", "--model", model_dir], input="".join(json.dumps(t) + "\n" for t in texts),
        capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        report(name, False, "prefcap-dpo tokenize failed: " + p.stderr.strip())
        return
    ids = [json.loads(l)["ids"] for l in p.stdout.splitlines()]
    bad = []
    if len(dump) != len(rows):
        bad.append(f"{len(dump)} pairs dumped for {len(rows)} rows")
    for i, (r, d) in enumerate(zip(rows, dump)):
        pr = ids[3 * i]
        for k, key in ((1, "chosen"), (2, "rejected")):
            want = pr + ids[3 * i + k][len(pr):]
            if d[key] != want or d[key + "_prompt_len"] != len(pr):
                bad.append(f"pair {i} {key}: got {d[key]} (prompt_len {d[key + '_prompt_len']}), TRL {want} ({len(pr)})")
        if d.get("line") != i + 1:
            bad.append(f"pair {i}: line {d.get('line')}")
    report(name, not bad, "; ".join(bad[:3]))


# ---- gradients -------------------------------------------------------------------------------------

def grad_check(tmp, name, cfg, stored, model_dir, data, o, adapter=None, sensitivity=()):
    """--dump-grads --max-steps 1 against autograd of the reference's first-step mean loss."""
    out = os.path.join(tmp, "out_" + name)
    gfile, tfile = os.path.join(tmp, name + ".grads.safetensors"), os.path.join(tmp, name + ".tokens.jsonl")
    adir, ast = adapter if adapter else (None, None)
    t = time.time()
    p = run(train_args(model_dir, data, out, o, adir, ["--dump-grads", gfile, "--dump-tokens", tfile]))
    tc = time.time() - t
    if p.returncode != 0 or not os.path.exists(gfile):
        report(name, False, f"exit {p.returncode}: {p.stderr.strip()[-500:]}")
        return None
    pairs = ref.load_dump_tokens(tfile)
    g_c = hf.st_read(gfile)
    t = time.time()
    g_ref = ref.RefTrainer(cfg, stored, pairs, o, ast).first_step_grads()
    tr_time = time.time() - t
    bad, worst = [], (0.0, "")
    if set(g_c) != set(g_ref):
        bad.append(f"names differ: missing {sorted(set(g_ref) - set(g_c))[:4]}, extra {sorted(set(g_c) - set(g_ref))[:4]}")
    for n in sorted(set(g_c) & set(g_ref)):
        if tuple(g_c[n].shape) != tuple(g_ref[n].shape):
            bad.append(f"{n}: shape {list(g_c[n].shape)} vs {list(g_ref[n].shape)}")
            continue
        e = rel_norm(g_c[n], g_ref[n])
        if e > worst[0]:
            worst = (e, n)
        if not e <= GRAD_TOL:
            bad.append(f"{n}: rel err {e:.3e} (|g_ref| {g_ref[n].norm().item():.4e}, |g_c| {g_c[n].norm().item():.4e})")
    report(name, not bad, f"{len(bad)} bad of {len(g_ref)}: " + "; ".join(bad[:6]) + f" (worst {worst[0]:.2e} {worst[1]})")
    note(f"{name}: worst gradient relative error {worst[0]:.2e} ({worst[1]}) over {len(g_ref)} tensors "
         f"(C {tc:.1f}s, torch {tr_time:.1f}s)")
    # sensitivity: the same C gradients against a deliberately wrong reference must fail clearly
    for tag, patch in sensitivity:
        o2 = ref.Options(**{**o.__dict__, **patch})
        g2 = ref.RefTrainer(cfg, stored, pairs, o2, ast).first_step_grads()
        e = max(rel_norm(g_c[n], g2[n]) for n in g2 if n in g_c)
        report(f"{name}_sensitive_to_{tag}", e > 100 * GRAD_TOL, f"a reference with {tag} differs by only {e:.2e}")
    return pairs


# ---- trajectories ----------------------------------------------------------------------------------

METRICS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected", "grad_norm", "learning_rate", "epoch"]


def metric_close(key, c, r, rel, absf, n_pairs=1, ambiguous=0):
    if key == "rewards/accuracies":
        # a pair whose reference margin is within float32 noise of 0 may count either way
        return abs(c - r) <= ambiguous / n_pairs + 1e-9
    return abs(c - r) <= rel * abs(r) + absf


def compare_rows(name, c_rows, r_rows, rel, absf, n_pairs):
    bad, worst = diff_rows(c_rows, r_rows, rel, absf, n_pairs)
    report(name, not bad, "; ".join(bad[:6]) + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))
    return worst


def diff_rows(c_rows, r_rows, rel, absf, n_pairs):
    bad, worst = [], 0.0
    if len(c_rows) != len(r_rows):
        bad.append(f"{len(c_rows)} metric lines, reference {len(r_rows)}")
    for c, r in zip(c_rows, r_rows):
        if c.get("step") != r["step"]:
            bad.append(f"step {c.get('step')} vs {r['step']}")
            continue
        missing = [k for k in METRICS + ["tokens_per_s"] if k not in c]
        if missing:
            bad.append(f"step {r['step']}: missing {missing}")
            continue
        for k in METRICS:
            if not metric_close(k, c[k], r[k], rel, absf, n_pairs, r.get("_ambiguous", 0)):
                bad.append(f"step {r['step']} {k}: got {c[k]:.8g}, reference {r[k]:.8g}")
            elif k != "rewards/accuracies":
                worst = max(worst, abs(c[k] - r[k]) / max(abs(r[k]), absf / rel))
    return bad, worst


def traj_check(tmp, name, cfg, stored, model_dir, data, o, adapter=None, sensitivity=()):
    out = os.path.join(tmp, "out_" + name)
    tfile = os.path.join(tmp, name + ".tokens.jsonl")
    adir, ast = adapter if adapter else (None, None)
    t = time.time()
    p = run(train_args(model_dir, data, out, o, adir, ["--dump-tokens", tfile]))
    tc = time.time() - t
    if p.returncode != 0:
        report(name, False, f"exit {p.returncode}: {p.stderr.strip()[-500:]}")
        return None
    pairs = ref.load_dump_tokens(tfile)
    t = time.time()
    tr = ref.RefTrainer(cfg, stored, pairs, o, ast)
    r_rows = tr.train()
    tr_time = time.time() - t
    c_rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    worst = compare_rows(name, c_rows, r_rows, TRAJ_TOL, TRAJ_ABS, o.batch_size * o.grad_accum)
    clipped = sum(r["grad_norm"] > o.max_grad_norm for r in r_rows)
    report(name + "_clipping_triggered", clipped > 0, f"grad_norm never above {o.max_grad_norm}: "
           + ", ".join(f"{r['grad_norm']:.3g}" for r in r_rows))
    moved = abs(r_rows[-1]["rewards/margins"] - r_rows[0]["rewards/margins"])
    note(f"{name}: worst metric drift {worst:.2e}; clipped {clipped}/10 steps; final loss {r_rows[-1]['loss']:.5g}, "
         f"margins {r_rows[0]['rewards/margins']:.4g} -> {r_rows[-1]['rewards/margins']:.4g} (moved {moved:.3g}); "
         f"C {tc:.1f}s, torch {tr_time:.1f}s")
    # sensitivity: the C metrics against a reference with one optimizer detail changed must fail
    for tag, patch in sensitivity:
        o2 = ref.Options(**{**o.__dict__, **patch})
        bad, _ = diff_rows(c_rows, ref.RefTrainer(cfg, stored, pairs, o2, ast).train(), TRAJ_TOL, TRAJ_ABS,
                           o.batch_size * o.grad_accum)
        report(f"{name}_sensitive_to_{tag}", len(bad) > 0, f"a reference with {tag} still agrees within tolerance")
    return out, tr, pairs


# ---- adapter files ---------------------------------------------------------------------------------

def adapter_check(tmp, name, cfg, stored, model_dir, data, out, tr, pairs, o):
    """OUT's adapter as PEFT would read it: keys, metadata, config; merged in torch it scores like
    `prefcap-dpo score --adapter OUT`, and it is the reference trainer's final adapter."""
    fa, fc = os.path.join(out, "adapter_model.safetensors"), os.path.join(out, "adapter_config.json")
    if not (os.path.exists(fa) and os.path.exists(fc)):
        report(name + "_files", False, f"missing {fa} or {fc}")
        return
    conf, ad = ref.read_adapter(out)
    meta = ref.st_metadata(fa)
    want_keys = {ref.peft_key(m, w) for m in tr.modules for w in ("A", "B")}
    bad = []
    if set(ad) != want_keys:
        bad.append(f"keys: missing {sorted(want_keys - set(ad))[:3]}, extra {sorted(set(ad) - want_keys)[:3]}")
    for k, v in ad.items():
        if k in tr.params and tuple(v.shape) != tuple(tr.params[k].shape):
            bad.append(f"{k} shape {list(v.shape)}, PEFT {list(tr.params[k].shape)}")
    if meta.get("format") != "pt":
        bad.append(f"metadata {meta}")
    # target_modules as PEFT matches them (a list: module name equal to or ending in "." + entry; a
    # string: a regex that must match the whole module name) must select exactly the trained modules
    tm = conf.get("target_modules") or []
    if isinstance(tm, str):
        sel = sorted(m[:-len(".weight")] for m in stored if m.endswith(".weight") and stored[m].dim() == 2
                     and re.fullmatch(tm, m[:-len(".weight")]))
    else:
        sel = sorted(ref.lora_modules(cfg, stored, tm))
    if (conf.get("peft_type") != "LORA" or conf.get("r") != o.lora_r or float(conf.get("lora_alpha", -1)) != float(o.lora_alpha)
            or sel != sorted(tr.modules) or conf.get("fan_in_fan_out") != (cfg["model_type"] == "gpt2")):
        bad.append(f"adapter_config.json {conf} (target_modules select {len(sel)} modules, trained {len(tr.modules)})")
    report(name + "_peft_format", not bad, "; ".join(bad))
    if bad:
        return
    # the written A and B are the reference's after the last step (norm-relative, the trajectory
    # tolerance: this is what catches a missing weight decay, too small to move the logged metrics)
    fin = tr.final_adapter()
    errs = {k: rel_norm(ad[k], fin[k]) for k in fin}
    k_worst = max(errs, key=errs.get)
    report(name + "_tensors_final", errs[k_worst] <= TRAJ_TOL,
           f"{k_worst}: written vs reference final differ by {errs[k_worst]:.2e} (norm-relative)")
    note(f"{name}: adapter tensors vs reference final: worst {errs[k_worst]:.2e} ({k_worst})")
    if o.weight_decay > 0:
        o2 = ref.Options(**{**o.__dict__, "weight_decay": 0.0})
        t2 = ref.RefTrainer(cfg, stored, pairs, o2, tr.init_adapter)
        t2.train()
        fin2 = t2.final_adapter()
        e2 = max(rel_norm(ad[k], fin2[k]) for k in fin2)
        report(name + "_tensors_sensitive_to_no_decay", e2 > TRAJ_TOL,
               f"a reference without weight decay differs by only {e2:.2e}")
    merged = ref.merge_lora(cfg, stored, ad, conf["r"], conf["lora_alpha"])
    final = tr.final_weights()
    p = run([CLI, "score", "--model", model_dir, "--adapter", out, "--data", data, "--out", "-", "--threads", "2"])
    if p.returncode != 0:
        report(name + "_score", False, p.stderr.strip())
        return
    got = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    bad, bad2, worst2 = [], [], 0.0
    with torch.no_grad():
        for g, pr in zip(got, pairs):
            for key in ("chosen", "rejected"):
                lp = hf.reference_logps(cfg, merged, pr[key], pr[key + "_prompt_len"]).sum().item()
                if abs(g[key + "_logps"] - lp) > SCORE_TOL * abs(lp):
                    bad.append(f"line {g['line']} {key}: score {g[key + '_logps']:.8g}, merged in torch {lp:.8g}")
                lf = hf.reference_logps(cfg, final, pr[key], pr[key + "_prompt_len"]).sum().item()
                worst2 = max(worst2, abs(lf - lp) / abs(lf))
                if abs(lf - lp) > TRAJ_TOL * abs(lf):
                    bad2.append(f"pair {pr['index']} {key}: written adapter {lp:.8g}, reference final {lf:.8g}")
    if len(got) != len(pairs):
        bad.append(f"{len(got)} scored lines for {len(pairs)} pairs")
    report(name + "_score_merged", not bad, "; ".join(bad[:4]))
    report(name + "_is_final_state", not bad2, "; ".join(bad2[:4]))
    note(f"{name}: written adapter vs reference final: worst log-prob relative difference {worst2:.2e}")


# ---- grad accumulation -----------------------------------------------------------------------------

def accum_check(tmp, name, model_dir, data, o, adapter_dir=None):
    res = {}
    for tag, (B, A) in (("b1a4", (1, 4)), ("b4a1", (4, 1))):
        o2 = ref.Options(**{**o.__dict__, "batch_size": B, "grad_accum": A})
        out = os.path.join(tmp, f"out_{name}_{tag}")
        g = os.path.join(tmp, f"{name}_{tag}.grads.safetensors")
        p = run(train_args(model_dir, data, out, o2, adapter_dir, ["--dump-grads", g]))
        if p.returncode != 0:
            report(name, False, f"{tag}: exit {p.returncode}: {p.stderr.strip()[-400:]}")
            return
        res[tag] = (read_metrics(os.path.join(out, "metrics.jsonl")), hf.st_read(g))
    (m1, g1), (m4, g4) = res["b1a4"], res["b4a1"]
    bad = []
    ge = max(rel_norm(g1[n], g4[n]) for n in g4)
    if set(g1) != set(g4) or ge > ACCUM_TOL:
        bad.append(f"gradients differ by {ge:.2e} (norm-relative)")
    if len(m1) != len(m4) or not m1:
        bad.append(f"{len(m1)} vs {len(m4)} metric lines")
    for a, b in zip(m1, m4):
        # rewards and margins are beta * (differences of log-probs): relative to the log-probs they
        # are made of (float32 cancellation), not to their own size, which starts near 0
        scale = o.beta * (abs(b["logps/chosen"]) + abs(b["logps/rejected"]))
        for k in METRICS:
            if k == "rewards/accuracies":
                ok = a[k] == b[k]
            else:
                floor = ACCUM_TOL * scale if k.startswith("rewards/") else 1e-9
                ok = abs(a[k] - b[k]) <= ACCUM_TOL * abs(b[k]) + floor
            if not ok:
                bad.append(f"step {b['step']} {k}: bs1/ga4 {a[k]:.9g}, bs4/ga1 {b[k]:.9g}")
    report(name, not bad, "; ".join(bad[:5]))
    note(f"{name}: gradients differ by {ge:.2e}")


# ---- resume ----------------------------------------------------------------------------------------

def strip_tps(rows):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def resume_check(tmp, name, model_dir, data, o, adapter_dir=None):
    # both runs on one thread (the killed one must be slow enough to be caught; the same thread count
    # keeps float32 reduction orders identical, which bit-for-bit equality needs); --resume and
    # --from-manifest take the manifest's thread count
    full = os.path.join(tmp, f"out_{name}_full")
    base = train_args(model_dir, data, full, o, adapter_dir, ["--save-steps", "3"])
    base[base.index("--threads") + 1] = "1"
    p = run(base)
    if p.returncode != 0:
        report(name, False, f"uninterrupted run: exit {p.returncode}: {p.stderr.strip()[-400:]}")
        return
    want = strip_tps([json.loads(l) for l in open(os.path.join(full, "metrics.jsonl")) if l.strip()])
    # the killed run: --threads 1 to be slower; SIGKILL as soon as checkpoint-3 or -6 appears
    out = os.path.join(tmp, f"out_{name}_killed")
    args = train_args(model_dir, data, out, o, adapter_dir, ["--save-steps", "3"])
    args[args.index("--threads") + 1] = "1"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        for k in (3, 6):
            if os.path.isdir(os.path.join(out, f"checkpoint-{k}")):
                killed_at = k
        if killed_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if killed_at is None or proc.returncode != -signal.SIGKILL:
        report(name + "_killed", False, f"could not kill the run after a checkpoint (exit {proc.returncode}, "
               f"checkpoint seen: {killed_at}): the run is too fast for this test")
        return
    lines_before = sum(1 for _ in open(os.path.join(out, "metrics.jsonl"))) if os.path.exists(os.path.join(out, "metrics.jsonl")) else 0
    note(f"{name}: killed after checkpoint-{killed_at} appeared ({lines_before} metric lines written)")
    p = run([CLI, "train", "--resume", out])
    m = re.search(r"resuming .* at step (\d+)", p.stderr)
    if p.returncode != 0:
        report(name, False, f"--resume: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    elif not m or int(m.group(1)) not in (3, 6) or int(m.group(1)) > killed_at:
        # a restart from scratch would also reproduce the metrics: it must say where it resumed
        report(name, False, f"--resume did not say it resumed from checkpoint 3 or 6 (<= {killed_at}): "
               f"{p.stderr.strip()[-300:]!r}")
    else:
        got = strip_tps([json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()])
        diff = [f"line {i + 1}: {a} vs {b}" for i, (a, b) in enumerate(zip(got, want)) if a != b]
        report(name, got == want and len(want) == o.max_steps,
               f"{len(got)} lines vs {len(want)}; " + "; ".join(diff[:2]))
    # --from-manifest: the uninterrupted run's manifest rebuilds it
    man = os.path.join(full, "run.json")
    out2 = os.path.join(tmp, f"out_{name}_manifest")
    if not os.path.exists(man):
        report(name + "_from_manifest", False, f"{man} missing")
        return
    p = run([CLI, "train", "--from-manifest", man, "--out", out2])
    if p.returncode != 0:
        report(name + "_from_manifest", False, f"exit {p.returncode}: {p.stderr.strip()[-400:]}")
        return
    got = strip_tps([json.loads(l) for l in open(os.path.join(out2, "metrics.jsonl")) if l.strip()])
    diff = [f"line {i + 1}: {a} vs {b}" for i, (a, b) in enumerate(zip(got, want)) if a != b]
    report(name + "_from_manifest", got == want, f"{len(got)} lines vs {len(want)}; " + "; ".join(diff[:2]))


# ---- bad input -------------------------------------------------------------------------------------

def bad_input_checks(tmp, models, data):
    cfg, stored, d = models["qwen3"]
    o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-3, lora_r=0, batch_size=2, max_steps=2, scheduler="constant")
    # empty data file
    empty = os.path.join(tmp, "empty.jsonl")
    open(empty, "w").close()
    p = run(train_args(d, empty, os.path.join(tmp, "out_empty"), o))
    report("train_bad_empty_data", p.returncode != 0 and empty in p.stderr,
           f"exit {p.returncode}, message {p.stderr.strip()!r}")
    # a prompt alone longer than --max-length (keep_start): dropped, counted; the others are kept
    # (and truncated to max_length when longer)
    long_rows = ROWS[:3] + [{"prompt": "Tell me everything " * 12 + "about the sea.", "chosen": " Waves.",
                             "rejected": " Fish."}] + ROWS[3:]
    data_long = write_jsonl(os.path.join(tmp, "long.jsonl"), long_rows)
    M = 12
    tfile = os.path.join(tmp, "long.tokens.jsonl")
    out = os.path.join(tmp, "out_long")
    p = run(train_args(d, data_long, out, o, extra=["--max-length", str(M), "--truncation", "keep_start",
                                                     "--dump-tokens", tfile]))
    msg = p.stdout + p.stderr
    ok = p.returncode == 0 and os.path.exists(tfile)
    detail = f"exit {p.returncode}, output {msg.strip()[-400:]!r}"
    if ok:
        pairs = ref.load_dump_tokens(tfile)
        lines = sorted(x["line"] for x in pairs)
        too_long = [x["line"] for x in pairs if len(x["chosen"]) > M or len(x["rejected"]) > M]
        counted = any("dropped" in l and re.search(r"\b1\b", l) for l in msg.splitlines())
        ok = lines == [1, 2, 3, 5, 6, 7] and not too_long and counted
        detail = f"kept lines {lines}, longer than {M}: {too_long}, 'dropped ... 1' reported: {counted}; {msg.strip()[-300:]!r}"
        mrows = read_metrics(os.path.join(out, "metrics.jsonl")) if os.path.exists(os.path.join(out, "metrics.jsonl")) else []
        if not mrows or abs(mrows[0]["epoch"] - 2 / 6) > 1e-9:
            ok = False
            detail += f"; metrics {mrows[:1]} (epoch should be 2/6 with 6 pairs left)"
    report("train_bad_prompt_too_long_dropped", ok, detail)
    # NaN weight: stop with a message naming the step and saying NaN
    nd = os.path.join(tmp, "model_nan")
    W = {k: v.clone() for k, v in stored.items()}
    W["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    hf.write_model(nd, cfg, list(W.items()), "F32", tokenizer="qwen3")
    p = run(train_args(nd, data, os.path.join(tmp, "out_nan"), o))
    report("train_bad_nan_weight", p.returncode != 0 and "NaN" in p.stderr and re.search(r"step \d+", p.stderr),
           f"exit {p.returncode}, message {p.stderr.strip()[-300:]!r}")
    shuffled_reference_check(tmp, d, data)


def one_model_check(tmp, name, model_dir, data, lora_r):
    """score's numbers == train's reference (bit for bit) == the policy's at step 1 (bit for bit)."""
    sfile, rfile = os.path.join(tmp, name + ".score.jsonl"), os.path.join(tmp, name + ".ref.jsonl")
    out = os.path.join(tmp, "out_" + name)
    p1 = run([CLI, "score", "--model", model_dir, "--data", data, "--out", sfile, "--threads", "2", "--batch-size", "3"])
    p2 = run([CLI, "train", "--model", model_dir, "--data", data, "--out", out, "--threads", "2", "--batch-size", "3",
              "--max-steps", "1", "--no-shuffle", "--lora-r", str(lora_r), "--lr", "0", "--dump-ref", rfile])
    if p1.returncode != 0 or p2.returncode != 0:
        report(name, False, f"score exit {p1.returncode}, train exit {p2.returncode}: {(p1.stderr + p2.stderr).strip()[-400:]}")
        return
    bad = []
    score_lines, ref_lines = open(sfile).read().splitlines(), open(rfile).read().splitlines()
    if score_lines != ref_lines or len(score_lines) != len(ROWS):
        diff = [(a, b) for a, b in zip(score_lines, ref_lines) if a != b][:1]
        bad.append(f"score and train's reference differ ({len(score_lines)} vs {len(ref_lines)} lines; first: {diff})")
    refs = [json.loads(l) for l in ref_lines]
    m = read_metrics(os.path.join(out, "metrics.jsonl"))
    if len(m) != 1:
        bad.append(f"{len(m)} metric lines")
    else:
        want_c = sum(r["chosen_logps"] for r in refs[:3]) / 3   # the step's 3 pairs, summed in order, as the trainer
        want_r = sum(r["rejected_logps"] for r in refs[:3]) / 3
        got = m[0]
        if got["logps/chosen"] != want_c or got["logps/rejected"] != want_r:
            bad.append(f"policy logps {got['logps/chosen']!r}/{got['logps/rejected']!r} != reference {want_c!r}/{want_r!r}")
        if got["rewards/chosen"] != 0 or got["rewards/rejected"] != 0:
            bad.append(f"rewards {got['rewards/chosen']!r}, {got['rewards/rejected']!r} (want exactly 0)")
    report(name, not bad, "; ".join(bad))


def shuffled_reference_check(tmp, model_dir, data):
    """With shuffling, a micro-batch that spans two epochs must take each pair's own reference
    log-probs. --lr 0 keeps the policy equal to the reference, so every reward must stay 0 (up to the
    rounding between the scoring and training forward passes, ~1e-7 here; a pair matched with another
    pair's reference is off by whole nats). 6 pairs, batch 4: step 2 holds stream pairs 4..7, the end of
    epoch 0 and the start of epoch 1."""
    out = os.path.join(tmp, "out_shuffled_lr0")
    p = run([CLI, "train", "--model", model_dir, "--data", data, "--out", out, "--threads", "2", "--lr", "0",
             "--batch-size", "4", "--max-steps", "4", "--seed", "3", "--lora-r", "4"])
    rows = read_metrics(os.path.join(out, "metrics.jsonl")) if p.returncode == 0 else []
    worst = max((abs(r[k]) for r in rows for k in ("rewards/chosen", "rewards/rejected")), default=float("inf"))
    report("train_shuffled_epoch_boundary_reference", len(rows) == 4 and worst < 1e-4,
           f"exit {p.returncode}, {len(rows)} steps, worst |reward| {worst:.3g} (limit 1e-4); {p.stderr.strip()[-200:]!r}")


# ---- main ------------------------------------------------------------------------------------------

def tune_torch():
    # one thread: the reference's ops are small, and on 2 busy cores torch's thread pool costs 4x
    torch.set_num_threads(1)
    try:   # keep freed (V, C) gradient buffers in the heap instead of mmap/munmap each time (speed)
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 28)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
    except OSError:
        pass


def main():
    tune_torch()
    if not os.access(CLI, os.X_OK):
        report("train_cli_built", False, f"{CLI} is missing")
        return 1
    p = run([CLI, "train", "--help"], timeout=30)
    if p.returncode != 0 or "--dump-grads" not in p.stdout + p.stderr:
        report("train_cli_available", False, f"`prefcap-dpo train --help`: exit {p.returncode}, {(p.stdout + p.stderr).strip()[:200]!r}")
        return 1
    only = set(sys.argv[1:])   # optional: names of sections to run (onemodel grads traj adapter accum resume bad)

    def want(s):
        return not only or s in only

    with tempfile.TemporaryDirectory(prefix="pc-train-") as tmp:
        models = make_models(tmp)
        data = write_jsonl(os.path.join(tmp, "pairs.jsonl"), ROWS)
        note("models written")

        if want("onemodel"):
            with section("onemodel"):
                one_model_check(tmp, "train_one_model_gpt2_full", models["gpt2"][2], data, 0)
                one_model_check(tmp, "train_one_model_qwen3_lora", models["qwen3"][2], data, 4)

        if want("grads"):
            with section('grads'):
                # every family, full fine-tune and LoRA (same nonzero-B adapter on both sides), sigmoid,
                # all six pairs in one step
                for fam, (cfg, st, d) in models.items():
                    o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-3, lora_r=0, batch_size=6, max_steps=1)
                    sens = (("beta_x2", {"beta": 0.2}),) if fam == "gpt2" else ()
                    pairs = grad_check(tmp, f"train_grads_{fam}_full", cfg, st, d, data, o, sensitivity=sens)
                    if pairs is not None and fam in ("qwen3", "llama"):
                        check_dump_tokens(f"train_dump_tokens_{fam}", d, ROWS, pairs)
                    adir, ast, targets = make_adapter(tmp, fam, cfg, st)
                    o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-3, lora_r=4, lora_alpha=8, lora_targets=targets,
                                    batch_size=3, grad_accum=2, max_steps=1)
                    sens = (("beta_x2", {"beta": 0.2}), ("no_reference", {"variant": "no_ref"}),
                            ("mask_one_late", {"variant": "skip_first_completion_token"})) if fam == "qwen3" else ()
                    grad_check(tmp, f"train_grads_{fam}_lora", cfg, st, d, data, o, (adir, ast), sensitivity=sens)
                # every loss, on Qwen3 with LoRA (policy != reference from the start, so z != 0)
                cfg, st, d = models["qwen3"]
                adir, ast, targets = make_adapter(tmp, "qwen3_losses", cfg, st, targets=["q_proj", "v_proj", "down_proj"])
                for loss, extra in (("ipo", {"beta": 0.5}), ("hinge", {"beta": 0.1}),
                                    ("robust", {"beta": 0.2, "label_smoothing": 0.1}),
                                    ("sigmoid", {"beta": 0.2, "label_smoothing": 0.15}),
                                    ("simpo", {"beta": 2.0, "simpo_gamma": 0.3})):
                    o = ref.Options(loss=loss, lr=1e-3, lora_r=4, lora_alpha=8, lora_targets=targets, batch_size=6,
                                    max_steps=1, **extra)
                    tag = loss + ("_smoothed" if loss == "sigmoid" else "")
                    grad_check(tmp, f"train_grads_qwen3_lora_{tag}", cfg, st, d, data, o, (adir, ast))
                # full fine-tune with simpo (length-normalised log-probs, no reference model)
                o = ref.Options(loss="simpo", beta=2.0, simpo_gamma=0.5, lr=1e-3, lora_r=0, batch_size=6, max_steps=1)
                grad_check(tmp, "train_grads_gpt2_full_simpo", *models["gpt2"], data, o)

        traj_out = {}
        if want("traj") or want("adapter"):
            with section('traj'):
                # full FT on GPT-2 (tied embeddings: one parameter), LoRA on Qwen3; three losses, three
                # schedules, weight decay on some
                cfg, st, d = models["gpt2"]
                for loss, beta, lr, sched, wd in (("sigmoid", 0.1, 2e-3, "linear", 0.0), ("ipo", 0.5, 2e-3, "cosine", 0.1),
                                                  ("hinge", 0.05, 1e-3, "constant", 0.05)):
                    o = ref.Options(loss=loss, beta=beta, lr=lr, weight_decay=wd, scheduler=sched, warmup_steps=2,
                                    max_grad_norm=1.0, lora_r=0, batch_size=3, grad_accum=1, max_steps=10)
                    traj_check(tmp, f"train_traj_gpt2_full_{loss}", cfg, st, d, data, o)
                cfg, st, d = models["qwen3"]
                adir, ast, targets = make_adapter(tmp, "qwen3_traj", cfg, st)
                for loss, beta, lr, sched, wd in (("sigmoid", 0.1, 1e-2, "linear", 0.1), ("ipo", 0.5, 1e-2, "cosine", 0.0),
                                                  ("hinge", 0.05, 5e-3, "constant", 0.0)):
                    o = ref.Options(loss=loss, beta=beta, lr=lr, weight_decay=wd, scheduler=sched, warmup_steps=1,
                                    max_grad_norm=1.0, lora_r=4, lora_alpha=8, lora_targets=targets, batch_size=2,
                                    grad_accum=2, max_steps=10)
                    sens = (("no_clipping", {"max_grad_norm": 0.0}), ("no_warmup", {"warmup_steps": 0}),
                            ("adam_eps_1e-3", {"extra": {"adam_eps": 1e-3}})) if loss == "sigmoid" else ()
                    r = traj_check(tmp, f"train_traj_qwen3_lora_{loss}", cfg, st, d, data, o, (adir, ast), sens)
                    if r:
                        traj_out[loss] = (r, o)
                # the written adapter (the sigmoid run's): PEFT format, scores, final state
                if want("adapter") and "sigmoid" in traj_out:
                    (out, tr, pairs), o = traj_out["sigmoid"]
                    adapter_check(tmp, "train_adapter_qwen3", cfg, st, d, data, out, tr, pairs, o)
                # GPT-2 LoRA (Conv1D, fan_in_fan_out) for one loss
                cfg, st, d = models["gpt2"]
                adir, ast, targets = make_adapter(tmp, "gpt2_traj", cfg, st)
                o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-2, scheduler="linear", warmup_steps=0, max_grad_norm=1.0,
                                lora_r=4, lora_alpha=8, lora_targets=targets, batch_size=2, grad_accum=1, max_steps=10)
                r = traj_check(tmp, "train_traj_gpt2_lora_sigmoid", cfg, st, d, data, o, (adir, ast))
                if r and want("adapter"):
                    adapter_check(tmp, "train_adapter_gpt2_conv1d", cfg, st, d, data, r[0], r[1], r[2], o)

        if want("accum"):
            with section('accum'):
                cfg, st, d = models["llama"]
                o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-3, lora_r=0, max_steps=2, scheduler="constant")
                accum_check(tmp, "train_accum_llama_full", d, data, o)
                adir, ast, targets = make_adapter(tmp, "llama_accum", cfg, st)
                o = ref.Options(loss="ipo", beta=0.5, lr=1e-2, lora_r=4, lora_alpha=8, lora_targets=targets, max_steps=2,
                                scheduler="constant")
                accum_check(tmp, "train_accum_llama_lora", d, data, o, adir)

        if want("resume"):
            with section('resume'):
                cfg, st, d = models["qwen2"]
                o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-3, lora_r=0, batch_size=6, grad_accum=1, max_steps=10,
                                scheduler="linear", warmup_steps=2)
                resume_check(tmp, "train_resume_qwen2_full", d, data, o)
                adir, ast, targets = make_adapter(tmp, "qwen2_resume", cfg, st)
                o = ref.Options(loss="sigmoid", beta=0.1, lr=1e-2, lora_r=4, lora_alpha=8, lora_targets=targets,
                                batch_size=6, max_steps=10, scheduler="cosine")
                resume_check(tmp, "train_resume_qwen2_lora", d, data, o, adir)

        if want("bad"):
            with section('bad'):
                bad_input_checks(tmp, models, data)
    note(f"done, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
