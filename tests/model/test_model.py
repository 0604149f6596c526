#!/usr/bin/python3
"""tests/model/test_model.py: the model acceptance test of prefcap-dpo's scoring.

For tiny random checkpoints of every family, written in Hugging Face layout with a real tokenizer.json
(GPT-2 with and without the `transformer.` prefix, F32 and F16, tied and untied; Llama with llama3
rope scaling, GQA and BF16 weights; Qwen2 sharded with q/k/v biases; Qwen3 with q/k norms and
head_dim != hidden/heads; Mistral with GQA and a sliding window shorter than the sequences), the C
log-probs (build/tests/model_logps: token ids in, log-probs out, batches packed) must equal an
independent float64 PyTorch forward pass within 1e-4 relative on every per-token log-prob and every
sequence sum.

Why 1e-4: the C path runs in float32 (24-bit mantissa, ~6e-8 unit roundoff); through two layers,
sums over up to a few hundred terms and a log-sum-exp over 150k logits the accumulated error stays
near 1e-6 relative, so 1e-4 leaves two orders of headroom for rounding while a real mistake (a wrong
mask, rotation, norm or head) moves log-probs by 1e-2 or more; the test shows that it would catch
the rope_scaling and sliding-window features being dropped.

Also the bad-input checks: a truncated safetensors file, a header that lies, a shape mismatch, a
missing shard, an unsupported family or option: each an error naming the file and the problem.
Prints PASS/FAIL lines; exits non-zero on any failure. Needs Debian's python3-torch (fails, never
skips, without it).
"""
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("FAIL model_torch_available: /usr/bin/python3 cannot import torch (install python3-torch)")
    sys.exit(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfmodels as hf  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
DRIVER = os.path.join(hf.ROOT, BUILD, "tests/model_logps")
CLI = os.environ.get("PREFCAP_DPO") or os.path.join(hf.ROOT, BUILD, "prefcap-dpo")
TOL = 1e-4
failures = 0


def report(name, ok, detail=""):
    global failures
    if not ok:
        failures += 1
        if detail:
            sys.stderr.write(f"  {name}: {detail}\n")
    print(f"{'PASS' if ok else 'FAIL'} {name}", flush=True)


def run_driver(model_dir, seqs, extra=()):
    inp = "".join(json.dumps({"ids": s, "score_from": f}) + "\n" for s, f in seqs)
    p = subprocess.run([DRIVER, "--model", model_dir, "--threads", "2", "--batch", "3", *extra], input=inp,
                       capture_output=True, text=True)
    return p


def random_seqs(rng, vocab, n, lo, hi):
    """n pairs of sequences; the two of a pair share a prompt (as a chosen and a rejected answer do),
    sometimes none at all or the whole of one sequence."""
    out = []
    for i in range(n):
        P = [0, 1, rng.randint(1, hi // 2), rng.randint(1, hi // 2)][i % 4]
        prompt = [rng.randrange(vocab) for _ in range(P)]
        for _ in range(2):
            T = max(rng.randint(lo, hi) - P, 1 if P == 0 else 0)
            ids = prompt + [rng.randrange(vocab) for _ in range(T)]
            out.append((ids, rng.randint(0, len(ids) - 1) if i % 3 == 0 else P))
    # edge cases: everything scored from position 0 (→ 1), a single token (nothing scored), one
    # sequence a prefix of the other
    a = [rng.randrange(vocab) for _ in range(hi)]
    out += [(a, 0), ([rng.randrange(vocab)], 0), (a, 3), (a[:hi // 2], 2)]
    return out


def compare(name, cfg, stored, model_dir, seqs, variants=(), extra=()):
    compare1(name, cfg, stored, model_dir, seqs, variants, extra)
    # the same with each pair's common prefix computed once (what score does)
    compare1(name + "_shared_prefix", cfg, stored, model_dir, seqs, (), tuple(extra) + ("--share",))


def compare1(name, cfg, stored, model_dir, seqs, variants=(), extra=()):
    p = run_driver(model_dir, seqs, extra)
    if p.returncode != 0:
        report(name, False, "driver failed: " + p.stderr.strip())
        return
    rows = [json.loads(l) for l in p.stdout.splitlines()]
    if len(rows) != len(seqs):
        report(name, False, f"{len(rows)} output lines for {len(seqs)} sequences")
        return
    worst, bad = 0.0, []
    refs = []
    for i, ((ids, f), row) in enumerate(zip(seqs, rows)):
        ref = hf.reference_logps(cfg, stored, ids, f)
        refs.append(ref)
        got = torch.tensor(row["tok"], dtype=torch.float64)
        if row["tokens"] != len(ref) or len(got) != len(ref):
            bad.append(f"seq {i}: {row['tokens']} tokens scored, reference {len(ref)}")
            continue
        # per token: |c - r| <= 1e-4 |r| (+1e-6 absolute for log-probs that are ~0)
        if len(ref):
            err = ((got - ref).abs() / (ref.abs() + 1e-2)).max().item()
            worst = max(worst, err)
            if not torch.all((got - ref).abs() <= TOL * ref.abs() + 1e-6):
                k = int(((got - ref).abs() - TOL * ref.abs()).argmax())
                bad.append(f"seq {i} token {k}: got {got[k].item():.8g}, reference {ref[k].item():.8g}")
        s = ref.sum().item()
        e = abs(row["logps"] - s) / max(abs(s), 1e-12) if len(ref) else abs(row["logps"])
        worst = max(worst, e)
        if e > TOL:
            bad.append(f"seq {i} sum: got {row['logps']:.10g}, reference {s:.10g} (rel {e:.2e})")
    report(name, not bad, "; ".join(bad[:5]) + f" (worst relative error {worst:.2e})")
    sys.stderr.write(f"  {name}: worst relative error {worst:.2e} over {sum(len(r) for r in refs)} tokens\n")
    PARITY[name] = worst
    # sensitivity: the same comparison against a reference without a feature must fail
    for v in variants:
        diff = 0.0
        for (ids, f), row in zip(seqs, rows):
            ref = hf.reference_logps(cfg, stored, ids, f, variant=v)
            if len(ref):
                diff = max(diff, ((torch.tensor(row["tok"], dtype=torch.float64) - ref).abs() / ref.abs()).max().item())
        report(f"{name}_sensitive_to_{v}", diff > 100 * TOL, f"dropping {v} changes log-probs by only {diff:.2e}")


PARITY = {}


def families(tmp):
    """(name, cfg, stored weights, model dir, extra args, sensitivity variants) for every family."""
    gen = torch.Generator().manual_seed(1234)
    out = []
    V = hf.TOK_VOCAB
    # GPT-2: prefixed, F32, tied head (no lm_head.weight in the file)
    cfg = hf.make_config("gpt2", vocab_size=V["llama3"], n_embd=32, n_head=4, n_layer=2)
    d = os.path.join(tmp, "gpt2")
    st = hf.write_model(d, cfg, hf.random_weights(cfg, gen, prefix="transformer."), "F32", tokenizer="llama3")
    out.append(("model_gpt2_prefixed_tied_f32", cfg, st, d, ()))
    # GPT-2: no prefix (GPT2Model-style names), F16, untied lm_head
    cfg = hf.make_config("gpt2", vocab_size=V["qwen3"], n_embd=48, n_head=3, n_layer=2, tie_word_embeddings=False)
    d = os.path.join(tmp, "gpt2_noprefix")
    st = hf.write_model(d, cfg, hf.random_weights(cfg, gen, prefix=""), "F16", tokenizer="qwen3")
    out.append(("model_gpt2_noprefix_untied_f16", cfg, st, d, ()))
    # Llama: llama3 rope scaling (head_dim 16 puts frequencies in all three bands), GQA, BF16, tied
    cfg = hf.make_config("llama", vocab_size=V["llama3"], hidden_size=64, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=96, rope_theta=500000.0, tie_word_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    d = os.path.join(tmp, "llama")
    st = hf.write_model(d, cfg, hf.random_weights(cfg, gen), "BF16", tokenizer="llama3")
    out.append(("model_llama3_rope_bf16_gqa", cfg, st, d, ("no_rope_scaling",)))
    # Qwen2: two shards + index, q/k/v biases
    cfg = hf.make_config("qwen2", vocab_size=V["qwen3"], hidden_size=32, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, rope_theta=1000000.0)
    d = os.path.join(tmp, "qwen2")
    st = hf.write_model(d, cfg, hf.random_weights(cfg, gen), "F32", shards=2, tokenizer="qwen3")
    out.append(("model_qwen2_sharded_bias", cfg, st, d, ()))
    # Qwen3: q/k norms, head_dim 16 with hidden 32 and 4 heads, tied
    cfg = hf.make_config("qwen3", vocab_size=V["qwen3"], hidden_size=32, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, intermediate_size=64, rope_theta=1000000.0,
                         tie_word_embeddings=True, attention_bias=False)
    d = os.path.join(tmp, "qwen3")
    st = hf.write_model(d, cfg, hf.random_weights(cfg, gen), "F32", tokenizer="qwen3")
    out.append(("model_qwen3_qknorm_headdim", cfg, st, d, ()))
    # Mistral: GQA 6:2, sliding window 7 (shorter than most test sequences)
    cfg = hf.make_config("mistral", vocab_size=V["llama3"], hidden_size=48, num_attention_heads=6,
                         num_key_value_heads=2, intermediate_size=80, sliding_window=7)
    d = os.path.join(tmp, "mistral")
    st = hf.write_model(d, cfg, hf.random_weights(cfg, gen), "F32", tokenizer="llama3")
    out.append(("model_mistral_gqa_window", cfg, st, d, ("no_window",)))
    return out


def expect_error(name, model_dir, must_contain, seqs=None):
    """Runs the driver on a broken model and checks the exit status and every phrase of the message."""
    p = run_driver(model_dir, seqs or [([1, 2, 3], 1)])
    msg = p.stderr.strip()
    missing = [s for s in must_contain if s not in msg]
    report(name, p.returncode != 0 and not missing,
           f"exit {p.returncode}, message {msg!r}, missing {missing}")


def bad_inputs(tmp, models):
    import shutil
    base = dict((n, (c, s, d)) for n, c, s, d, _ in models)
    cfg, _, src = base["model_qwen3_qknorm_headdim"]
    # truncated file: cut the last tensor short
    d = os.path.join(tmp, "bad_trunc")
    shutil.copytree(src, d)
    f = os.path.join(d, "model.safetensors")
    size = os.path.getsize(f)
    with open(f, "r+b") as fh:
        fh.truncate(size - 100)
    expect_error("bad_truncated_safetensors", d, [f, "truncated", "model.norm.weight"])
    # truncated inside the header
    with open(f, "r+b") as fh:
        fh.truncate(20)
    expect_error("bad_truncated_header", d, [f, "truncated", "header length"])
    # header lies: a shape that does not match the byte range
    d = os.path.join(tmp, "bad_lies")
    shutil.copytree(src, d)
    f = os.path.join(d, "model.safetensors")
    with open(f, "rb") as fh:
        data = bytearray(fh.read())
    n = int.from_bytes(data[:8], "little")
    h = json.loads(data[8:8 + n])
    h["model.norm.weight"]["shape"] = [cfg["hidden_size"] * 2]
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    with open(f, "wb") as fh:
        fh.write(len(hb).to_bytes(8, "little") + hb + data[8 + n:])
    expect_error("bad_header_lies", d, [f, "header lies", "model.norm.weight"])
    # overlapping ranges
    h = json.loads(data[8:8 + n])
    names = [k for k in h if k != "__metadata__"]
    a, b = names[0], names[1]
    h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + h[b]["data_offsets"][1] - h[b]["data_offsets"][0]]
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    with open(f, "wb") as fh:
        fh.write(len(hb).to_bytes(8, "little") + hb + data[8 + n:])
    expect_error("bad_overlapping_tensors", d, [f, "overlap"])
    # shape mismatch: config says a different intermediate size than the file has
    d = os.path.join(tmp, "bad_shape")
    shutil.copytree(src, d)
    c2 = dict(cfg)
    c2["intermediate_size"] = cfg["intermediate_size"] + 8
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(c2, fh)
    expect_error("bad_shape_mismatch", d, [os.path.join(d, "model.safetensors"), "shape mismatch",
                                           "model.layers.0.mlp.gate_proj.weight", "[72, 32]", "[64, 32]"])
    # missing tensor
    d = os.path.join(tmp, "bad_missing_tensor")
    os.makedirs(d)
    W = {k: v for k, v in base["model_qwen3_qknorm_headdim"][1].items() if k != "model.layers.1.self_attn.k_norm.weight"}
    blob, _ = hf.st_bytes(list(W.items()))
    with open(os.path.join(d, "model.safetensors"), "wb") as fh:
        fh.write(blob)
    shutil.copy(os.path.join(src, "config.json"), d)
    expect_error("bad_missing_tensor", d, [d, "missing tensor", "model.layers.1.self_attn.k_norm.weight"])
    # missing shard
    _, _, qsrc = base["model_qwen2_sharded_bias"]
    d = os.path.join(tmp, "bad_shard")
    shutil.copytree(qsrc, d)
    os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
    expect_error("bad_missing_shard", d, ["model.safetensors.index.json", "missing shard",
                                          "model-00002-of-00002.safetensors"])
    # unsupported family and options, refused by name
    for tag, patch, phrase in [("family", {"model_type": "gptj"}, 'model_type "gptj" is not supported'),
                               ("rope_yarn", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
                                'rope_scaling type "yarn" is not supported'),
                               ("act", {"hidden_act": "gelu"}, 'hidden_act "gelu" is not supported'),
                               ("qwen_window", {"use_sliding_window": True}, "use_sliding_window=true")]:
        d = os.path.join(tmp, "bad_" + tag)
        shutil.copytree(src, d)
        c2 = dict(cfg)
        c2.update(patch)
        with open(os.path.join(d, "config.json"), "w") as fh:
            json.dump(c2, fh)
        expect_error("bad_unsupported_" + tag, d, [os.path.join(d, "config.json"), phrase])
    # token id out of range
    expect_error("bad_token_id", src, ["token id 999999", "outside the vocabulary"], [([1, 999999, 3], 1)])


def lora_check(tmp, models):
    """PEFT LoRA adapters: log-probs equal the reference on the merged weights. Llama (nn.Linear:
    W += alpha/r * B A) and GPT-2 (Conv1D, fan_in_fan_out: W (in, out) += alpha/r * (B A)^T)."""
    cases = [("model_lora_llama", "model_llama3_rope_bf16_gqa", "model.layers.{l}.{m}",
              ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"), False),
             ("model_lora_gpt2_conv1d", "model_gpt2_prefixed_tied_f32", "transformer.h.{l}.{m}",
              ("attn.c_attn", "mlp.c_proj"), True)]
    for test, mname, pattern, mods, conv in cases:
        _, cfg, stored, d, _ = [m for m in models if m[0] == mname][0]
        gen = torch.Generator().manual_seed(99)
        r, alpha = 4, 8
        ad = os.path.join(tmp, "adapter_" + test)
        os.makedirs(ad, exist_ok=True)
        L = cfg.get("num_hidden_layers") or cfg["n_layer"]
        tensors, keys = [], []
        for l in range(L):
            for mod in mods:
                path = pattern.format(l=l, m=mod)
                shape = stored[path + ".weight"].shape
                out_f, in_f = (shape[1], shape[0]) if conv else shape
                A = torch.randn(r, in_f, generator=gen, dtype=torch.float64) * 0.3
                B = torch.randn(out_f, r, generator=gen, dtype=torch.float64) * 0.3
                tensors += [(f"base_model.model.{path}.lora_A.weight", A), (f"base_model.model.{path}.lora_B.weight", B)]
                keys.append(path)
        blob, st = hf.st_bytes(tensors, "F32")
        W2 = dict(stored)
        for path in keys:
            delta = (alpha / r) * (st[f"base_model.model.{path}.lora_B.weight"] @ st[f"base_model.model.{path}.lora_A.weight"])
            W2[path + ".weight"] = stored[path + ".weight"] + (delta.T if conv else delta)
        with open(os.path.join(ad, "adapter_model.safetensors"), "wb") as fh:
            fh.write(blob)
        with open(os.path.join(ad, "adapter_config.json"), "w") as fh:
            json.dump({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "bias": "none",
                       "target_modules": [m.split(".")[-1] for m in mods], "fan_in_fan_out": conv}, fh)
        rng = random.Random(7)
        seqs = random_seqs(rng, cfg["vocab_size"], 4, 5, 30)
        compare(test, cfg, W2, d, seqs, extra=("--adapter", ad))
    # an adapter naming a module the model does not have is refused
    with open(os.path.join(ad, "adapter_model.safetensors"), "wb") as fh:
        fh.write(hf.st_bytes([("base_model.model.transformer.h.0.attn.nope.lora_A.weight", torch.zeros(4, 32)),
                              ("base_model.model.transformer.h.0.attn.nope.lora_B.weight", torch.zeros(32, 4))])[0])
    p = run_driver(d, [([1, 2, 3], 1)], ("--adapter", ad))
    report("model_lora_unknown_module", p.returncode != 0 and "adapter_model.safetensors" in p.stderr
           and "match" in p.stderr, p.stderr.strip())


def tokenize(model_dir, texts):
    inp = "".join(json.dumps(t) + "\n" for t in texts)
    p = subprocess.run([CLI, "tokenize", "--model", model_dir], input=inp, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("prefcap-dpo tokenize failed: " + p.stderr)
    return [json.loads(l)["ids"] for l in p.stdout.splitlines()]


def cli_checks(tmp, models):
    """prefcap-dpo end to end: init writes loadable models of every family; score on text data equals
    the float64 reference on the tokens TRL would build (prompt tokens, then the tokens of
    prompt+completion+EOS after them, ids from `prefcap-dpo tokenize`); bad data is refused by line."""
    if not os.access(CLI, os.X_OK):
        if os.path.exists(os.path.join(hf.ROOT, "trainer/cli/cli.mk")):
            report("cli_built", False, f"{CLI} is missing although trainer/cli/cli.mk exists")
        else:
            print("SKIP cli_score: prefcap-dpo is not built yet (trainer/cli/cli.mk missing)")
        return
    # init: every family, every dtype, loads and scores like the reference on what it wrote
    rng = random.Random(5)
    for fam, dt in [("gpt2", "f32"), ("llama", "bf16"), ("mistral", "f16"), ("qwen2", "f32"), ("qwen3", "bf16")]:
        d = os.path.join(tmp, "init_" + fam)
        p = subprocess.run([CLI, "init", "--family", fam, "--tokenizer", hf.TOKDIR["qwen3"], "--out", d, "--hidden", "32",
                            "--heads", "4", "--kv-heads", "2" if fam != "gpt2" else "4", "--dtype", dt, "--seed", "1"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            report(f"cli_init_{fam}_{dt}", False, p.stderr.strip())
            continue
        cfg = json.load(open(os.path.join(d, "config.json")))
        stored = hf.st_read(os.path.join(d, "model.safetensors"))
        ok = all(os.path.exists(os.path.join(d, f)) for f in ("tokenizer.json", "tokenizer_config.json"))
        report(f"cli_init_{fam}_{dt}_files", ok and cfg["model_type"] == fam, "missing tokenizer files or model_type")
        compare(f"cli_init_{fam}_{dt}_loads", cfg, stored, d, random_seqs(rng, cfg["vocab_size"], 3, 4, 20))
    # score: standard rows on two families, against the reference on TRL's tokens
    rows = [{"prompt": "What is the capital of France?", "chosen": " Paris.", "rejected": " Lyon, I think."},
            {"prompt": "Write a haiku about rain", "chosen": ": soft rain on the roof\nwhispers", "rejected": "no"},
            {"prompt": "2+2=", "chosen": "4", "rejected": "5<|im_end|>"},
            {"prompt": "Translate 'chat' to English: ", "chosen": "cat", "rejected": "Katze (German)"},
            {"prompt": "Say hello in Japanese.", "chosen": " こんにちは", "rejected": " 你好"}]
    data = os.path.join(tmp, "pairs.jsonl")
    with open(data, "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("model_qwen3_qknorm_headdim", "model_llama3_rope_bf16_gqa", "model_gpt2_prefixed_tied_f32"):
        _, cfg, stored, d, _ = [m for m in models if m[0] == name][0]
        out, summ = os.path.join(tmp, name + ".out"), os.path.join(tmp, name + ".summary.json")
        p = subprocess.run([CLI, "score", "--model", d, "--data", data, "--out", out, "--summary", summ,
                            "--threads", "2", "--batch-size", "2"], capture_output=True, text=True)
        if p.returncode != 0:
            report(f"cli_score_{name}", False, p.stderr.strip())
            continue
        eos = json.load(open(os.path.join(d, "tokenizer_config.json")))["eos_token"]
        texts = []
        for r in rows:
            texts += [r["prompt"]] + [r["prompt"] + c + ("" if c.endswith(eos) else eos) for c in (r["chosen"], r["rejected"])]
        ids = tokenize(d, texts)
        got = [json.loads(l) for l in open(out)]
        bad, margins = [], []
        for i, r in enumerate(rows):
            pr = ids[3 * i]
            ref = []
            for k, key in ((1, "chosen"), (2, "rejected")):
                seq = pr + ids[3 * i + k][len(pr):]
                lp = hf.reference_logps(cfg, stored, seq, len(pr))
                ref.append(lp.sum().item())
                g = got[i][key + "_logps"]
                if got[i][key + "_tokens"] != len(lp) or abs(g - ref[-1]) > TOL * abs(ref[-1]):
                    bad.append(f"row {i} {key}: got {g} over {got[i][key + '_tokens']} tokens, "
                               f"reference {ref[-1]} over {len(lp)}")
            margins.append(ref[0] - ref[1])
        summary = json.load(open(summ))
        mm = sum(margins) / len(margins)
        acc = sum(m > 0 for m in margins) / len(margins)
        if abs(summary["mean_margin"] - mm) > TOL * max(1, abs(mm)) or abs(summary["accuracy"] - acc) > 1e-9:
            bad.append(f"summary {summary['mean_margin']}, {summary['accuracy']} vs reference {mm}, {acc}")
        if summary["pairs"] != len(rows) or len(got) != len(rows):
            bad.append(f"{len(got)} lines / {summary['pairs']} pairs for {len(rows)} rows")
        report(f"cli_score_{name}", not bad, "; ".join(bad))
    # bad data: a line without "chosen" is an error naming the file and line; --skip-bad skips it
    with open(data, "a") as fh:
        fh.write(json.dumps({"prompt": "x", "rejected": "y"}) + "\n")
    d = [m for m in models if m[0] == "model_qwen3_qknorm_headdim"][0][3]
    p = subprocess.run([CLI, "score", "--model", d, "--data", data, "--out", os.path.join(tmp, "bad.out")],
                       capture_output=True, text=True)
    report("cli_score_bad_line", p.returncode != 0 and f"{data}:6" in p.stderr and "chosen" in p.stderr,
           f"exit {p.returncode}, message {p.stderr.strip()!r}")
    p = subprocess.run([CLI, "score", "--model", d, "--data", data, "--out", os.path.join(tmp, "skip.out"), "--skip-bad"],
                       capture_output=True, text=True)
    n = len(open(os.path.join(tmp, "skip.out")).read().splitlines()) if p.returncode == 0 else -1
    report("cli_score_skip_bad", p.returncode == 0 and n == len(rows) and "skipped 1" in p.stderr,
           f"exit {p.returncode}, {n} lines, stderr {p.stderr.strip()!r}")
    # a broken checkpoint through the CLI: the message names the file
    p = subprocess.run([CLI, "score", "--model", os.path.join(tmp, "bad_trunc"), "--data", data, "--out",
                        os.path.join(tmp, "x.out"), "--skip-bad"], capture_output=True, text=True)
    report("cli_score_bad_checkpoint", p.returncode != 0 and "model.safetensors" in p.stderr and "truncated" in p.stderr,
           f"exit {p.returncode}, message {p.stderr.strip()!r}")
    # weights holding NaN (what a negative rms_norm_eps used to give): score refuses to write NaN and
    # names the first pair's line, instead of exiting 0 with "NaN" log-probs
    import shutil
    nd = os.path.join(tmp, "bad_nan")
    shutil.copytree(d, nd)
    W = hf.st_read(os.path.join(d, "model.safetensors"))
    W["model.norm.weight"] = W["model.norm.weight"] * float("nan")
    blob, _ = hf.st_bytes(list(W.items()))
    with open(os.path.join(nd, "model.safetensors"), "wb") as fh:
        fh.write(blob)
    out = os.path.join(tmp, "nan.out")
    p = subprocess.run([CLI, "score", "--model", nd, "--data", data, "--out", out, "--skip-bad"],
                       capture_output=True, text=True)
    written = open(out).read() if os.path.exists(out) else ""
    report("cli_score_refuses_nan", p.returncode != 0 and f"{data}:1:" in p.stderr and "log-probability is nan" in p.stderr
           and "nan" not in written.lower(), f"exit {p.returncode}, message {p.stderr.strip()!r}, wrote {written[:200]!r}")


def main():
    if not os.access(DRIVER, os.X_OK):
        report("model_driver_built", False, f"{DRIVER} is missing: run make {BUILD}/tests/model_logps")
        return 1
    with tempfile.TemporaryDirectory(prefix="pc-model-") as tmp:
        models = families(tmp)
        rng = random.Random(42)
        for name, cfg, stored, d, variants in models:
            seqs = random_seqs(rng, cfg["vocab_size"], 7, 2, 48)
            compare(name, cfg, stored, d, seqs, variants)
        lora_check(tmp, models)
        bad_inputs(tmp, [(n, c, s, d, v) for n, c, s, d, v in models])
        cli_checks(tmp, models)
    sys.stderr.write("  parity (worst relative error per family): " +
                     ", ".join(f"{k}={v:.2e}" for k, v in PARITY.items()) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
