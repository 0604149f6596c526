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

/* Forward passes over the sequences idx[0..m) (whole groups, in order), batch sequences at a time
 * (a group is never split), into sum/cnt at the sequences' own indices. */
static int compute(const pc_ref_ctx *c, pc_model *base, const pc_model_seq *seqs, const size_t *idx, size_t m,
                   double *sum, int *cnt, long *bad, char *err, size_t errlen) {
  size_t cap = (size_t)c->batch + 1;
  pc_model_seq *bs = malloc(sizeof *bs * cap);
  double *bsum = malloc(sizeof *bsum * cap);
  int *bcnt = malloc(sizeof *bcnt * cap);
  pc_progress *pg = c->progress ? pc_progress_new(c->progress, "reference", "sequences", "tok", m) : NULL;
  double tokens = 0;
  int rc = -1;
  if (!bs || !bsum || !bcnt) { pc_seterr(err, errlen, "out of memory"); goto done; }
  for (size_t b = 0, e; b < m; b = e) {
    // a batch ends before a sequence that would not fit unless it shares the previous one's prefix
    for (e = b; e < m && (e - b < (size_t)c->batch || (seqs[idx[e]].shared_prefix > 0 && e > b)); e++) {
      bs[e - b] = seqs[idx[e]];
      tokens += seqs[idx[e]].n;
    }
    if (pc_model_forward(base, bs, (int)(e - b), 0, bsum, bcnt, NULL, err, errlen) != 0) {
      if (bad) *bad = (long)idx[b];
      goto done;
    }
    for (size_t k = b; k < e; k++) {
      sum[idx[k]] = bsum[k - b];
      if (cnt) cnt[idx[k]] = bcnt[k - b];
    }
    pc_progress_update(pg, e, tokens, NULL);
  }
  pc_progress_end(pg, m, tokens, NULL);
  pg = NULL;
  rc = 0;
done:
  pc_progress_free(pg);
  free(bs);
  free(bsum);
  free(bcnt);
  return rc;
}

int pc_ref_seqs(pc_ref_ctx *c, const pc_model_seq *seqs, size_t n, double *sum, int *cnt, long *bad, char *err,
                size_t errlen) {
  if (bad) *bad = -1;
  char *hit = calloc(n + 1, 1);
  size_t *idx = malloc(sizeof *idx * (n + 1));
  int *counts = cnt ? cnt : malloc(sizeof *counts * (n + 1));
  pc_model *base = NULL;
  int rc = -1;
  if (!hit || !idx || !counts) { pc_seterr(err, errlen, "out of memory"); goto done; }
  if (c->cache) pc_refcache_get(c->cache, seqs, n, sum, counts, hit);
  // the missing sequences, by whole groups: a group is a sequence and those that share its prefix
  size_t m = 0;
  for (size_t g = 0, e; g < n; g = e) {
    int miss = 0;
    for (e = g; e < n && (e == g || seqs[e].shared_prefix > 0); e++) miss |= !hit[e];
    for (size_t k = g; miss && k < e; k++) idx[m++] = k;
  }
  if (m) {
    if (pc_model_load(c->model_dir, NULL, c->be, &base, err, errlen) != 0) goto done;  // frozen, no adapter
    if (compute(c, base, seqs, idx, m, sum, counts, bad, err, errlen) != 0) goto done;
    c->computed += m;
    // only the missing are stored: a hit keeps the value every run before used
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
      if (!hit[idx[i]]) idx[k++] = idx[i];
    for (size_t i = 0; c->cache && i < k; i++)
      if (pc_refcache_put(c->cache, &seqs[idx[i]], 1, &sum[idx[i]], &counts[idx[i]]) != 0) break;
  }
  rc = 0;
done:
  pc_model_free(base);
  free(hit);
  free(idx);
  if (counts != cnt) free(counts);
  return rc;
}

// ---- the cache's glue ------------------------------------------------------------------------------

int pc_ref_cache_default_dir(char *buf, size_t n) {
  const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
  int w;
  if (x && x[0] == '/') w = snprintf(buf, n, "%s/prefcap", x);  // the spec: a relative value is ignored
  else if (h && h[0]) w = snprintf(buf, n, "%s/.cache/prefcap", h);
  else return -1;
  return w > 0 && (size_t)w < n ? 0 : -1;
}

/* The cache under dir for the model in model_dir, its data tokenized with dopt, computed on be. */
static pc_refcache *cache_open(const char *dir, const char *model_dir, const pc_data_opts *dopt, pc_backend *be,
                               FILE *log) {
  char tokz[256], num[64];
  snprintf(tokz, sizeof tokz, "max_length=%d truncation=%s chat_template=%s", dopt->max_length,
           dopt->truncation == PC_TRUNC_KEEP_END ? "keep_end" : "keep_start",
           dopt->chat_template ? dopt->chat_template : "(auto)");
  // The numbers a backend gives: the CPU's are fp32; CUDA's are bf16 unless PREFCAP_CUDA_FP32=1, the
  // switch pc_backend_new reads (backend_cuda.h)
  const char *fp32 = getenv("PREFCAP_CUDA_FP32");
  snprintf(num, sizeof num, "%s %s", be->ops->name,
           !strcmp(be->ops->name, "cpu") || (fp32 && !strcmp(fp32, "1")) ? "fp32" : "bf16");
  pc_refcache_ident id = {model_dir, NULL, tokz, num};
  return pc_refcache_open(dir, &id, log);
}

static cJSON *cache_json(const pc_refcache *c, size_t computed, const char *why_off) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddBoolToObject(j, "enabled", c != NULL);
  if (!c) {
    cJSON_AddStringToObject(j, "why", why_off);
    return j;
  }
  const pc_refcache_stats *s = pc_refcache_get_stats(c);
  cJSON_AddStringToObject(j, "dir", pc_refcache_path(c));
  cJSON_AddStringToObject(j, "model_key", pc_refcache_model_key(c));
  cJSON_AddNumberToObject(j, "from_cache", (double)s->hits);
  cJSON_AddNumberToObject(j, "computed", (double)computed);
  cJSON_AddNumberToObject(j, "damaged", (double)s->damaged);
  cJSON_AddNumberToObject(j, "stored", (double)s->stored);
  cJSON_AddBoolToObject(j, "write_failed", s->write_failed);
  return j;
}

int pc_ref_run(const char *cache_dir, const pc_data_opts *dopt, pc_ref_ctx *c, const pc_model_seq *seqs, size_t n,
               double *sum, long *bad, cJSON **info, char *err, size_t errlen) {
  if (bad) *bad = -1;
  c->cache = n && cache_dir ? cache_open(cache_dir, c->model_dir, dopt, c->be, c->progress) : NULL;
  int rc = n ? pc_ref_seqs(c, seqs, n, sum, NULL, bad, err, errlen) : 0;
  if (rc == 0 && c->cache) {
    pc_refcache_commit(c->cache, c->progress);
    const pc_refcache_stats *st = pc_refcache_get_stats(c->cache);
    if (c->progress)
      fprintf(c->progress, "reference log-probs: %zu of %zu sequences from the cache, %zu computed (%s)\n", st->hits,
              st->hits + st->misses, c->computed, pc_refcache_path(c->cache));
  }
  if (info) *info = cache_json(c->cache, c->computed, !n ? "nothing to compute" : !cache_dir ? "off" : "cannot be used (warned)");
  pc_refcache_close(c->cache);
  c->cache = NULL;
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
