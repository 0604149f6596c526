/* sdk/compare.c: did the fine-tune help? Per model version of one model, from the implicit signals:
 * the share of generations regenerated, edited, copied, accepted and abandoned (each generation counted
 * once per signal, however many events it had), the mean edit size, the mean rating, and the win rate in
 * side-by-side choices between the two versions compared; each with a 95% interval (Wilson for rates, a
 * percentile bootstrap with a fixed seed for means), and per metric the candidate-minus-baseline
 * difference with its interval (Newcombe's hybrid score interval for rates, the bootstrap for means;
 * simultaneous 95% across the eight comparisons) and a verdict in the metric's stated direction. Counting is done in SQL; only edit sizes and ratings (one
 * number per edited or rated generation) are held in memory, for the bootstrap. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define Z95 1.959963984540054   /* the 97.5% normal quantile */
/* The comparisons' intervals are simultaneous: 95% for all NCMP verdicts together (Bonferroni: each at
 * 1 - 0.05/NCMP, z = the 1 - 0.025/NCMP quantile). With eight plain 95% intervals, two identical versions
 * would get some "better" or "worse" in about a third of comparisons (1 - 0.95^8). */
#define NCMP 8
#define ZSIM 2.734369800900146  /* the 1 - 0.025/8 normal quantile */
#define BOOT 8000               /* bootstrap resamples: the 0.3125% tail of a comparison holds 25 of them */
#define SEED 0x5eed2026ULL

// ---- statistics ------------------------------------------------------------------------------------

/* Wilson score interval for k successes in n. */
static void wilson_z(uint64_t k, uint64_t n, double z, double *lo, double *hi) {
  if (!n) { *lo = 0; *hi = 1; return; }
  double p = (double)k / (double)n, z2 = z * z, d = 1 + z2 / (double)n;
  double c = (p + z2 / (2.0 * (double)n)) / d;
  double h = z * sqrt(p * (1 - p) / (double)n + z2 / (4.0 * (double)n * (double)n)) / d;
  *lo = k == 0 ? 0 : fmax(0, c - h);   /* exact at the ends (c - h there is 0 or 1 up to rounding) */
  *hi = k == n ? 1 : fmin(1, c + h);
}

static void wilson(uint64_t k, uint64_t n, double *lo, double *hi) { wilson_z(k, n, Z95, lo, hi); }

static void rate_difference(uint64_t k_base, uint64_t n_base, uint64_t k_cand, uint64_t n_cand, double z, double out[3]) {
  double pb = n_base ? (double)k_base / (double)n_base : 0, pc = n_cand ? (double)k_cand / (double)n_cand : 0;
  double lb, ub, lc, uc;
  wilson_z(k_base, n_base, z, &lb, &ub);
  wilson_z(k_cand, n_cand, z, &lc, &uc);
  double d = pc - pb;   /* Newcombe (1998), method 10 */
  out[0] = d;
  out[1] = d - sqrt((pc - lc) * (pc - lc) + (ub - pb) * (ub - pb));
  out[2] = d + sqrt((uc - pc) * (uc - pc) + (pb - lb) * (pb - lb));
}

int prefcap_rate_difference(uint64_t k_base, uint64_t n_base, uint64_t k_cand, uint64_t n_cand, int simultaneous, double out[3]) {
  if (!out || k_base > n_base || k_cand > n_cand) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_rate_difference: k > n or no output");
  rate_difference(k_base, n_base, k_cand, n_cand, simultaneous ? ZSIM : Z95, out);
  return PREFCAP_OK;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

typedef struct { double *v; size_t n, cap; } vec;
static bool vec_push(vec *a, double x) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 256;
    double *p = realloc(a->v, cap * sizeof *p);
    if (!p) return false;
    a->v = p; a->cap = cap;
  }
  a->v[a->n++] = x;
  return true;
}
static double mean(const vec *a) { double s = 0; for (size_t i = 0; i < a->n; i++) s += a->v[i]; return a->n ? s / (double)a->n : NAN; }
static double resample_mean(const vec *a, uint64_t *s) {
  double t = 0;
  for (size_t i = 0; i < a->n; i++) t += a->v[splitmix(s) % a->n];
  return t / (double)a->n;
}

/* Percentile bootstrap of a mean (b NULL; 95%) or of mean(a) - mean(b) (simultaneous, as above);
 * [lo, hi] NAN when a side is empty. */
static bool bootstrap(const vec *a, const vec *b, double *lo, double *hi) {
  double tail = b ? 0.025 / NCMP : 0.025;
  *lo = *hi = NAN;
  if (!a->n || (b && !b->n)) return true;
  double *m = malloc(BOOT * sizeof *m);
  if (!m) return false;
  uint64_t s = SEED;
  for (int i = 0; i < BOOT; i++) m[i] = resample_mean(a, &s) - (b ? resample_mean(b, &s) : 0);
  qsort(m, BOOT, sizeof *m, cmp_double);
  *lo = m[(int)(tail * BOOT)];
  *hi = m[(int)((1 - tail) * BOOT) - 1];
  free(m);
  return true;
}

// ---- per version -----------------------------------------------------------------------------------

enum { R_REGEN, R_EDIT, R_COPY, R_ACCEPT, R_ABANDON, NRATES };
static const char *const rate_names[NRATES] = {"regenerate", "edit", "copy", "accept", "abandon"};
static const bool rate_lower_better[NRATES] = {true, true, false, false, true};

typedef struct {
  char *version;
  uint64_t n, k[NRATES];
  vec edit, rating;
  uint64_t wins, choices;   /* side-by-side choices against the other compared version */
} ver;

/* The characters an edit changed: the longer text's length less the common prefix and suffix (bytes of
 * UTF-8; a cheap, order-preserving stand-in for an edit distance, exact for one contiguous change). */
static double edit_size(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), p = 0, s = 0;
  while (p < la && p < lb && a[p] == b[p]) p++;
  while (s < la - p && s < lb - p && a[la - 1 - s] == b[lb - 1 - s]) s++;
  return (double)((la > lb ? la : lb) - p - s);
}

/* Versions are ordered by their first use over all time (not only in the range). That first use is
 * found once per version, from a materialized table of them: as a subquery per generation it scanned
 * the model's generations once per generation, which took `prefcap report` past ten minutes on a
 * million-event store (bench/RESULTS.md). */
static const char *const counts_sql =
    "WITH g AS (SELECT id, model_version AS v FROM generations WHERE model = ?1 AND (?2 IS NULL OR ts >= ?2) AND (?3 IS NULL OR ts < ?3)),"
    " first AS MATERIALIZED (SELECT model_version AS v, min(ts) AS t FROM generations WHERE model = ?1 GROUP BY model_version),"
    " agg AS MATERIALIZED (SELECT v, count(*) AS n,"
    " sum(EXISTS(SELECT 1 FROM events e WHERE e.gen_id = g.id AND e.type = 'regenerate') OR EXISTS(SELECT 1 FROM generations r WHERE r.regenerates = g.id)) AS k0,"
    " sum(EXISTS(SELECT 1 FROM events e WHERE e.gen_id = g.id AND e.type = 'edit')) AS k1,"
    " sum(EXISTS(SELECT 1 FROM events e WHERE e.gen_id = g.id AND e.type = 'copy')) AS k2,"
    " sum(EXISTS(SELECT 1 FROM events e WHERE e.gen_id = g.id AND e.type = 'accept')) AS k3,"
    " sum(EXISTS(SELECT 1 FROM events e WHERE e.gen_id = g.id AND e.type = 'abandon')) AS k4 FROM g GROUP BY v)"
    " SELECT ifnull(agg.v, ''), n, k0, k1, k2, k3, k4, (SELECT t FROM first WHERE first.v IS agg.v) FROM agg ORDER BY 8, 1";
/* each generation's latest edit and latest rating (one number each per generation) */
static const char *const values_sql =
    "SELECT ifnull(g.model_version, ''), g.completion,"
    " (SELECT text FROM events e WHERE e.gen_id = g.id AND e.type = 'edit' ORDER BY ts DESC, seq DESC LIMIT 1),"
    " (SELECT value FROM events e WHERE e.gen_id = g.id AND e.type = 'rating' ORDER BY ts DESC, seq DESC LIMIT 1)"
    " FROM generations g WHERE g.model = ?1 AND (?2 IS NULL OR g.ts >= ?2) AND (?3 IS NULL OR g.ts < ?3)"
    " AND EXISTS(SELECT 1 FROM events e WHERE e.gen_id = g.id AND e.type IN ('edit', 'rating'))";
static const char *const choices_sql =
    "SELECT ifnull(c.model_version, ''), ifnull(r.model_version, '') FROM events e JOIN generations c ON c.id = e.gen_id"
    " JOIN generations r ON r.id = e.other_id WHERE e.type = 'choice' AND c.model = ?1 AND r.model = ?1"
    " AND (?2 IS NULL OR c.ts >= ?2) AND (?3 IS NULL OR c.ts < ?3)";

static void bind_filter(sqlite3_stmt *st, const prefcap_compare_options_t *o) {
  sqlite3_bind_text(st, 1, o->model, -1, SQLITE_STATIC);
  if (o->since_ms) sqlite3_bind_int64(st, 2, o->since_ms);
  if (o->until_ms) sqlite3_bind_int64(st, 3, o->until_ms);
}

static ver *find(ver *v, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++) if (!strcmp(v[i].version, name)) return &v[i];
  return NULL;
}

static void put_num(prefcap__buf *b, double x) {
  if (isnan(x)) prefcap__buf_puts(b, "null"); else prefcap__buf_printf(b, "%.6g", x);
}
static void put_est(prefcap__buf *b, const char *name, double v, double lo, double hi, uint64_t n, bool first) {
  prefcap__buf_printf(b, "%s\"%s\":{\"value\":", first ? "" : ",", name);
  put_num(b, v);
  prefcap__buf_puts(b, ",\"ci\":[");
  put_num(b, lo); prefcap__buf_puts(b, ","); put_num(b, hi);
  prefcap__buf_printf(b, "],\"n\":%llu}", (unsigned long long)n);
}

static const char *verdict(double lo, double hi, bool lower_better) {
  if (isnan(lo) || isnan(hi) || (lo <= 0 && hi >= 0)) return "no evidence";
  bool up = lo > 0;
  return up != lower_better ? "better" : "worse";
}

static void put_cmp(prefcap__buf *b, const char *metric, const char *base, const char *cand, double d, double lo, double hi,
                    bool lower_better, bool *first) {
  prefcap__buf_printf(b, "%s{\"metric\":\"%s\",\"baseline\":", *first ? "" : ",", metric);
  prefcap__buf_json_str(b, base);
  prefcap__buf_puts(b, ",\"candidate\":");
  prefcap__buf_json_str(b, cand);
  prefcap__buf_puts(b, ",\"difference\":");
  put_num(b, d);
  prefcap__buf_puts(b, ",\"ci\":[");
  put_num(b, lo); prefcap__buf_puts(b, ","); put_num(b, hi);
  prefcap__buf_printf(b, "],\"better_if\":\"%s\",\"verdict\":\"%s\"}", lower_better ? "lower" : "higher", verdict(lo, hi, lower_better));
  *first = false;
}

static int compare_locked(prefcap_t *pc, const prefcap_compare_options_t *o, prefcap__buf *b, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  ver *v = NULL;
  size_t nv = 0;
  int rc = PREFCAP_OK;
  sqlite3_stmt *st = NULL;
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);   /* one view for the three queries */
  if (sqlite3_prepare_v2(db, counts_sql, -1, &st, NULL)) goto sqlfail;
  bind_filter(st, o);
  while (sqlite3_step(st) == SQLITE_ROW) {
    ver *nvp = realloc(v, (nv + 1) * sizeof *v);
    if (!nvp) { rc = PREFCAP_ENOMEM; break; }
    v = nvp;
    memset(&v[nv], 0, sizeof *v);
    v[nv].version = strdup((const char *)sqlite3_column_text(st, 0));
    v[nv].n = (uint64_t)sqlite3_column_int64(st, 1);
    for (int r = 0; r < NRATES; r++) v[nv].k[r] = (uint64_t)sqlite3_column_int64(st, 2 + r);
    if (!v[nv++].version) { rc = PREFCAP_ENOMEM; break; }
  }
  sqlite3_finalize(st);
  st = NULL;
  const char *base = o->baseline, *cand = o->candidate;
  if (!rc && nv >= 2 && !base && !cand) { base = v[nv - 2].version; cand = v[nv - 1].version; }   /* the two latest, by first use */
  if (!rc && (base || cand) && (!base || !cand || !find(v, nv, base) || !find(v, nv, cand))) {
    snprintf(err, errlen, "compare: give both --baseline and --candidate, versions of model '%.200s' with generations in the range", o->model);
    rc = PREFCAP_EINVAL;
  }
  if (!rc) {
    if (sqlite3_prepare_v2(db, values_sql, -1, &st, NULL)) goto sqlfail;
    bind_filter(st, o);
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
      ver *x = find(v, nv, (const char *)sqlite3_column_text(st, 0));
      if (!x) continue;
      const char *edit = (const char *)sqlite3_column_text(st, 2);
      if (edit && !vec_push(&x->edit, edit_size((const char *)sqlite3_column_text(st, 1), edit))) rc = PREFCAP_ENOMEM;
      if (sqlite3_column_type(st, 3) != SQLITE_NULL && !vec_push(&x->rating, (double)sqlite3_column_int(st, 3))) rc = PREFCAP_ENOMEM;
    }
    sqlite3_finalize(st);
    st = NULL;
  }
  if (!rc && base) {
    if (sqlite3_prepare_v2(db, choices_sql, -1, &st, NULL)) goto sqlfail;
    bind_filter(st, o);
    ver *vb = find(v, nv, base), *vc = find(v, nv, cand);
    while (sqlite3_step(st) == SQLITE_ROW) {
      const char *ch = (const char *)sqlite3_column_text(st, 0), *rj = (const char *)sqlite3_column_text(st, 1);
      bool bc = !strcmp(ch, base) && !strcmp(rj, cand), cb = !strcmp(ch, cand) && !strcmp(rj, base);
      if (!bc && !cb) continue;
      vb->choices++; vc->choices++;
      (bc ? vb : vc)->wins++;
    }
    sqlite3_finalize(st);
    st = NULL;
  }
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc) goto out;

  prefcap__buf_puts(b, "{\"model\":");
  prefcap__buf_json_str(b, o->model);
  prefcap__buf_puts(b, ",\"versions\":[");
  for (size_t i = 0; i < nv && !rc; i++) {
    ver *x = &v[i];
    double lo, hi;
    prefcap__buf_printf(b, "%s{\"version\":", i ? "," : "");
    prefcap__buf_json_str(b, x->version);
    prefcap__buf_printf(b, ",\"generations\":%llu,\"rates\":{", (unsigned long long)x->n);
    for (int r = 0; r < NRATES; r++) {
      wilson(x->k[r], x->n, &lo, &hi);
      put_est(b, rate_names[r], x->n ? (double)x->k[r] / (double)x->n : NAN, lo, hi, x->n, r == 0);
    }
    prefcap__buf_puts(b, "}");
    if (!bootstrap(&x->edit, NULL, &lo, &hi)) rc = PREFCAP_ENOMEM;
    put_est(b, "mean_edit_size", mean(&x->edit), lo, hi, x->edit.n, false);
    if (!bootstrap(&x->rating, NULL, &lo, &hi)) rc = PREFCAP_ENOMEM;
    put_est(b, "mean_rating", mean(&x->rating), lo, hi, x->rating.n, false);
    if (base && (x == find(v, nv, base) || x == find(v, nv, cand))) {
      wilson(x->wins, x->choices, &lo, &hi);
      put_est(b, "win_rate", x->choices ? (double)x->wins / (double)x->choices : NAN, lo, hi, x->choices, false);
    }
    prefcap__buf_puts(b, "}");
  }
  prefcap__buf_puts(b, "],\"comparisons\":[");
  if (base && !rc) {
    ver *vb = find(v, nv, base), *vc = find(v, nv, cand);
    bool first = true;
    double d[3], lo, hi;
    for (int r = 0; r < NRATES; r++) {
      rate_difference(vb->k[r], vb->n, vc->k[r], vc->n, ZSIM, d);
      put_cmp(b, rate_names[r], base, cand, d[0], d[1], d[2], rate_lower_better[r], &first);
    }
    if (!bootstrap(&vc->edit, &vb->edit, &lo, &hi)) rc = PREFCAP_ENOMEM;
    put_cmp(b, "mean_edit_size", base, cand, mean(&vc->edit) - mean(&vb->edit), lo, hi, true, &first);
    if (!bootstrap(&vc->rating, &vb->rating, &lo, &hi)) rc = PREFCAP_ENOMEM;
    put_cmp(b, "mean_rating", base, cand, mean(&vc->rating) - mean(&vb->rating), lo, hi, false, &first);
    /* the candidate's share of the choices between the two, against an even split */
    wilson_z(vc->wins, vc->choices, ZSIM, &lo, &hi);
    double w = vc->choices ? (double)vc->wins / (double)vc->choices : NAN;
    put_cmp(b, "win_rate", base, cand, w - 0.5, vc->choices ? lo - 0.5 : NAN, vc->choices ? hi - 0.5 : NAN, false, &first);
  }
  prefcap__buf_puts(b, "]}");
  if (b->oom) rc = PREFCAP_ENOMEM;
  goto out;
sqlfail:
  rc = prefcap__sqlite_code(sqlite3_errcode(db));
  snprintf(err, errlen, "compare: %.400s", sqlite3_errmsg(db));
  if (!rc) rc = PREFCAP_EIO;
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
out:
  for (size_t i = 0; i < nv; i++) { free(v[i].version); free(v[i].edit.v); free(v[i].rating.v); }
  free(v);
  return rc;
}

int prefcap_compare(prefcap_t *pc, const prefcap_compare_options_t *o, char **json) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_compare: no handle");
  if (!o || !json || !o->model) return prefcap__fail(pc, PREFCAP_EINVAL, "prefcap_compare: no options, no model or no output");
  if (o->size < sizeof *o) return prefcap__fail(pc, PREFCAP_EINVAL, "prefcap_compare_options_t.size is %zu, less than %zu: use PREFCAP_COMPARE_OPTIONS_INIT", o->size, sizeof *o);
  *json = NULL;
  char err[600] = "";
  prefcap__buf b = {0};
  pthread_mutex_lock(&pc->db_mu);
  int rc = compare_locked(pc, o, &b, err, sizeof err);
  pthread_mutex_unlock(&pc->db_mu);
  if (rc) { free(b.p); return prefcap__fail(pc, rc, "%s", err[0] ? err : "compare: out of memory"); }
  *json = b.p;
  return PREFCAP_OK;
}
