/* tests/fuzz/fuzz_tok_load.c: loading tokenizer.json (trainer/text/tokenizer.c): the model, vocabulary,
 * merges, added tokens, normalizer, pre-tokenizer regexes, post-processor and decoder sections. A file
 * that loads is then used: a few encodes (plain text, text with its own added tokens), decodes of every
 * id, and lookups, so that tables sized or filled wrongly at load time show up. */
#include "fuzz.h"
#include "text/tokenizer.h"

#include <string.h>

static const char *TEXTS[] = {"", "Hello world", " héllo\n\n  wörld 123 ", "<|endoftext|>x<|im_start|>",
                              "a\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80!"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(0, data, size);
  char err[512] = "";
  pc_tokenizer *t = pc_tok_load(path, err, sizeof err);
  if (!t) { FUZZ_CHECK(err[0] != 0); return 0; }
  size_t nv = pc_tok_vocab_size(t);
  for (size_t i = 0; i < sizeof TEXTS / sizeof *TEXTS; i++)
    for (int special = 0; special < 2; special++) {
      int32_t *ids = NULL;
      size_t n = 0;
      if (pc_tok_encode(t, TEXTS[i], strlen(TEXTS[i]), special, &ids, &n, err, sizeof err) == 0) {
        for (size_t k = 0; k < n; k++) FUZZ_CHECK(ids[k] >= 0 && (size_t)ids[k] < nv);
        char *d = pc_tok_decode(t, ids, n, special);
        free(d);
      }
      free(ids);
    }
  /* every id decodes on its own (the tables are dense up to vocab_size) */
  for (size_t i = 0; i < nv && i < 4096; i++) {
    int32_t id = (int32_t)i;
    size_t dl;
    char *d = pc_tok_decode_len(t, &id, 1, 0, &dl);
    FUZZ_CHECK(d != NULL);
    const char *s = pc_tok_id_to_token(t, id);
    if (s) FUZZ_CHECK(pc_tok_token_to_id(t, s) >= 0);
    (void)pc_tok_is_special(t, id);
    free(d);
  }
  pc_tok_free(t);
  return 0;
}
