/* bench/tokenizer_bench.c: encoding throughput of trainer/text/tokenizer.c on a JSONL corpus of strings,
 * single-threaded, the same measurement bench/tokenizer_bench.mjs makes for tokenizers.js:
 *   tokenizer_bench TOKENIZER_JSON CORPUS_JSONL REPEAT
 * prints one JSON line: load time, MB/s over one pass of the corpus on a fresh tokenizer (cold word
 * cache), and MB/s over REPEAT further passes (the bigger repeated corpus, warm cache). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/tokenizer.h"

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: tokenizer_bench TOKENIZER_JSON CORPUS_JSONL REPEAT\n"); return 2; }
  int repeat = atoi(argv[3]);
  FILE *f = fopen(argv[2], "rb");
  if (!f) { perror(argv[2]); return 1; }
  char **s = NULL, *line = NULL;
  size_t *len = NULL, n = 0, cap = 0, bytes = 0;
  ssize_t got;
  while ((got = getline(&line, &cap, f)) > 0) {
    cJSON *j = cJSON_Parse(line);
    if (!cJSON_IsString(j)) { fprintf(stderr, "%s:%zu: not a JSON string\n", argv[2], n + 1); return 1; }
    s = realloc(s, (n + 1) * sizeof *s); len = realloc(len, (n + 1) * sizeof *len);
    s[n] = strdup(j->valuestring); len[n] = strlen(s[n]); bytes += len[n]; n++;
    cJSON_Delete(j);
  }
  free(line); fclose(f);
  char err[512];
  double t0 = now();
  pc_tokenizer *tok = pc_tok_load(argv[1], err, sizeof err);
  double load = now() - t0;
  if (!tok) { fprintf(stderr, "%s\n", err); return 1; }
  size_t ntok = 0;
  double pass[2];
  for (int p = 0; p < 2; p++) {
    t0 = now();
    for (int r = 0; r < (p ? repeat : 1); r++)
      for (size_t i = 0; i < n; i++) {
        int32_t *ids; size_t ni;
        if (pc_tok_encode(tok, s[i], len[i], 1, &ids, &ni, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
        ntok += ni;
        free(ids);
      }
    pass[p] = now() - t0;
  }
  printf("{\"impl\":\"prefcap-c\",\"strings\":%zu,\"bytes\":%zu,\"load_s\":%.3f,\"cold_mb_s\":%.2f,\"repeated_mb_s\":%.2f,\"tokens\":%zu}\n",
         n, bytes, load, bytes / pass[0] / 1e6, bytes * (double)repeat / pass[1] / 1e6, ntok);
  pc_tok_free(tok);
  for (size_t i = 0; i < n; i++) free(s[i]);
  free(s); free(len);
  return 0;
}
