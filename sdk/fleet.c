/* sdk/fleet.c: events across hosts (docs/fleet.md). Each host exports its raw event log
 * (`prefcap export --format events`): a header line naming the store (its UUID, made with the store)
 * and the range, every generation and feedback event in the ingest format (docs/events.md) with its id,
 * and an erase line per erasure. A central store ingests such files from many hosts, in any order and
 * any number of times: events are idempotent by id, so pairs and labels derived there are those of one
 * store fed the union; an erase line erases the user there as forget does.
 *
 * Exactly once: a named export fixes its range (generation seq, event seq, tombstone rowid) in meta as
 * pending before writing; a killed run is resumed with the same range; the watermark moves only after
 * the file is in place (and uploaded). Ingest is idempotent, so a file published twice does no harm. */
#include "internal.h"
#include "sha256.h"
#include "upload.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EVENTS_SCHEMA 1   /* the version of the events file's own shape; a newer one is refused whole */

#define T(st, c) ((const char *)sqlite3_column_text((st), (c)))

// ---- the store's id --------------------------------------------------------------------------------

static int meta_get(sqlite3 *db, const char *key, char *out, size_t len) {
  sqlite3_stmt *st;
  out[0] = 0;
  int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) snprintf(out, len, "%s", T(st, 0));
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

static int meta_set(sqlite3 *db, const char *key, const char *value) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, value ? "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                                        : "DELETE FROM meta WHERE key = ?1", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  if (value) sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

int prefcap_store_id(prefcap_t *pc, char out[37]) {
  if (!pc || !out) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_store_id: no handle or no buffer");
  char v[64];
  pthread_mutex_lock(&pc->db_mu);
  int rc = meta_get(prefcap__db(pc), "store_id", v, sizeof v);
  pthread_mutex_unlock(&pc->db_mu);
  if (rc) return prefcap__fail(pc, rc, "reading the store's id: %s", sqlite3_errmsg(prefcap__db(pc)));
  snprintf(out, 37, "%.36s", v);
  return PREFCAP_OK;
}

// ---- the events export -----------------------------------------------------------------------------

typedef struct { int64_t g, e, t; } range_t;   /* last generation seq, event seq, tombstone rowid */

static void put_raw_or_null(prefcap__buf *b, const char *key, const char *raw) {
  if (raw) { prefcap__buf_printf(b, ",\"%s\":", key); prefcap__buf_puts(b, raw); }
}
static void put_str(prefcap__buf *b, const char *key, const char *v) {
  if (v) { prefcap__buf_printf(b, ",\"%s\":", key); prefcap__buf_json_str(b, v); }
}
static void put_int(prefcap__buf *b, sqlite3_stmt *st, int col, const char *key) {
  if (sqlite3_column_type(st, col) != SQLITE_NULL) prefcap__buf_printf(b, ",\"%s\":%lld", key, (long long)sqlite3_column_int64(st, col));
}

static const char *const gen_sql =
    "SELECT id, event_id, ts, user_id, session_id, model, model_version, system, prompt, messages, completion,"
    " params, regenerates, latency_ms, prompt_tokens, completion_tokens FROM generations"
    " WHERE seq > ?1 AND seq <= ?2 ORDER BY seq";
static const char *const ev_sql =
    "SELECT event_id, type, gen_id, other_id, text, value, source, ts FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq";
static const char *const tomb_sql =
    "SELECT t.user_hash, t.ts, (SELECT json_group_array(gen_hash) FROM erased_generations e WHERE e.ts = t.ts)"
    " FROM tombstones t WHERE t.rowid > ?1 AND t.rowid <= ?2 ORDER BY t.rowid";

/* A generation as the ingest format's line (docs/events.md); ts as ms, which ingest reads exactly. */
static void gen_line(prefcap__buf *b, sqlite3_stmt *st) {
  prefcap__buf_puts(b, "{\"type\":\"generation\",\"id\":");
  prefcap__buf_json_str(b, T(st, 0));
  put_str(b, "event_id", T(st, 1));
  prefcap__buf_printf(b, ",\"ts\":%lld", (long long)sqlite3_column_int64(st, 2));
  put_str(b, "user_id", T(st, 3));
  put_str(b, "session_id", T(st, 4));
  put_str(b, "model", T(st, 5));
  put_str(b, "model_version", T(st, 6));
  put_str(b, "system", T(st, 7));
  put_str(b, "prompt", T(st, 8));
  put_raw_or_null(b, "messages", T(st, 9));   /* stored as compact JSON */
  put_str(b, "completion", T(st, 10));
  put_raw_or_null(b, "params", T(st, 11));
  put_str(b, "regenerates", T(st, 12));
  put_int(b, st, 13, "latency_ms");
  put_int(b, st, 14, "prompt_tokens");
  put_int(b, st, 15, "completion_tokens");
  prefcap__buf_puts(b, "}\n");
}

static void ev_line(prefcap__buf *b, sqlite3_stmt *st) {
  const char *type = T(st, 1);
  prefcap__buf_puts(b, "{\"type\":");
  prefcap__buf_json_str(b, type);
  if (!strcmp(type, "choice")) {
    prefcap__buf_puts(b, ",\"chosen\":"); prefcap__buf_json_str(b, T(st, 2));
    prefcap__buf_puts(b, ",\"rejected\":"); prefcap__buf_json_str(b, T(st, 3));
  } else { prefcap__buf_puts(b, ",\"id\":"); prefcap__buf_json_str(b, T(st, 2)); }
  put_str(b, "text", T(st, 4));
  put_int(b, st, 5, "value");
  put_str(b, "source", T(st, 6));
  prefcap__buf_puts(b, ",\"event_id\":");
  prefcap__buf_json_str(b, T(st, 0));
  prefcap__buf_printf(b, ",\"ts\":%lld}\n", (long long)sqlite3_column_int64(st, 7));
}

static int write_buf(int fd, const prefcap__buf *b) {
  const char *p = b->p;
  size_t n = b->len;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errno == ENOSPC ? PREFCAP_EFULL : PREFCAP_EIO;
    p += w; n -= (size_t)w;
  }
  return PREFCAP_OK;
}

static int query_range(sqlite3 *db, range_t *r) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT (SELECT ifnull(max(seq),0) FROM generations), (SELECT ifnull(max(seq),0) FROM events),"
                              " (SELECT ifnull(max(rowid),0) FROM tombstones)", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *r = (range_t){sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2)};
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

static bool parse_range(const char *s, range_t *a, range_t *b) {
  long long v[6];
  if (sscanf(s, "%lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return false;
  *a = (range_t){v[0], v[1], v[2]};
  *b = (range_t){v[3], v[4], v[5]};
  return true;
}

/* Fixes the range: a pending one of this name (a killed run) is taken again, whole; else from the
 * watermark to now, recorded as pending before a byte is written. */
static int begin_range(prefcap_t *pc, const char *name, range_t *from, range_t *to, bool *resumed, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  char key[200], v[200];
  *from = (range_t){0, 0, 0};
  *resumed = false;
  snprintf(key, sizeof key, "events.pending.%s", name ? name : "");
  if (name && !(rc = meta_get(db, key, v, sizeof v)) && v[0]) {
    if (!parse_range(v, from, to)) { rc = PREFCAP_ECORRUPT; snprintf(err, errlen, "meta %s is malformed", key); }
    else *resumed = true;
  }
  if (!rc && !*resumed) {
    char wk[200], w[200];
    snprintf(wk, sizeof wk, "events.watermark.%s", name ? name : "");
    range_t dummy;
    if (name && !(rc = meta_get(db, wk, w, sizeof w)) && w[0] && !parse_range(w, &dummy, from)) rc = PREFCAP_ECORRUPT;
    if (!rc) rc = query_range(db, to);
    if (!rc && name) {
      snprintf(v, sizeof v, "%lld %lld %lld %lld %lld %lld", (long long)from->g, (long long)from->e, (long long)from->t,
               (long long)to->g, (long long)to->e, (long long)to->t);
      rc = meta_set(db, key, v);
    }
    if (rc && !err[0]) snprintf(err, errlen, "fixing the events export's range: %.400s", sqlite3_errmsg(db));
  }
  if (rc) { prefcap__store_rollback(pc->store); return rc; }
  return prefcap__store_commit(pc->store, err, errlen);
}

static int finish_range(prefcap_t *pc, const char *name, range_t from, range_t to, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  char key[200], v[200];
  snprintf(key, sizeof key, "events.pending.%s", name);
  rc = meta_set(db, key, NULL);
  snprintf(key, sizeof key, "events.watermark.%s", name);
  snprintf(v, sizeof v, "%lld %lld %lld %lld %lld %lld", (long long)from.g, (long long)from.e, (long long)from.t,
           (long long)to.g, (long long)to.e, (long long)to.t);
  if (!rc) rc = meta_set(db, key, v);
  if (rc) { snprintf(err, errlen, "moving the events watermark: %.400s", sqlite3_errmsg(db)); prefcap__store_rollback(pc->store); return rc; }
  return prefcap__store_commit(pc->store, err, errlen);
}

/* Lines are gathered in a buffer that goes to the file whenever it holds STREAM_CHUNK bytes: an
 * export's memory stays bounded however many events the range holds. */
#define STREAM_CHUNK ((size_t)1 << 20)

static int flush_chunk(int fd, prefcap__buf *b) {
  if (b->oom) return PREFCAP_ENOMEM;
  int rc = write_buf(fd, b);
  b->len = 0;
  return rc;
}

static int step_all(sqlite3 *db, const char *sql, int64_t a, int64_t b, int fd, prefcap__buf *out,
                    void (*line)(prefcap__buf *, sqlite3_stmt *), uint64_t *n) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_int64(st, 1, a);
  sqlite3_bind_int64(st, 2, b);
  int wrc = PREFCAP_OK;
  while (!wrc && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    line(out, st);
    (*n)++;
    if (out->len >= STREAM_CHUNK || out->oom) wrc = flush_chunk(fd, out);
  }
  sqlite3_finalize(st);
  if (wrc) return wrc;
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

/* The counts of a range, for the header that comes before the lines: sequence ranges on the tables'
 * rowids, read in the same transaction as the lines, so they agree. */
static int count_range(sqlite3 *db, range_t from, range_t to, uint64_t n[3]) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM generations WHERE seq > ?1 AND seq <= ?2),"
                              " (SELECT count(*) FROM events WHERE seq > ?3 AND seq <= ?4),"
                              " (SELECT count(*) FROM tombstones WHERE rowid > ?5 AND rowid <= ?6)", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  int64_t v[6] = {from.g, to.g, from.e, to.e, from.t, to.t};
  for (int i = 0; i < 6; i++) sqlite3_bind_int64(st, i + 1, v[i]);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) for (int i = 0; i < 3; i++) n[i] = (uint64_t)sqlite3_column_int64(st, i);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

/* Finishes a temporary file: fsynced, closed, renamed into place (its tmp cleared: not removed). */
static int publish(prefcap__tempfile *t, const char *path, char *err, size_t errlen) {
  int rc = fsync(t->fd) ? PREFCAP_EIO : PREFCAP_OK;
  if (close(t->fd) && !rc) rc = PREFCAP_EIO;
  t->fd = -1;
  if (!rc && rename(t->tmp, path)) rc = PREFCAP_EIO;
  if (rc) { snprintf(err, errlen, "cannot write %.400s: %s", path, strerror(errno)); return errno == ENOSPC ? PREFCAP_EFULL : rc; }
  t->tmp[0] = 0;
  return PREFCAP_OK;
}

static void tomb_line(prefcap__buf *b, sqlite3_stmt *st) {
  prefcap__buf_puts(b, "{\"type\":\"erase\",\"user_hash\":");
  prefcap__buf_json_str(b, T(st, 0));
  prefcap__buf_printf(b, ",\"at\":%lld,\"generations\":%s}\n", (long long)sqlite3_column_int64(st, 1), T(st, 2));
}

int prefcap__export_events(prefcap_t *pc, const char *out, const char *name, const char *upload_url,
                           const prefcap_upload_options_t *uo, prefcap__tempfile *data, prefcap__tempfile *manifest,
                           prefcap_export_result_t *res, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  range_t from = {0, 0, 0}, to = {0, 0, 0};
  bool resumed = false;
  char sid[64];
  int rc = meta_get(db, "store_id", sid, sizeof sid);
  if (!rc) rc = begin_range(pc, name, &from, &to, &resumed, err, errlen);
  if (rc) { if (!err[0]) snprintf(err, errlen, "%s", sqlite3_errmsg(db)); return rc; }
  res->resumed = resumed;
  snprintf(res->export_id, sizeof res->export_id, "ev-%.36s", sid);
  if (name && !resumed && from.g == to.g && from.e == to.e && from.t == to.t) {
    res->nothing_new = 1;
    return finish_range(pc, name, from, to, err, errlen);
  }
  /* streamed into the temporary file (created and recorded in the store by prefcap_export: a kill
   * leaves it found by the next export and by forget), in one read transaction */
  prefcap__buf b = {0};
  uint64_t n[3] = {0, 0, 0}, ng = 0, ne = 0, nt = 0;
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  rc = count_range(db, from, to, n);
  if (!rc) {
    /* the header first: the source, the range and the counts (what a central store's stats show) */
    prefcap__buf_printf(&b, "{\"type\":\"prefcap_events\",\"events_schema\":%d,\"store_id\":\"%s\",\"schema_version\":%d,"
                        "\"range\":{\"generations\":[%lld,%lld],\"events\":[%lld,%lld],\"erasures\":[%lld,%lld]},"
                        "\"counts\":{\"generations\":%llu,\"feedback\":%llu,\"erasures\":%llu}}\n", EVENTS_SCHEMA, sid,
                        PREFCAP_SCHEMA_VERSION, (long long)from.g, (long long)to.g, (long long)from.e, (long long)to.e,
                        (long long)from.t, (long long)to.t, (unsigned long long)n[0], (unsigned long long)n[1],
                        (unsigned long long)n[2]);
    rc = step_all(db, gen_sql, from.g, to.g, data->fd, &b, gen_line, &ng);
  }
  if (!rc) rc = step_all(db, ev_sql, from.e, to.e, data->fd, &b, ev_line, &ne);
  if (!rc) rc = step_all(db, tomb_sql, from.t, to.t, data->fd, &b, tomb_line, &nt);
  if (!rc) rc = flush_chunk(data->fd, &b);
  int e = errno;
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  free(b.p);
  if (!rc && (ng != n[0] || ne != n[1] || nt != n[2])) rc = PREFCAP_ECORRUPT;   /* one transaction: cannot differ */
  if (rc == PREFCAP_EIO || rc == PREFCAP_EFULL) { snprintf(err, errlen, "cannot write %.400s: %s", data->tmp, strerror(e)); return rc; }
  if (rc) { snprintf(err, errlen, "reading the events: %.400s", rc == PREFCAP_ENOMEM ? "out of memory" : sqlite3_errmsg(db)); return rc; }
  if ((rc = publish(data, out, err, errlen))) return rc;
  /* the manifest, like the other formats': the store, the range, the counts */
  char mpath[PATH_MAX + 32], t[40];
  snprintf(mpath, sizeof mpath, "%s.manifest.json", out);
  prefcap__format_time(prefcap__now_ms(), t, sizeof t);
  prefcap__buf m = {0};
  prefcap__buf_printf(&m, "{\"export_id\":\"%s\",\"format\":\"events\",\"created\":\"%s\",\"name\":", res->export_id, t);
  if (name) prefcap__buf_json_str(&m, name); else prefcap__buf_puts(&m, "null");
  prefcap__buf_printf(&m, ",\"store_id\":\"%s\",\"events_schema\":%d,\"schema_version\":%d,\"sdk_version\":\"%s\","
                      "\"range\":{\"generations\":[%lld,%lld],\"events\":[%lld,%lld],\"erasures\":[%lld,%lld]},"
                      "\"records\":%llu,\"counts\":{\"generations\":%llu,\"feedback\":%llu,\"erasures\":%llu}}\n",
                      sid, EVENTS_SCHEMA, PREFCAP_SCHEMA_VERSION, PREFCAP_VERSION_STRING, (long long)from.g, (long long)to.g,
                      (long long)from.e, (long long)to.e, (long long)from.t, (long long)to.t,
                      (unsigned long long)(ng + ne + nt), (unsigned long long)ng, (unsigned long long)ne, (unsigned long long)nt);
  rc = m.oom ? PREFCAP_ENOMEM : write_buf(manifest->fd, &m);
  free(m.p);
  if (rc) { snprintf(err, errlen, "cannot write %.400s: %s", manifest->tmp, rc == PREFCAP_ENOMEM ? "out of memory" : strerror(errno)); return rc; }
  if ((rc = publish(manifest, mpath, err, errlen))) return rc;
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", out);
  int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) { fsync(dfd); close(dfd); }
  res->records = res->train = ng + ne + nt;
  if (upload_url) {
    char uerr[512];
    if ((rc = prefcap__upload(uo, out, upload_url, uerr, sizeof uerr))) {
      snprintf(err, errlen, "the events export was written to %.400s but not uploaded (the watermark did not move; run again): %.400s", out, uerr);
      return rc;
    }
  }
  return name ? finish_range(pc, name, from, to, err, errlen) : PREFCAP_OK;
}

// ---- central ingest --------------------------------------------------------------------------------

static bool is_hex64(const char *s) {
  if (!s || strlen(s) != 64) return false;
  for (int i = 0; i < 64; i++) if (!strchr("0123456789abcdef", s[i])) return false;
  return true;
}

/* Fails with "field 'X' ..." unless every key of obj is one of the NULL-ended names: a field this
 * prefcap does not know in a line of its own format would be ignored silently, and it may mean
 * something (a newer writer's; a newer events schema is said by the header, and refused there). */
static int known_fields(const cJSON *obj, const char *what, const char *const *names, char *err, size_t errlen) {
  for (const cJSON *c = obj->child; c; c = c->next) {
    const char *const *n = names;
    while (*n && strcmp(*n, c->string)) n++;
    if (!*n) { snprintf(err, errlen, "unknown field '%.64s' in %s", c->string, what); return PREFCAP_EINVAL; }
  }
  return PREFCAP_OK;
}

/* An erase line: the user erased here as forget does, a tombstone and the erased generations' hashes
 * kept so their events arriving later (from any host) are refused, and feedback already here on those
 * generations (arrived before them) deleted. The user is named by user_hash (what an events export
 * writes: the host keeps only the hash of an erased user's id) or by user_id (a tombstone written by
 * hand or by another system), hashed here the same way (prefcap__user_hash); never both. */
static int ingest_erase(prefcap_t *pc, cJSON *obj, char *err, size_t errlen) {
  static const char *const fields[] = {"type", "user_hash", "user_id", "at", "generations", NULL};
  int vrc = known_fields(obj, "an erase line", fields, err, errlen);
  if (vrc) return vrc;
  cJSON *uh = cJSON_GetObjectItemCaseSensitive(obj, "user_hash"), *uid = cJSON_GetObjectItemCaseSensitive(obj, "user_id");
  cJSON *at = cJSON_GetObjectItemCaseSensitive(obj, "at"), *gens = cJSON_GetObjectItemCaseSensitive(obj, "generations");
  char hash[65];
  if (uh && uid) { snprintf(err, errlen, "an erase line names the user once: 'user_hash' or 'user_id', not both"); return PREFCAP_EINVAL; }
  if (!uh && !uid) { snprintf(err, errlen, "field 'user_hash' (or 'user_id') is required"); return PREFCAP_EINVAL; }
  if (uh && (!cJSON_IsString(uh) || !is_hex64(uh->valuestring))) { snprintf(err, errlen, "field 'user_hash' must be 64 lowercase hex digits"); return PREFCAP_EINVAL; }
  if (uid) {
    size_t n = cJSON_IsString(uid) ? strlen(uid->valuestring) : 0;
    if (!n || n > PREFCAP_ID_MAX) { snprintf(err, errlen, "field 'user_id' must be a string of 1 to %d bytes", PREFCAP_ID_MAX); return PREFCAP_EINVAL; }
    prefcap__user_hash(uid->valuestring, hash);
  } else snprintf(hash, sizeof hash, "%s", uh->valuestring);
  if (!at) { snprintf(err, errlen, "field 'at' is required"); return PREFCAP_EINVAL; }
  if (!cJSON_IsNumber(at) || at->valuedouble != floor(at->valuedouble) || at->valuedouble < 1 || at->valuedouble > (double)((int64_t)1 << 50)) {
    snprintf(err, errlen, "field 'at' must be milliseconds since the epoch (a positive integer)");
    return PREFCAP_EINVAL;
  }
  if (gens && !cJSON_IsArray(gens)) { snprintf(err, errlen, "field 'generations' must be an array"); return PREFCAP_EINVAL; }
  cJSON *g;
  cJSON_ArrayForEach(g, gens) if (!cJSON_IsString(g) || !is_hex64(g->valuestring)) { snprintf(err, errlen, "field 'generations' holds a non-hash"); return PREFCAP_EINVAL; }
  int rc = prefcap_flush(pc, -1);   /* what was queued before this line is stored, so it is erased too */
  if (rc) { snprintf(err, errlen, "flushing before the erasure: %s", prefcap_errmsg(pc)); return rc; }
  sqlite3 *db = prefcap__db(pc);
  pthread_mutex_lock(&pc->db_mu);
  rc = prefcap__store_begin(pc->store, err, errlen);
  char *user = NULL;
  int64_t now = (int64_t)at->valuedouble;
  if (!rc) {
    sqlite3_stmt *st;
    /* the tombstone and the generation hashes first: later lines of this user are refused */
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO tombstones(user_hash, ts) VALUES(?1, ?2)", -1, &st, NULL);
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    if (sqlite3_step(st) != SQLITE_DONE) rc = PREFCAP_EIO;
    sqlite3_finalize(st);
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO erased_generations(gen_hash, ts) VALUES(?1, ?2)", -1, &st, NULL);
    cJSON_ArrayForEach(g, gens) {
      sqlite3_bind_text(st, 1, g->valuestring, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, now);
      if (sqlite3_step(st) != SQLITE_DONE) rc = PREFCAP_EIO;
      sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    /* feedback on those generations that arrived before them: found by hashing (rare; a scan) */
    if (!rc && cJSON_GetArraySize(gens) > 0) {
      sqlite3_stmt *sel, *del, *has;
      sqlite3_prepare_v2(db, "SELECT seq, gen_id, other_id FROM events", -1, &sel, NULL);
      sqlite3_prepare_v2(db, "DELETE FROM events WHERE seq = ?1", -1, &del, NULL);
      sqlite3_prepare_v2(db, "SELECT 1 FROM erased_generations WHERE gen_hash = ?1", -1, &has, NULL);
      while (sqlite3_step(sel) == SQLITE_ROW) {
        bool hit = false;
        for (int c = 1; c <= 2 && !hit; c++) {
          const char *id = T(sel, c);
          if (!id) continue;
          char h[65];
          prefcap__sha256_hex(id, strlen(id), h);
          sqlite3_bind_text(has, 1, h, -1, SQLITE_TRANSIENT);
          hit = sqlite3_step(has) == SQLITE_ROW;
          sqlite3_reset(has);
        }
        if (hit) { sqlite3_bind_int64(del, 1, sqlite3_column_int64(sel, 0)); sqlite3_step(del); sqlite3_reset(del); }
      }
      sqlite3_finalize(sel); sqlite3_finalize(del); sqlite3_finalize(has);
    }
    /* the user's id, if their rows are here: forget then erases them to the bytes */
    sqlite3_prepare_v2(db, "SELECT DISTINCT user_id FROM generations WHERE user_id IS NOT NULL", -1, &st, NULL);
    while (!rc && !user && sqlite3_step(st) == SQLITE_ROW) {
      char h[65];
      prefcap__user_hash(T(st, 0), h);
      if (!strcmp(h, hash) && !(user = strdup(T(st, 0)))) rc = PREFCAP_ENOMEM;
    }
    sqlite3_finalize(st);
    if (rc) { snprintf(err, errlen, "recording the erasure: %.400s", sqlite3_errmsg(db)); prefcap__store_rollback(pc->store); }
    else rc = prefcap__store_commit(pc->store, err, errlen);
  }
  pthread_mutex_unlock(&pc->db_mu);
  if (rc) { free(user); return rc; }
  if (user) {
    rc = prefcap_forget_user(pc, user, NULL, NULL, NULL);
    free(user);
    if (rc) snprintf(err, errlen, "erasing the user: %s", prefcap_errmsg(pc));
    return rc;
  }
  /* no rows of theirs here but perhaps orphaned feedback was deleted: its bytes go from the file too */
  pthread_mutex_lock(&pc->db_mu);
  if (sqlite3_exec(db, "VACUUM; PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL, NULL)) {
    snprintf(err, errlen, "the erasure is recorded but VACUUM failed (run forget again): %.400s", sqlite3_errmsg(db));
    rc = PREFCAP_EBUSY;
  }
  pthread_mutex_unlock(&pc->db_mu);
  return rc;
}

/* The header line: refused whole (and the rest of the file with it, by the caller) when it comes from
 * a newer events schema; otherwise its counts are recorded once per (source store, range), for stats (the events themselves
 * carry their own ids). */
static int ingest_header(prefcap_t *pc, cJSON *obj, char *err, size_t errlen) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "events_schema"), *sid = cJSON_GetObjectItemCaseSensitive(obj, "store_id");
  if (!cJSON_IsNumber(v) || !cJSON_IsString(sid)) { snprintf(err, errlen, "an events header needs 'events_schema' and 'store_id'"); return PREFCAP_EINVAL; }
  if (v->valuedouble > EVENTS_SCHEMA) {
    snprintf(err, errlen, "events schema %g is newer than this prefcap's (%d): upgrade prefcap; nothing of this file was stored",
             v->valuedouble, EVENTS_SCHEMA);
    return PREFCAP_ESCHEMA;
  }
  /* only now: a newer schema may add fields, and is refused above for what it is */
  static const char *const fields[] = {"type", "events_schema", "store_id", "schema_version", "range", "counts", NULL};
  int frc = known_fields(obj, "an events header", fields, err, errlen);
  if (frc) return frc;
  cJSON *range = cJSON_GetObjectItemCaseSensitive(obj, "range"), *counts = cJSON_GetObjectItemCaseSensitive(obj, "counts");
  if (!cJSON_IsObject(range) || !cJSON_IsObject(counts)) return PREFCAP_OK;   /* nothing to count by */
  char *rtext = cJSON_PrintUnformatted(range);
  if (!rtext) { snprintf(err, errlen, "out of memory"); return PREFCAP_ENOMEM; }
  const char *keys[3] = {"generations", "feedback", "erasures"};
  int64_t n[3];
  for (int i = 0; i < 3; i++) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(counts, keys[i]);
    n[i] = cJSON_IsNumber(c) && c->valuedouble >= 0 ? (int64_t)c->valuedouble : 0;
  }
  sqlite3 *db = prefcap__db(pc);
  pthread_mutex_lock(&pc->db_mu);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (!rc) {
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO fleet_sources(store_id, range, generations, feedback, erasures, received)"
                           " VALUES(?1, ?2, ?3, ?4, ?5, ?6)", -1, &st, NULL);
    sqlite3_bind_text(st, 1, sid->valuestring, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, rtext, -1, SQLITE_STATIC);
    for (int i = 0; i < 3; i++) sqlite3_bind_int64(st, 3 + i, n[i]);
    sqlite3_bind_int64(st, 6, prefcap__now_ms());
    rc = sqlite3_step(st) == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(sqlite3_errcode(db));
    sqlite3_finalize(st);
    if (rc) { snprintf(err, errlen, "recording the events file's source: %.400s", sqlite3_errmsg(db)); prefcap__store_rollback(pc->store); }
    else rc = prefcap__store_commit(pc->store, err, errlen);
  }
  pthread_mutex_unlock(&pc->db_mu);
  cJSON_free(rtext);
  return rc;
}

int prefcap_ingest_line(prefcap_t *pc, const char *line, size_t len) {
  if (!pc || !line) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_ingest_line: no handle or no line");
  atomic_store(&pc->bulk, true);
  /* only the fleet's own lines are looked at here (a cheap test first: they name their type); every
   * other line goes to prefcap_log_json as is */
  bool ours = memmem(line, len, "\"type\"", 6) && (memmem(line, len, "\"erase\"", 7) || memmem(line, len, "\"prefcap_events\"", 16));
  if (!ours) return prefcap_log_json(pc, line, len, NULL);
  /* the same refusals as any event line (docs/events.md): a tombstone is read as strictly */
  char err[600] = "";
  cJSON *obj;
  int rc = prefcap__json_parse_strict(line, len, &obj, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
  if (!cJSON_IsString(type) || (strcmp(type->valuestring, "erase") && strcmp(type->valuestring, "prefcap_events"))) {
    cJSON_Delete(obj);
    return prefcap_log_json(pc, line, len, NULL);
  }
  rc = !strcmp(type->valuestring, "erase") ? ingest_erase(pc, obj, err, sizeof err) : ingest_header(pc, obj, err, sizeof err);
  cJSON_Delete(obj);
  return rc ? prefcap__fail(pc, rc, "%s", err) : PREFCAP_OK;
}
