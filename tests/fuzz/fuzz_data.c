/* tests/fuzz/fuzz_data.c: the preference-data reader (trainer/text/data.c) on any JSONL: standard and
 * conversational rows, prompt extraction, EOS handling, chat rendering and truncation, with the small
 * tokenizer and tokenizer_config.json of tests/fuzz/data/. KTO rows ({"prompt","completion","label"},
 * what `prefcap export --format trl-kto` writes) go through the same reader, which has no KTO mode yet
 * and must refuse them by field. Options (max_length, truncation, skip_bad, chat template) come from a
 * hash of the input, so mutations explore them too. Every loaded pair must be a consistent sequence. */
#include "fuzz.h"
#include "text/data.h"

#include <string.h>

static pc_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[512];
  tok = pc_tok_load("tests/fuzz/data/tokenizer.json", err, sizeof err);
  if (!tok) { fprintf(stderr, "fuzz_data: %s (run from the repository root)\n", err); exit(1); }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 16777619u;
  static const int maxlen[] = {0, 0, 1, 2, 3, 8, 64, 0};
  static const char *tmpl[] = {NULL, NULL, "chatml", "qwen3", "llama3", "nonesuch", NULL, NULL};
  pc_data_opts o = {maxlen[h & 7], (h >> 3) & 1 ? PC_TRUNC_KEEP_END : PC_TRUNC_KEEP_START, (h >> 4) & 1,
                    tmpl[(h >> 5) & 7], (h >> 8) & 1 /* unpaired (KTO) rows */};
  const char *path = fuzz_file(0, data, size);
  pc_dataset d;
  char err[1024] = "";
  if (pc_data_load(path, tok, "tests/fuzz/data", &o, &d, err, sizeof err) != 0) {
    FUZZ_CHECK(err[0] != 0);
    return 0;
  }
  size_t nv = pc_tok_vocab_size(tok);
  for (size_t i = 0; i < d.n; i++) {
    const pc_seq *s[2] = {&d.pairs[i].chosen, &d.pairs[i].rejected};
    for (int k = 0; k < 2; k++) {
      FUZZ_CHECK(s[k]->n >= 0 && s[k]->prompt_len >= 0 && s[k]->prompt_len <= s[k]->n);
      if (o.max_length) FUZZ_CHECK(s[k]->n <= o.max_length);
      for (int t = 0; t < s[k]->n; t++) FUZZ_CHECK(s[k]->ids[t] >= 0 && (size_t)s[k]->ids[t] < nv);
    }
    FUZZ_CHECK(d.pairs[i].line >= 1);
  }
  pc_data_free(&d);
  return 0;
}
