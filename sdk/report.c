/* sdk/report.c: `prefcap report`: one self-contained HTML page about a store (inline SVG, no scripts, no
 * network): events per day by signal, pairs and labels by signal and by source, the AI-judged fraction
 * against the last export's cap, the per-version comparison of the most used model with intervals, the
 * prompts most often regenerated, exports over time with their record counts, and erasures (counts
 * only). Every chart is aggregated in SQL and bounded in rows (the last 6 days, the top 10 prompts, the
 * last 30 exports), so the page reads the same at one event and at a million. */
#include "internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXBARS 60

typedef struct { char label[160]; double v, lo, hi; bool ci; } bar_t;
typedef struct { bar_t b[MAXBARS]; int n; } bars_t;

static void esc(prefcap__buf *b, const char *s) {   /* text for HTML and SVG */
  for (; s && *s; s++) {
    switch (*s) {
      case '<': prefcap__buf_puts(b, "&lt;"); break;
      case '>': prefcap__buf_puts(b, "&gt;"); break;
      case '&': prefcap__buf_puts(b, "&amp;"); break;
      case '"': prefcap__buf_puts(b, "&quot;"); break;
      default: prefcap__buf_putn(b, s, 1);
    }
  }
}

/* Copies at most max bytes of s, cut at a UTF-8 boundary, with an ellipsis when cut. */
static void clip(char *out, size_t len, const char *s, size_t max) {
  size_t n = strlen(s ? s : "");
  if (n <= max && n < len) { snprintf(out, len, "%s", s ? s : ""); return; }
  size_t k = max < len - 4 ? max : len - 4;
  while (k && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
  memcpy(out, s, k);
  memcpy(out + k, "\xe2\x80\xa6", 4);
}

/* A horizontal bar chart, one row per bar, with optional interval whiskers; an empty one says so. */
static void chart(prefcap__buf *b, const char *id, const char *title, const char *note, const bars_t *bs, const char *fmt) {
  prefcap__buf_printf(b, "<section class=\"chart\" id=\"%s\"><h2>", id);
  esc(b, title);
  prefcap__buf_puts(b, "</h2>");
  if (note) { prefcap__buf_puts(b, "<p class=\"note\">"); esc(b, note); prefcap__buf_puts(b, "</p>"); }
  double max = 0;
  for (int i = 0; i < bs->n; i++) max = fmax(max, bs->b[i].ci ? fmax(bs->b[i].hi, bs->b[i].v) : bs->b[i].v);
  if (max <= 0) max = 1;
  int h = 22 * (bs->n ? bs->n : 1) + 10, x0 = 330, w = 420;
  prefcap__buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"860\" height=\"%d\" role=\"img\">", h);
  if (!bs->n) prefcap__buf_puts(b, "<text x=\"10\" y=\"20\" class=\"empty\">nothing yet</text>");
  for (int i = 0; i < bs->n; i++) {
    const bar_t *r = &bs->b[i];
    double y = 5 + 22 * i, bw = r->v > 0 ? w * r->v / max : 0;
    prefcap__buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">", x0 - 6, y + 14);
    esc(b, r->label);
    prefcap__buf_printf(b, "</text><rect class=\"bar\" x=\"%d\" y=\"%.1f\" width=\"%.2f\" height=\"16\"/>", x0, y, bw);
    if (r->ci && !isnan(r->lo) && !isnan(r->hi))
      prefcap__buf_printf(b, "<line class=\"ci\" x1=\"%.2f\" x2=\"%.2f\" y1=\"%.1f\" y2=\"%.1f\"/>", x0 + w * r->lo / max,
                          x0 + w * r->hi / max, y + 8, y + 8);
    char num[64];
    snprintf(num, sizeof num, fmt, r->v);
    prefcap__buf_printf(b, "<text x=\"%.2f\" y=\"%.1f\">%s", x0 + fmax(bw, r->ci ? w * r->hi / max : 0) + 6, y + 14, num);
    if (r->ci && !isnan(r->lo)) { prefcap__buf_puts(b, " ["); snprintf(num, sizeof num, fmt, r->lo); prefcap__buf_puts(b, num);
      prefcap__buf_puts(b, ", "); snprintf(num, sizeof num, fmt, r->hi); prefcap__buf_puts(b, num); prefcap__buf_puts(b, "]"); }
    prefcap__buf_puts(b, "</text>");
  }
  prefcap__buf_puts(b, "</svg></section>\n");
}

/* Bars from a query of (label, value) rows. */
static int query_bars(sqlite3 *db, const char *sql, bars_t *bs) {
  sqlite3_stmt *st;
  bs->n = 0;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && bs->n < MAXBARS) {
    bar_t *r = &bs->b[bs->n++];
    clip(r->label, sizeof r->label, (const char *)sqlite3_column_text(st, 0), 48);   /* fits the 330 px left of the bars */
    r->v = sqlite3_column_double(st, 1);
    r->ci = false;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static const char *const style =
    "body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin:18px 0 4px}"
    ".note{color:#666;margin:0 0 4px}svg text{font:12px system-ui,sans-serif;fill:#222}.bar{fill:#4a7bd0}"
    ".ci{stroke:#c33;stroke-width:2}.empty{fill:#888}";

static int build(prefcap_t *pc, prefcap__buf *b, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  bars_t bs;
  char t[40];
  prefcap__format_time(prefcap__now_ms(), t, sizeof t);
  prefcap__buf_printf(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>prefcap report</title>"
                         "<style>%s</style></head><body><h1>prefcap report</h1><p class=\"note\">", style);
  esc(b, pc->o.path);
  prefcap__buf_printf(b, ", %s</p>\n", t);
  struct { const char *id, *title, *note, *sql, *fmt; } simple[] = {
      {"events-per-day", "Events per day by signal", "the last 6 days with generations",
       "SELECT day || '  ' || kind, n FROM (SELECT day, kind, sum(n) AS n FROM ("
       " SELECT strftime('%Y-%m-%d', ts / 1000, 'unixepoch') AS day, 'generation' AS kind, count(*) AS n FROM generations GROUP BY 1"
       " UNION ALL SELECT strftime('%Y-%m-%d', ts / 1000, 'unixepoch'), type, count(*) FROM events GROUP BY 1, 2)"
       " WHERE day IN (SELECT DISTINCT strftime('%Y-%m-%d', ts / 1000, 'unixepoch') AS d FROM generations ORDER BY d DESC LIMIT 6)"
       " GROUP BY day, kind ORDER BY day DESC, kind LIMIT 60)", "%.0f"},
      {"pairs-by-signal", "Pairs and labels by signal", NULL,
       "SELECT 'pair: ' || signal, count(*) FROM pairs GROUP BY signal UNION ALL"
       " SELECT 'label: ' || signal || CASE WHEN desirable THEN ' +' ELSE ' -' END, count(*) FROM labels GROUP BY signal, desirable ORDER BY 1", "%.0f"},
      {"pairs-by-source", "Pairs and labels by label source", NULL,
       "SELECT kind || ': ' || src, n FROM (SELECT 'pairs' AS kind, source AS src, count(*) AS n FROM pairs GROUP BY source"
       " UNION ALL SELECT 'labels', source, count(*) FROM labels GROUP BY source) ORDER BY n DESC LIMIT 20", "%.0f"},
      {"top-regenerated", "Prompts most often regenerated", "top 10",
       "SELECT coalesce(g.prompt, json_extract(g.messages, '$[#-1].content')), count(*) FROM generations g WHERE g.id IN"
       " (SELECT gen_id FROM events WHERE type = 'regenerate' UNION SELECT regenerates FROM generations WHERE regenerates IS NOT NULL)"
       " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10", "%.0f"},
      {"exports", "Exports over time (records)", "the last 30 published",
       "SELECT * FROM (SELECT strftime('%Y-%m-%d %H:%M', published / 1000, 'unixepoch') || ' ' || format || ifnull(' ' || name, ''), records"
       " FROM exports WHERE status = 'published' ORDER BY published DESC LIMIT 30) ORDER BY 1", "%.0f"},
      {"erasures", "Erasures per day (counts only)", NULL,
       "SELECT strftime('%Y-%m-%d', ts / 1000, 'unixepoch'), count(*) FROM tombstones GROUP BY 1 ORDER BY 1 DESC LIMIT 30", "%.0f"},
  };
  int rc = SQLITE_OK;
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  for (size_t i = 0; i < sizeof simple / sizeof *simple && !rc; i++) {
    if ((rc = query_bars(db, simple[i].sql, &bs))) break;
    chart(b, simple[i].id, simple[i].title, simple[i].note, &bs, simple[i].fmt);
    if (i == 2) {   /* the AI-judged fraction beside the cap the last export used */
      sqlite3_stmt *st;
      double frac = 0, cap = NAN;
      if (!(rc = sqlite3_prepare_v2(db, "SELECT avg(source LIKE 'ai:%') FROM pairs", -1, &st, NULL))) {
        if (sqlite3_step(st) == SQLITE_ROW) frac = sqlite3_column_double(st, 0);
        sqlite3_finalize(st);
      }
      if (!rc && !(rc = sqlite3_prepare_v2(db, "SELECT json_extract(filters, '$.max_ai_fraction') FROM exports WHERE status = 'published'"
                                               " ORDER BY published DESC LIMIT 1", -1, &st, NULL))) {
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) cap = sqlite3_column_double(st, 0);
        sqlite3_finalize(st);
      }
      bs.n = 0;
      bs.b[bs.n++] = (bar_t){"AI-judged fraction of pairs", frac, 0, 0, false};
      if (!isnan(cap)) bs.b[bs.n++] = (bar_t){"cap (last export)", cap, 0, 0, false};
      chart(b, "ai-fraction", "AI-judged fraction against the cap", isnan(cap) ? "no export yet: no cap" : NULL, &bs, "%.3f");
    }
  }
  /* the per-version comparison of the model with the most generations */
  char model[256] = "";
  if (!rc) {
    sqlite3_stmt *st;
    if (!(rc = sqlite3_prepare_v2(db, "SELECT model FROM generations WHERE model IS NOT NULL GROUP BY model ORDER BY count(*) DESC LIMIT 1", -1, &st, NULL))) {
      if (sqlite3_step(st) == SQLITE_ROW) snprintf(model, sizeof model, "%s", (const char *)sqlite3_column_text(st, 0));
      sqlite3_finalize(st);
    }
  }
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc) { snprintf(err, errlen, "report: %.400s", sqlite3_errmsg(db)); return prefcap__sqlite_code(rc); }
  bs.n = 0;
  if (model[0]) {
    prefcap_compare_options_t o = PREFCAP_COMPARE_OPTIONS_INIT;
    o.model = model;
    char *json = NULL;
    pthread_mutex_unlock(&pc->db_mu);   /* compare takes the lock itself */
    int crc = prefcap_compare(pc, &o, &json);
    pthread_mutex_lock(&pc->db_mu);
    cJSON *r = crc ? NULL : cJSON_Parse(json);
    prefcap_free(json);
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(r, "versions")) {
      const cJSON *rates = cJSON_GetObjectItem(v, "rates"), *m;
      cJSON_ArrayForEach(m, rates) {
        if (bs.n == MAXBARS) break;
        const cJSON *val = cJSON_GetObjectItem(m, "value"), *ci = cJSON_GetObjectItem(m, "ci");
        bar_t *x = &bs.b[bs.n++];
        snprintf(x->label, sizeof x->label, "%.60s %s", cJSON_GetObjectItem(v, "version")->valuestring, m->string);
        x->v = cJSON_IsNumber(val) ? val->valuedouble : 0;
        x->lo = cJSON_GetArrayItem(ci, 0)->valuedouble;
        x->hi = cJSON_GetArrayItem(ci, 1)->valuedouble;
        x->ci = true;
      }
    }
    cJSON_Delete(r);
  }
  char note[400];
  snprintf(note, sizeof note, "model %.200s: rate of generations per signal, by version, with 95%% Wilson intervals (prefcap compare)", model[0] ? model : "(none)");
  chart(b, "versions", "Per-version comparison", note, &bs, "%.3f");
  prefcap__buf_puts(b, "</body></html>\n");
  return b->oom ? PREFCAP_ENOMEM : PREFCAP_OK;
}

int prefcap_report(prefcap_t *pc, const char *path) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_report: no handle");
  if (!path) return prefcap__fail(pc, PREFCAP_EINVAL, "prefcap_report: no path");
  char err[600] = "";
  prefcap__buf b = {0};
  pthread_mutex_lock(&pc->db_mu);
  int rc = build(pc, &b, err, sizeof err);
  pthread_mutex_unlock(&pc->db_mu);
  if (rc) { free(b.p); return prefcap__fail(pc, rc, "%s", err[0] ? err : "report: out of memory"); }
  /* a complete page or none: a temporary file, fsynced, renamed into place */
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) { free(b.p); return prefcap__fail(pc, PREFCAP_EIO, "cannot create %s: %s", tmp, strerror(errno)); }
  size_t off = 0;
  while (off < b.len) {
    ssize_t w = write(fd, b.p + off, b.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) break;
    off += (size_t)w;
  }
  bool ok = off == b.len && !fsync(fd);
  close(fd);
  free(b.p);
  if (!ok || rename(tmp, path)) { int e = errno; unlink(tmp); return prefcap__fail(pc, PREFCAP_EIO, "cannot write %s: %s", path, strerror(e)); }
  return PREFCAP_OK;
}
