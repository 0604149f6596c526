/* trainer/train/reference.c: see reference.h. */
#include "train/reference.h"
#include "util/err.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void pc_pair_seqs(const pc_pair *p, pc_model_seq *s) {
  int k = 0;
  while (k < p->chosen.n && k < p->rejected.n && p->chosen.ids[k] == p->rejected.ids[k]) k++;
  s[0] = (pc_model_seq){p->chosen.ids, p->chosen.n, p->chosen.prompt_len, 0};
  s[1] = (pc_model_seq){p->rejected.ids, p->rejected.n, p->rejected.prompt_len, k};
}

void pc_ref_write_line(FILE *f, double chosen, double rejected, int chosen_tokens, int rejected_tokens, int line) {
  fprintf(f, "{\"chosen_logps\": %.17g, \"rejected_logps\": %.17g, \"chosen_tokens\": %d, \"rejected_tokens\": %d, "
          "\"line\": %d}\n", chosen, rejected, chosen_tokens, rejected_tokens, line);
}

int pc_ref_compute(const char *model_dir, pc_backend *be, const pc_pair *const *pairs, size_t n, int batch,
                   double *out, FILE *progress, long *bad, char *err, size_t errlen) {
  if (bad) *bad = -1;
  pc_model *base = NULL;
  if (pc_model_load(model_dir, NULL, be, &base, err, errlen) != 0) return -1;  // frozen, no adapter
  pc_model_seq *seqs = malloc(sizeof *seqs * 2 * (size_t)batch);
  int *cnts = malloc(sizeof *cnts * 2 * (size_t)batch);
  pc_progress *pg = progress ? pc_progress_new(progress, "reference", "pairs", "tok", n) : NULL;
  double tokens = 0;
  int rc = -1;
  if (!seqs || !cnts) { pc_seterr(err, errlen, "out of memory"); goto done; }
  for (size_t b = 0; b < n; b += (size_t)batch) {
    int nb = n - b < (size_t)batch ? (int)(n - b) : batch;
    for (int i = 0; i < nb; i++) {
      pc_pair_seqs(pairs[b + (size_t)i], &seqs[2 * i]);
      tokens += pairs[b + (size_t)i]->chosen.n + pairs[b + (size_t)i]->rejected.n;
    }
    if (pc_model_forward(base, seqs, 2 * nb, 0, out + 2 * b, cnts, NULL, err, errlen) != 0) {
      if (bad) *bad = (long)b;
      goto done;
    }
    pc_progress_update(pg, b + (size_t)nb, tokens, NULL);
  }
  pc_progress_end(pg, n, tokens, NULL);
  pg = NULL;
  rc = 0;
done:
  pc_progress_free(pg);
  free(seqs);
  free(cnts);
  pc_model_free(base);
  return rc;
}

int pc_ref_read(const char *path, const char *data_path, const pc_pair *const *pairs, size_t n, double *out, char *err,
                size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) { pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return -1; }
  int maxline = 0;
  for (size_t i = 0; i < n; i++) maxline = pairs[i]->line > maxline ? pairs[i]->line : maxline;
  double *byline = malloc(sizeof(double) * 2 * (size_t)(maxline + 1));
  char *have = calloc((size_t)maxline + 1, 1);
  char *buf = malloc(1 << 16);
  int rc = -1, ln = 0;
  if (!byline || !have || !buf) { pc_seterr(err, errlen, "out of memory"); goto done; }
  while (fgets(buf, 1 << 16, f)) {
    ln++;
    cJSON *j = cJSON_Parse(buf);
    cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "chosen_logps"), *r = cJSON_GetObjectItemCaseSensitive(j, "rejected_logps"),
          *l = cJSON_GetObjectItemCaseSensitive(j, "line");
    if (!cJSON_IsNumber(c) || !cJSON_IsNumber(r) || !cJSON_IsNumber(l)) {
      pc_seterr(err, errlen, "%s:%d: expected {\"chosen_logps\", \"rejected_logps\", \"line\"} as `prefcap-dpo score` "
                "writes", path, ln);
      cJSON_Delete(j);
      goto done;
    }
    int k = l->valueint;
    if (k >= 0 && k <= maxline) {
      byline[2 * k] = c->valuedouble;
      byline[2 * k + 1] = r->valuedouble;
      have[k] = 1;
    }
    cJSON_Delete(j);
  }
  for (size_t i = 0; i < n; i++) {
    int k = pairs[i]->line;
    if (!have[k]) {
      pc_seterr(err, errlen, "%s has no reference log-probs for %s line %d (score the same data file)", path, data_path,
                k);
      goto done;
    }
    out[2 * i] = byline[2 * k];
    out[2 * i + 1] = byline[2 * k + 1];
  }
  rc = 0;
done:
  fclose(f);
  free(byline);
  free(have);
  free(buf);
  return rc;
}
