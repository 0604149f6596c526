#!/usr/bin/python3
"""tests/train/test_kto.py: `prefcap-dpo train` beyond plain pairs, against the float64 PyTorch reference
(tests/train/ref_dpo.py, written from TRL's KTOTrainer / DPOTrainer and docs/training.md):

  - kto: --loss kto on unpaired {prompt, completion, label} rows: 6-step trajectories on GPT-2 (full
    fine-tune) and Qwen3 (LoRA from a nonzero-B adapter), unequal --desirable-weight /
    --undesirable-weight (and --pair-weights on the LoRA run): loss, kl, grad_norm and the other KTO
    metrics within 1e-3 relative, and the LoRA run's eval lines (before and after) and its report's kl
    chart; each check fails against a reference whose KL sequences take each example's own completion,
    whose class weights are swapped, or whose row weights are dropped. TRL's imbalance advice appears
    for the LoRA run's weights and not for the other's.
  - grads: --dump-grads of KTO, and of `ipo,sigmoid,sft` with --loss-weights and --pair-weights, within
    1e-4 of autograd; each fails against a reference with the KL shift or the sft weight changed.
  - mix: `--loss sigmoid,sft --loss-weights 1,0.5 --pair-weights` 6-step trajectory (Qwen3 LoRA); fails
    with the sft weight changed or the row weights dropped.
  - tokens: a KTO example is tokenized exactly as a pair's chosen side (with the kto section).
  - bad: a KTO file given to a pair loss and pairs given to --loss kto name the file, the line and the
    missing field; labels all of one class warn and train; bad --loss lists are refused.

Sections can be picked on the command line (kto grads mix tokens bad). Exits non-zero on any failure;
needs python3-torch (fails, never skips, without it).
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# test_train's helpers (running the CLI, reporting, comparing); importing it checks that torch imports
# (a FAIL line and exit 1 otherwise) and puts tests/model on the path
import test_train as tt  # noqa: E402
import torch  # noqa: E402
import hfmodels as hf  # noqa: E402
import ref_dpo as ref  # noqa: E402

# Tolerances: those of test_train.py, for the same reasons (float32 trainer, float64 reference).
GRAD_TOL, TRAJ_TOL, TRAJ_ABS = tt.GRAD_TOL, tt.TRAJ_TOL, tt.TRAJ_ABS

# Unpaired rows: desirable and undesirable mixed within every micro-batch of 4 (file order), weights
# as the SDK grades them.
KTO_ROWS = [
    {"prompt": "What is the capital of France?", "completion": " Paris.", "label": True, "weight": 1.0},
    {"prompt": "2+2=", "completion": "5, or maybe 22", "label": False, "weight": 0.5},
    {"prompt": "Name a primary color.", "completion": " Blue.", "label": True, "weight": 0.8},
    {"prompt": "Translate 'chat' to English: ", "completion": "Katze", "label": False, "weight": 1.0},
    {"prompt": "Is the sun a star?", "completion": " Yes, it is.", "label": True, "weight": 0.3},
    {"prompt": "Write a word that rhymes with moon", "completion": ": spoon", "label": True, "weight": 1.0},
    {"prompt": "Name a planet.", "completion": " The Moon", "label": False, "weight": 0.7},
    {"prompt": "What colour is grass?", "completion": " Green.", "label": True, "weight": 1.0},
]
# Pairs with confidence weights (for --pair-weights and the mixtures).
PAIR_ROWS = [dict(r, weight=w) for r, w in zip(tt.ROWS, (1.0, 0.25, 0.6, 1.0, 0.1, 0.9))]

SENS_STEPS = 1
KTO_METRICS = ["loss", "kl", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen",
               "logps/rejected", "learning_rate", "epoch"]


def make_models(tmp):
    """GPT-2 (tied embeddings) and Qwen3 (q/k norms), F32, as test_train.py makes them."""
    gen = torch.Generator().manual_seed(2024)
    V = hf.TOK_VOCAB
    specs = {
        "gpt2": hf.make_config("gpt2", vocab_size=V["qwen3"], n_embd=32, n_head=4, n_layer=2),
        "qwen3": hf.make_config("qwen3", vocab_size=V["qwen3"], hidden_size=32, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=16, intermediate_size=48, rope_theta=1000000.0,
                                tie_word_embeddings=True, attention_bias=False),
    }
    out = {}
    for fam, cfg in specs.items():
        d = os.path.join(tmp, "model_" + fam)
        st = hf.write_model(d, cfg, hf.random_weights(cfg, gen, prefix="transformer."), "F32", tokenizer="qwen3")
        out[fam] = (cfg, st, d)
    return out


def args_for(model_dir, data, out, o, adapter_dir=None, extra=()):
    a = tt.train_args(model_dir, data, out, o, adapter_dir, extra)
    if o.loss_weights:
        a += ["--loss-weights", ",".join(repr(w) for w in o.loss_weights)]
    if o.pair_weights:
        a += ["--pair-weights"]
    if o.loss == "kto":
        a += ["--desirable-weight", repr(o.desirable_weight), "--undesirable-weight", repr(o.undesirable_weight)]
    return a


def diff_kto(c_rows, r_rows, keys):
    bad, worst = [], 0.0
    if len(c_rows) != len(r_rows):
        bad.append(f"{len(c_rows)} metric lines, reference {len(r_rows)}")
    for c, r in zip(c_rows, r_rows):
        for k in keys:
            if (k in c) != (k in r):
                bad.append(f"step {r['step']} {k}: present in C {k in c}, in the reference {k in r}")
            elif k in r and not abs(c[k] - r[k]) <= TRAJ_TOL * abs(r[k]) + TRAJ_ABS:
                bad.append(f"step {r['step']} {k}: got {c[k]:.8g}, reference {r[k]:.8g}")
            elif k in r:
                worst = max(worst, abs(c[k] - r[k]) / max(abs(r[k]), TRAJ_ABS / TRAJ_TOL))
        for k in ("count/chosen", "count/rejected"):
            if k in r and c.get(k) != r[k]:
                bad.append(f"step {r['step']} {k}: got {c.get(k)}, reference {r[k]}")
    return bad, worst


def trajectory(tmp, name, fam, models, data, o, adapter=None, sensitivity=(), keys=None, evaluate=False):
    """Runs the C trainer and the reference for o.max_steps steps; compares every metric (evaluate: and
    the eval lines, before and after training, with the data file as --eval-data); then the same C
    metrics against references with one detail changed, which must disagree."""
    cfg, st, d = models[fam]
    out = os.path.join(tmp, "out_" + name)
    tfile = os.path.join(tmp, name + ".tokens.jsonl")
    adir, ast = adapter if adapter else (None, None)
    t0 = time.time()
    p = tt.run(args_for(d, data, out, o, adir, ["--dump-tokens", tfile] + (["--eval-data", data] if evaluate else [])))
    tc = time.time() - t0
    if p.returncode != 0:
        tt.report(name, False, f"exit {p.returncode}: {p.stderr.strip()[-500:]}")
        return None
    pairs = ref.load_dump_tokens(tfile)
    t0 = time.time()
    rt = ref.RefTrainer(cfg, st, pairs, o, ast)
    r_evals = [rt.eval_metrics()] if evaluate else []
    r_rows = rt.train()
    r_evals += [rt.eval_metrics()] if evaluate else []
    tr = time.time() - t0
    c_rows = tt.read_metrics(os.path.join(out, "metrics.jsonl"))
    if evaluate:
        c_evals = tt.read_metrics(os.path.join(out, "metrics.jsonl"), evals=True)
        for r, step in zip(r_evals, (0, o.max_steps)):
            r["step"] = step
        bad, _ = diff_kto(c_evals, r_evals, ["eval_" + k for k in KTO_METRICS if k in ("loss", "kl") or "/" in k])
        bad += [f"eval step {c.get('step')} {k}: {c.get(k)} vs {r[k]}" for c, r in zip(c_evals, r_evals)
                for k in ("eval_count/chosen", "eval_count/rejected") if c.get(k) != r[k]]
        tt.report(name + "_eval", not bad, "; ".join(bad[:4]))
    if keys is not None and o.loss == "kto":   # the report draws kl where DPO runs draw accuracies
        html = open(os.path.join(out, "report.html")).read() if os.path.exists(os.path.join(out, "report.html")) else ""
        tt.report(name + "_report_kl", 'id="kl"' in html and 'data-key="kl"' in html and 'id="accuracy"' not in html,
                  f"report.html ({len(html)} bytes) lacks the kl chart or still has the accuracy one")
    if keys is None:
        bad, worst = tt.diff_rows(c_rows, r_rows, TRAJ_TOL, TRAJ_ABS, o.batch_size * o.grad_accum)
    else:
        bad, worst = diff_kto(c_rows, r_rows, keys)
    tt.report(name, not bad, "; ".join(bad[:6]))
    extra = ""
    if o.loss == "kto":
        extra = "kl " + ", ".join(f"{r['kl']:.3g}" for r in r_rows) + "; "
    tt.note(f"{name}: worst metric drift {worst:.2e}; {extra}loss {r_rows[0]['loss']:.5g} -> {r_rows[-1]['loss']:.5g}; "
            f"C {tc:.1f}s, torch {tr:.1f}s")
    # the changed references run SENS_STEPS steps only (each change shows in the first step here; the KL
    # shift is checked on the LoRA run, whose first kl is not 0: in a full fine-tune the policy starts as
    # the reference and the first kl is 0 whatever the KL sequences)
    for tag, patch in sensitivity:
        o2 = ref.Options(**{**o.__dict__, **patch})
        r2 = ref.RefTrainer(cfg, st, pairs, o2, ast).train(SENS_STEPS)
        bad2 = (tt.diff_rows(c_rows[:SENS_STEPS], r2, TRAJ_TOL, TRAJ_ABS, o.batch_size * o.grad_accum)[0] if keys is None
                else diff_kto(c_rows[:SENS_STEPS], r2, keys)[0])
        tt.report(f"{name}_sensitive_to_{tag}", len(bad2) > 0, f"a reference with {tag} still agrees within tolerance")
        if bad2:
            tt.note(f"{name} vs a reference with {tag}: {bad2[0]}")
    return out, r_rows, p.stderr


def grads(tmp, name, fam, models, data, o, adapter=None, sensitivity=()):
    cfg, st, d = models[fam]
    out = os.path.join(tmp, "out_" + name)
    gfile, tfile = os.path.join(tmp, name + ".grads.safetensors"), os.path.join(tmp, name + ".tokens.jsonl")
    adir, ast = adapter if adapter else (None, None)
    p = tt.run(args_for(d, data, out, o, adir, ["--dump-grads", gfile, "--dump-tokens", tfile]))
    if p.returncode != 0 or not os.path.exists(gfile):
        tt.report(name, False, f"exit {p.returncode}: {p.stderr.strip()[-500:]}")
        return
    pairs = ref.load_dump_tokens(tfile)
    g_c = hf.st_read(gfile)
    g_r = ref.RefTrainer(cfg, st, pairs, o, ast).first_step_grads()
    errs = {n: tt.rel_norm(g_c[n], g_r[n]) for n in g_r if n in g_c}
    worst = max(errs, key=errs.get) if errs else None
    ok = set(g_c) == set(g_r) and worst is not None and errs[worst] <= GRAD_TOL
    tt.report(name, ok, f"names {len(g_c)} vs {len(g_r)}; worst {worst}: {errs.get(worst, float('nan')):.2e}")
    if worst:
        tt.note(f"{name}: worst gradient relative error {errs[worst]:.2e} ({worst}) over {len(g_r)} tensors")
    for tag, patch in sensitivity:
        o2 = ref.Options(**{**o.__dict__, **patch})
        g2 = ref.RefTrainer(cfg, st, pairs, o2, ast).first_step_grads()
        e = max(tt.rel_norm(g_c[n], g2[n]) for n in g2 if n in g_c)
        tt.report(f"{name}_sensitive_to_{tag}", e > 100 * GRAD_TOL, f"a reference with {tag} differs by only {e:.2e}")


def adapter_for(tmp, tag, models, fam):
    cfg, st, _ = models[fam]
    return tt.make_adapter(tmp, tag, cfg, st)


# ---- tokenization and bad input --------------------------------------------------------------------

def tokens_check(tmp, models, kto_dump):
    """A KTO example's tokens (kto_dump: the Qwen3 KTO run's --dump-tokens) are the chosen side's of the
    pair with the same prompt and completion."""
    _, _, d = models["qwen3"]
    pairs = tt.write_jsonl(os.path.join(tmp, "tok.dpo.jsonl"), [{"prompt": r["prompt"], "chosen": r["completion"],
                                                                  "rejected": r["completion"] + "!"} for r in KTO_ROWS])
    tf = os.path.join(tmp, "tok_dpo.tokens.jsonl")
    p = tt.run([tt.CLI, "train", "--model", d, "--data", pairs, "--out", os.path.join(tmp, "out_tok_dpo"), "--max-steps",
                "1", "--lr", "0", "--no-shuffle", "--threads", "2", "--lora-r", "4", "--dump-tokens", tf])
    if p.returncode != 0 or not os.path.exists(kto_dump):
        tt.report("kto_tokens_as_chosen", False, f"exit {p.returncode}: {p.stderr.strip()[-300:]}; {kto_dump}")
        return
    kto, dpo = ref.load_dump_tokens(kto_dump), ref.load_dump_tokens(tf)
    bad = [f"line {a['line']}" for a, b in zip(kto, dpo)
           if a["chosen"] != b["chosen"] or a["chosen_prompt_len"] != b["chosen_prompt_len"] or a["rejected"]]
    labels = [x.get("label") for x in kto]
    ok = not bad and len(kto) == len(dpo) == len(KTO_ROWS) and labels == [r["label"] for r in KTO_ROWS]
    tt.report("kto_tokens_as_chosen", ok, f"differ at {bad[:3]}; labels {labels}")


def bad_checks(tmp, models):
    _, _, d = models["qwen3"]
    pairs = tt.write_jsonl(os.path.join(tmp, "bad_pairs.jsonl"), tt.ROWS)
    kto = tt.write_jsonl(os.path.join(tmp, "bad_kto.jsonl"), KTO_ROWS)
    base = ["--threads", "2", "--max-steps", "1", "--batch-size", "2", "--no-shuffle"]
    p = tt.run([tt.CLI, "train", "--model", d, "--data", kto, "--out", os.path.join(tmp, "out_bad1"), "--loss", "sigmoid"] + base)
    tt.report("kto_bad_kto_file_to_pair_loss", p.returncode != 0 and f"{kto}:1:" in p.stderr and "'chosen'" in p.stderr,
              f"exit {p.returncode}: {p.stderr.strip()[-300:]!r}")
    p = tt.run([tt.CLI, "train", "--model", d, "--data", pairs, "--out", os.path.join(tmp, "out_bad2"), "--loss", "kto"] + base)
    tt.report("kto_bad_pairs_to_kto", p.returncode != 0 and f"{pairs}:1:" in p.stderr and "'completion'" in p.stderr,
              f"exit {p.returncode}: {p.stderr.strip()[-300:]!r}")
    # all one class: a warning, and the run trains
    one = tt.write_jsonl(os.path.join(tmp, "one_class.jsonl"), [dict(r, label=True) for r in KTO_ROWS])
    out = os.path.join(tmp, "out_one_class")
    p = tt.run([tt.CLI, "train", "--model", d, "--data", one, "--out", out, "--loss", "kto", "--lora-r", "4"] + base)
    m = tt.read_metrics(os.path.join(out, "metrics.jsonl")) if p.returncode == 0 else []
    tt.report("kto_one_class_warns_and_trains",
              p.returncode == 0 and "warning" in p.stderr and "desirable" in p.stderr and len(m) == 1
              and "rewards/rejected" not in m[0] and m[0].get("count/rejected") == 0,
              f"exit {p.returncode}, metrics {m[:1]}: {p.stderr.strip()[-300:]!r}")
    # option errors
    for tag, extra in (("kto_mixture", ["--loss", "kto,sft"]), ("sft_alone", ["--loss", "sft"]),
                       ("weights_count", ["--loss", "sigmoid,sft", "--loss-weights", "1"]),
                       ("kto_batch_1", ["--loss", "kto", "--batch-size", "1"])):
        p = tt.run([tt.CLI, "train", "--model", d, "--data", kto if "kto" in tag else pairs, "--out",
                    os.path.join(tmp, "out_opt_" + tag), "--threads", "2", "--max-steps", "1"] + extra)
        tt.report(f"kto_bad_option_{tag}", p.returncode != 0 and ("--loss" in p.stderr or "--batch-size" in p.stderr),
                  f"exit {p.returncode}: {p.stderr.strip()[-200:]!r}")


# ---- main ------------------------------------------------------------------------------------------

def main():
    tt.tune_torch()
    if not os.access(tt.CLI, os.X_OK):
        tt.report("kto_cli_built", False, f"{tt.CLI} is missing")
        return 1
    only = set(sys.argv[1:])

    def want(s):
        return not only or s in only

    with tempfile.TemporaryDirectory(prefix="pc-kto-") as tmp:
        models = make_models(tmp)
        kto_data = tt.write_jsonl(os.path.join(tmp, "kto.jsonl"), KTO_ROWS)
        pair_data = tt.write_jsonl(os.path.join(tmp, "pairs.jsonl"), PAIR_ROWS)
        tt.note("models written")
        if want("kto"):
            with tt.section("kto"):
                o = ref.Options(loss="kto", beta=0.5, lr=3e-3, scheduler="constant", max_grad_norm=1.0, lora_r=0,
                                batch_size=4, grad_accum=1, max_steps=6, desirable_weight=1.0, undesirable_weight=1.5)
                r1 = trajectory(tmp, "kto_traj_gpt2_full", "gpt2", models, kto_data, o, keys=KTO_METRICS,
                                sensitivity=(("class_weights_swapped", {"desirable_weight": 1.5,
                                                                        "undesirable_weight": 1.0}),))
                adir, ast, targets = adapter_for(tmp, "qwen3_kto", models, "qwen3")
                o = ref.Options(loss="kto", beta=0.5, lr=2e-2, scheduler="linear", max_grad_norm=1.0, lora_r=4,
                                lora_alpha=8, lora_targets=targets, batch_size=4, grad_accum=1, max_steps=6,
                                desirable_weight=1.33, undesirable_weight=0.8, pair_weights=True)
                r2 = trajectory(tmp, "kto_traj_qwen3_lora_pair_weights", "qwen3", models, kto_data, o, (adir, ast),
                                keys=KTO_METRICS, evaluate=True,
                                sensitivity=(("kl_unshifted", {"variant": "kl_no_shift"}),
                                             ("row_weights_dropped", {"variant": "ignore_row_weights"})))
                # TRL's imbalance advice: 5 desirable and 3 undesirable examples; weighted 5 x 1 : 3 x 1.5 =
                # 1.11 is in [1, 4/3] (no advice), 5 x 1.33 : 3 x 0.8 = 2.8 is not
                for tag, r, want_advice in (("in_range", r1, False), ("advised", r2, True)):
                    said = r is not None and "recommend" in r[2]
                    tt.report(f"kto_imbalance_{tag}", r is not None and said == want_advice,
                              f"advice shown: {said}: {r[2][-400:] if r else ''!r}")
        if want("grads"):
            with tt.section("grads"):
                adir, ast, targets = adapter_for(tmp, "qwen3_grads", models, "qwen3")
                o = ref.Options(loss="kto", beta=0.5, lr=1e-3, lora_r=4, lora_alpha=8, lora_targets=targets,
                                batch_size=4, grad_accum=2, max_steps=1, desirable_weight=1.2, undesirable_weight=0.7,
                                pair_weights=True)
                grads(tmp, "kto_grads_qwen3_lora", "qwen3", models, kto_data, o, (adir, ast),
                      sensitivity=(("kl_unshifted", {"variant": "kl_no_shift"}),))
                # two pair losses and sft (any pair loss combines), with row weights
                adir, ast, targets = adapter_for(tmp, "gpt2_grads", models, "gpt2")
                o = ref.Options(loss="ipo,sigmoid,sft", loss_weights=[0.3, 1.0, 0.5], beta=0.2, lr=1e-3, lora_r=4,
                                lora_alpha=8, lora_targets=targets, batch_size=3, grad_accum=2, max_steps=1,
                                pair_weights=True)
                grads(tmp, "kto_grads_gpt2_lora_ipo_sigmoid_sft", "gpt2", models, pair_data, o, (adir, ast),
                      sensitivity=(("sft_weight_changed", {"loss_weights": [0.3, 1.0, 1.0]}),))
        if want("mix"):
            with tt.section("mix"):
                # sigmoid + 0.5 sft with --pair-weights, LoRA on Qwen3
                adir, ast, targets = adapter_for(tmp, "qwen3_mix", models, "qwen3")
                o = ref.Options(loss="sigmoid,sft", loss_weights=[1.0, 0.5], beta=0.1, lr=1e-2, scheduler="linear",
                                lora_r=4, lora_alpha=8, lora_targets=targets, batch_size=3, max_steps=6,
                                pair_weights=True)
                trajectory(tmp, "kto_traj_qwen3_lora_sigmoid_sft_pair_weights", "qwen3", models, pair_data, o,
                           (adir, ast), sensitivity=(("sft_weight_changed", {"loss_weights": [1.0, 0.25]}),
                                                     ("row_weights_dropped", {"variant": "ignore_row_weights"})))
        if want("tokens") and want("kto"):
            with tt.section("tokens"):
                tokens_check(tmp, models, os.path.join(tmp, "kto_traj_qwen3_lora_pair_weights.tokens.jsonl"))
        if want("bad"):
            with tt.section("bad"):
                bad_checks(tmp, models)
    tt.note(f"done, {tt.failures} failure(s)")
    return 1 if tt.failures else 0


if __name__ == "__main__":
    sys.exit(main())
