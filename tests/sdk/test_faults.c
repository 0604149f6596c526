/* tests/sdk/test_faults.c: read errors from the disk, injected one at a time. A wrapper SQLite VFS
 * (registered here as the default, so the library's own connection goes through it) forwards every
 * call to the real one, and fails the Nth xRead of the database or its WAL after being armed. Each
 * test sweeps N = 1, 2, ... until an operation finishes without reaching the Nth read, and after each
 * failed or finished operation checks that the store holds what it held (derivation) or what a clean
 * run gives (export), or that a clean run afterwards completes it (forget): a read error may make an
 * operation fail, never make it conclude less.
 *
 * The page cache is made tiny, so that reads reach the VFS instead of memory; the VFS offers no
 * memory map (version 2 methods), so that every page is read through xRead. */
#include "test.h"
#include "util.h"
#include "internal.h"

#include <sqlite3.h>
#include <stdatomic.h>

// ---- the fault-injecting VFS ---------------------------------------------------------------------

static sqlite3_vfs *real_vfs;
static sqlite3_vfs faulty_vfs;
static _Atomic long fault_countdown;   /* 0: disarmed; N: the Nth read from now fails */
static _Atomic long faults_fired;

typedef struct { sqlite3_file base; sqlite3_file *real; bool data; } ffile;   /* data: main db or WAL */

static sqlite3_file *R(sqlite3_file *f) { return ((ffile *)f)->real; }

static int f_close(sqlite3_file *f) { int rc = R(f)->pMethods->xClose(R(f)); return rc; }
static int f_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off) {
  if (((ffile *)f)->data) {
    long left = atomic_load(&fault_countdown);
    if (left > 0 && atomic_fetch_sub(&fault_countdown, 1) == 1) { atomic_fetch_add(&faults_fired, 1); return SQLITE_IOERR_READ; }
  }
  return R(f)->pMethods->xRead(R(f), p, n, off);
}
static int f_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off) { return R(f)->pMethods->xWrite(R(f), p, n, off); }
static int f_truncate(sqlite3_file *f, sqlite3_int64 size) { return R(f)->pMethods->xTruncate(R(f), size); }
static int f_sync(sqlite3_file *f, int flags) { return R(f)->pMethods->xSync(R(f), flags); }
static int f_size(sqlite3_file *f, sqlite3_int64 *size) { return R(f)->pMethods->xFileSize(R(f), size); }
static int f_lock(sqlite3_file *f, int l) { return R(f)->pMethods->xLock(R(f), l); }
static int f_unlock(sqlite3_file *f, int l) { return R(f)->pMethods->xUnlock(R(f), l); }
static int f_check(sqlite3_file *f, int *out) { return R(f)->pMethods->xCheckReservedLock(R(f), out); }
static int f_fcntl(sqlite3_file *f, int op, void *arg) { return R(f)->pMethods->xFileControl(R(f), op, arg); }
static int f_sector(sqlite3_file *f) { return R(f)->pMethods->xSectorSize(R(f)); }
static int f_devchar(sqlite3_file *f) { return R(f)->pMethods->xDeviceCharacteristics(R(f)); }
static int f_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp) { return R(f)->pMethods->xShmMap(R(f), pg, sz, ext, pp); }
static int f_shmlock(sqlite3_file *f, int off, int n, int flags) { return R(f)->pMethods->xShmLock(R(f), off, n, flags); }
static void f_shmbarrier(sqlite3_file *f) { R(f)->pMethods->xShmBarrier(R(f)); }
static int f_shmunmap(sqlite3_file *f, int del) { return R(f)->pMethods->xShmUnmap(R(f), del); }

static const sqlite3_io_methods faulty_methods = {
  2, f_close, f_read, f_write, f_truncate, f_sync, f_size, f_lock, f_unlock, f_check, f_fcntl, f_sector, f_devchar,
  f_shmmap, f_shmlock, f_shmbarrier, f_shmunmap, NULL, NULL,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags) {
  (void)vfs;
  ffile *f = (ffile *)file;
  f->real = (sqlite3_file *)&f[1];
  f->data = (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) != 0;
  int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
  file->pMethods = rc == SQLITE_OK && f->real->pMethods ? &faulty_methods : NULL;
  return rc;
}
static int v_delete(sqlite3_vfs *v, const char *n, int sync) { (void)v; return real_vfs->xDelete(real_vfs, n, sync); }
static int v_access(sqlite3_vfs *v, const char *n, int flags, int *out) { (void)v; return real_vfs->xAccess(real_vfs, n, flags, out); }
static int v_full(sqlite3_vfs *v, const char *n, int len, char *out) { (void)v; return real_vfs->xFullPathname(real_vfs, n, len, out); }
static void *v_dlopen(sqlite3_vfs *v, const char *n) { (void)v; return real_vfs->xDlOpen(real_vfs, n); }
static void v_dlerror(sqlite3_vfs *v, int n, char *out) { (void)v; real_vfs->xDlError(real_vfs, n, out); }
static void (*v_dlsym(sqlite3_vfs *v, void *h, const char *s))(void) { (void)v; return real_vfs->xDlSym(real_vfs, h, s); }
static void v_dlclose(sqlite3_vfs *v, void *h) { (void)v; real_vfs->xDlClose(real_vfs, h); }
static int v_random(sqlite3_vfs *v, int n, char *out) { (void)v; return real_vfs->xRandomness(real_vfs, n, out); }
static int v_sleep(sqlite3_vfs *v, int us) { (void)v; return real_vfs->xSleep(real_vfs, us); }
static int v_time(sqlite3_vfs *v, double *t) { (void)v; return real_vfs->xCurrentTime(real_vfs, t); }
static int v_lasterr(sqlite3_vfs *v, int n, char *out) { (void)v; return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, out) : 0; }
static int v_time64(sqlite3_vfs *v, sqlite3_int64 *t) { (void)v; return real_vfs->xCurrentTimeInt64(real_vfs, t); }

static void install_faulty_vfs(void) {
  real_vfs = sqlite3_vfs_find(NULL);
  faulty_vfs = (sqlite3_vfs){2, (int)sizeof(ffile) + real_vfs->szOsFile, real_vfs->mxPathname, NULL, "faulty", NULL,
                             f_open, v_delete, v_access, v_full, v_dlopen, v_dlerror, v_dlsym, v_dlclose,
                             v_random, v_sleep, v_time, v_lasterr, v_time64, NULL, NULL, NULL};
  sqlite3_vfs_register(&faulty_vfs, 1);
}

static void arm(long nth) { atomic_store(&faults_fired, 0); atomic_store(&fault_countdown, nth); }
/* Disarms; true when the armed fault fired. */
static bool disarm(void) { atomic_store(&fault_countdown, 0); return atomic_load(&faults_fired) > 0; }

// ---- a store with every kind of pair -------------------------------------------------------------

static int logj(prefcap_t *pc, const char *json) {
  int rc = prefcap_log_json(pc, json, strlen(json), NULL);
  if (rc) fprintf(stderr, "  log %s: %s\n", json, prefcap_errmsg(pc));
  return rc;
}

/* g1 replaced g0 and was accepted, rated +1 (g3, same prompt and user, -1), chosen over g2 and lightly
 * edited: every rule concludes something for g1. h1 is another user's. */
static prefcap_t *rich_store(const char *db) {
  prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
  if (!pc) return NULL;
  static const char *const ev[] = {
    "{\"type\":\"generation\",\"id\":\"g0\",\"prompt\":\"P\",\"completion\":\"first answer here\",\"user_id\":\"u\",\"session_id\":\"s\"}",
    "{\"type\":\"generation\",\"id\":\"g1\",\"prompt\":\"P\",\"completion\":\"a better answer with six words\",\"user_id\":\"u\",\"session_id\":\"s\",\"regenerates\":\"g0\"}",
    "{\"type\":\"generation\",\"id\":\"g2\",\"prompt\":\"P\",\"completion\":\"the other side\",\"user_id\":\"u\",\"session_id\":\"s\"}",
    "{\"type\":\"generation\",\"id\":\"g3\",\"prompt\":\"P\",\"completion\":\"a poor answer\",\"user_id\":\"u\",\"session_id\":\"s2\"}",
    "{\"type\":\"accept\",\"id\":\"g1\"}",
    "{\"type\":\"choice\",\"chosen\":\"g1\",\"rejected\":\"g2\"}",
    "{\"type\":\"rating\",\"id\":\"g3\",\"value\":-1}",
    "{\"type\":\"rating\",\"id\":\"g1\",\"value\":1}",
    "{\"type\":\"edit\",\"id\":\"g1\",\"text\":\"a better answer with seven words\"}",
    "{\"type\":\"copy\",\"id\":\"g2\"}",
    "{\"type\":\"generation\",\"id\":\"h1\",\"prompt\":\"R\",\"completion\":\"another user's answer\",\"user_id\":\"v\"}",
    "{\"type\":\"accept\",\"id\":\"h1\"}",
  };
  for (size_t i = 0; i < sizeof ev / sizeof *ev; i++)
    if (logj(pc, ev[i])) { prefcap_close(pc, -1); return NULL; }
  if (prefcap_derive(pc, 0)) { prefcap_close(pc, -1); return NULL; }
  /* a tiny page cache: each derivation reads its pages through the VFS again */
  sqlite3_exec(prefcap__db(pc), "PRAGMA cache_size = 2", NULL, NULL, NULL);
  return pc;
}

/* What derivation concluded, as one string (malloc'd). */
static char *derived_state(const char *db) {
  return tu_query_text(db, "SELECT (SELECT group_concat(k, ' | ') FROM (SELECT key || ',' || weight || ',' || ifnull(chosen_id, '') || ','"
                           " || ifnull(chosen_text, '') || ',' || rejected_id || ',' || source || ',' || flags || ',v' || version AS k"
                           " FROM pairs ORDER BY key)) || ' || ' || (SELECT group_concat(k, ' | ') FROM (SELECT gen_id || ','"
                           " || desirable || ',' || signal || ',' || weight || ',v' || version AS k FROM labels ORDER BY gen_id))");
}

// ---- the tests -----------------------------------------------------------------------------------

/* The fault of issue 12: recompute took a read error in its row loops for "no rows" and then deleted
 * pairs the unit still deserved. Every read of a full re-derivation fails in turn; the pairs and
 * labels must be exactly what they were after each attempt. */
static void derive_keeps_pairs_across_read_errors(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = rich_store(db);
  REQUIRE(pc);
  char *want = derived_state(db);
  REQUIRE(want);
  EXPECTF(tu_query(db, "SELECT count(*) FROM pairs WHERE unit = 'g1'") == 4, "g1 should have 4 pairs: %s", want);
  long n = 1, failed = 0, bad = 0;
  for (; n < 5000; n++) {
    arm(n);
    int rc = prefcap_derive(pc, 1);
    bool fired = disarm();
    if (!fired) { EXPECT(rc == 0); break; }
    if (rc) failed++;
    char *got = derived_state(db);
    if (!got || strcmp(got, want)) {
      if (bad++ < 3) fprintf(stderr, "  read %ld failed (derive: %s): the store now holds\n    %s\n  instead of\n    %s\n", n,
                             rc ? prefcap_errmsg(pc) : "ok", got ? got : "(null)", want);
    }
    free(got);
  }
  fprintf(stderr, "  %ld reads failed in turn: derive reported %ld, the store changed after %ld\n", n - 1, failed, bad);
  EXPECT(n > 10 && n < 5000);   /* the sweep reached the reads, and ended */
  EXPECT(bad == 0);
  /* and with the disk well again, derivation works and concludes the same */
  EXPECT(prefcap_derive(pc, 1) == 0);
  char *got = derived_state(db);
  EXPECT(got && !strcmp(got, want));
  free(got);
  free(want);
  EXPECT(prefcap_close(pc, -1) == 0);
  EXPECT(tu_integrity_ok(db));
}

/* New events derived incrementally: a read error anywhere leaves the cursors where they were, so the
 * events are derived once the disk reads again, and nothing derived before is lost. */
static void incremental_derive_catches_up_after_read_errors(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = rich_store(db);
  REQUIRE(pc);
  REQUIRE(logj(pc, "{\"type\":\"generation\",\"id\":\"g4\",\"prompt\":\"Q\",\"completion\":\"x y z\",\"regenerates\":\"g2\"}") == 0);
  REQUIRE(logj(pc, "{\"type\":\"copy\",\"id\":\"g4\"}") == 0);
  long n = 1, bad = 0;
  for (; n < 5000; n++) {
    arm(n);
    int rc = prefcap_derive(pc, 0);
    bool fired = disarm();
    /* whatever happened, a clean run now reaches the one right answer */
    EXPECT(prefcap_derive(pc, 0) == 0);
    bool ok = tu_query(db, "SELECT count(*) FROM pairs WHERE unit = 'g4' AND signal = 'regenerate'") == 1 &&
              tu_query(db, "SELECT count(*) FROM pairs WHERE unit = 'g1'") == 4;
    if (!ok && bad++ < 3) fprintf(stderr, "  read %ld failed (derive: %s): pairs lost\n", n, rc ? prefcap_errmsg(pc) : "ok");
    if (!fired) break;
    /* undo the derivation for the next round: the events are new again */
    sqlite3_exec(prefcap__db(pc), "DELETE FROM pairs WHERE unit = 'g4'; DELETE FROM labels WHERE gen_id = 'g4';"
                                  "UPDATE meta SET value = (SELECT seq - 1 FROM generations WHERE id = 'g4') WHERE key = 'derive.gen_seq';"
                                  "UPDATE meta SET value = (SELECT max(seq) - 1 FROM events WHERE gen_id = 'g4') WHERE key = 'derive.event_seq'",
                 NULL, NULL, NULL);
  }
  EXPECT(n > 10 && n < 5000);
  EXPECT(bad == 0);
  EXPECT(prefcap_close(pc, -1) == 0);
}

/* Export reads every pair through the VFS: a read error fails the export with nothing published and
 * the name's watermark unmoved, and the next run writes exactly what a clean run writes. */
static void export_fails_whole_on_read_errors(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = rich_store(db);
  REQUIRE(pc);
  char dir[600], out[700], want_path[700];
  snprintf(dir, sizeof dir, "%s", db);
  *strrchr(dir, '/') = 0;
  snprintf(out, sizeof out, "%s/nightly.jsonl", dir);
  snprintf(want_path, sizeof want_path, "%s/clean.jsonl", dir);
  prefcap_export_options_t *o = prefcap_export_options_new();
  REQUIRE(o);
  prefcap_export_options_set_out(o, want_path);
  REQUIRE(prefcap_export(pc, o, NULL) == 0);
  size_t want_len;
  char *want = tu_read_file(want_path, &want_len);
  REQUIRE(want && want_len > 0);
  prefcap_export_options_set_out(o, out);
  prefcap_export_options_set_since_last(o, "nightly");
  long n = 1, bad = 0;
  for (; n < 5000; n++) {
    arm(n);
    int rc = prefcap_export(pc, o, NULL);
    bool fired = disarm();
    bool published = tu_query(db, "SELECT count(*) FROM watermarks WHERE name = 'nightly'") == 1;
    if (rc) {   /* failed: nothing published, the watermark did not move */
      if (published && bad++ < 3) fprintf(stderr, "  read %ld: the export failed (%s) but the watermark moved\n", n, prefcap_errmsg(pc));
    } else {    /* finished: what a clean run writes */
      size_t len;
      char *got = tu_read_file(out, &len);
      if ((!got || len != want_len || memcmp(got, want, len) || !published) && bad++ < 3)
        fprintf(stderr, "  read %ld failed, yet the export finished with other content\n", n);
      free(got);
      sqlite3_exec(prefcap__db(pc), "DELETE FROM watermarks; DELETE FROM export_users; DELETE FROM exports", NULL, NULL, NULL);
      unlink(out);
    }
    if (!fired) break;
  }
  EXPECT(n > 10 && n < 5000);
  EXPECT(bad == 0);
  prefcap_export_options_free(o);
  free(want);
  EXPECT(prefcap_close(pc, -1) == 0);
}

/* Forget reads the user's rows, what they share with others and the exports that held them: with a
 * read error anywhere it fails (before or after its commit), and a clean run afterwards completes the
 * erasure, leaving the other user's rows as they were. Each round starts from a copy of one store. */
static void forget_completes_after_read_errors(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc = rich_store(db);
  REQUIRE(pc);
  prefcap_close(pc, -1);
  char dir[600], tpl[700], it[700], sql[800];
  snprintf(dir, sizeof dir, "%s", db);
  *strrchr(dir, '/') = 0;
  snprintf(tpl, sizeof tpl, "%s/template.db", dir);
  snprintf(it, sizeof it, "%s/round.db", dir);
  snprintf(sql, sizeof sql, "VACUUM INTO '%s'", tpl);
  tu_query(db, sql);
  size_t len;
  char *bytes = tu_read_file(tpl, &len);
  REQUIRE(bytes && len > 0);
  long n = 1, bad = 0, failed = 0;
  for (; n < 5000; n++) {
    char wal[720], shm[720];
    snprintf(wal, sizeof wal, "%s-wal", it);
    snprintf(shm, sizeof shm, "%s-shm", it);
    unlink(wal); unlink(shm);
    FILE *f = fopen(it, "wb");
    REQUIRE(f && fwrite(bytes, 1, len, f) == len && fclose(f) == 0);
    pc = tu_open(it, PREFCAP_SYNC);
    REQUIRE(pc);
    sqlite3_exec(prefcap__db(pc), "PRAGMA cache_size = 2", NULL, NULL, NULL);
    arm(n);
    int rc = prefcap_forget_user(pc, "u", NULL, NULL, NULL);
    bool fired = disarm();
    failed += rc != 0;
    int rc2 = prefcap_forget_user(pc, "u", NULL, NULL, NULL);
    prefcap_close(pc, -1);
    bool ok = rc2 == 0 && tu_query(it, "SELECT count(*) FROM generations WHERE user_id = 'u'") == 0 &&
              tu_query(it, "SELECT count(*) FROM tombstones") == 1 &&
              tu_query(it, "SELECT count(*) FROM generations WHERE id = 'h1'") == 1 &&
              tu_query(it, "SELECT count(*) FROM labels WHERE gen_id = 'h1' AND signal = 'accept'") == 1 && tu_integrity_ok(it);
    if (!ok && bad++ < 3) fprintf(stderr, "  read %ld failed (forget: %d, then %d): the erasure did not complete cleanly\n", n, rc, rc2);
    if (!fired) break;
  }
  fprintf(stderr, "  %ld reads failed in turn: forget reported %ld\n", n - 1, failed);
  EXPECT(n > 10 && n < 5000);
  EXPECT(bad == 0);
  free(bytes);
}

int main(void) {
  install_faulty_vfs();
  RUN(derive_keeps_pairs_across_read_errors);
  RUN(incremental_derive_catches_up_after_read_errors);
  RUN(export_fails_whole_on_read_errors);
  RUN(forget_completes_after_read_errors);
  return tst_end();
}
