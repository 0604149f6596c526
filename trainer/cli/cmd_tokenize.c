/* trainer/cli/cmd_tokenize.c: `prefcap-dpo tokenize`, so a user can see exactly the ids the trainer sees.
 *
 * Reads JSONL (a file or stdin): each line a JSON string or {"text": ...}, and writes one line
 * {"ids": [...]} per input line, in order. With --decode, lines are {"ids": [...]} or a bare array and
 * the output is {"text": ...}. A bad line stops the run with its line number and a non-zero exit:
 * silently skipping would shift every later line against its input. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonstr.h"
#include "text/tokenizer.h"

static void usage(FILE *f) {
  fputs("usage: prefcap-dpo tokenize --model DIR [--no-special] [--decode] [FILE|-]\n"
        "\n"
        "Encodes each input line with DIR/tokenizer.json exactly as Hugging Face tokenizers does.\n"
        "  input lines:   a JSON string, or an object {\"text\": \"...\"}\n"
        "  output lines:  {\"ids\": [...]}\n"
        "  --no-special   do not apply the post-processor (no BOS etc.): add_special_tokens=False;\n"
        "                 with --decode, drop special tokens from the text (skip_special_tokens=True)\n"
        "  --decode       the other way: input lines {\"ids\": [...]} or [...], output {\"text\": \"...\"}\n"
        "  FILE           input file; '-' or nothing reads standard input\n", f);
}

// ---- JSON output ----------------------------------------------------------------------------------

/* The project's one JSON escaper (common/jsonstr.h), onto a stream. false when out of memory. */
static bool put_json_string(FILE *f, const char *s, size_t n) {
  char small[512];
  size_t q = pc_json_quoted_len(s, n);
  char *b = q < sizeof small ? small : malloc(q + 1);
  if (!b) return false;
  fwrite(b, 1, pc_json_quote(b, s, n), f);
  if (b != small) free(b);
  return true;
}

/* cJSON keeps strings NUL-terminated, so an escaped U+0000 would silently cut the text: refuse it.
 * Counts the backslashes before "u0000" so that "\\u0000" (a backslash, then text) is not refused. */
static int has_escaped_nul(const char *line) {
  for (const char *p = line; (p = strstr(p, "u0000")) != NULL; p++) {
    size_t bs = 0;
    for (const char *q = p; q > line && q[-1] == '\\'; q--) bs++;
    if (bs % 2 == 1) return 1;
  }
  return 0;
}

// ---- the command ------------------------------------------------------------------------------------

int pc_cmd_tokenize(int argc, char **argv) {
  const char *model = NULL, *input = NULL;
  int add_special = 1, decode = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); return 0; }
    else if (strcmp(a, "--model") == 0) {
      if (i + 1 >= argc) { fprintf(stderr, "prefcap-dpo tokenize: --model needs a directory\n"); return 2; }
      model = argv[++i];
    } else if (strncmp(a, "--model=", 8) == 0) model = a + 8;
    else if (strcmp(a, "--no-special") == 0) add_special = 0;
    else if (strcmp(a, "--decode") == 0) decode = 1;
    else if (a[0] == '-' && a[1] != 0) { fprintf(stderr, "prefcap-dpo tokenize: unknown option %s\n", a); usage(stderr); return 2; }
    else if (input) { fprintf(stderr, "prefcap-dpo tokenize: more than one input file (%s, %s)\n", input, a); return 2; }
    else input = a;
  }
  if (!model) { fprintf(stderr, "prefcap-dpo tokenize: --model DIR is required\n"); usage(stderr); return 2; }

  char path[PATH_MAX], err[512];
  snprintf(path, sizeof path, "%s/tokenizer.json", model);
  pc_tokenizer *tok = pc_tok_load(path, err, sizeof err);
  if (!tok) { fprintf(stderr, "prefcap-dpo tokenize: %s\n", err); return 1; }

  const char *in_name = input && strcmp(input, "-") != 0 ? input : "<stdin>";
  FILE *in = input && strcmp(input, "-") != 0 ? fopen(input, "rb") : stdin;
  if (!in) {
    fprintf(stderr, "prefcap-dpo tokenize: %s: cannot open: %s\n", input, strerror(errno));
    pc_tok_free(tok);
    return 1;
  }
  char *line = NULL;
  size_t cap = 0, lineno = 0;
  ssize_t got;
  int rc = 0;
  while ((got = getline(&line, &cap, in)) >= 0) {
    lineno++;
    size_t n = (size_t)got;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    if (strlen(line) != n) { fprintf(stderr, "%s:%zu: the line contains a NUL byte\n", in_name, lineno); rc = 1; break; }
    cJSON *j = cJSON_ParseWithLength(line, n);
    if (!j) { fprintf(stderr, "%s:%zu: not valid JSON\n", in_name, lineno); rc = 1; break; }
    if (!decode) {
      const cJSON *txt = cJSON_IsString(j) ? j : cJSON_GetObjectItemCaseSensitive(j, "text");
      if (!cJSON_IsString(txt)) {
        fprintf(stderr, "%s:%zu: expected a JSON string or an object with a string field \"text\"\n", in_name, lineno);
        cJSON_Delete(j); rc = 1; break;
      }
      if (has_escaped_nul(line)) {
        fprintf(stderr, "%s:%zu: field \"text\": U+0000 is not supported\n", in_name, lineno);
        cJSON_Delete(j); rc = 1; break;
      }
      int32_t *ids; size_t ni;
      if (pc_tok_encode(tok, txt->valuestring, strlen(txt->valuestring), add_special, &ids, &ni, err, sizeof err)) {
        fprintf(stderr, "%s:%zu: field \"text\": %s\n", in_name, lineno, err);
        cJSON_Delete(j); rc = 1; break;
      }
      fputs("{\"ids\":[", stdout);
      for (size_t i = 0; i < ni; i++) printf(i ? ",%d" : "%d", ids[i]);
      fputs("]}\n", stdout);
      free(ids);
    } else {
      const cJSON *arr = cJSON_IsArray(j) ? j : cJSON_GetObjectItemCaseSensitive(j, "ids");
      if (!cJSON_IsArray(arr)) {
        fprintf(stderr, "%s:%zu: expected a JSON array of ids or an object with an array field \"ids\"\n", in_name, lineno);
        cJSON_Delete(j); rc = 1; break;
      }
      size_t ni = (size_t)cJSON_GetArraySize(arr), k = 0;
      int32_t *ids = malloc((ni ? ni : 1) * sizeof *ids);
      if (!ids) { fprintf(stderr, "prefcap-dpo tokenize: out of memory\n"); cJSON_Delete(j); rc = 1; break; }
      for (const cJSON *x = arr->child; x; x = x->next, k++) {
        double v = x->valuedouble;
        if (!cJSON_IsNumber(x) || v != (double)(int64_t)v || v < 0 || (size_t)v >= pc_tok_vocab_size(tok)) {
          fprintf(stderr, "%s:%zu: field \"ids\"[%zu]: not a token id of this tokenizer (0..%zu)\n", in_name, lineno,
                  k, pc_tok_vocab_size(tok) - 1);
          rc = 1; break;
        }
        ids[k] = (int32_t)v;
      }
      if (rc) { free(ids); cJSON_Delete(j); break; }
      size_t tl;
      char *text = pc_tok_decode_len(tok, ids, ni, !add_special, &tl);
      free(ids);
      if (!text) { fprintf(stderr, "prefcap-dpo tokenize: out of memory\n"); cJSON_Delete(j); rc = 1; break; }
      fputs("{\"text\":", stdout);
      bool put = put_json_string(stdout, text, tl);
      fputs("}\n", stdout);
      free(text);
      if (!put) { fprintf(stderr, "prefcap-dpo tokenize: out of memory\n"); cJSON_Delete(j); rc = 1; break; }
    }
    cJSON_Delete(j);
  }
  if (!rc && ferror(in)) { fprintf(stderr, "%s: read error\n", in_name); rc = 1; }
  free(line);
  if (in != stdin) fclose(in);
  if (fflush(stdout) != 0) { fprintf(stderr, "prefcap-dpo tokenize: write error: %s\n", strerror(errno)); rc = 1; }
  pc_tok_free(tok);
  return rc;
}
