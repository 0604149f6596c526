/* sdk/query.c: the read API of include/prefcap.h ("reading the store"): pairs and labels with
 * filters, the store's totals and breakdowns, the integrity check, erasure and retention with their
 * counts, and the helpers (user hash, weight names, times) that the `prefcap` command needs, so that
 * the command, like any other program, reads the store through the public header only.
 *
 * Every read runs in one read transaction under the handle's lock, and every SQLite loop tells a
 * row from the end from an error: a damaged page is PREFCAP_ECORRUPT with SQLite's message, never
 * a short answer that looks complete. */
#include "forget.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- shared helpers ------------------------------------------------------------------------------

/* Copies a caller's growable struct into a zeroed full-size one: only the fields its size covers. */
static bool read_sized(const void *in, size_t full, void *out) {
  memset(out, 0, full);
  if (!in) return true;
  size_t n = *(const size_t *)in;
  if (n < sizeof(size_t)) return false;
  memcpy(out, in, n < full ? n : full);
  return true;
}

/* Writes a full-size result into a caller's struct, as far as the caller's size covers. */
static bool write_sized(void *out, const void *full, size_t full_size) {
  size_t n = *(const size_t *)out;
  if (n < sizeof(size_t)) return false;
  memcpy((char *)out + sizeof(size_t), (const char *)full + sizeof(size_t), (n < full_size ? n : full_size) - sizeof(size_t));
  return true;
}

/* A failed SQLite call as a code, with SQLite's message (and what was being done) in errmsg. */
static int sql_fail(prefcap_t *pc, sqlite3 *db, int rc, const char *what) {
  return prefcap__fail(pc, prefcap__sqlite_code(rc), "%s: %s (%s)", what, sqlite3_errmsg(db), pc->o.path);
}

/* Starts a read transaction under the handle's lock; on failure the lock is released. */
static int read_begin(prefcap_t *pc, sqlite3 **db, const char *what) {
  pthread_mutex_lock(&pc->db_mu);
  *db = prefcap__db(pc);
  int rc = sqlite3_exec(*db, "BEGIN", NULL, NULL, NULL);
  if (rc) {
    rc = sql_fail(pc, *db, rc, what);
    pthread_mutex_unlock(&pc->db_mu);
  }
  return rc;
}

static void read_end(prefcap_t *pc, sqlite3 *db) {
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  pthread_mutex_unlock(&pc->db_mu);
}

#define TXT(st, i) ((const char *)sqlite3_column_text((st), (i)))

// ---- pairs and labels ----------------------------------------------------------------------------

/* The filters, bound as ?1..?7 (see the WHERE clauses below). g is the generation filtered on. */
#define FILTER_SQL                                                                              \
  " WHERE (?1 IS NULL OR x.signal = ?1) AND (?2 IS NULL OR g.model = ?2) AND (?3 IS NULL OR g.user_id = ?3)" \
  " AND (?4 = 0 OR g.ts >= ?4) AND (?5 = 0 OR g.ts < ?5) AND x.weight >= ?6 ORDER BY x.id DESC LIMIT ?7"

static void bind_filters(sqlite3_stmt *st, const prefcap_query_t *q) {
  if (q->signal) sqlite3_bind_text(st, 1, q->signal, -1, SQLITE_STATIC);
  if (q->model) sqlite3_bind_text(st, 2, q->model, -1, SQLITE_STATIC);
  if (q->user_id) sqlite3_bind_text(st, 3, q->user_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, q->since_ms);
  sqlite3_bind_int64(st, 5, q->until_ms);
  sqlite3_bind_double(st, 6, q->min_weight);
  sqlite3_bind_int64(st, 7, q->limit && q->limit < (uint64_t)INT64_MAX ? (int64_t)q->limit : -1);
}

typedef enum { ROWS_PAIRS, ROWS_LABELS } rows_kind;

static int rows(prefcap_t *pc, rows_kind kind, const prefcap_query_t *query, prefcap_pair_fn pfn,
                prefcap_label_fn lfn, void *ud) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "%s: no handle", kind == ROWS_PAIRS ? "prefcap_pairs" : "prefcap_labels");
  prefcap_query_t q;
  if (!read_sized(query, sizeof q, &q)) return prefcap__fail(pc, PREFCAP_EINVAL, "query: size is not set (use PREFCAP_QUERY_INIT)");
  if (q.min_weight < 0 || q.min_weight > 1 || q.since_ms < 0 || q.until_ms < 0 || (q.until_ms && q.since_ms > q.until_ms))
    return prefcap__fail(pc, PREFCAP_EINVAL, "query: min_weight must be in [0,1] and since_ms <= until_ms");
  static const char pairs_sql[] =
      "SELECT x.id, x.signal, x.weight, x.source, x.flags, g.system, g.prompt, g.messages,"
      " coalesce(x.chosen_text, ch.completion), g.completion, x.chosen_id, x.rejected_id, g.model,"
      " g.model_version, g.user_id, g.session_id, x.created"
      " FROM pairs x JOIN generations g ON g.id = x.rejected_id LEFT JOIN generations ch ON ch.id = x.chosen_id" FILTER_SQL;
  static const char labels_sql[] =
      "SELECT x.id, x.gen_id, x.desirable, x.signal, x.weight, x.source, g.system, g.prompt, g.messages,"
      " g.completion, g.model, g.model_version, g.user_id, g.session_id, x.created"
      " FROM labels x JOIN generations g ON g.id = x.gen_id" FILTER_SQL;
  const char *what = kind == ROWS_PAIRS ? "reading pairs" : "reading labels";
  sqlite3 *db;
  int rc = read_begin(pc, &db, what);
  if (rc) return rc;
  sqlite3_stmt *st;
  rc = sqlite3_prepare_v2(db, kind == ROWS_PAIRS ? pairs_sql : labels_sql, -1, &st, NULL);
  if (rc) { rc = sql_fail(pc, db, rc, what); read_end(pc, db); return rc; }
  bind_filters(st, &q);
  bool stopped = false;
  while (!stopped && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (kind == ROWS_PAIRS) {
      prefcap_pair_t p = {.size = sizeof p, .id = sqlite3_column_int64(st, 0), .signal = TXT(st, 1),
                          .weight = sqlite3_column_double(st, 2), .source = TXT(st, 3), .flags = TXT(st, 4),
                          .system = TXT(st, 5), .prompt = TXT(st, 6), .messages_json = TXT(st, 7),
                          .chosen = TXT(st, 8), .rejected = TXT(st, 9), .chosen_id = TXT(st, 10),
                          .rejected_id = TXT(st, 11), .model = TXT(st, 12), .model_version = TXT(st, 13),
                          .user_id = TXT(st, 14), .session_id = TXT(st, 15), .created_ms = sqlite3_column_int64(st, 16)};
      if (p.messages_json) p.prompt = NULL;
      if (!p.flags) p.flags = "";
      stopped = pfn && pfn(&p, ud) != 0;
    } else {
      prefcap_label_t l = {.size = sizeof l, .id = sqlite3_column_int64(st, 0), .gen_id = TXT(st, 1),
                           .desirable = sqlite3_column_int(st, 2) != 0, .signal = TXT(st, 3),
                           .weight = sqlite3_column_double(st, 4), .source = TXT(st, 5), .system = TXT(st, 6),
                           .prompt = TXT(st, 7), .messages_json = TXT(st, 8), .completion = TXT(st, 9),
                           .model = TXT(st, 10), .model_version = TXT(st, 11), .user_id = TXT(st, 12),
                           .session_id = TXT(st, 13), .created_ms = sqlite3_column_int64(st, 14)};
      if (l.messages_json) l.prompt = NULL;
      stopped = lfn && lfn(&l, ud) != 0;
    }
  }
  if (!stopped && rc != SQLITE_DONE) rc = sql_fail(pc, db, rc, what);
  else rc = PREFCAP_OK;
  sqlite3_finalize(st);
  read_end(pc, db);
  return rc;
}

int prefcap_pairs(prefcap_t *pc, const prefcap_query_t *q, prefcap_pair_fn fn, void *ud) {
  return rows(pc, ROWS_PAIRS, q, fn, NULL, ud);
}

int prefcap_labels(prefcap_t *pc, const prefcap_query_t *q, prefcap_label_fn fn, void *ud) {
  return rows(pc, ROWS_LABELS, q, NULL, fn, ud);
}

// ---- stats ---------------------------------------------------------------------------------------

/* Runs a query of one row of integers into out[0..n). */
static int one_row(prefcap_t *pc, sqlite3 *db, const char *sql, int64_t *out, int n, const char *what) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return sql_fail(pc, db, rc, what);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    for (int i = 0; i < n; i++) out[i] = sqlite3_column_int64(st, i);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc ? sql_fail(pc, db, rc, what) : PREFCAP_OK;
}

#define UNKNOWN_FEEDBACK_SQL "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = e.gen_id)"
#define COUNTER_SQL(name) "ifnull((SELECT value FROM counters WHERE name = '" name "'), 0)"

int prefcap_stats(prefcap_t *pc, prefcap_stats_t *out) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_stats: no handle");
  if (!out || out->size < sizeof(size_t)) return prefcap__fail(pc, PREFCAP_EINVAL, "stats: out or its size is not set (use PREFCAP_STATS_INIT)");
  sqlite3 *db;
  int rc = read_begin(pc, &db, "reading the store's totals");
  if (rc) return rc;
  int64_t v[9] = {0};
  rc = one_row(pc, db,
               "SELECT (SELECT count(*) FROM generations), (SELECT count(*) FROM events), (SELECT count(*) FROM pairs),"
               " (SELECT count(*) FROM labels), (" UNKNOWN_FEEDBACK_SQL "), " COUNTER_SQL("dropped") ", "
               COUNTER_SQL("failed") ", " COUNTER_SQL("refused") ", (SELECT count(*) FROM exports)",
               v, 9, "reading the store's totals");
  read_end(pc, db);
  if (rc) return rc;
  prefcap_stats_t s = {sizeof s, (uint64_t)v[0], (uint64_t)v[1], (uint64_t)v[2], (uint64_t)v[3], (uint64_t)v[4],
                       (uint64_t)v[5], (uint64_t)v[6], (uint64_t)v[7], (uint64_t)v[8]};
  write_sized(out, &s, sizeof s);
  return PREFCAP_OK;
}

/* Appends "title":{key:count | key:{"count","mean_weight"}, ...} from a query of (key, count[, mean]). */
static int section(prefcap_t *pc, sqlite3 *db, prefcap__buf *b, const char *title, const char *sql) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return sql_fail(pc, db, rc, title);
  int ncol = sqlite3_column_count(st);
  prefcap__buf_printf(b, "%s\"%s\":{", b->len > 1 ? "," : "", title);
  bool first = true;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *k = TXT(st, 0);
    prefcap__buf_puts(b, first ? "" : ",");
    prefcap__buf_json_str(b, k ? k : "(none)");
    if (ncol > 2) prefcap__buf_printf(b, ":{\"count\":%lld,\"mean_weight\":%.4f}", sqlite3_column_int64(st, 1), sqlite3_column_double(st, 2));
    else prefcap__buf_printf(b, ":%lld", sqlite3_column_int64(st, 1));
    first = false;
  }
  sqlite3_finalize(st);
  prefcap__buf_puts(b, "}");
  return rc == SQLITE_DONE ? PREFCAP_OK : sql_fail(pc, db, rc, title);
}

int prefcap_stats_json(prefcap_t *pc, int days, char **json) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_stats_json: no handle");
  if (!json || days < 1) return prefcap__fail(pc, PREFCAP_EINVAL, "stats: json is NULL or days < 1");
  *json = NULL;
  char byday[512];
  snprintf(byday, sizeof byday,
           "SELECT day, sum(n) FROM (SELECT strftime('%%Y-%%m-%%d', ts / 1000, 'unixepoch') AS day, count(*) AS n FROM generations GROUP BY day"
           " UNION ALL SELECT strftime('%%Y-%%m-%%d', ts / 1000, 'unixepoch'), count(*) FROM events GROUP BY 1)"
           " GROUP BY day ORDER BY day DESC LIMIT %d", days);
  static const char *const sections[][2] = {
      {"events", "SELECT 'generation', count(*) FROM generations UNION ALL SELECT type, count(*) FROM events GROUP BY type"},
      {"pairs_by_signal", "SELECT signal, count(*), avg(weight) FROM pairs GROUP BY signal ORDER BY signal"},
      {"pairs_by_source", "SELECT CASE WHEN source LIKE 'ai:%' THEN 'ai' ELSE 'human' END, count(*) FROM pairs GROUP BY 1"},
      {"pairs_flagged", "SELECT flags, count(*) FROM pairs WHERE flags != '' GROUP BY flags"},
      {"labels", "SELECT signal || CASE WHEN desirable THEN ' (desirable)' ELSE ' (undesirable)' END, count(*), avg(weight)"
                 " FROM labels GROUP BY signal, desirable ORDER BY signal"},
      {"generations_by_model", "SELECT ifnull(model, '(none)') || ifnull(' ' || model_version, ''), count(*) FROM generations GROUP BY 1 ORDER BY 2 DESC LIMIT 50"},
      {"pairs_by_model", "SELECT ifnull(g.model, '(none)'), count(*), avg(p.weight) FROM pairs p JOIN generations g ON g.id = p.rejected_id GROUP BY 1 ORDER BY 2 DESC LIMIT 50"},
      {"events_by_day", NULL},
      {"events_by_source_store", "SELECT store_id, sum(generations + feedback + erasures) FROM fleet_sources GROUP BY 1 ORDER BY 1"},   /* docs/fleet.md */
      {"problems", "SELECT 'feedback for unknown generations', (" UNKNOWN_FEEDBACK_SQL ")"
                   " UNION ALL SELECT 'dropped (queue full)', " COUNTER_SQL("dropped")
                   " UNION ALL SELECT 'failed (not stored)', " COUNTER_SQL("failed")
                   " UNION ALL SELECT 'refused (erased users)', " COUNTER_SQL("refused")},
  };
  sqlite3 *db;
  int rc = read_begin(pc, &db, "reading the store's statistics");
  if (rc) return rc;
  prefcap__buf b = {0};
  prefcap__buf_puts(&b, "{");
  for (size_t i = 0; i < sizeof sections / sizeof *sections && !rc; i++)
    rc = section(pc, db, &b, sections[i][0], sections[i][1] ? sections[i][1] : byday);
  read_end(pc, db);
  prefcap__buf_puts(&b, "}");
  if (!rc && b.oom) rc = prefcap__fail(pc, PREFCAP_ENOMEM, "stats: out of memory");
  if (rc) { free(b.p); return rc; }
  *json = b.p;
  return PREFCAP_OK;
}

// ---- integrity -----------------------------------------------------------------------------------

int prefcap_check(prefcap_t *pc, int quick, void (*fn)(const char *, void *), void *ud, uint64_t *problems) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_check: no handle");
  if (problems) *problems = 0;
  pthread_mutex_lock(&pc->db_mu);
  sqlite3 *db = prefcap__db(pc);
  sqlite3_stmt *st;
  uint64_t n = 0;
  char first[400] = "";
  int rc = sqlite3_prepare_v2(db, quick ? "PRAGMA quick_check(100)" : "PRAGMA integrity_check(100)", -1, &st, NULL);
  if (!rc) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *line = TXT(st, 0);
      if (!line || !strcmp(line, "ok")) continue;
      if (!n++) snprintf(first, sizeof first, "%s", line);
      if (fn) fn(line, ud);
    }
    sqlite3_finalize(st);
  }
  if (rc != SQLITE_DONE) {
    /* the check could not finish: damage where the check itself reads (SQLite says which) */
    rc = sql_fail(pc, db, rc, "integrity check");
    if (!n && fn) fn(prefcap_errmsg(pc), ud);
    if (!n) n = 1;
  } else if (n) rc = prefcap__fail(pc, PREFCAP_ECORRUPT, "%s is damaged: %llu problem(s), the first: %s", pc->o.path,
                                   (unsigned long long)n, first);
  else rc = PREFCAP_OK;
  pthread_mutex_unlock(&pc->db_mu);
  if (problems) *problems = n;
  return rc;
}

// ---- erasure and retention with counts -----------------------------------------------------------

static void report_from(const prefcap__erase_counts *c, const char *user_id, prefcap_erase_report_t *out) {
  prefcap_erase_report_t r = {sizeof r, c->generations, c->events, c->pairs, c->labels, c->rated,
                              prefcap__erase_total(c), c->kept_old, c->committed, c->rederived, c->wal_truncated, {0}};
  if (user_id) prefcap__user_hash(user_id, r.user_hash);
  write_sized(out, &r, sizeof r);
}

int prefcap_forget_user_report(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *ud,
                               prefcap_erase_report_t *report) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_forget_user_report: no handle");
  if (report && report->size < sizeof(size_t)) return prefcap__fail(pc, PREFCAP_EINVAL, "forget: report size is not set (use PREFCAP_ERASE_REPORT_INIT)");
  prefcap__erase_counts c = {0};
  int rc = prefcap__forget_user_ex(pc, user_id, fn, ud, &c);
  if (report) report_from(&c, user_id && *user_id ? user_id : NULL, report);
  return rc;
}

int prefcap_prune_report(prefcap_t *pc, int64_t older_than_ms, unsigned flags, prefcap_erase_report_t *report) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_prune_report: no handle");
  if (report && report->size < sizeof(size_t)) return prefcap__fail(pc, PREFCAP_EINVAL, "prune: report size is not set (use PREFCAP_ERASE_REPORT_INIT)");
  if (flags & ~(unsigned)(PREFCAP_PRUNE_DRY_RUN | PREFCAP_PRUNE_VACUUM)) return prefcap__fail(pc, PREFCAP_EINVAL, "prune: unknown flags");
  prefcap__erase_counts c = {0};
  int rc = prefcap__prune_ex(pc, older_than_ms, flags & PREFCAP_PRUNE_DRY_RUN, flags & PREFCAP_PRUNE_VACUUM, &c);
  if (report) report_from(&c, NULL, report);
  return rc;
}

// ---- small helpers -------------------------------------------------------------------------------

void prefcap_user_hash(const char *user_id, char out[65]) { prefcap__user_hash(user_id ? user_id : "", out); }

const char *prefcap_weight_name(int i) {
  for (int k = 0; prefcap__rule_names[k]; k++)
    if (k == i) return prefcap__rule_names[k];
  return NULL;
}

int prefcap_time_parse(const char *s, int64_t *ms) {
  if (!s || !ms) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_time_parse: %s is NULL", !s ? "text" : "ms");
  const char *given = s;
  char buf[40];
  if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') { snprintf(buf, sizeof buf, "%sT00:00:00Z", s); s = buf; }
  if (prefcap__parse_time(s, ms)) return PREFCAP_OK;
  return prefcap__fail0(PREFCAP_EINVAL, "prefcap_time_parse: '%.60s' is neither an RFC 3339 time nor a YYYY-MM-DD date", given);
}

void prefcap_time_format(int64_t ms, char buf[32]) { prefcap__format_time(ms, buf, 32); }
