/* tests/model/logps_driver.c: scores token ids directly (no tokenizer, no data reader), so that the
 * model acceptance test checks the forward pass and the fused log-prob on their own.
 *
 *   model_logps --model DIR [--adapter DIR] [--threads N] [--batch N] [--time] < ids.jsonl > out.jsonl
 *
 * Input lines: {"ids": [...], "score_from": K}. Output lines, in order:
 * {"logps": sum, "tokens": n, "tok": [per-token log-probs]} (sum in full double precision). Sequences
 * are packed --batch at a time (default 4), so packing across sequences is exercised too. With --time
 * (the benchmark), the first batch is run once untimed (page faults of the mapping, buffer growth) and
 * {"tokens": N, "seconds": S, "tokens_per_s": R} goes to stderr for the timed pass over all batches.
 * With --share, sequence 2k+1 shares its common prefix with sequence 2k (as score does for a pair's
 * chosen and rejected), so the shared-prefix path is tested against the same reference. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "model/model.h"

int main(int argc, char **argv) {
  const char *model = NULL, *adapter = NULL;
  int threads = 2, batch = 4, timed = 0, share = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
    else if (!strcmp(argv[i], "--adapter") && i + 1 < argc) adapter = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--time")) timed = 1;
    else if (!strcmp(argv[i], "--share")) share = 1;
    else { fprintf(stderr, "usage: %s --model DIR [--adapter DIR] [--threads N] [--batch N] < ids.jsonl\n", argv[0]); return 2; }
  }
  if (!model || batch < 1) { fprintf(stderr, "model_logps: --model is required\n"); return 2; }
  char err[2048];
  pc_backend *be = pc_backend_new("cpu", threads, err, sizeof err);
  if (!be) { fprintf(stderr, "model_logps: %s\n", err); return 1; }
  pc_model *m;
  pc_model_opts mo = {.merge_adapter = adapter};  // frozen, as `score` loads it
  if (pc_model_load(model, &mo, be, &m, err, sizeof err) != 0) {
    fprintf(stderr, "model_logps: %s\n", err);
    be->ops->destroy(be);
    return 1;
  }
  // read all lines
  int cap = 0, n = 0;
  pc_model_seq *seqs = NULL;
  char *line = NULL;
  size_t lcap = 0;
  int lineno = 0, rc = 0;
  while (getline(&line, &lcap, stdin) > 0) {
    lineno++;
    cJSON *o = cJSON_Parse(line);
    cJSON *ids = o ? cJSON_GetObjectItem(o, "ids") : NULL, *sf = o ? cJSON_GetObjectItem(o, "score_from") : NULL;
    if (!cJSON_IsArray(ids) || !cJSON_IsNumber(sf)) {
      fprintf(stderr, "model_logps: stdin:%d: want {\"ids\": [...], \"score_from\": K}\n", lineno);
      cJSON_Delete(o);
      rc = 1;
      break;
    }
    if (n == cap) { cap = cap ? 2 * cap : 16; seqs = realloc(seqs, sizeof *seqs * (size_t)cap); }
    int len = cJSON_GetArraySize(ids);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(len ? len : 1));
    int k = 0;
    for (cJSON *it = ids->child; it; it = it->next) v[k++] = (int32_t)it->valuedouble;
    seqs[n++] = (pc_model_seq){v, len, (int)sf->valuedouble, 0};
    cJSON_Delete(o);
  }
  free(line);
  if (share) {
    if (batch % 2) batch++;  // a batch must not split a pair
    for (int i = 1; i < n; i += 2) {
      int k = 0;
      while (k < seqs[i].n && k < seqs[i - 1].n && seqs[i].ids[k] == seqs[i - 1].ids[k]) k++;
      seqs[i].shared_prefix = k;
    }
  }
  size_t tot = 0;
  for (int i = 0; i < n; i++) tot += (size_t)seqs[i].n;
  float *tok = malloc(sizeof(float) * (tot + 1));
  double *sum = malloc(sizeof(double) * (size_t)(n + 1));
  int *cnt = malloc(sizeof(int) * (size_t)(n + 1));
  if (timed && n > 0 && pc_model_forward(m, seqs, n < batch ? n : batch, 0, sum, cnt, tok, err, sizeof err) != 0) {
    fprintf(stderr, "model_logps: %s\n", err);
    rc = 1;
  }
  struct timespec t0, t1;
  double busy = 0;
  for (int b = 0; b < n && !rc; b += batch) {
    int nb = n - b < batch ? n - b : batch;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (pc_model_forward(m, seqs + b, nb, 0, sum + b, cnt + b, tok, err, sizeof err) != 0) {
      fprintf(stderr, "model_logps: %s\n", err);
      rc = 1;
      break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    busy += (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    size_t k = 0;
    for (int s = b; s < b + nb; s++) {
      printf("{\"logps\": %.17g, \"tokens\": %d, \"tok\": [", sum[s], cnt[s]);
      for (int i = 0; i < cnt[s]; i++) printf("%s%.9g", i ? ", " : "", tok[k++]);
      printf("]}\n");
    }
  }
  if (timed && !rc)
    fprintf(stderr, "{\"tokens\": %zu, \"seconds\": %.4f, \"tokens_per_s\": %.1f}\n", tot, busy, busy > 0 ? (double)tot / busy : 0);
  for (int i = 0; i < n; i++) free((void *)seqs[i].ids);
  free(seqs);
  free(tok);
  free(sum);
  free(cnt);
  pc_model_free(m);
  be->ops->destroy(be);
  return rc;
}
