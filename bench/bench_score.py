#!/usr/bin/python3
"""bench/bench_score.py: scoring throughput of prefcap-dpo's CPU forward against PyTorch, in one run.

Model: GPT-2-small-shaped (124M parameters: vocab 50257, 12 layers, hidden 768, 12 heads, 1024
positions), random F32 weights in Hugging Face layout. Data: the same N_PAIRS pairs of random token
ids (prompt 32-128 tokens, each completion 32-160) for both sides, scored BATCH pairs at a time.

C side: build/tests/model_logps --time (the library's pc_model_forward on a packed batch: no padding,
the LM head + log-softmax fused and chunked, only on completion positions); the first batch is run
once untimed, as PyTorch gets a warm-up batch too. Two C runs: packed only, and packed with each
pair's prompt computed once for both answers (--share, what `prefcap-dpo score` does); the ratio uses
the second, the first is printed so the two gains can be told apart.
PyTorch side (Debian's python3-torch, float32, torch.set_num_threads(THREADS), no autograd): a plain
eager GPT-2 (as transformers' eager attention computes it), each batch padded to its longest
sequence, as TRL batches (one sequence at a time, without padding, measured 1.3-2.6x slower than
this on the 2-core machine, so it is not the baseline). Its log-probs are plain log_softmax + gather, computed only on the completion positions
(the hidden states are sliced before the LM head, so it does no more LM-head work than the C side).

The machine's cores are shared, so each side runs REPEAT times (default 2), interleaved, and the
best time of each counts. Both sides report tokens/s = all tokens of all sequences (prompt + completion, chosen + rejected)
over the timed seconds; the C log-probs are checked against PyTorch's (1e-3 relative) so that both
did the same work. Prints a table and "ratio = C / PyTorch" (target >= 1.5).

Environment: THREADS (default 2), N_PAIRS (default 12), BATCH (default 4), BUILD (default build).
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests/model"))
import hfmodels as hf  # noqa: E402

THREADS = int(os.environ.get("THREADS", "2"))
N_PAIRS = int(os.environ.get("N_PAIRS", "12"))
BATCH = int(os.environ.get("BATCH", "4"))
BUILD = os.environ.get("BUILD", "build")
REPEAT = int(os.environ.get("REPEAT", "2"))
DRIVER = os.path.join(ROOT, BUILD, "tests/model_logps")


def make_model(d):
    cfg = hf.make_config("gpt2", vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    W = []
    for name, t in hf.random_weights(cfg, gen, prefix="transformer.", std=0.02):
        W.append((name, t.float()))
    hf.write_model(d, cfg, W, "F32", tokenizer=None)
    return cfg, {n: t.float() for n, t in W}


def make_pairs():
    rng = random.Random(1)
    seqs = []
    for _ in range(N_PAIRS):
        prompt = [rng.randrange(50257) for _ in range(rng.randint(32, 128))]
        for _ in range(2):  # chosen, rejected
            comp = [rng.randrange(50257) for _ in range(rng.randint(32, 160))]
            seqs.append((prompt + comp, len(prompt)))
    return seqs


# ---- PyTorch float32 GPT-2 -----------------------------------------------------------------------

def torch_forward(W, cfg, batch):
    """batch: list of (ids, score_from). Pads to the longest, runs eager GPT-2, returns per-seq sums."""
    C, NH = cfg["n_embd"], cfg["n_head"]
    HD = C // NH
    B = len(batch)
    T = max(len(ids) for ids, _ in batch)
    ids = torch.zeros(B, T, dtype=torch.long)
    for b, (s, _) in enumerate(batch):
        ids[b, :len(s)] = torch.tensor(s)
    p = "transformer."
    x = W[p + "wte.weight"][ids] + W[p + "wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    for l in range(cfg["n_layer"]):
        h = f"{p}h.{l}."
        a = torch.nn.functional.layer_norm(x, (C,), W[h + "ln_1.weight"], W[h + "ln_1.bias"], 1e-5)
        qkv = torch.addmm(W[h + "attn.c_attn.bias"], a.view(-1, C), W[h + "attn.c_attn.weight"]).view(B, T, 3 * C)
        q, k, v = (t.view(B, T, NH, HD).transpose(1, 2) for t in qkv.split(C, -1))
        s = (q @ k.transpose(-1, -2)) / (HD ** 0.5)
        s = s.masked_fill(mask, float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B * T, C)
        x = x + torch.addmm(W[h + "attn.c_proj.bias"], o, W[h + "attn.c_proj.weight"]).view(B, T, C)
        a = torch.nn.functional.layer_norm(x, (C,), W[h + "ln_2.weight"], W[h + "ln_2.bias"], 1e-5)
        f = torch.nn.functional.gelu(torch.addmm(W[h + "mlp.c_fc.bias"], a.view(-1, C), W[h + "mlp.c_fc.weight"]),
                                     approximate="tanh")
        x = x + torch.addmm(W[h + "mlp.c_proj.bias"], f, W[h + "mlp.c_proj.weight"]).view(B, T, C)
    x = torch.nn.functional.layer_norm(x, (C,), W[p + "ln_f.weight"], W[p + "ln_f.bias"], 1e-5)
    out = []
    for b, (s, f0) in enumerate(batch):
        f0 = max(f0, 1)
        hs = x[b, f0 - 1:len(s) - 1]
        lp = torch.log_softmax(hs @ W[p + "wte.weight"].T, -1)
        out.append(lp.gather(1, torch.tensor(s[f0:]).view(-1, 1)).sum().item())
    return out


def run_torch(W, cfg, seqs, per_seq):
    groups = []
    for b in range(0, len(seqs), 2 * BATCH):
        chunk = seqs[b:b + 2 * BATCH]
        groups += [[s] for s in chunk] if per_seq else [chunk]
    with torch.no_grad():
        torch_forward(W, cfg, groups[0])  # warm-up
        t0 = time.perf_counter()
        sums = []
        for g in groups:
            sums += torch_forward(W, cfg, g)
        dt = time.perf_counter() - t0
    return sums, dt


def main():
    torch.set_num_threads(THREADS)
    if not os.access(DRIVER, os.X_OK):
        print(f"bench_score: {DRIVER} missing: make {BUILD}/tests/model_logps", file=sys.stderr)
        return 1
    seqs = make_pairs()
    ntok = sum(len(s) for s, _ in seqs)
    padded = sum(2 * BATCH * max(len(s) for s, _ in seqs[b:b + 2 * BATCH]) for b in range(0, len(seqs), 2 * BATCH))
    with tempfile.TemporaryDirectory(prefix="pc-bench-") as tmp:
        d = os.path.join(tmp, "gpt2-124m")
        t0 = time.perf_counter()
        cfg, W = make_model(d)
        nparams = sum(t.numel() for t in W.values())
        print(f"model: GPT-2-small-shaped, {nparams / 1e6:.1f}M parameters (written in {time.perf_counter() - t0:.1f}s)")
        print(f"data: {N_PAIRS} pairs = {len(seqs)} sequences, {ntok} tokens; batch {BATCH} pairs; "
              f"padding would add {100 * (padded - ntok) / padded:.0f}%; threads {THREADS}")
        inp = "".join(json.dumps({"ids": s, "score_from": f}) + "\n" for s, f in seqs)
        runs, torch_best = {}, None
        for rep in range(REPEAT):
            for mode, extra in (("packed", []), ("shared", ["--share"])):
                p = subprocess.run([DRIVER, "--model", d, "--threads", str(THREADS), "--batch", str(2 * BATCH),
                                    "--time", *extra], input=inp, capture_output=True, text=True)
                if p.returncode != 0:
                    print("bench_score: C scoring failed: " + p.stderr, file=sys.stderr)
                    return 1
                t = json.loads(p.stderr.strip().splitlines()[-1])
                if mode not in runs or t["seconds"] < runs[mode][0]["seconds"]:
                    runs[mode] = (t, [json.loads(l)["logps"] for l in p.stdout.splitlines()])
            t_pad, dt = run_torch(W, cfg, seqs, per_seq=False)
            torch_best = dt if torch_best is None else min(torch_best, dt)
        timing, c_sums = runs["shared"]
        c_rate = timing["tokens_per_s"]
    worst = max(abs(a - b) / abs(b) for run in runs.values() for a, b in zip(run[1], t_pad))
    best = ntok / torch_best
    print(f"{'side':<36} {'seconds':>8} {'tokens/s':>10}")
    pk = runs["packed"][0]
    print(f"{'prefcap C packed':<36} {pk['seconds']:>8.2f} {pk['tokens_per_s']:>10.1f}")
    print(f"{'prefcap C packed + prompt shared':<36} {timing['seconds']:>8.2f} {c_rate:>10.1f}")
    print(f"{'PyTorch float32, padded batches':<36} {torch_best:>8.2f} {best:>10.1f}")
    print(f"log-prob agreement C vs PyTorch: worst relative difference {worst:.2e}")
    print(f"ratio = C packed / PyTorch = {pk['tokens_per_s'] / best:.2f}x")
    print(f"ratio = C (as score runs it) / PyTorch = {c_rate / best:.2f}x (target >= 1.5x)")
    if worst > 1e-3:
        print("bench_score: C and PyTorch log-probs disagree; the comparison is void", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
