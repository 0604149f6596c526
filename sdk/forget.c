/* sdk/forget.c: erasure, lineage and retention. Erasing a user removes their generations, the
 * feedback on them, and everything derived from them, so that their text is gone from the database
 * file and its WAL (secure_delete zeroes what is freed; a TRUNCATE checkpoint empties the WAL), and
 * leaves a tombstone (the SHA-256 of the id) that refuses their late events (sdk/store.c). Lineage
 * reads what each export held (exports.lineage and export_users: ids and user hashes only, kept through erasure) to
 * name the exports, and so the fine-tunes, that held a user. Pruning drops old events that no live
 * pair needs. docs/storage.md ("Erasure, lineage and retention") is the long form of the rules. */
#include "forget.h"
#include "internal.h"
#include "sha256.h"
#include "upload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- small helpers -------------------------------------------------------------------------------

/* Runs one statement with up to two text parameters (?1, ?2) and one integer (?3), whichever it
 * has; adds the rows it changed to *changes (if not NULL). A PREFCAP code. */
static int run(sqlite3 *db, const char *sql, const char *t1, const char *t2, int64_t i3, uint64_t *changes) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  int np = sqlite3_bind_parameter_count(st);
  if (np >= 1) sqlite3_bind_text(st, 1, t1, -1, SQLITE_STATIC);
  if (np >= 2) sqlite3_bind_text(st, 2, t2, -1, SQLITE_STATIC);
  if (np >= 3) sqlite3_bind_int64(st, 3, i3);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return prefcap__sqlite_code(rc);
  if (changes) *changes += (uint64_t)sqlite3_changes64(db);
  return PREFCAP_OK;
}

/* The integer a query with the same parameters returns (0 when it returns no row). */
static int query_int(sqlite3 *db, const char *sql, const char *t1, int64_t i3, int64_t *out) {
  sqlite3_stmt *st;
  *out = 0;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  int np = sqlite3_bind_parameter_count(st);
  if (np >= 1) sqlite3_bind_text(st, 1, t1, -1, SQLITE_STATIC);
  if (np >= 3) sqlite3_bind_int64(st, 3, i3);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

/* Checkpoints the WAL into the file and truncates it to zero bytes, so that no old page image (with
 * erased text in it) is left in it. This needs every other connection to be outside a read
 * transaction: SQLite waits for them up to the busy timeout, then answers SQLITE_BUSY. */
static int truncate_wal(prefcap_t *pc, sqlite3 *db, bool *done) {
  int nlog = -1, nckpt = -1;
  int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &nlog, &nckpt);
  *done = rc == SQLITE_OK;
  if (rc == SQLITE_OK) return PREFCAP_OK;
  prefcap__log(pc, PREFCAP_LOG_WARN, "prefcap: WAL checkpoint of %s failed: %s", pc->o.path, sqlite3_errmsg(db));
  return prefcap__sqlite_code(rc);
}

// ---- exports, as lineage reports them -------------------------------------------------------------

typedef struct {
  char *id, *name, *path, *format, *upload_url;
  int64_t created, published;
  uint64_t records, user_records;
} export_row;
typedef struct { export_row *v; size_t n, cap; bool oom; } export_list;

static char *col_dup(sqlite3_stmt *st, int i, bool *oom) {
  const unsigned char *t = sqlite3_column_text(st, i);
  if (!t) return NULL;
  char *d = strdup((const char *)t);
  if (!d) *oom = true;
  return d;
}

/* Columns: id, name, path, format, upload_url, created, published, records, user_records. */
#define EXPORT_COLS "e.id, e.name, e.path, e.format, e.upload_url, e.created, ifnull(e.published, 0),"

static void row_from(sqlite3_stmt *st, export_row *r, bool *oom) {
  r->id = col_dup(st, 0, oom); r->name = col_dup(st, 1, oom); r->path = col_dup(st, 2, oom);
  r->format = col_dup(st, 3, oom);
  /* stores written before 2026-11-30 kept the URL as given: its credentials are not shown */
  const char *url = (const char *)sqlite3_column_text(st, 4);
  r->upload_url = url ? prefcap__url_for_humans_dup(url) : NULL;
  if (url && !r->upload_url) *oom = true;
  r->created = sqlite3_column_int64(st, 5);
  r->published = sqlite3_column_int64(st, 6);
  r->records = (uint64_t)sqlite3_column_int64(st, 7);
  r->user_records = (uint64_t)sqlite3_column_int64(st, 8);
}

static void row_free(export_row *r) { free(r->id); free(r->name); free(r->path); free(r->format); free(r->upload_url); }

static void list_free(export_list *l) {
  for (size_t i = 0; i < l->n; i++) row_free(&l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

/* Every export whose records include one with this user hash, oldest first. Pending exports (a run
 * that died after recording its records, before publishing) are listed too, with published = 0:
 * their file may exist, and telling the operator too much is the safe side of an erasure. */
static int exports_of_user(sqlite3 *db, const char *hash, export_list *out) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT " EXPORT_COLS " ifnull(e.records, 0), u.records FROM exports e"
                              " JOIN export_users u ON u.export_id = e.id WHERE u.user_hash = ?1 ORDER BY e.created, e.id",
                              -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->n == out->cap) {
      size_t cap = out->cap ? out->cap * 2 : 8;
      export_row *v = realloc(out->v, cap * sizeof *v);
      if (!v) { out->oom = true; break; }
      out->v = v; out->cap = cap;
    }
    export_row *r = &out->v[out->n++];
    memset(r, 0, sizeof *r);
    row_from(st, r, &out->oom);
  }
  sqlite3_finalize(st);
  if (out->oom) return PREFCAP_ENOMEM;
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

static void call_fn(const export_row *r, prefcap_export_fn fn, void *ud) {
  prefcap_export_info_t info = {r->id, r->name, r->path, r->format, r->upload_url, r->created, r->published,
                                r->records, r->user_records};
  fn(&info, ud);
}

// ---- erasure -------------------------------------------------------------------------------------

/* The erasure works on the set of the user's generation ids, gathered once into a temporary table
 * (one scan of generations: an index on user_id would make every capture pay for a rare erasure;
 * see the note in sdk/store.c's migrations). */
static const char *const sql_gather =
    "DROP TABLE IF EXISTS temp.forget_gens;"
    "CREATE TEMP TABLE forget_gens(id TEXT PRIMARY KEY) WITHOUT ROWID;";
#define USER_GENS "temp.forget_gens"

/* Does the user share derived rows with anyone else? A pair of another user's unit that names one of
 * the user's generations (a choice or rating against it, a regeneration of it), another user's
 * generation that regenerated one of theirs or was regenerated by one (its label says
 * "regenerated"). Those units must be derived again once the user's rows are gone. */
static const char *const sql_shared =
    "SELECT EXISTS(SELECT 1 FROM pairs WHERE unit NOT IN " USER_GENS
    "   AND (chosen_id IN " USER_GENS " OR rejected_id IN " USER_GENS "))"
    " OR EXISTS(SELECT 1 FROM " USER_GENS " f JOIN generations c ON c.regenerates = f.id WHERE c.id NOT IN " USER_GENS ")"
    " OR EXISTS(SELECT 1 FROM " USER_GENS " f JOIN generations g ON g.id = f.id JOIN generations p ON p.id = g.regenerates"
    "   WHERE p.id NOT IN " USER_GENS ")";

/* Records the hash of each of the user's generation ids, so late feedback on them is refused. */
static int record_erased_generations(sqlite3 *db, int64_t now) {
  sqlite3_stmt *sel, *ins;
  int rc = sqlite3_prepare_v2(db, "SELECT id FROM " USER_GENS, -1, &sel, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  rc = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO erased_generations(gen_hash, ts) VALUES(?1, ?2)", -1, &ins, NULL);
  if (rc) { sqlite3_finalize(sel); return prefcap__sqlite_code(rc); }
  while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(sel, 0);
    char h[65];
    prefcap__sha256_hex(id, strlen(id), h);
    sqlite3_bind_text(ins, 1, h, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 2, now);
    int r2 = sqlite3_step(ins);
    sqlite3_reset(ins);
    if (r2 != SQLITE_DONE) { rc = r2; break; }
  }
  sqlite3_finalize(sel);
  sqlite3_finalize(ins);
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

/* The erasure itself, inside the caller's transaction. */
static int erase_rows(sqlite3 *db, const char *user_id, const char *hash, prefcap__erase_counts *c, bool *shared) {
  int64_t now = prefcap__now_ms(), v = 0;
  int rc = sqlite3_exec(db, sql_gather, NULL, NULL, NULL) ? prefcap__sqlite_code(sqlite3_errcode(db)) : PREFCAP_OK;
  if (!rc) rc = run(db, "INSERT INTO " USER_GENS " SELECT id FROM generations WHERE user_id = ?1", user_id, NULL, 0, NULL);
  if (!rc) rc = query_int(db, sql_shared, NULL, 0, &v);
  if (rc) return rc;
  *shared = v != 0;
  if ((rc = record_erased_generations(db, now))) return rc;
  /* derived rows first, then the events, then the generations they hang on */
  if ((rc = run(db, "DELETE FROM pairs WHERE unit IN " USER_GENS " OR chosen_id IN " USER_GENS
                    " OR rejected_id IN " USER_GENS, NULL, NULL, 0, &c->pairs)) ||
      (rc = run(db, "DELETE FROM labels WHERE gen_id IN " USER_GENS, NULL, NULL, 0, &c->labels)) ||
      (rc = run(db, "DELETE FROM rated WHERE gen_id IN " USER_GENS, NULL, NULL, 0, &c->rated)) ||
      (rc = run(db, "DELETE FROM events WHERE gen_id IN " USER_GENS " OR other_id IN " USER_GENS, NULL, NULL, 0, &c->events)) ||
      (rc = run(db, "DELETE FROM generations WHERE id IN " USER_GENS, NULL, NULL, 0, &c->generations)) ||
      (rc = run(db, "INSERT OR IGNORE INTO tombstones(user_hash, ts) VALUES(?2, ?3)", user_id, hash, now, NULL)))
    return rc;
  /* An export run with --user ID wrote the id into its recorded filters: it is replaced by the hash,
   * which is how lineage knows the user from now on. */
  prefcap__buf lit = {0}, repl = {0};
  prefcap__buf_json_str(&lit, user_id);
  prefcap__buf_printf(&repl, "\"sha256:%s\"", hash);
  if (lit.oom || repl.oom || !lit.p || !repl.p) rc = PREFCAP_ENOMEM;
  else rc = run(db, "UPDATE exports SET filters = replace(filters, ?1, ?2) WHERE instr(filters, ?1) > 0", lit.p, repl.p, 0, NULL);
  free(lit.p);
  free(repl.p);
  return rc;
}

/* The leftovers of killed exports that forget could not remove: each logged, and listed in one
 * message that forget returns. */
typedef struct { prefcap_t *pc; prefcap__buf list; int n; } leftovers;

static void leftover_stays(const char *path, const char *why, void *ud) {
  leftovers *l = ud;
  prefcap__log(l->pc, PREFCAP_LOG_WARN, "prefcap: forget: could not remove %s, left by a killed export (it may hold"
               " the user's text): %s", path, why);
  prefcap__buf_printf(&l->list, "%s%s (%s)", l->n++ ? ", " : "", path, why);
}

int prefcap__forget_user_ex(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata,
                            prefcap__erase_counts *counts) {
  prefcap__erase_counts c = {0};
  if (counts) *counts = c;
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_forget_user: no handle");
  if (!user_id || !*user_id) return prefcap__fail(pc, PREFCAP_EINVAL, "forget: the user id is missing");
  if (strlen(user_id) > PREFCAP_ID_MAX || !prefcap__utf8_valid(user_id, strlen(user_id)))
    return prefcap__fail(pc, PREFCAP_EINVAL, "forget: the user id is not an id (longer than %d bytes, or not UTF-8)", PREFCAP_ID_MAX);
  char hash[65], err[512];
  prefcap__user_hash(user_id, hash);
  export_list exports = {0};
  bool shared = false;
  pthread_mutex_lock(&pc->db_mu);
  sqlite3 *db = prefcap__store_db(pc->store);
  int rc = prefcap__store_begin(pc->store, err, sizeof err);
  if (rc) {
    pthread_mutex_unlock(&pc->db_mu);
    return prefcap__fail(pc, rc, "forget: %s", err);
  }
  rc = erase_rows(db, user_id, hash, &c, &shared);
  if (!rc) rc = exports_of_user(db, hash, &exports);
  if (rc) {
    snprintf(err, sizeof err, "%s", rc == PREFCAP_ENOMEM ? "out of memory" : sqlite3_errmsg(db));
    prefcap__store_rollback(pc->store);
    pthread_mutex_unlock(&pc->db_mu);
    list_free(&exports);
    return prefcap__fail(pc, rc, "forget: nothing was erased: %s", err);
  }
  rc = prefcap__store_commit(pc->store, err, sizeof err);
  /* the temporary table went with a rollback; after a commit it is dropped here */
  sqlite3_exec(db, "DROP TABLE IF EXISTS temp.forget_gens", NULL, NULL, NULL);
  if (rc) {
    pthread_mutex_unlock(&pc->db_mu);
    list_free(&exports);
    return prefcap__fail(pc, rc, "forget: nothing was erased: %s", err);
  }
  /* From here the user's rows are gone and the tombstone is in place. What follows completes it;
   * a failure is reported, and running forget again (it is idempotent) finishes the job. */
  c.committed = true;
  const char *stage = NULL;
  if (shared) {
    /* the other users' units that were paired with the erased generations: derived again from what
     * is left, exactly as `derive --all` would (rare: pairs across users need a shared session) */
    c.rederived = true;
    if ((rc = prefcap__derive(pc->store, 1, err, sizeof err))) stage = "re-deriving the pairs shared with other users";
  }
  /* a killed export's temporary files hold whole copies of what it was writing: removed now (each one
   * a running export still holds, or that cannot be removed, is named in the result) */
  leftovers left = {pc, {0}, 0};
  char lerr[512] = "";
  int lrc = rc ? PREFCAP_OK : prefcap__export_remove_leftovers(pc, NULL, leftover_stays, &left, lerr, sizeof lerr);
  if (!rc && sqlite3_exec(db, "VACUUM", NULL, NULL, NULL) != SQLITE_OK) {
    /* secure_delete zeroes the deleted cells, but b-tree page splits leave stale copies of cells in
     * the unused middle of pages, out of SQLite's reach (tests/sdk/test_forget.c found the user's
     * text there). VACUUM rebuilds every page from the live rows only. */
    rc = prefcap__sqlite_code(sqlite3_extended_errcode(db));
    stage = "rewriting the file (VACUUM)";
    snprintf(err, sizeof err, "%s", sqlite3_errmsg(db));
  }
  if (!rc) {
    rc = truncate_wal(pc, db, &c.wal_truncated);
    if (rc) {
      stage = "truncating the WAL";
      snprintf(err, sizeof err, "%s%s; the erased text may remain in %s-wal: run forget again%s", sqlite3_errmsg(db),
               rc == PREFCAP_EBUSY ? ": another connection is still reading the store" : "", pc->o.path,
               rc == PREFCAP_EBUSY ? " once it is closed" : "");
    }
  }
  pthread_mutex_unlock(&pc->db_mu);
  prefcap__log(pc, PREFCAP_LOG_INFO, "prefcap: erased a user (%s): %llu rows; %zu export(s) held their records", hash,
               (unsigned long long)prefcap__erase_total(&c), exports.n);
  if (fn)
    for (size_t i = 0; i < exports.n; i++) call_fn(&exports.v[i], fn, userdata);
  list_free(&exports);
  if (counts) *counts = c;
  if (rc) { free(left.list.p); return prefcap__fail(pc, rc, "forget: the rows are erased, but %s failed: %s", stage, err); }
  if (lrc) { free(left.list.p); return prefcap__fail(pc, lrc, "forget: the rows are erased, but the leftovers of killed exports were not looked for: %s", lerr); }
  if (left.n) {
    rc = prefcap__fail(pc, PREFCAP_EIO, "forget: the rows are erased, but %d file(s) left by killed exports could not be"
                       " removed: %s", left.n, left.list.p ? left.list.p : "(out of memory)");
    free(left.list.p);
    return rc;
  }
  return PREFCAP_OK;
}

int prefcap_forget_user(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata, uint64_t *erased) {
  prefcap__erase_counts c;
  int rc = prefcap__forget_user_ex(pc, user_id, fn, userdata, &c);
  if (erased) *erased = prefcap__erase_total(&c);
  return rc;
}

// ---- lineage -------------------------------------------------------------------------------------

int prefcap_lineage_user(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_lineage_user: no handle");
  if (!user_id || !*user_id) return prefcap__fail(pc, PREFCAP_EINVAL, "lineage: the user id is missing");
  char hash[65];
  prefcap__user_hash(user_id, hash);
  export_list exports = {0};
  pthread_mutex_lock(&pc->db_mu);
  sqlite3 *db = prefcap__store_db(pc->store);
  int rc = exports_of_user(db, hash, &exports);
  if (rc) prefcap__fail(pc, rc, "lineage: %s", rc == PREFCAP_ENOMEM ? "out of memory" : sqlite3_errmsg(db));
  pthread_mutex_unlock(&pc->db_mu);
  /* callbacks run outside the lock, so they may call back into prefcap */
  if (!rc && fn)
    for (size_t i = 0; i < exports.n; i++) call_fn(&exports.v[i], fn, userdata);
  list_free(&exports);
  return rc;
}

int prefcap_lineage_export(prefcap_t *pc, const char *export_id, prefcap_export_fn fn,
                           void (*record_fn)(const char *json_line, void *userdata), void *userdata) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_lineage_export: no handle");
  if (!export_id || !*export_id) return prefcap__fail(pc, PREFCAP_EINVAL, "lineage: the export id is missing");
  pthread_mutex_lock(&pc->db_mu);
  sqlite3 *db = prefcap__store_db(pc->store);
  sqlite3_stmt *st = NULL;
  export_row row = {0};
  bool oom = false, found = false;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT " EXPORT_COLS " ifnull(e.records, 0), 0 FROM exports e WHERE e.id = ?1",
                              -1, &st, NULL);
  if (!rc) {
    sqlite3_bind_text(st, 1, export_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) { found = true; row_from(st, &row, &oom); rc = SQLITE_OK; }
    else if (rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(st);
  }
  if (rc || oom) {
    prefcap__fail(pc, oom ? PREFCAP_ENOMEM : prefcap__sqlite_code(rc), "lineage: %s", oom ? "out of memory" : sqlite3_errmsg(db));
    pthread_mutex_unlock(&pc->db_mu);
    row_free(&row);
    return oom ? PREFCAP_ENOMEM : prefcap__sqlite_code(rc);
  }
  pthread_mutex_unlock(&pc->db_mu);
  if (!found) return prefcap__fail(pc, PREFCAP_ENOTFOUND, "lineage: no export '%s' in %s", export_id, pc->o.path);
  if (fn) call_fn(&row, fn, userdata);
  row_free(&row);
  if (!record_fn) return PREFCAP_OK;
  /* the records are streamed (an export may hold millions), so record_fn runs under the handle's
   * lock: it must not call back into prefcap on this handle */
  pthread_mutex_lock(&pc->db_mu);
  /* the export's users (index -> hash), then its records from the lineage blob */
  char (*hashes)[65] = NULL;
  size_t nh = 0;
  rc = sqlite3_prepare_v2(db, "SELECT user_index, user_hash FROM export_users WHERE export_id = ?1 ORDER BY user_index", -1, &st, NULL);
  if (!rc) {
    sqlite3_bind_text(st, 1, export_id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      int64_t ix = sqlite3_column_int64(st, 0);
      if (ix < 0 || ix > 100000000) continue;
      if ((size_t)ix >= nh) {
        size_t n2 = (size_t)ix + 1;
        char (*h2)[65] = realloc(hashes, n2 * sizeof *h2);
        if (!h2) { oom = true; break; }
        for (size_t i = nh; i < n2; i++) h2[i][0] = 0;
        hashes = h2; nh = n2;
      }
      snprintf(hashes[ix], 65, "%s", (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (!rc && !oom) rc = sqlite3_prepare_v2(db, "SELECT ifnull(record_kind, 'pair'), lineage FROM exports WHERE id = ?1", -1, &st, NULL);
  if (!rc && !oom) {
    sqlite3_bind_text(st, 1, export_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_blob(st, 1)) {
      char kind[8];
      snprintf(kind, sizeof kind, "%s", (const char *)sqlite3_column_text(st, 0));
      prefcap__lineage_iter it = {sqlite3_column_blob(st, 1), NULL, 0};
      it.end = it.p + sqlite3_column_bytes(st, 1);
      prefcap__buf b = {0};
      int64_t rid;
      int32_t u[2];
      int nu;
      bool bad = false;
      /* one line per (record, user): a record holding no user's text has one line with "" */
      while (!oom && prefcap__lineage_next(&it, &rid, u, &nu, &bad)) {
        for (int k = 0; k < (nu ? nu : 1); k++) {
          b.len = 0;
          prefcap__buf_printf(&b, "{\"kind\":\"%s\",\"id\":%lld,\"user_hash\":\"%s\"}", kind, (long long)rid,
                              nu && (size_t)u[k] < nh ? hashes[u[k]] : "");
          if (b.oom) { oom = true; break; }
          record_fn(b.p, userdata);
        }
      }
      free(b.p);
      if (bad) { rc = SQLITE_CORRUPT; }
    }
    sqlite3_finalize(st);
  }
  free(hashes);
  if (rc || oom) rc = prefcap__fail(pc, oom ? PREFCAP_ENOMEM : prefcap__sqlite_code(rc), "lineage: %s",
                                    oom ? "out of memory" : sqlite3_errmsg(db));
  pthread_mutex_unlock(&pc->db_mu);
  return rc;
}

// ---- retention -----------------------------------------------------------------------------------

/* The rule, in SQL (?3 is the cutoff, in ms; docs/storage.md says it in words):
 *  1. keep every generation at or after the cutoff;
 *  2. a pair is live when one of the generations it names is kept by 1: keep every generation a
 *     live pair names, however old (it is the evidence the pair is derived from);
 *  3. keep the generations that regenerated a kept one, transitively: whether a generation was
 *     regenerated decides its label and whether it can be chosen, so its replacements are evidence;
 *  4. every other generation goes, with the events on it (and choices against it), its label, its
 *     rated row and every pair naming it; events older than the cutoff for generations never
 *     stored go too.
 * What is left derives exactly what is left: `derive --all` afterwards changes nothing (tested). */
static const char *const prune_sql[] = {
    "DROP TABLE IF EXISTS temp.prune_keep; DROP TABLE IF EXISTS temp.prune_doomed;",
    "CREATE TEMP TABLE prune_keep(id TEXT PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TEMP TABLE prune_doomed(id TEXT PRIMARY KEY) WITHOUT ROWID;",
    "INSERT INTO prune_keep SELECT id FROM generations WHERE ts >= ?3",
    "WITH live(u, c, r) AS (SELECT unit, chosen_id, rejected_id FROM pairs p WHERE EXISTS("
    "   SELECT 1 FROM generations g WHERE g.id IN (p.unit, p.chosen_id, p.rejected_id) AND g.ts >= ?3)),"
    " named(id) AS (SELECT u FROM live UNION SELECT c FROM live WHERE c IS NOT NULL UNION SELECT r FROM live)"
    " INSERT OR IGNORE INTO prune_keep SELECT g.id FROM named n JOIN generations g ON g.id = n.id",
    "WITH RECURSIVE d(id) AS (SELECT id FROM prune_keep UNION SELECT g.id FROM generations g JOIN d ON g.regenerates = d.id)"
    " INSERT OR IGNORE INTO prune_keep SELECT id FROM d",
    "INSERT INTO prune_doomed SELECT id FROM generations WHERE ts < ?3 AND id NOT IN temp.prune_keep",
};

int prefcap__prune_ex(prefcap_t *pc, int64_t older_than_ms, bool dry_run, bool vacuum, prefcap__erase_counts *counts) {
  prefcap__erase_counts c = {0};
  if (counts) *counts = c;
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_prune: no handle");
  if (older_than_ms <= 0) return prefcap__fail(pc, PREFCAP_EINVAL, "prune: the cutoff must be a positive Unix time in ms");
  char err[512];
  pthread_mutex_lock(&pc->db_mu);
  sqlite3 *db = prefcap__store_db(pc->store);
  /* derive first, so that the pairs say what the events support now */
  int rc = prefcap__derive(pc->store, 0, err, sizeof err);
  if (rc) {
    pthread_mutex_unlock(&pc->db_mu);
    return prefcap__fail(pc, rc, "prune: deriving pending pairs first: %s", err);
  }
  if ((rc = prefcap__store_begin(pc->store, err, sizeof err))) {
    pthread_mutex_unlock(&pc->db_mu);
    return prefcap__fail(pc, rc, "prune: %s", err);
  }
  for (size_t i = 0; i < sizeof prune_sql / sizeof *prune_sql && !rc; i++) {
    if (i < 2) rc = sqlite3_exec(db, prune_sql[i], NULL, NULL, NULL) ? prefcap__sqlite_code(sqlite3_errcode(db)) : PREFCAP_OK;
    else rc = run(db, prune_sql[i], NULL, NULL, older_than_ms, NULL);
  }
  int64_t kept_old = 0;
  if (!rc) rc = query_int(db, "SELECT count(*) FROM generations WHERE ts < ?3 AND id IN temp.prune_keep", NULL, older_than_ms, &kept_old);
  c.kept_old = (uint64_t)kept_old;
  if (!rc &&
      !(rc = run(db, "DELETE FROM pairs WHERE unit IN temp.prune_doomed OR chosen_id IN temp.prune_doomed"
                     " OR rejected_id IN temp.prune_doomed", NULL, NULL, 0, &c.pairs)) &&
      !(rc = run(db, "DELETE FROM labels WHERE gen_id IN temp.prune_doomed", NULL, NULL, 0, &c.labels)) &&
      !(rc = run(db, "DELETE FROM rated WHERE gen_id IN temp.prune_doomed", NULL, NULL, 0, &c.rated)) &&
      !(rc = run(db, "DELETE FROM events WHERE gen_id IN temp.prune_doomed OR other_id IN temp.prune_doomed"
                     " OR (ts < ?3 AND NOT EXISTS(SELECT 1 FROM generations g WHERE g.id = events.gen_id))",
                 NULL, NULL, older_than_ms, &c.events)))
    rc = run(db, "DELETE FROM generations WHERE id IN temp.prune_doomed", NULL, NULL, 0, &c.generations);
  if (rc) snprintf(err, sizeof err, "%s", sqlite3_errmsg(db));
  if (rc || dry_run) prefcap__store_rollback(pc->store);
  else rc = prefcap__store_commit(pc->store, err, sizeof err);
  sqlite3_exec(db, prune_sql[0], NULL, NULL, NULL);
  bool deleted = !rc && !dry_run;   /* committed: the counts are true even if VACUUM fails below */
  if (deleted && vacuum && sqlite3_exec(db, "VACUUM", NULL, NULL, NULL) != SQLITE_OK) {
    rc = prefcap__sqlite_code(sqlite3_extended_errcode(db));
    snprintf(err, sizeof err, "%s", sqlite3_errmsg(db));
  }
  /* retention is often a legal promise too: the pruned text leaves the WAL now if it can, and at
   * the next checkpoint otherwise (not an error: the rows are gone from the file itself) */
  if (!rc && deleted && (prefcap__erase_total(&c) || vacuum) &&
      sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) == SQLITE_OK)
    c.wal_truncated = true;
  pthread_mutex_unlock(&pc->db_mu);
  if (counts && (!rc || deleted)) *counts = c;
  if (rc) return prefcap__fail(pc, rc, "prune: %s: %s", deleted ? "the rows are deleted, but VACUUM failed" : "nothing was deleted", err);
  return PREFCAP_OK;
}

int prefcap_prune(prefcap_t *pc, int64_t older_than_ms, uint64_t *deleted) {
  prefcap__erase_counts c;
  int rc = prefcap__prune_ex(pc, older_than_ms, false, false, &c);
  if (deleted) *deleted = prefcap__erase_total(&c);
  return rc;
}
