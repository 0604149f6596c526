/* tests/sdk/util.h: shared helpers for the SDK's test programs: scratch directories, opening a store
 * with chosen options, and one-number SQL queries against the real file. Header-only (static). */
#ifndef PREFCAP_TEST_UTIL_H
#define PREFCAP_TEST_UTIL_H
#include "prefcap.h"
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fresh scratch directory under $TMPDIR (or /tmp); the path is static storage, valid until the next call. */
static inline const char *tu_tmpdir(void) {
  static char dir[512];
  const char *base = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/prefcap-test-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) { perror("mkdtemp"); return NULL; }
  return dir;
}

/* A path for a new store file in a fresh scratch directory (static storage). */
static inline const char *tu_dbpath(void) {
  static char path[600];
  snprintf(path, sizeof path, "%s/store.db", tu_tmpdir());
  return path;
}

/* Opens a store; queue 0 keeps the default queue capacity. */
static inline prefcap_t *tu_open_q(const char *path, prefcap_durability_t mode, size_t queue) {
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, path);
  prefcap_options_set_durability(o, mode);
  if (queue) prefcap_options_set_queue_capacity(o, queue);
  prefcap_t *pc = NULL;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) fprintf(stderr, "  open %s: %s\n", path, prefcap_strerror(rc));
  return pc;
}

static inline prefcap_t *tu_open(const char *path, prefcap_durability_t mode) { return tu_open_q(path, mode, 0); }

/* The flags tu_query opens the file with: read-write (never create), because a file left by a killed
 * writer may need WAL recovery before it can be read, and a read-only connection cannot run it. */
#define TU_OPEN_FLAGS SQLITE_OPEN_READWRITE

/* The single integer a query returns, read through a separate connection to the file (-1 on error). */
static inline long long tu_query(const char *path, const char *sql) {
  sqlite3 *db;
  sqlite3_stmt *st;
  long long v = -1;
  if (sqlite3_open_v2(path, &db, TU_OPEN_FLAGS, NULL) != SQLITE_OK) { sqlite3_close(db); return -1; }
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  } else fprintf(stderr, "  query failed: %s: %s\n", sql, sqlite3_errmsg(db));
  sqlite3_close(db);
  return v;
}

/* The text a query returns (malloc'd, NULL if none). */
static inline char *tu_query_text(const char *path, const char *sql) {
  sqlite3 *db;
  sqlite3_stmt *st;
  char *v = NULL;
  if (sqlite3_open_v2(path, &db, TU_OPEN_FLAGS, NULL) != SQLITE_OK) { sqlite3_close(db); return NULL; }
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return v;
}

/* A whole file, NUL-terminated (malloc'd; NULL if unreadable); *len (if not NULL) gets its size. */
static inline char *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc(n > 0 ? (size_t)n + 1 : 1);
  if (p && n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
  fclose(f);
  if (p) { p[n > 0 ? n : 0] = 0; if (len) *len = n > 0 ? (size_t)n : 0; }
  return p;
}

/* PRAGMA integrity_check == "ok" */
static inline int tu_integrity_ok(const char *path) {
  char *r = tu_query_text(path, "PRAGMA integrity_check");
  int ok = r && strcmp(r, "ok") == 0;
  if (!ok) fprintf(stderr, "  integrity_check of %s: %s\n", path, r ? r : "(no answer: the file could not be opened or read)");
  free(r);
  return ok;
}
#endif
