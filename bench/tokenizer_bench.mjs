// bench/tokenizer_bench.mjs: the tokenizers.js side of bench/tokenizer_bench.c, measured the same way:
//   node tokenizer_bench.mjs NODE_MODULES TOKENIZER_DIR CORPUS_JSONL REPEAT
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const [nm, dir, corpusPath, rep] = process.argv.slice(2);
const repeat = Number(rep);
const { Tokenizer } = await import(resolve(nm, "@huggingface/tokenizers/dist/tokenizers.mjs"));
const corpus = readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
const bytes = corpus.reduce((a, s) => a + Buffer.byteLength(s, "utf8"), 0);
let t0 = performance.now();
const tok = new Tokenizer(JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
  JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")));
const load = (performance.now() - t0) / 1000;
let ntok = 0;
const pass = [];
for (let p = 0; p < 2; p++) {
  t0 = performance.now();
  for (let r = 0; r < (p ? repeat : 1); r++) for (const s of corpus) ntok += tok.encode(s).ids.length;
  pass.push((performance.now() - t0) / 1000);
}
console.log(JSON.stringify({ impl: "tokenizers.js", strings: corpus.length, bytes, load_s: +load.toFixed(3),
  cold_mb_s: +(bytes / pass[0] / 1e6).toFixed(2), repeated_mb_s: +(bytes * repeat / pass[1] / 1e6).toFixed(2), tokens: ntok }));
