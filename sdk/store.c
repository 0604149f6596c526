/* sdk/store.c: the SQLite file behind a handle: creating it 0600, WAL and the pragmas that make the
 * durability promise true, the versioned schema and its migrations, and the prepared statements that
 * append events. Only the code here and in derive.c speaks SQL.
 *
 * Layout (schema version 1; docs/storage.md has the long form):
 *   generations  one row per generation, appended; id is the caller's (or content-made) id
 *   events       one row per feedback event, appended; event_id is the idempotency key
 *   pairs/labels derived from the two above by derive.c; re-derivable at any time
 *   rated        derived: each rated generation's prompt key and latest rating (for rating pairs)
 *   meta         schema facts, derivation cursors, rule overrides
 *   counters     totals across processes and runs: dropped, failed
 *   tombstones   hashes of erased users (their late events are refused)
 * Schema version 2 adds: exports (every export, pending or published, with the records it held and
 * whose they were: lineage), export_users (each export's users by hash: who was in which export),
 * watermarks (per export name).
 * Schema version 3 adds: erased_generations (hashes of erased generations' ids: late feedback refused).
 * Schema version 4 adds: meta 'store_id', the store's UUID, and fleet_sources (the events files a central
 * store received, by source store; sdk/fleet.c). */
#include "internal.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define APPLICATION_ID 0x50464350 /* "PFCP" in the file header, so a foreign file is recognised */

struct prefcap__store {
  sqlite3 *db;
  sqlite3_stmt *begin, *commit, *rollback, *ins_gen, *ins_ev, *add_counter, *erased, *any_erased, *erased_gen;
  bool have_tombstones;     /* looked up once per transaction, so a store with none pays nothing */
};

// ---- schema and migrations -----------------------------------------------------------------------

/* migrations[v] takes a store from version v to v+1. Append only; never edit a released step. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE generations("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE, event_id TEXT, ts INTEGER NOT NULL, received INTEGER NOT NULL,"
    "  user_id TEXT, session_id TEXT, model TEXT, model_version TEXT,"
    "  system TEXT, prompt TEXT, messages TEXT, completion TEXT NOT NULL, params TEXT,"
    "  regenerates TEXT, latency_ms INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER);"
    "CREATE INDEX generations_regenerates ON generations(regenerates) WHERE regenerates IS NOT NULL;"
    "CREATE TABLE events("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  event_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, gen_id TEXT NOT NULL, other_id TEXT,"
    "  text TEXT, value INTEGER, source TEXT NOT NULL, ts INTEGER NOT NULL, received INTEGER NOT NULL);"
    "CREATE INDEX events_gen ON events(gen_id);"
    "CREATE INDEX events_other ON events(other_id) WHERE other_id IS NOT NULL;"
    "CREATE TABLE pairs("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  key TEXT NOT NULL UNIQUE, unit TEXT NOT NULL, signal TEXT NOT NULL,"
    "  chosen_id TEXT, chosen_text TEXT, rejected_id TEXT NOT NULL,"
    "  weight REAL NOT NULL, source TEXT NOT NULL, flags TEXT NOT NULL DEFAULT '',"
    "  version INTEGER NOT NULL, created INTEGER NOT NULL);"
    "CREATE INDEX pairs_unit ON pairs(unit);"
    "CREATE INDEX pairs_version ON pairs(version);"
    "CREATE TABLE labels("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  gen_id TEXT NOT NULL UNIQUE, desirable INTEGER NOT NULL, signal TEXT NOT NULL,"
    "  weight REAL NOT NULL, source TEXT NOT NULL, version INTEGER NOT NULL, created INTEGER NOT NULL);"
    "CREATE INDEX labels_version ON labels(version);"
    "CREATE TABLE rated(gen_id TEXT PRIMARY KEY, prompt_key TEXT NOT NULL, user_id TEXT, session_id TEXT,"
    "  value INTEGER NOT NULL, source TEXT NOT NULL);"
    "CREATE INDEX rated_user ON rated(prompt_key, user_id, value);"
    "CREATE INDEX rated_session ON rated(prompt_key, session_id, value);"
    "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE tombstones(user_hash TEXT PRIMARY KEY, ts INTEGER NOT NULL);"
    "INSERT INTO meta(key, value) VALUES('created', strftime('%Y-%m-%dT%H:%M:%fZ','now'));",
    /* 1 -> 2: exports and lineage. An export is 'pending' from the moment its range is fixed until
     * its file is complete, renamed into place (and uploaded, if asked); then 'published', and only
     * then does its name's watermark move. export_records ties each published record to the export
     * and to its user's hash, so erasure can name the exports that held a user after the user's rows
     * are gone. */
    "CREATE TABLE exports("
    "  id TEXT PRIMARY KEY, name TEXT, path TEXT NOT NULL, format TEXT NOT NULL, filters TEXT NOT NULL,"
    "  status TEXT NOT NULL CHECK(status IN ('pending', 'published')),"
    "  version_from INTEGER NOT NULL, version_to INTEGER NOT NULL,"
    "  created INTEGER NOT NULL, published INTEGER, sha256 TEXT, records INTEGER, upload_url TEXT,"
    "  record_kind TEXT CHECK(record_kind IN ('pair', 'label')), lineage BLOB);"
    "CREATE INDEX exports_name ON exports(name, status);"
    /* lineage, compactly (a row per record cost more than writing the export): exports.lineage
     * holds each record's id and the users it holds, as indexes into export_users (prefcap__lineage_*) */
    "CREATE TABLE export_users("
    "  export_id TEXT NOT NULL, user_index INTEGER NOT NULL, user_hash TEXT NOT NULL, records INTEGER NOT NULL,"
    "  PRIMARY KEY(export_id, user_index)) WITHOUT ROWID;"
    "CREATE INDEX export_users_user ON export_users(user_hash);"
    "CREATE TABLE watermarks(name TEXT PRIMARY KEY, version INTEGER NOT NULL, export_id TEXT NOT NULL, updated INTEGER NOT NULL);",
    /* 2 -> 3: erasure (sdk/forget.c). Feedback carries no user id, so the tombstone alone cannot
     * refuse late feedback on an erased user's generations: the SHA-256 of each erased generation's
     * id is kept here (a hash, since caller-made ids may themselves be personal). */
    /* (No index on generations(user_id): user ids arrive in random order, so such an index dirties a
     * random page per insert and cut ingest to a third (bench/ingest_bench). Erasure, which is rare,
     * scans instead.) */
    "CREATE TABLE erased_generations(gen_hash TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID;",
    /* 3 -> 4: the store's id (sdk/fleet.c), a random UUID (version 4) made once, with the store or by
     * this migration: an events export names its source by it. */
    "INSERT OR IGNORE INTO meta(key, value) SELECT 'store_id', lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' ||"
    " substr(h, 14, 3) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(h, 18, 3) || '-' || substr(h, 21, 12))"
    " FROM (SELECT hex(randomblob(16)) AS h);"
    /* a central store: each events file received, once per (source store, range), with its counts */
    "CREATE TABLE fleet_sources(store_id TEXT NOT NULL, range TEXT NOT NULL, generations INTEGER NOT NULL,"
    "  feedback INTEGER NOT NULL, erasures INTEGER NOT NULL, received INTEGER NOT NULL, PRIMARY KEY(store_id, range)) WITHOUT ROWID;",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof *migrations))
_Static_assert(N_MIGRATIONS == PREFCAP_SCHEMA_VERSION, "a migration per schema version");

int prefcap__sqlite_code(int rc) {
  switch (rc & 0xff) {
    case SQLITE_OK: case SQLITE_DONE: case SQLITE_ROW: return PREFCAP_OK;
    case SQLITE_FULL: return PREFCAP_EFULL;
    case SQLITE_BUSY: case SQLITE_LOCKED: return PREFCAP_EBUSY;
    case SQLITE_NOMEM: return PREFCAP_ENOMEM;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: return PREFCAP_ECORRUPT;
    case SQLITE_TOOBIG: return PREFCAP_ETOOBIG;
    default: return PREFCAP_EIO;
  }
}

/* A code for a failed SQLite call, with the detail. A write cut short by a full disk or a file-size
 * limit surfaces from SQLite as SQLITE_FULL or as SQLITE_IOERR_WRITE with errno ENOSPC/EFBIG; both
 * mean "no space", which the caller can retry, unlike a real I/O error. */
static int fail_db_errno(sqlite3 *db, int rc, int errno_after, const char *what, char *err, size_t errlen) {
  int code = prefcap__sqlite_code(rc);
  int sys = db ? sqlite3_system_errno(db) : 0;
  /* SQLite does not always keep the errno of a failed write (a write past RLIMIT_FSIZE reports
   * SQLITE_IOERR_WRITE with system errno 0); the C errno right after the call still has it */
  if (!sys && (rc & 0xff) == SQLITE_IOERR) sys = errno_after;
  if (code == PREFCAP_EIO && (sys == ENOSPC || sys == EFBIG || sys == EDQUOT)) code = PREFCAP_EFULL;
  if (err)
    snprintf(err, errlen, "%s: %s%s%s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
             sys ? ": " : "", sys ? strerror(sys) : "");
  return code;
}

static int fail_db(sqlite3 *db, int rc, const char *what, char *err, size_t errlen) {
  return fail_db_errno(db, rc, errno, what, err, errlen);
}

static int exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen) {
  int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  int e = errno;
  return rc == SQLITE_OK ? PREFCAP_OK : fail_db_errno(db, rc, e, what, err, errlen);
}

static int pragma_int(sqlite3 *db, const char *sql, int *out) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc) return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) { *out = sqlite3_column_int(st, 0); rc = SQLITE_OK; }
  sqlite3_finalize(st);
  return rc;
}

static int migrate(sqlite3 *db, const char *path, char *err, size_t errlen) {
  int rc = exec(db, "BEGIN IMMEDIATE", "cannot lock the store to check its schema", err, errlen);
  if (rc) return rc;
  int version = 0, app = 0, tables = 0;
  if (pragma_int(db, "PRAGMA user_version", &version) || pragma_int(db, "PRAGMA application_id", &app) ||
      pragma_int(db, "SELECT count(*) FROM sqlite_schema", &tables)) {
    rc = fail_db(db, sqlite3_errcode(db), "cannot read the store's header", err, errlen);
    goto out;
  }
  if ((app != 0 && app != APPLICATION_ID) || (app == 0 && tables > 0)) {
    snprintf(err, errlen, "%s is an SQLite file but not a prefcap store (application_id %d, %d tables)", path, app, tables);
    rc = PREFCAP_ECORRUPT;
    goto out;
  }
  if (version > PREFCAP_SCHEMA_VERSION) {
    snprintf(err, errlen, "%s has schema version %d; this prefcap (%s) knows up to %d: upgrade prefcap",
             path, version, PREFCAP_VERSION_STRING, PREFCAP_SCHEMA_VERSION);
    rc = PREFCAP_ESCHEMA;
    goto out;
  }
  for (int v = version; v < PREFCAP_SCHEMA_VERSION; v++) {
    char what[64];
    snprintf(what, sizeof what, "schema migration %d -> %d failed", v, v + 1);
    if ((rc = exec(db, migrations[v], what, err, errlen))) goto out;
  }
  if (version < PREFCAP_SCHEMA_VERSION) {
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA application_id=%d; PRAGMA user_version=%d", APPLICATION_ID, PREFCAP_SCHEMA_VERSION);
    if ((rc = exec(db, sql, "cannot stamp the schema version", err, errlen))) goto out;
  }
  return exec(db, "COMMIT", "cannot commit the schema", err, errlen);
out:
  sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

// ---- open / close --------------------------------------------------------------------------------

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t errlen) {
  int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
  return rc == SQLITE_OK ? PREFCAP_OK : fail_db(db, rc, "cannot prepare a statement", err, errlen);
}

int prefcap__store_open(const prefcap_options_t *o, prefcap__store **out, char *err, size_t errlen) {
  *out = NULL;
  /* Create the file ourselves so that it is 0600 from its first byte (SQLite gives its -wal and -shm
   * files the main file's mode). O_EXCL: another process creating it at the same time is fine. */
  int fd = open(o->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) close(fd);
  else if (errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", o->path, strerror(errno));
    return errno == ENOSPC ? PREFCAP_EFULL : PREFCAP_EIO;
  }
  prefcap__store *s = calloc(1, sizeof *s);
  if (!s) { snprintf(err, errlen, "out of memory"); return PREFCAP_ENOMEM; }
  int rc = sqlite3_open_v2(o->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    rc = fail_db(s->db, rc, o->path, err, errlen);
    goto fail;
  }
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, o->busy_timeout_ms);
  /* WAL: readers never block the writer and a commit is one append. synchronous=FULL in sync mode
   * makes "returned" mean "on disk"; async mode already trades the last batch for speed, and NORMAL
   * in WAL still never corrupts the file, only may lose the last commits on power loss.
   * secure_delete: erased text is overwritten, not left in free pages. */
  char pragmas[256];
  snprintf(pragmas, sizeof pragmas,
           "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA secure_delete=ON; PRAGMA foreign_keys=OFF;",
           o->mode == PREFCAP_SYNC ? "FULL" : "NORMAL");
  if ((rc = exec(s->db, pragmas, o->path, err, errlen))) goto fail;
  if ((rc = migrate(s->db, o->path, err, errlen))) goto fail;
  if ((rc = prepare(s->db, "BEGIN IMMEDIATE", &s->begin, err, errlen)) ||
      (rc = prepare(s->db, "COMMIT", &s->commit, err, errlen)) ||
      (rc = prepare(s->db, "ROLLBACK", &s->rollback, err, errlen)) ||
      (rc = prepare(s->db,
                    "INSERT OR IGNORE INTO generations(id, event_id, ts, received, user_id, session_id, model,"
                    " model_version, system, prompt, messages, completion, params, regenerates, latency_ms,"
                    " prompt_tokens, completion_tokens) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
                    &s->ins_gen, err, errlen)) ||
      (rc = prepare(s->db,
                    "INSERT OR IGNORE INTO events(event_id, type, gen_id, other_id, text, value, source, ts, received)"
                    " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                    &s->ins_ev, err, errlen)) ||
      (rc = prepare(s->db,
                    "INSERT INTO counters(name, value) VALUES(?1, ?2)"
                    " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    &s->add_counter, err, errlen)) ||
      (rc = prepare(s->db, "SELECT 1 FROM tombstones WHERE user_hash = ?1", &s->erased, err, errlen)) ||
      (rc = prepare(s->db, "SELECT EXISTS(SELECT 1 FROM tombstones)", &s->any_erased, err, errlen)) ||
      (rc = prepare(s->db, "SELECT 1 FROM erased_generations WHERE gen_hash = ?1", &s->erased_gen, err, errlen)))
    goto fail;
  *out = s;
  return PREFCAP_OK;
fail:
  prefcap__store_close(s);
  return rc;
}

void prefcap__store_close(prefcap__store *s) {
  if (!s) return;
  sqlite3_stmt *all[] = {s->begin, s->commit, s->rollback, s->ins_gen, s->ins_ev, s->add_counter, s->erased, s->any_erased,
                         s->erased_gen};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) sqlite3_finalize(all[i]);
  sqlite3_close(s->db);   /* the last connection to close checkpoints the WAL */
  free(s);
}

sqlite3 *prefcap__store_db(prefcap__store *s) { return s->db; }

// ---- transactions and inserts --------------------------------------------------------------------

static int step_reset(prefcap__store *s, sqlite3_stmt *st, const char *what, char *err, size_t errlen) {
  errno = 0;
  int rc = sqlite3_step(st);
  int e = errno;
  sqlite3_reset(st);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) return PREFCAP_OK;
  return fail_db_errno(s->db, rc, e, what, err, errlen);
}

int prefcap__store_begin(prefcap__store *s, char *err, size_t errlen) {
  int rc = step_reset(s, s->begin, "cannot begin a write transaction", err, errlen);
  if (rc) return rc;
  s->have_tombstones = false;
  int step = sqlite3_step(s->any_erased);
  if (step == SQLITE_ROW) s->have_tombstones = sqlite3_column_int(s->any_erased, 0) != 0;
  sqlite3_reset(s->any_erased);
  if (step != SQLITE_ROW && step != SQLITE_DONE) {
    /* an I/O error may have ended the transaction already; what follows must not run without one */
    snprintf(err, errlen, "cannot begin a write transaction: reading the tombstones: %.400s", sqlite3_errmsg(s->db));
    prefcap__store_rollback(s);
    return prefcap__sqlite_code(step);
  }
  return PREFCAP_OK;
}

int prefcap__store_commit(prefcap__store *s, char *err, size_t errlen) {
  int rc = step_reset(s, s->commit, "cannot commit", err, errlen);
  if (rc) prefcap__store_rollback(s);
  return rc;
}

void prefcap__store_rollback(prefcap__store *s) {
  if (!sqlite3_get_autocommit(s->db)) { sqlite3_step(s->rollback); sqlite3_reset(s->rollback); }
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
  if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else sqlite3_bind_null(st, i);
}

static void bind_count(sqlite3_stmt *st, int i, int64_t v) {
  if (v > 0) sqlite3_bind_int64(st, i, v);
  else sqlite3_bind_null(st, i);
}

/* The tombstone key of a user: a hash, so that the erased id itself is not kept. */
void prefcap__user_hash(const char *user_id, char out[65]) { prefcap__sha256_hex(user_id, strlen(user_id), out); }

bool prefcap__store_user_erased(prefcap__store *s, const char *user_id) {
  if (!user_id || !s->have_tombstones) return false;
  char h[65];
  prefcap__user_hash(user_id, h);
  sqlite3_bind_text(s->erased, 1, h, -1, SQLITE_TRANSIENT);
  bool erased = sqlite3_step(s->erased) == SQLITE_ROW;
  sqlite3_reset(s->erased);
  return erased;
}

/* Was this generation erased with its user? Asked only once a tombstone exists. */
static bool gen_erased(prefcap__store *s, const char *id) {
  if (!id || !s->have_tombstones) return false;
  char h[65];
  prefcap__sha256_hex(id, strlen(id), h);
  sqlite3_bind_text(s->erased_gen, 1, h, -1, SQLITE_TRANSIENT);
  bool erased = sqlite3_step(s->erased_gen) == SQLITE_ROW;
  sqlite3_reset(s->erased_gen);
  return erased;
}

/* A generation of an erased user came after the erasure. The feedback that came before it (kept,
 * waiting for its generation) is that user's too: it goes now, and the id joins the erased ones so
 * that its later feedback is refused as well. Rare, so the statements are not kept prepared. */
static int refuse_generation(prefcap__store *s, const char *id, char *err, size_t errlen) {
  static const char *const sql[] = {"INSERT OR IGNORE INTO erased_generations(gen_hash, ts) VALUES(?1, ?2)",
                                    "DELETE FROM events WHERE gen_id = ?1 OR other_id = ?1"};
  char h[65];
  prefcap__sha256_hex(id, strlen(id), h);
  for (int i = 0; i < 2; i++) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL);
    if (rc) return fail_db(s->db, rc, "cannot erase a late event", err, errlen);
    sqlite3_bind_text(st, 1, i == 0 ? h : id, -1, SQLITE_STATIC);
    if (i == 0) sqlite3_bind_int64(st, 2, prefcap__now_ms());
    errno = 0;
    rc = sqlite3_step(st);
    int e = errno;
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail_db_errno(s->db, rc, e, "cannot erase a late event", err, errlen);
  }
  return PREFCAP_OK;
}

int prefcap__store_insert(prefcap__store *s, const prefcap__event *ev, bool *dup, char *err, size_t errlen) {
  *dup = false;
  int64_t now = prefcap__now_ms();
  sqlite3_stmt *st;
  /* late events of an erased user are refused, and counted in the store ("refused") */
  if (ev->type == PREFCAP__EV_GENERATION ? prefcap__store_user_erased(s, ev->user_id) || gen_erased(s, ev->id)
                                         : gen_erased(s, ev->id) || gen_erased(s, ev->other_id)) {
    int rc = ev->type == PREFCAP__EV_GENERATION ? refuse_generation(s, ev->id, err, errlen) : PREFCAP_OK;
    if (!rc && (rc = prefcap__store_add_counter(s, "refused", 1)))
      snprintf(err, errlen, "cannot count a refused event: %s", sqlite3_errmsg(s->db));
    if (rc) return rc;
    snprintf(err, errlen, "%s '%s' belongs to an erased user: refused",
             ev->type == PREFCAP__EV_GENERATION ? "generation" : "feedback on generation", ev->id);
    return PREFCAP_EREFUSED;
  }
  if (ev->type == PREFCAP__EV_GENERATION) {
    st = s->ins_gen;
    bind_text(st, 1, ev->id);
    bind_text(st, 2, ev->event_id);
    sqlite3_bind_int64(st, 3, ev->ts_ms);
    sqlite3_bind_int64(st, 4, now);
    bind_text(st, 5, ev->user_id);
    bind_text(st, 6, ev->session_id);
    bind_text(st, 7, ev->model);
    bind_text(st, 8, ev->model_version);
    bind_text(st, 9, ev->system);
    bind_text(st, 10, ev->prompt);
    bind_text(st, 11, ev->messages_json);
    bind_text(st, 12, ev->completion);
    bind_text(st, 13, ev->params_json);
    bind_text(st, 14, ev->regenerates);
    bind_count(st, 15, ev->latency_ms);
    bind_count(st, 16, ev->prompt_tokens);
    bind_count(st, 17, ev->completion_tokens);
  } else {
    char hash[65];
    if (!ev->event_id) prefcap__event_hash(ev, hash);
    st = s->ins_ev;
    sqlite3_bind_text(st, 1, ev->event_id ? ev->event_id : hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, prefcap__event_type_name(ev->type), -1, SQLITE_STATIC);
    bind_text(st, 3, ev->id);
    bind_text(st, 4, ev->other_id);
    bind_text(st, 5, ev->text);
    if (ev->type == PREFCAP_FB_RATING) sqlite3_bind_int(st, 6, ev->rating);
    else sqlite3_bind_null(st, 6);
    bind_text(st, 7, ev->source ? ev->source : "human");
    sqlite3_bind_int64(st, 8, ev->ts_ms);
    sqlite3_bind_int64(st, 9, now);
  }
  errno = 0;
  int rc = sqlite3_step(st);
  int e = errno;
  sqlite3_clear_bindings(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return fail_db_errno(s->db, rc, e, "cannot store an event", err, errlen);
  *dup = sqlite3_changes(s->db) == 0;
  return PREFCAP_OK;
}

int prefcap__store_add_counter(prefcap__store *s, const char *name, int64_t delta) {
  if (delta == 0) return PREFCAP_OK;
  sqlite3_bind_text(s->add_counter, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s->add_counter, 2, delta);
  return step_reset(s, s->add_counter, "cannot update a counter", NULL, 0);
}

// ---- rules ---------------------------------------------------------------------------------------

int prefcap__store_load_rules(prefcap__store *s, prefcap__rules *r) {
  prefcap__rules_default(r);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "SELECT substr(key, 6), value FROM meta WHERE key LIKE 'rule.%'", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    double *f = prefcap__rules_field(r, (const char *)sqlite3_column_text(st, 0));
    if (f) *f = sqlite3_column_double(st, 1);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}

int prefcap__store_save_rule(prefcap__store *s, const char *name, double v) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('rule.' || ?1, ?2)", -1, &st, NULL);
  if (rc) return prefcap__sqlite_code(rc);
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_double(st, 2, v);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(rc);
}
