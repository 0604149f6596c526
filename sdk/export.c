/* sdk/export.c: from the store to the files trainers read. prefcap_export writes the derived pairs (or
 * labels) as JSON lines in TRL's DPO or KTO format or OpenAI's preference format, with a manifest, and
 * publishes them so that a nightly job can be killed at any moment and simply run again.
 *
 * Publishing, step by step (docs/export.md):
 *   1. fix the range: with a name, the records whose version is above the name's watermark and at most
 *      the store's current version; the range is stored as a 'pending' export before any byte is
 *      written, so a run that was killed is resumed with the same range (and its leftovers removed);
 *   2. write PATH.tmp (and the eval part), fsync, write the manifest's temporary file, fsync;
 *   3. rename the data, then the manifest, into place; fsync the directory;
 *   4. upload, when asked;
 *   5. in one transaction: the export becomes 'published', its records are listed for lineage, and the
 *      name's watermark moves to the end of the range.
 * A kill before 5 leaves the export pending: the next run writes the same records again, to its own
 * path, and deletes the files of the pending attempt. A kill after 5 is a finished export. */
#include "internal.h"
#include "sha256.h"
#include "upload.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

// ---- options -------------------------------------------------------------------------------------

struct prefcap_export_options {
  prefcap_format_t format;
  char *out, *signals, *model, *user, *since_last, *upload_url;
  const prefcap_upload_options_t *upload_opts;
  int gzip, dedup;
  unsigned mode;   /* the files' permission bits */
  int64_t since_ms, until_ms;
  double min_weight, max_ai_fraction, eval_fraction;
};

prefcap_export_options_t *prefcap_export_options_new(void) {
  prefcap_export_options_t *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->out = strdup("prefcap-export.jsonl");
  if (!o->out) { free(o); return NULL; }
  o->max_ai_fraction = 1.0;
  o->mode = 0600;
  return o;
}

void prefcap_export_options_free(prefcap_export_options_t *o) {
  if (!o) return;
  free(o->out); free(o->signals); free(o->model); free(o->user); free(o->since_last); free(o->upload_url);
  free(o);
}

/* A setter's refusal, through the library's error channel (prefcap_errmsg(NULL)): the call, then why. */
#define REFUSE(why) prefcap__fail0(PREFCAP_EINVAL, "%s: %s", __func__, (why))
#define NO_OPTIONS "no options object"

static int set_str(char **dst, const char *v, bool allow_null) {
  if (!v && !allow_null) return prefcap__fail0(PREFCAP_EINVAL, "export options: a value is required");
  char *c = NULL;
  if (v && !(c = strdup(v))) return prefcap__fail0(PREFCAP_ENOMEM, "export options: out of memory");
  free(*dst);
  *dst = c;
  return PREFCAP_OK;
}

int prefcap_export_options_set_format(prefcap_export_options_t *o, prefcap_format_t f) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (f < PREFCAP_FORMAT_TRL_DPO || f > PREFCAP_FORMAT_EVENTS) return REFUSE("unknown format");
  o->format = f;
  return PREFCAP_OK;
}
int prefcap_export_options_set_out(prefcap_export_options_t *o, const char *p) {
  if (!o) return REFUSE(NO_OPTIONS);
  return p && *p ? set_str(&o->out, p, false) : REFUSE("no path given");
}
int prefcap_export_options_set_gzip(prefcap_export_options_t *o, int on) { if (!o) return REFUSE(NO_OPTIONS); o->gzip = on != 0; return PREFCAP_OK; }
int prefcap_export_options_set_dedup(prefcap_export_options_t *o, int on) { if (!o) return REFUSE(NO_OPTIONS); o->dedup = on != 0; return PREFCAP_OK; }
int prefcap_export_options_set_time_range(prefcap_export_options_t *o, int64_t since, int64_t until) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (since < 0 || until < 0 || (until && since > until)) return REFUSE("needs 0 <= since <= until (0: open)");
  o->since_ms = since; o->until_ms = until;
  return PREFCAP_OK;
}
int prefcap_export_options_set_signals(prefcap_export_options_t *o, const char *list) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (list) {   /* each name must be a known signal: a typo must not silently export nothing */
    static const char *const known[] = {"edit", "regenerate", "choice", "rating", "copy", "accept", "abandon", NULL};
    char *copy = strdup(list), *save = NULL;
    if (!copy) return prefcap__fail0(PREFCAP_ENOMEM, "%s: out of memory", __func__);
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
      bool ok = false;
      for (int i = 0; known[i] && !ok; i++) ok = !strcmp(t, known[i]);
      if (!ok) {
        int rc = prefcap__fail0(PREFCAP_EINVAL, "%s: unknown signal '%.64s' (known: edit, regenerate, choice, rating, "
                                "copy, accept, abandon)", __func__, t);
        free(copy);
        return rc;
      }
    }
    free(copy);
  }
  return set_str(&o->signals, list, true);
}
int prefcap_export_options_set_min_weight(prefcap_export_options_t *o, double w) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (!(w >= 0 && w <= 1)) return REFUSE("the weight must be in [0,1]");
  o->min_weight = w;
  return PREFCAP_OK;
}
int prefcap_export_options_set_model(prefcap_export_options_t *o, const char *m) { return o ? set_str(&o->model, m, true) : REFUSE(NO_OPTIONS); }
int prefcap_export_options_set_user(prefcap_export_options_t *o, const char *u) { return o ? set_str(&o->user, u, true) : REFUSE(NO_OPTIONS); }
int prefcap_export_options_set_max_ai_fraction(prefcap_export_options_t *o, double f) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (!(f >= 0 && f <= 1)) return REFUSE("the fraction must be in [0,1]");
  o->max_ai_fraction = f;
  return PREFCAP_OK;
}
int prefcap_export_options_set_eval_fraction(prefcap_export_options_t *o, double f) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (!(f >= 0 && f < 1)) return REFUSE("the fraction must be in [0,1)");
  o->eval_fraction = f;
  return PREFCAP_OK;
}
int prefcap_export_options_set_since_last(prefcap_export_options_t *o, const char *name) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (name && (!*name || strlen(name) > PREFCAP_ID_MAX)) return REFUSE("the name must be 1 to 128 bytes");
  return set_str(&o->since_last, name, true);
}
const char *prefcap_export_options_out(const prefcap_export_options_t *o) { return o ? o->out : NULL; }
int prefcap_export_options_set_mode(prefcap_export_options_t *o, unsigned mode) {
  if (!o) return REFUSE(NO_OPTIONS);
  if (mode > 0777) return REFUSE("mode has bits beyond 0777");
  o->mode = mode;
  return PREFCAP_OK;
}

int prefcap_export_options_set_upload(prefcap_export_options_t *o, const char *url, const prefcap_upload_options_t *uo) {
  if (!o) return REFUSE(NO_OPTIONS);
  o->upload_opts = uo;
  return set_str(&o->upload_url, url, true);
}

// ---- the query -----------------------------------------------------------------------------------

/* One query serves both passes and every format. Pairs: the rejected generation gives the prompt
 * (a regeneration keeps its prompt; a choice's sides were shown for one prompt, or are flagged).
 * Labels (KTO): the generation itself. The time filters apply to that generation's time. */
static const char *const pairs_sql =
    "SELECT p.id, p.signal, p.weight, p.source, p.flags, r.system, r.prompt, r.messages,"
    " coalesce(p.chosen_text, c.completion), r.completion, r.model, c.model, r.user_id, c.user_id, r.ts"
    " FROM pairs p JOIN generations r ON r.id = p.rejected_id LEFT JOIN generations c ON c.id = p.chosen_id"
    " WHERE %sp.version > ?1 AND %sp.version <= ?2"
    " AND (?3 IS NULL OR r.ts >= ?3) AND (?4 IS NULL OR r.ts < ?4)"
    " AND (?5 IS NULL OR instr(',' || ?5 || ',', ',' || p.signal || ',') > 0)"
    " AND p.weight >= ?6 AND (?7 IS NULL OR r.model = ?7 OR c.model = ?7)"
    " AND (?8 IS NULL OR r.user_id = ?8 OR c.user_id = ?8)"
    " AND coalesce(p.chosen_text, c.completion) IS NOT NULL"
    " ORDER BY p.id";
static const char *const labels_sql =
    "SELECT l.id, l.signal, l.weight, l.source, CASE WHEN l.desirable THEN 'desirable' ELSE 'undesirable' END,"
    " g.system, g.prompt, g.messages, g.completion, NULL, g.model, NULL, g.user_id, NULL, g.ts"
    " FROM labels l JOIN generations g ON g.id = l.gen_id"
    " WHERE %sl.version > ?1 AND %sl.version <= ?2"
    " AND (?3 IS NULL OR g.ts >= ?3) AND (?4 IS NULL OR g.ts < ?4)"
    " AND (?5 IS NULL OR instr(',' || ?5 || ',', ',' || l.signal || ',') > 0)"
    " AND l.weight >= ?6 AND (?7 IS NULL OR g.model = ?7) AND (?8 IS NULL OR g.user_id = ?8)"
    " ORDER BY l.id";
enum { C_ID, C_SIGNAL, C_WEIGHT, C_SOURCE, C_FLAGS, C_SYSTEM, C_PROMPT, C_MESSAGES, C_CHOSEN, C_REJECTED,
       C_MODEL, C_CMODEL, C_USER, C_CUSER, C_TS };

static int prepare_rows(sqlite3 *db, const prefcap_export_options_t *o, int64_t from, int64_t to, sqlite3_stmt **st) {
  /* From the start (a full export, a name's first), walk the table in id order: the version index would
   * cost a lookup per row and a sort of the whole result. A later range is a small part: use the index.
   * (A unary + keeps SQLite from using the index.) */
  const char *noindex = from == 0 ? "+" : "";
  char sql[2048];
  snprintf(sql, sizeof sql, o->format == PREFCAP_FORMAT_TRL_KTO ? labels_sql : pairs_sql, noindex, noindex);
  int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
  if (rc) return rc;
  sqlite3_bind_int64(*st, 1, from);
  sqlite3_bind_int64(*st, 2, to);
  if (o->since_ms) sqlite3_bind_int64(*st, 3, o->since_ms);
  if (o->until_ms) sqlite3_bind_int64(*st, 4, o->until_ms);
  if (o->signals) sqlite3_bind_text(*st, 5, o->signals, -1, SQLITE_STATIC);
  sqlite3_bind_double(*st, 6, o->min_weight);
  if (o->model) sqlite3_bind_text(*st, 7, o->model, -1, SQLITE_STATIC);
  if (o->user) sqlite3_bind_text(*st, 8, o->user, -1, SQLITE_STATIC);
  return SQLITE_OK;
}

#define T(st, c) ((const char *)sqlite3_column_text((st), (c)))

static bool is_ai(const char *source) { return source && !strncmp(source, "ai:", 3); }

/* The prompt as the split sees it: a prompt's identity must not depend on the format. */
static uint64_t prompt_hash(sqlite3_stmt *st) {
  prefcap__sha256_ctx c;
  prefcap__sha256_init(&c);
  for (int col = C_SYSTEM; col <= C_MESSAGES; col++) prefcap__sha256_opt(&c, T(st, col));   /* as derive.c's prompt_key */
  uint8_t d[32];
  prefcap__sha256_final(&c, d);
  uint64_t h;
  memcpy(&h, d, sizeof h);
  return h;
}

/* 1 in 10,000 resolution; the same prompt always falls on the same side. */
static bool is_eval(sqlite3_stmt *st, double fraction) {
  return fraction > 0 && (double)(prompt_hash(st) % 10000) < fraction * 10000.0;
}

// ---- pass 1: which rows, and in which shape ------------------------------------------------------

typedef struct { int64_t id; int32_t user[2]; uint8_t keep; } row_t;   /* keep: 0 skipped, 1 kept; user: index in users_t, -1 none */

typedef struct { uint8_t h[16]; } key16;
typedef struct { key16 k; size_t i; } keyed;
/* by key, then by position: the first of each run of equal keys is the earliest row */
static int cmp_keyed(const void *a, const void *b) {
  const keyed *x = a, *y = b;
  int c = memcmp(&x->k, &y->k, sizeof x->k);
  return c ? c : (x->i > y->i) - (x->i < y->i);
}

typedef struct {
  row_t *rows; size_t n, cap;
  bool any;                  /* one-pass probe: at least one row matches */
  bool conversational;       /* any prompt with messages or a system prompt: all rows in chat form */
  uint64_t skipped_ai, skipped_dup;
} plan_t;

/* Both plans start alike: an empty plan and the export's query, ready to step. */
static int start_plan(sqlite3 *db, const prefcap_export_options_t *o, int64_t from, int64_t to, plan_t *p,
                      sqlite3_stmt **st, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  int rc = prepare_rows(db, o, from, to, st);
  if (rc) { snprintf(err, errlen, "export query: %.400s", sqlite3_errmsg(db)); return prefcap__sqlite_code(rc); }
  return PREFCAP_OK;
}

static int plan_rows(sqlite3 *db, const prefcap_export_options_t *o, int64_t from, int64_t to, plan_t *p,
                     char *err, size_t errlen) {
  sqlite3_stmt *st;
  int rc = start_plan(db, o, from, to, p, &st, err, errlen);
  if (rc) return rc;
  size_t cap = 0;
  key16 *keys = NULL;
  bool *ai = NULL;
  int out = PREFCAP_OK;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (p->n == cap) {
      cap = cap ? cap * 2 : 4096;
      row_t *r = realloc(p->rows, cap * sizeof *r);
      bool *a = realloc(ai, cap * sizeof *a);
      key16 *k = o->dedup ? realloc(keys, cap * sizeof *k) : keys;
      if (r) p->rows = r;
      if (a) ai = a;
      if (k) keys = k;
      if (!r || !a || (!k && o->dedup)) { out = PREFCAP_ENOMEM; break; }
    }
    p->rows[p->n] = (row_t){sqlite3_column_int64(st, C_ID), {-1, -1}, 1};
    ai[p->n] = is_ai(T(st, C_SOURCE));
    if (T(st, C_MESSAGES) || T(st, C_SYSTEM)) p->conversational = true;
    if (o->dedup) {   /* identical prompt, chosen and rejected: kept once (the first, by id) */
      prefcap__sha256_ctx c;
      prefcap__sha256_init(&c);
      int cols[] = {C_SYSTEM, C_PROMPT, C_MESSAGES, C_CHOSEN, C_REJECTED};
      for (int i = 0; i < 5; i++) prefcap__sha256_opt(&c, T(st, cols[i]));
      if (o->format == PREFCAP_FORMAT_TRL_KTO) prefcap__sha256_update(&c, T(st, C_FLAGS), strlen(T(st, C_FLAGS)));
      uint8_t d[32];
      prefcap__sha256_final(&c, d);
      memcpy(keys[p->n].h, d, 16);
    }
    p->n++;
  }
  if (rc != SQLITE_DONE && !out) { snprintf(err, errlen, "export query: %.400s", sqlite3_errmsg(db)); out = prefcap__sqlite_code(rc); }
  sqlite3_finalize(st);
  if (!out && o->dedup && p->n) {
    /* sort (key, position) to find repeats; the earliest of each is kept */
    keyed *v = malloc(p->n * sizeof *v);
    if (!v) out = PREFCAP_ENOMEM;
    else {
      for (size_t i = 0; i < p->n; i++) { v[i].k = keys[i]; v[i].i = i; }
      qsort(v, p->n, sizeof *v, cmp_keyed);
      for (size_t i = 1; i < p->n; i++)
        if (!memcmp(&v[i].k, &v[i - 1].k, sizeof(key16))) { p->rows[v[i].i].keep = 0; p->skipped_dup++; }
      free(v);
    }
  }
  if (!out && o->max_ai_fraction < 1.0) {
    /* at most F of the export from AI judges: ai <= F/(1-F) x human; the earliest (by id) are kept */
    uint64_t human = 0;
    for (size_t i = 0; i < p->n; i++) human += p->rows[i].keep && !ai[i];
    uint64_t allowed = o->max_ai_fraction <= 0 ? 0 : (uint64_t)floor(o->max_ai_fraction * (double)human / (1.0 - o->max_ai_fraction) + 1e-9);
    for (size_t i = 0; i < p->n; i++)
      if (p->rows[i].keep && ai[i]) {
        if (allowed) allowed--;
        else { p->rows[i].keep = 0; p->skipped_ai++; }
      }
  }
  free(keys);
  free(ai);
  if (out) { free(p->rows); p->rows = NULL; }
  return out;
}

/* The one-pass plan: no rows listed yet; whether any row matches, and whether any needs chat form. */
static int probe_form(sqlite3 *db, const prefcap_export_options_t *o, int64_t from, int64_t to, plan_t *p,
                      char *err, size_t errlen) {
  sqlite3_stmt *st;
  int rc = start_plan(db, o, from, to, p, &st, err, errlen);
  if (rc) return rc;
  /* stop at the first chat-form row; most exports are all one form, found in the first rows */
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    p->any = true;
    if (T(st, C_MESSAGES) || T(st, C_SYSTEM)) { p->conversational = true; break; }
  }
  int out = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? PREFCAP_OK : prefcap__sqlite_code(rc);
  if (out) snprintf(err, errlen, "export query: %s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return out;
}

// ---- lineage encoding ----------------------------------------------------------------------------

static void put_varint(prefcap__buf *b, uint64_t v) {
  uint8_t t[10];
  int n = 0;
  do { t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)); v >>= 7; } while (v);
  prefcap__buf_putn(b, (const char *)t, (size_t)n);
}

static bool get_varint(prefcap__lineage_iter *it, uint64_t *v) {
  *v = 0;
  for (int shift = 0; it->p < it->end && shift < 64; shift += 7) {
    uint8_t c = *it->p++;
    *v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return true;
  }
  return false;
}

void prefcap__lineage_put(prefcap__buf *b, int64_t *prev_id, int64_t id, const int32_t *users, int nusers) {
  put_varint(b, (uint64_t)(id - *prev_id));
  *prev_id = id;
  put_varint(b, (uint64_t)nusers);
  for (int i = 0; i < nusers; i++) put_varint(b, (uint64_t)users[i]);
}

bool prefcap__lineage_next(prefcap__lineage_iter *it, int64_t *id, int32_t users[2], int *nusers, bool *bad) {
  *bad = false;
  if (it->p >= it->end) return false;
  uint64_t d, n, u;
  if (!get_varint(it, &d) || !get_varint(it, &n) || n > 2) { *bad = true; return false; }
  it->id += (int64_t)d;
  *id = it->id;
  *nusers = (int)n;
  for (int i = 0; i < (int)n; i++) {
    if (!get_varint(it, &u) || u > INT32_MAX) { *bad = true; return false; }
    users[i] = (int32_t)u;
  }
  return true;
}

// ---- the users a record holds, for lineage ------------------------------------------------------

/* Distinct user ids seen in the export and their hashes (a user has many records: hash each once). */
typedef struct { char **ids; char (*hash)[65]; uint32_t *slots; size_t n, cap, nslots; bool oom; } users_t;

static uint64_t fnv(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  while (*s) { h ^= (unsigned char)*s++; h *= 1099511628211ULL; }
  return h;
}

/* The index of user id in u (added if new), -1 for NULL or out of memory. */
static int32_t user_index(users_t *u, const char *id) {
  if (!id || u->oom) return -1;
  if (2 * (u->n + 1) > u->nslots) {   /* open addressing, load <= 1/2; slots hold index + 1 */
    size_t ns = u->nslots ? u->nslots * 2 : 1024;
    uint32_t *sl = calloc(ns, sizeof *sl);
    if (!sl) { u->oom = true; return -1; }
    for (size_t i = 0; i < u->n; i++) {
      size_t j = fnv(u->ids[i]) & (ns - 1);
      while (sl[j]) j = (j + 1) & (ns - 1);
      sl[j] = (uint32_t)i + 1;
    }
    free(u->slots);
    u->slots = sl; u->nslots = ns;
  }
  size_t j = fnv(id) & (u->nslots - 1);
  for (; u->slots[j]; j = (j + 1) & (u->nslots - 1))
    if (!strcmp(u->ids[u->slots[j] - 1], id)) return (int32_t)u->slots[j] - 1;
  if (u->n == u->cap) {
    size_t cap = u->cap ? u->cap * 2 : 256;
    char **ids = realloc(u->ids, cap * sizeof *ids);
    if (ids) u->ids = ids;
    char (*hash)[65] = realloc(u->hash, cap * sizeof *hash);
    if (hash) u->hash = hash;
    if (!ids || !hash) { u->oom = true; return -1; }
    u->cap = cap;
  }
  if (!(u->ids[u->n] = strdup(id))) { u->oom = true; return -1; }
  prefcap__user_hash(id, u->hash[u->n]);
  u->slots[j] = (uint32_t)u->n + 1;
  return (int32_t)u->n++;
}

static void users_free(users_t *u) {
  for (size_t i = 0; i < u->n; i++) free(u->ids[i]);
  free(u->ids); free(u->hash); free(u->slots);
}

// ---- files written safely ------------------------------------------------------------------------
/* Every file an export writes (data, eval part, manifest) is first a temporary file beside its target:
 *  - named with 96 random bits (PATH.tmp.<24 hex>), and the name recorded in the store (meta
 *    'export.tmp:PATH') before the file exists: a killed export's leftovers hold whole copies of
 *    users' text, and the next export to the same directory, and forget, remove every recorded one
 *    that no live export holds;
 *  - created with O_CREAT|O_EXCL|O_NOFOLLOW: a name planted in advance (a symlink to some other file,
 *    a file) makes the creation fail; nothing is followed or truncated;
 *  - 0600 from its first byte (or the mode asked for with prefcap_export_options_set_mode);
 *  - locked (flock) from its creation until it is renamed into place or removed.
 * The rename into place may replace only a regular file or nothing: a device (/dev/null), a symlink or
 * a directory at the target is an error that names it, before anything is written. */

#define TMP_KEY "export.tmp:"

static const char *file_kind(mode_t m) {
  return S_ISLNK(m) ? "a symbolic link" : S_ISDIR(m) ? "a directory" : S_ISCHR(m) ? "a character device" :
         S_ISBLK(m) ? "a block device" : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

/* Only a regular file, or nothing, at path may be replaced. */
static int check_target(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (lstat(path, &st)) {
    if (errno == ENOENT) return PREFCAP_OK;
    snprintf(err, errlen, "cannot use %.400s: %s", path, strerror(errno));
    return PREFCAP_EIO;
  }
  if (S_ISREG(st.st_mode)) return PREFCAP_OK;
  snprintf(err, errlen, "%.400s is %s: an export replaces only a regular file, or creates one", path, file_kind(st.st_mode));
  return PREFCAP_EINVAL;
}

typedef prefcap__tempfile tempfile;
_Static_assert(sizeof ((tempfile *)0)->tmp >= PATH_MAX, "a temporary file's name fits any path");

/* Names path's temporary file (PATH.tmp.<24 random hex digits>) without creating it: the name is
 * recorded in the store first, so that a kill at any moment after the file exists leaves it found. */
static int temp_name(tempfile *t, const char *path, char *err, size_t errlen) {
  t->fd = t->lockfd = -1;
  t->tmp[0] = 0;
  uint8_t r[12];
  char hex[25];
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) { snprintf(err, errlen, "cannot name a temporary file: getrandom: %s", strerror(errno)); return PREFCAP_EIO; }
  prefcap__hex(r, sizeof r, hex);
  if (snprintf(t->tmp, sizeof t->tmp, "%s.tmp.%s", path, hex) >= (int)sizeof t->tmp) {
    t->tmp[0] = 0;
    snprintf(err, errlen, "path too long: %.400s", path);
    return PREFCAP_EINVAL;
  }
  return PREFCAP_OK;
}

/* Creates the named temporary file (see above); t->fd is for writing, t->lockfd holds the lock until
 * temp_release, whoever closes t->fd. A name that exists already (planted: it cannot be guessed) is
 * an error, never opened. */
static int temp_create(tempfile *t, unsigned mode, char *err, size_t errlen) {
  t->fd = open(t->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (t->fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot create %.400s: %s", t->tmp, strerror(e));
    t->tmp[0] = 0;   /* not ours: never removed */
    return e == ENOSPC || e == EDQUOT ? PREFCAP_EFULL : PREFCAP_EIO;
  }
  if ((mode != 0600 && fchmod(t->fd, mode)) || flock(t->fd, LOCK_EX) || (t->lockfd = dup(t->fd)) < 0 ||
      fcntl(t->lockfd, F_SETFD, FD_CLOEXEC)) {
    snprintf(err, errlen, "cannot prepare %.400s: %s", t->tmp, strerror(errno));
    close(t->fd);
    if (t->lockfd >= 0) close(t->lockfd);
    unlink(t->tmp);
    t->fd = t->lockfd = -1;
    t->tmp[0] = 0;
    return PREFCAP_EIO;
  }
  return PREFCAP_OK;
}

/* Done with a temporary file: removed unless it was renamed into place (renamed: tmp cleared), and
 * unlocked. */
static void temp_release(tempfile *t) {
  if (t->fd >= 0) close(t->fd);
  if (t->tmp[0]) unlink(t->tmp);
  if (t->lockfd >= 0) close(t->lockfd);
  t->fd = t->lockfd = -1;
}

/* Records (add) or forgets the temporary files' names in the store, in one transaction. */
static int temps_record(prefcap_t *pc, const char *const *paths, int n, bool add, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  sqlite3_stmt *st = NULL;
  rc = sqlite3_prepare_v2(db, add ? "INSERT OR REPLACE INTO meta(key, value) VALUES('" TMP_KEY "' || ?1, ?2)"
                                  : "DELETE FROM meta WHERE key = '" TMP_KEY "' || ?1", -1, &st, NULL);
  for (int i = 0; i < n && !rc; i++) {
    if (!paths[i] || !paths[i][0]) continue;
    sqlite3_bind_text(st, 1, paths[i], -1, SQLITE_STATIC);
    if (add) sqlite3_bind_int64(st, 2, (int64_t)getpid());   /* the owner, while the file does not exist yet */
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if (rc) {
    snprintf(err, errlen, "cannot record the export's temporary files: %.400s", sqlite3_errmsg(db));
    prefcap__store_rollback(pc->store);
    return prefcap__sqlite_code(rc);
  }
  return prefcap__store_commit(pc->store, err, errlen);
}

/* The directory a path is in, absolute (realpath of its dirname). */
static bool abs_dir(const char *path, char out[PATH_MAX]) {
  char d[PATH_MAX];
  snprintf(d, sizeof d, "%s", path);
  return realpath(dirname(d), out) != NULL;
}

int prefcap__export_remove_leftovers(prefcap_t *pc, const char *dir, prefcap__leftover_fn left, void *ud,
                                     char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT substr(key, length('" TMP_KEY "') + 1), value FROM meta"
                                  " WHERE key >= '" TMP_KEY "' AND key < 'export.tmp;'", -1, &st, NULL);
  if (rc) { snprintf(err, errlen, "cannot list leftover export files: %.400s", sqlite3_errmsg(db)); return prefcap__sqlite_code(rc); }
  char **gone = NULL;
  int ngone = 0, step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    const char *path = (const char *)sqlite3_column_text(st, 0);
    char d[PATH_MAX];
    if (dir && (!abs_dir(path, d) || strcmp(d, dir))) continue;
    const char *why = NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    /* a name not created yet may belong to an export about to create it: while the process that
     * recorded it lives, its record stays */
    if (fd < 0 && errno == ENOENT) {
      pid_t owner = (pid_t)sqlite3_column_int64(st, 1);
      if (owner > 0 && (kill(owner, 0) == 0 || errno == EPERM)) continue;
      errno = ENOENT;
    }
    if (fd < 0 && errno != ENOENT && errno != ELOOP) why = strerror(errno);
    else if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB)) why = errno == EWOULDBLOCK ? "a running export is writing it" : strerror(errno);
    else if ((fd >= 0 || errno == ELOOP) && unlink(path)) why = strerror(errno);
    if (fd >= 0) close(fd);
    if (why) { if (left) left(path, why, ud); continue; }
    char **v = realloc(gone, (size_t)(ngone + 1) * sizeof *v);
    if (!v || !(v[ngone] = strdup(path))) { gone = v ? v : gone; break; }
    gone = v;
    ngone++;
  }
  sqlite3_finalize(st);
  rc = step == SQLITE_DONE || step == SQLITE_ROW ? PREFCAP_OK : prefcap__sqlite_code(step);
  if (rc) snprintf(err, errlen, "cannot list leftover export files: %.400s", sqlite3_errmsg(db));
  if (ngone && !rc) rc = temps_record(pc, (const char *const *)gone, ngone, false, err, errlen);
  if (ngone) prefcap__log(pc, PREFCAP_LOG_INFO, "prefcap: removed %d temporary file(s) left by killed exports", ngone);
  for (int i = 0; i < ngone; i++) free(gone[i]);
  free(gone);
  return rc;
}

// ---- pass 2: writing -----------------------------------------------------------------------------

/* An output file. Plain: lines are gathered in 4 MiB chunks, and a second thread hashes and writes
 * each full chunk while the next is being formatted (on a million-line export, hashing and copying
 * into the kernel are a fifth of the work; this way they overlap it). Gzip: through zlib, hashed when
 * read back after closing. */
#define OUT_CHUNK ((size_t)4 << 20)
typedef struct {
  char path[PATH_MAX], tmp[PATH_MAX];   /* tmp: the temporary file's name (tempfile, created before) */
  gzFile gz;
  int fd;
  prefcap__sha256_ctx sha;
  uint64_t bytes, records;
  char sha_hex[65];
  /* plain files: double buffer and writer thread (the thread owns sha while it runs) */
  char *buf[2];
  size_t len[2];
  bool full[2], stop, thread;
  int cur, werr;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} outfile;

/* Hashes and writes all of p (the caller owns f->sha now); errno on failure, else 0. */
static int write_all(outfile *f, const char *p, size_t n) {
  prefcap__sha256_update(&f->sha, p, n);
  while (n) {
    ssize_t w = write(f->fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; return errno; }
    p += w; n -= (size_t)w;
  }
  return 0;
}

static void *out_worker(void *arg) {
  outfile *f = arg;
  int i = 0;
  pthread_mutex_lock(&f->mu);
  for (;;) {
    while (!f->full[i] && !f->stop) pthread_cond_wait(&f->cv, &f->mu);
    if (!f->full[i]) break;   /* stopping, and nothing left */
    pthread_mutex_unlock(&f->mu);
    int e = f->werr ? 0 : write_all(f, f->buf[i], f->len[i]);
    pthread_mutex_lock(&f->mu);
    if (e && !f->werr) f->werr = e;
    f->full[i] = false;
    f->len[i] = 0;
    pthread_cond_broadcast(&f->cv);
    i ^= 1;
  }
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

/* Hands the current chunk to the writer and waits until the other one is free. */
static void out_handoff(outfile *f) {
  pthread_mutex_lock(&f->mu);
  f->full[f->cur] = true;
  pthread_cond_broadcast(&f->cv);
  f->cur ^= 1;
  while (f->full[f->cur]) pthread_cond_wait(&f->cv, &f->mu);
  pthread_mutex_unlock(&f->mu);
}

/* Waits until the writer has written everything handed to it, and stops it. */
static void out_stop(outfile *f) {
  if (!f->thread) return;
  pthread_mutex_lock(&f->mu);
  f->stop = true;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  pthread_join(f->th, NULL);
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
  f->thread = false;
}

/* Starts writing to the temporary file t (already created and recorded) for path; t->fd is the
 * outfile's from here (t->fd is set to -1). */
static int out_open(outfile *f, tempfile *t, const char *path, bool gzip, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  snprintf(f->path, sizeof f->path, "%s", path);
  snprintf(f->tmp, sizeof f->tmp, "%s", t->tmp);
  int fd = t->fd;
  t->fd = -1;
  prefcap__sha256_init(&f->sha);
  if (gzip) {
    f->gz = gzdopen(fd, "wb6");
    if (f->gz) { gzbuffer(f->gz, 1 << 17); return PREFCAP_OK; }
    close(fd);
  } else {
    f->fd = fd;
    f->buf[0] = malloc(OUT_CHUNK);
    f->buf[1] = malloc(OUT_CHUNK);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    if (f->buf[0] && f->buf[1] && !pthread_create(&f->th, NULL, out_worker, f)) { f->thread = true; return PREFCAP_OK; }
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f->buf[0]); free(f->buf[1]);
    close(fd);
    f->fd = -1;
  }
  snprintf(err, errlen, "cannot open %.400s: out of memory", f->tmp);
  return PREFCAP_ENOMEM;
}

static int werr_code(int e) { return e == ENOSPC || e == EFBIG || e == EDQUOT ? PREFCAP_EFULL : PREFCAP_EIO; }

static int out_write(outfile *f, const char *s, size_t n) {
  f->bytes += n;
  if (f->gz) return gzwrite(f->gz, s, (unsigned)n) == (int)n ? PREFCAP_OK : PREFCAP_EIO;
  if (f->werr) { errno = f->werr; return werr_code(f->werr); }   /* an earlier chunk failed */
  if (f->len[f->cur] + n > OUT_CHUNK) {
    if (f->len[f->cur]) out_handoff(f);
    if (n > OUT_CHUNK) {   /* a line longer than a chunk: written here, in order, once the writer is idle */
      out_handoff(f);      /* (hands off an empty chunk: waits for both to be written) */
      out_handoff(f);
      int e = f->werr ? f->werr : write_all(f, s, n);
      if (e) { errno = e; return werr_code(e); }
      return PREFCAP_OK;
    }
  }
  memcpy(f->buf[f->cur] + f->len[f->cur], s, n);
  f->len[f->cur] += n;
  return PREFCAP_OK;
}

static int fsync_path(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = fsync(fd);
  close(fd);
  return r;
}

/* Writes what is left, fsyncs and closes; computes the file's SHA-256. */
static int out_close(outfile *f, char *err, size_t errlen) {
  int rc = PREFCAP_OK;
  if (f->gz) {
    if (gzclose(f->gz) != Z_OK) rc = PREFCAP_EIO;
    f->gz = NULL;
    FILE *r = rc ? NULL : fopen(f->tmp, "rb");
    if (r) {
      char buf[1 << 16];
      size_t n;
      f->bytes = 0;
      while ((n = fread(buf, 1, sizeof buf, r)) > 0) { prefcap__sha256_update(&f->sha, buf, n); f->bytes += n; }
      fclose(r);
    } else rc = PREFCAP_EIO;
    if (!rc && fsync_path(f->tmp, O_RDONLY)) rc = PREFCAP_EIO;
  } else if (f->fd >= 0) {
    if (f->len[f->cur]) out_handoff(f);
    out_stop(f);
    if (f->werr) { errno = f->werr; rc = werr_code(f->werr); }
    else if (fsync(f->fd)) rc = werr_code(errno);
    if (close(f->fd) && !rc) rc = PREFCAP_EIO;
    f->fd = -1;
    free(f->buf[0]); free(f->buf[1]);
    f->buf[0] = f->buf[1] = NULL;
  }
  uint8_t d[32];
  prefcap__sha256_final(&f->sha, d);
  prefcap__hex(d, 32, f->sha_hex);
  if (rc) snprintf(err, errlen, "cannot write %.400s: %.400s", f->tmp, strerror(errno));
  return rc;
}

static void out_abort(outfile *f) {
  prefcap__sha256_free(&f->sha);
  if (f->gz) gzclose(f->gz);
  f->gz = NULL;
  out_stop(f);
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  free(f->buf[0]); free(f->buf[1]);
  f->buf[0] = f->buf[1] = NULL;
}

/* out.jsonl -> out.eval.jsonl; out.jsonl.gz -> out.eval.jsonl.gz; out -> out.eval */
static void eval_path(const char *path, char *buf, size_t len) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  const char *dot = strchr(base, '.');
  if (!dot || dot == base) snprintf(buf, len, "%s.eval", path);
  else snprintf(buf, len, "%.*s.eval%s", (int)(dot - path), path, dot);
}

/* The prompt as a messages list: the logged messages, or a text prompt (with its system prompt) as
 * one. Appends the JSON array to b. */
static void put_messages(prefcap__buf *b, sqlite3_stmt *st) {
  if (T(st, C_MESSAGES)) {
    if (T(st, C_SYSTEM)) {   /* a system prompt given beside messages comes first */
      prefcap__buf_puts(b, "[{\"role\":\"system\",\"content\":");
      prefcap__buf_json_str(b, T(st, C_SYSTEM));
      prefcap__buf_puts(b, "},");
      prefcap__buf_puts(b, T(st, C_MESSAGES) + 1);
    } else prefcap__buf_puts(b, T(st, C_MESSAGES));
    return;
  }
  prefcap__buf_puts(b, "[");
  if (T(st, C_SYSTEM)) {
    prefcap__buf_puts(b, "{\"role\":\"system\",\"content\":");
    prefcap__buf_json_str(b, T(st, C_SYSTEM));
    prefcap__buf_puts(b, "},");
  }
  prefcap__buf_puts(b, "{\"role\":\"user\",\"content\":");
  prefcap__buf_json_str(b, T(st, C_PROMPT) ? T(st, C_PROMPT) : "");
  prefcap__buf_puts(b, "}]");
}

static void put_assistant(prefcap__buf *b, const char *text) {
  prefcap__buf_puts(b, "[{\"role\":\"assistant\",\"content\":");
  prefcap__buf_json_str(b, text ? text : "");
  prefcap__buf_puts(b, "}]");
}

/* One line in the chosen format, into b (reset first). */
static void format_row(prefcap__buf *b, sqlite3_stmt *st, const prefcap_export_options_t *o, bool conversational) {
  b->len = 0;
  if (b->p) b->p[0] = 0;
  const char *chosen = T(st, C_CHOSEN), *rejected = T(st, C_REJECTED);
  switch (o->format) {
    case PREFCAP_FORMAT_TRL_DPO:
      prefcap__buf_puts(b, "{\"prompt\":");
      if (conversational) put_messages(b, st); else prefcap__buf_json_str(b, T(st, C_PROMPT) ? T(st, C_PROMPT) : "");
      prefcap__buf_puts(b, ",\"chosen\":");
      if (conversational) put_assistant(b, chosen); else prefcap__buf_json_str(b, chosen);
      prefcap__buf_puts(b, ",\"rejected\":");
      if (conversational) put_assistant(b, rejected); else prefcap__buf_json_str(b, rejected);
      break;
    case PREFCAP_FORMAT_TRL_KTO:
      prefcap__buf_puts(b, "{\"prompt\":");
      if (conversational) put_messages(b, st); else prefcap__buf_json_str(b, T(st, C_PROMPT) ? T(st, C_PROMPT) : "");
      prefcap__buf_puts(b, ",\"completion\":");
      if (conversational) put_assistant(b, chosen); else prefcap__buf_json_str(b, chosen);
      prefcap__buf_puts(b, strcmp(T(st, C_FLAGS), "desirable") ? ",\"label\":false" : ",\"label\":true");
      break;
    case PREFCAP_FORMAT_OPENAI_DPO:
      prefcap__buf_puts(b, "{\"input\":{\"messages\":");
      put_messages(b, st);
      prefcap__buf_puts(b, "},\"preferred_output\":");
      put_assistant(b, chosen);
      prefcap__buf_puts(b, ",\"non_preferred_output\":");
      put_assistant(b, rejected);
      break;
    case PREFCAP_FORMAT_EVENTS: break;   /* written by sdk/fleet.c, never here */
  }
  /* provenance: trainers ignore fields they do not know */
  char num[64];   /* one snprintf per number: this runs once per line of a million-line export */
  int n = snprintf(num, sizeof num, ",\"id\":%lld,\"signal\":", sqlite3_column_int64(st, C_ID));
  prefcap__buf_putn(b, num, (size_t)n);
  prefcap__buf_json_str(b, T(st, C_SIGNAL));
  n = snprintf(num, sizeof num, ",\"weight\":%.4g,\"model\":", sqlite3_column_double(st, C_WEIGHT));
  prefcap__buf_putn(b, num, (size_t)n);
  if (T(st, C_MODEL)) prefcap__buf_json_str(b, T(st, C_MODEL)); else prefcap__buf_puts(b, "null");
  if (T(st, C_CMODEL) && (!T(st, C_MODEL) || strcmp(T(st, C_CMODEL), T(st, C_MODEL)))) {
    prefcap__buf_puts(b, ",\"chosen_model\":");
    prefcap__buf_json_str(b, T(st, C_CMODEL));
  }
  prefcap__buf_puts(b, ",\"source\":");
  prefcap__buf_json_str(b, T(st, C_SOURCE));
  if (o->format != PREFCAP_FORMAT_TRL_KTO && T(st, C_FLAGS)[0]) {
    prefcap__buf_puts(b, ",\"flags\":");
    prefcap__buf_json_str(b, T(st, C_FLAGS));
  }
  prefcap__buf_puts(b, "}\n");
}

// ---- counts, manifest ----------------------------------------------------------------------------

typedef struct { char name[32]; uint64_t n; } count_t;
typedef struct { count_t v[16]; int n; } counts_t;

static void count_add(counts_t *c, const char *name) {
  for (int i = 0; i < c->n; i++) if (!strcmp(c->v[i].name, name)) { c->v[i].n++; return; }
  if (c->n < 16) { snprintf(c->v[c->n].name, sizeof c->v[c->n].name, "%s", name); c->v[c->n++].n = 1; }
}

static void put_counts(prefcap__buf *b, const counts_t *c) {
  prefcap__buf_puts(b, "{");
  for (int i = 0; i < c->n; i++) {
    if (i) prefcap__buf_puts(b, ",");
    prefcap__buf_json_str(b, c->v[i].name);
    prefcap__buf_printf(b, ":%llu", (unsigned long long)c->v[i].n);
  }
  prefcap__buf_puts(b, "}");
}

static const char *format_name(prefcap_format_t f) {
  return f == PREFCAP_FORMAT_TRL_KTO ? "trl-kto" : f == PREFCAP_FORMAT_OPENAI_DPO ? "openai-dpo" : "trl-dpo";
}

static void put_filters(prefcap__buf *b, const prefcap_export_options_t *o) {
  char t[40];
  prefcap__buf_puts(b, "{\"since\":");
  if (o->since_ms) { prefcap__format_time(o->since_ms, t, sizeof t); prefcap__buf_json_str(b, t); } else prefcap__buf_puts(b, "null");
  prefcap__buf_puts(b, ",\"until\":");
  if (o->until_ms) { prefcap__format_time(o->until_ms, t, sizeof t); prefcap__buf_json_str(b, t); } else prefcap__buf_puts(b, "null");
  prefcap__buf_puts(b, ",\"signal\":");
  if (o->signals) prefcap__buf_json_str(b, o->signals); else prefcap__buf_puts(b, "null");
  prefcap__buf_printf(b, ",\"min_weight\":%g,\"model\":", o->min_weight);
  if (o->model) prefcap__buf_json_str(b, o->model); else prefcap__buf_puts(b, "null");
  prefcap__buf_puts(b, ",\"user\":");
  if (o->user) prefcap__buf_json_str(b, o->user); else prefcap__buf_puts(b, "null");
  prefcap__buf_printf(b, ",\"max_ai_fraction\":%g,\"dedup\":%s,\"eval_fraction\":%g}", o->max_ai_fraction,
                      o->dedup ? "true" : "false", o->eval_fraction);
}

// ---- the pending export --------------------------------------------------------------------------

/* The store's derivation version in *v. A read error is a code: taken for 0, it would make an export
 * of nothing and move a name's watermark back. */
static int current_version(sqlite3 *db, int64_t *v, char *err, size_t errlen) {
  sqlite3_stmt *st;
  *v = 0;
  int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'derive.version'", -1, &st, NULL);
  if (!rc) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
    sqlite3_finalize(st);
  }
  if (rc) snprintf(err, errlen, "reading the store's version: %.400s", sqlite3_errmsg(db));
  return prefcap__sqlite_code(rc);
}

static void new_export_id(char out[40]) {
  uint8_t r[16];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, r, sizeof r) != (ssize_t)sizeof r) {
    /* no /dev/urandom: the time and pid are unique enough for an export id */
    int64_t t = prefcap__now_ms();
    pid_t p = getpid();
    memcpy(r, &t, 8);
    memcpy(r + 8, &p, sizeof p);
  }
  if (fd >= 0) close(fd);
  memcpy(out, "exp-", 4);
  prefcap__hex(r, 16, out + 4);
}

/* Removes the files of a killed attempt that was never published: its data, eval part and manifest. */
static void unlink_regular(const char *path) {
  struct stat st;
  if (!lstat(path, &st) && S_ISREG(st.st_mode)) unlink(path);   /* never a device or link put there since */
}

static void remove_unpublished(const char *path) {
  char b[PATH_MAX + 32];
  unlink_regular(path);
  eval_path(path, b, sizeof b);
  unlink_regular(b);
  snprintf(b, sizeof b, "%s.manifest.json", path);
  unlink_regular(b);
}

/* Fixes the range of a named export: resumes a pending one (same range, same id) or starts one. */
static int begin_named(prefcap_t *pc, const prefcap_export_options_t *o, char id[40], int64_t *from, int64_t *to,
                       bool *resumed, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  sqlite3_stmt *st;
  *resumed = false;
  sqlite3_prepare_v2(db, "SELECT id, path, version_from, version_to FROM exports WHERE name = ?1 AND status = 'pending'", -1, &st, NULL);
  sqlite3_bind_text(st, 1, o->since_last, -1, SQLITE_STATIC);
  /* a read error here must not pass for "no pending export" or "no watermark": either would export
   * again what was already published */
  int step = sqlite3_step(st);
  if (step == SQLITE_ROW) {
    snprintf(id, 40, "%s", T(st, 0));
    *from = sqlite3_column_int64(st, 2);
    *to = sqlite3_column_int64(st, 3);
    *resumed = true;
    /* the killed attempt's files were never published: if they sit elsewhere, they go */
    if (strcmp(T(st, 1), o->out)) remove_unpublished(T(st, 1));
  }
  sqlite3_finalize(st);
  if (step != SQLITE_ROW && step != SQLITE_DONE) goto read_failed;
  if (*resumed) {
    sqlite3_prepare_v2(db, "UPDATE exports SET path = ?2 WHERE id = ?1", -1, &st, NULL);
  } else {
    *from = 0;
    sqlite3_prepare_v2(db, "SELECT version FROM watermarks WHERE name = ?1", -1, &st, NULL);
    sqlite3_bind_text(st, 1, o->since_last, -1, SQLITE_STATIC);
    step = sqlite3_step(st);
    if (step == SQLITE_ROW) *from = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE) goto read_failed;
    if ((rc = current_version(db, to, err, errlen))) { prefcap__store_rollback(pc->store); return rc; }
    new_export_id(id);
    sqlite3_prepare_v2(db, "INSERT INTO exports(id, name, path, format, filters, status, version_from, version_to, created)"
                           " VALUES(?1, ?3, ?2, ?4, ?5, 'pending', ?6, ?7, ?8)", -1, &st, NULL);
    prefcap__buf f = {0};
    put_filters(&f, o);
    sqlite3_bind_text(st, 3, o->since_last, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, format_name(o->format), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, f.p ? f.p : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 6, *from);
    sqlite3_bind_int64(st, 7, *to);
    sqlite3_bind_int64(st, 8, prefcap__now_ms());
    free(f.p);
  }
  sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, o->out, -1, SQLITE_STATIC);
  rc = sqlite3_step(st) == SQLITE_DONE ? PREFCAP_OK : prefcap__sqlite_code(sqlite3_errcode(db));
  sqlite3_finalize(st);
  if (rc) { snprintf(err, errlen, "cannot record the export: %.400s", sqlite3_errmsg(db)); prefcap__store_rollback(pc->store); return rc; }
  return prefcap__store_commit(pc->store, err, errlen);
read_failed:
  rc = prefcap__sqlite_code(sqlite3_errcode(db));
  snprintf(err, errlen, "reading the export's name '%.200s': %.400s", o->since_last, sqlite3_errmsg(db));
  prefcap__store_rollback(pc->store);
  return rc ? rc : PREFCAP_EIO;
}

/* Step 5: published, with its records (for lineage) and the watermark, in one transaction. */
static int publish(prefcap_t *pc, const prefcap_export_options_t *o, const char *id, int64_t from, int64_t to,
                   const plan_t *plan, const users_t *users, const char *sha, uint64_t records, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  sqlite3_stmt *st = NULL;
  bool kto = o->format == PREFCAP_FORMAT_TRL_KTO;
  int64_t now = prefcap__now_ms();
  prefcap__buf f = {0};
  put_filters(&f, o);
  sqlite3_prepare_v2(db, "INSERT INTO exports(id, name, path, format, filters, status, version_from, version_to, created, published, sha256, records, upload_url)"
                         " VALUES(?1, ?2, ?3, ?4, ?5, 'published', ?6, ?7, ?8, ?8, ?9, ?10, ?11) ON CONFLICT(id) DO UPDATE SET"
                         " status = 'published', path = excluded.path, published = excluded.published, sha256 = excluded.sha256,"
                         " records = excluded.records, upload_url = excluded.upload_url", -1, &st, NULL);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (o->since_last) sqlite3_bind_text(st, 2, o->since_last, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, o->out, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, format_name(o->format), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, f.p ? f.p : "{}", -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 6, from);
  sqlite3_bind_int64(st, 7, to);
  sqlite3_bind_int64(st, 8, now);
  sqlite3_bind_text(st, 9, sha, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 10, (int64_t)records);
  /* where it went, for lineage and forget, without the credentials a URL may carry (userinfo, a
   * presigned query): the store outlives them and gets copied */
  char *where = o->upload_url ? prefcap__url_for_humans_dup(o->upload_url) : NULL;
  if (where) sqlite3_bind_text(st, 11, where, -1, SQLITE_TRANSIENT);
  free(where);
  free(f.p);
  if (o->upload_url && !where) {
    snprintf(err, errlen, "cannot publish the export: out of memory");
    sqlite3_finalize(st);
    prefcap__store_rollback(pc->store);
    return PREFCAP_ENOMEM;
  }
  if (sqlite3_step(st) != SQLITE_DONE) goto fail;
  sqlite3_finalize(st);
  /* lineage: each record with the users whose text it holds (noted while writing), in one blob on the
   * export's row, and each user's hash and record count in export_users */
  {
    prefcap__buf blob = {0};
    int64_t prev = 0;
    uint64_t *per_user = calloc(users->n ? users->n : 1, sizeof *per_user);
    if (!per_user) goto fail;
    for (size_t i = 0; i < plan->n; i++) {
      const row_t *r = &plan->rows[i];
      if (!r->keep) continue;
      int32_t u[2];
      int nu = 0;
      for (int k = 0; k < 2; k++)
        if (r->user[k] >= 0 && (nu == 0 || u[0] != r->user[k])) { u[nu++] = r->user[k]; per_user[r->user[k]]++; }
      prefcap__lineage_put(&blob, &prev, r->id, u, nu);
    }
    sqlite3_prepare_v2(db, "UPDATE exports SET record_kind = ?2, lineage = ?3 WHERE id = ?1", -1, &st, NULL);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, kto ? "label" : "pair", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, blob.p ? blob.p : "", (int)blob.len, SQLITE_TRANSIENT);
    bool ok = !blob.oom && sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    st = NULL;
    free(blob.p);
    if (ok) sqlite3_prepare_v2(db, "INSERT INTO export_users(export_id, user_index, user_hash, records) VALUES(?1, ?2, ?3, ?4)", -1, &st, NULL);
    for (size_t i = 0; ok && i < users->n; i++) {
      if (!per_user[i]) continue;
      sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, (int64_t)i);
      sqlite3_bind_text(st, 3, users->hash[i], -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 4, (int64_t)per_user[i]);
      ok = sqlite3_step(st) == SQLITE_DONE;
      sqlite3_reset(st);
    }
    free(per_user);
    if (!ok) goto fail;
    sqlite3_finalize(st);
    st = NULL;
  }
  if (o->since_last) {
    sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO watermarks(name, version, export_id, updated) VALUES(?1, ?2, ?3, ?4)", -1, &st, NULL);
    sqlite3_bind_text(st, 1, o->since_last, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, to);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
  }
  return prefcap__store_commit(pc->store, err, errlen);
fail:
  rc = prefcap__sqlite_code(sqlite3_errcode(db));
  snprintf(err, errlen, "cannot publish the export: %.400s", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  prefcap__store_rollback(pc->store);
  return rc;
}

// ---- the export ----------------------------------------------------------------------------------

/* A named export with nothing to write: drop its pending row and move the watermark to the range's end. */
static int finish_empty(prefcap_t *pc, const char *name, const char *id, int64_t to, char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  sqlite3_stmt *st;
  sqlite3_prepare_v2(db, "DELETE FROM exports WHERE id = ?1 AND status = 'pending'", -1, &st, NULL);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  rc = sqlite3_step(st) == SQLITE_DONE ? 0 : 1;
  sqlite3_finalize(st);
  sqlite3_prepare_v2(db, "INSERT INTO watermarks(name, version, export_id, updated) VALUES(?1, ?2, '', ?3)"
                         " ON CONFLICT(name) DO UPDATE SET version = excluded.version, updated = excluded.updated", -1, &st, NULL);
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, to);
  sqlite3_bind_int64(st, 3, prefcap__now_ms());
  rc |= sqlite3_step(st) == SQLITE_DONE ? 0 : 1;
  sqlite3_finalize(st);
  if (rc) {
    snprintf(err, errlen, "cannot move the watermark: %.400s", sqlite3_errmsg(db));
    prefcap__store_rollback(pc->store);
    return PREFCAP_EIO;
  }
  return prefcap__store_commit(pc->store, err, errlen);
}


static int write_manifest(int fd, const char *tmp, const prefcap_export_options_t *o, const char *id,
                          int64_t from, int64_t to, outfile *files, int nfiles, const counts_t *by_signal,
                          const counts_t *by_source, const plan_t *plan, const char *db_path, char *err, size_t errlen) {
  prefcap__buf b = {0};
  char t[40];
  prefcap__format_time(prefcap__now_ms(), t, sizeof t);
  prefcap__buf_puts(&b, "{\"export_id\":");
  prefcap__buf_json_str(&b, id);
  prefcap__buf_puts(&b, ",\"name\":");
  if (o->since_last) prefcap__buf_json_str(&b, o->since_last); else prefcap__buf_puts(&b, "null");
  prefcap__buf_puts(&b, ",\"created\":");
  prefcap__buf_json_str(&b, t);
  prefcap__buf_puts(&b, ",\"format\":");
  prefcap__buf_json_str(&b, format_name(o->format));
  prefcap__buf_printf(&b, ",\"prompt_form\":\"%s\"", plan->conversational || o->format == PREFCAP_FORMAT_OPENAI_DPO ? "conversational" : "standard");
  /* the data file's checksum at the top, where uploads check it */
  prefcap__buf_printf(&b, ",\"sha256\":\"%s\",\"bytes\":%llu,\"records\":%llu", files[0].sha_hex,
                      (unsigned long long)files[0].bytes, (unsigned long long)files[0].records);
  prefcap__buf_puts(&b, ",\"files\":[");
  for (int i = 0; i < nfiles; i++) {
    const char *slash = strrchr(files[i].path, '/');
    prefcap__buf_printf(&b, "%s{\"split\":\"%s\",\"file\":", i ? "," : "", i ? "eval" : "train");
    prefcap__buf_json_str(&b, slash ? slash + 1 : files[i].path);
    prefcap__buf_printf(&b, ",\"sha256\":\"%s\",\"bytes\":%llu,\"records\":%llu,\"gzip\":%s}", files[i].sha_hex,
                        (unsigned long long)files[i].bytes, (unsigned long long)files[i].records, o->gzip ? "true" : "false");
  }
  prefcap__buf_puts(&b, "],\"filters\":");
  put_filters(&b, o);
  prefcap__buf_puts(&b, ",\"counts\":{\"by_signal\":");
  put_counts(&b, by_signal);
  prefcap__buf_puts(&b, ",\"by_source\":");
  put_counts(&b, by_source);
  prefcap__buf_printf(&b, ",\"skipped_ai\":%llu,\"skipped_dup\":%llu}", (unsigned long long)plan->skipped_ai,
                      (unsigned long long)plan->skipped_dup);
  prefcap__buf_printf(&b, ",\"sdk_version\":\"%s\",\"schema_version\":%d,\"store\":", PREFCAP_VERSION_STRING, PREFCAP_SCHEMA_VERSION);
  prefcap__buf_json_str(&b, db_path);
  prefcap__buf_printf(&b, ",\"version_range\":[%lld,%lld],\"record_kind\":\"%s\",\"record_ids\":[", (long long)from,
                      (long long)to, o->format == PREFCAP_FORMAT_TRL_KTO ? "label" : "pair");
  bool first = true;
  for (size_t i = 0; i < plan->n; i++)
    if (plan->rows[i].keep) { prefcap__buf_printf(&b, first ? "%lld" : ",%lld", (long long)plan->rows[i].id); first = false; }
  prefcap__buf_puts(&b, "]}\n");
  if (b.oom) { free(b.p); snprintf(err, errlen, "out of memory for the manifest"); return PREFCAP_ENOMEM; }
  int rc = PREFCAP_OK;
  const char *p = b.p;
  size_t n = b.len;
  while (n && !rc) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) rc = werr_code(errno);
    else { p += w; n -= (size_t)w; }
  }
  if (!rc && fsync(fd)) rc = werr_code(errno);
  if (rc) snprintf(err, errlen, "cannot write %.400s: %.400s", tmp, strerror(errno));
  free(b.p);
  return rc;
}

/* The export itself. tf: the temporary files of the data, the eval part and the manifest, created and
 * recorded by do_export (NULL for stdout); a file renamed into place has its tf[i].tmp cleared. */
static int export_body(prefcap_t *pc, const prefcap_export_options_t *o, prefcap_export_result_t *res, tempfile *tf,
                       char *err, size_t errlen) {
  sqlite3 *db = prefcap__db(pc);
  bool to_stdout = !strcmp(o->out, "-");
  if (to_stdout && (o->since_last || o->upload_url || o->eval_fraction > 0 || o->gzip)) {
    snprintf(err, errlen, "--out - (stdout) is for looking: it cannot be named, uploaded, split or gzipped; give a file");
    return PREFCAP_EINVAL;
  }
  if (o->upload_url && o->eval_fraction > 0 && strchr(o->upload_url, '?')) {
    snprintf(err, errlen, "uploading a split export needs a URL without a query (the eval file goes beside it)");
    return PREFCAP_EINVAL;
  }
  int rc = prefcap__derive(pc->store, 0, err, errlen);
  if (rc) return rc;
  char id[40] = "";
  int64_t from = 0, to = 0;
  bool resumed = false;
  if (!o->since_last && (rc = current_version(db, &to, err, errlen))) return rc;
  if (o->since_last && (rc = begin_named(pc, o, id, &from, &to, &resumed, err, errlen))) return rc;
  if (!o->since_last) new_export_id(id);
  snprintf(res->export_id, sizeof res->export_id, "%s", id);
  res->resumed = resumed;
  int64_t now_version = 0;
  if (resumed) {   /* derived since the interrupted run? */
    if ((rc = current_version(db, &now_version, err, errlen))) return rc;
    res->more = now_version > to;
  }

  /* a consistent view for both passes: one read transaction, read through a memory map (no copy of
   * each page through read(2); the export reads every page of the tables it joins) */
  sqlite3_exec(db, "PRAGMA mmap_size = 1073741824", NULL, NULL, NULL);
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  plan_t plan;
  /* pass 1 is needed only to choose rows (dedup, the AI cap); otherwise the rows are listed while they
   * are written, and one cheap query says whether any prompt needs the conversational form */
  bool one_pass = !o->dedup && o->max_ai_fraction >= 1.0;
  rc = one_pass ? probe_form(db, o, from, to, &plan, err, errlen) : plan_rows(db, o, from, to, &plan, err, errlen);
  if (rc) { sqlite3_exec(db, "COMMIT", NULL, NULL, NULL); return rc; }
  res->skipped_ai = plan.skipped_ai;
  res->skipped_dup = plan.skipped_dup;
  uint64_t kept = 0;
  for (size_t i = 0; i < plan.n; i++) kept += plan.rows[i].keep;
  if (one_pass) kept = plan.any ? 1 : 0;
  if (o->since_last && kept == 0) {
    /* nothing new: no file, no export; the watermark still moves past what the filters left out */
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    free(plan.rows);
    res->nothing_new = 1;
    if (resumed) remove_unpublished(o->out);
    return finish_empty(pc, o->since_last, id, to, err, errlen);
  }

  outfile files[2];
  int nfiles = to_stdout ? 0 : (o->eval_fraction > 0 ? 2 : 1);
  char evp[PATH_MAX];
  eval_path(o->out, evp, sizeof evp);
  for (int i = 0; i < nfiles && !rc; i++) {
    rc = out_open(&files[i], &tf[i], i ? evp : o->out, o->gzip, err, errlen);
    if (rc) nfiles = i;
  }
  counts_t by_signal = {0}, by_source = {0};
  users_t users = {0};
  prefcap__buf line = {0};
  sqlite3_stmt *st = NULL;
  if (!rc && prepare_rows(db, o, from, to, &st)) { rc = PREFCAP_EIO; snprintf(err, errlen, "export query: %.400s", sqlite3_errmsg(db)); }
  size_t k = 0;
  int step = SQLITE_DONE;
  while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t rid = sqlite3_column_int64(st, C_ID);
    if (one_pass) {   /* every row is kept: list it now */
      if (plan.n == plan.cap) {
        size_t cap = plan.cap ? plan.cap * 2 : 4096;
        row_t *r = realloc(plan.rows, cap * sizeof *r);
        if (!r) { rc = PREFCAP_ENOMEM; snprintf(err, errlen, "out of memory"); break; }
        plan.rows = r; plan.cap = cap;
      }
      plan.rows[plan.n] = (row_t){rid, {-1, -1}, 1};
      k = plan.n++;
    } else {
      while (k < plan.n && plan.rows[k].id < rid) k++;
      if (k == plan.n || plan.rows[k].id != rid || !plan.rows[k].keep) continue;   /* skipped in pass 1 */
    }
    plan.rows[k].user[0] = user_index(&users, T(st, C_USER));
    plan.rows[k].user[1] = user_index(&users, T(st, C_CUSER));
    format_row(&line, st, o, plan.conversational);
    if (line.oom) { rc = PREFCAP_ENOMEM; snprintf(err, errlen, "out of memory"); break; }
    bool ev = nfiles == 2 && is_eval(st, o->eval_fraction);
    if (to_stdout) { if (fwrite(line.p, 1, line.len, stdout) != line.len) { rc = PREFCAP_EIO; snprintf(err, errlen, "cannot write to stdout"); } }
    else if ((rc = out_write(&files[ev], line.p, line.len))) snprintf(err, errlen, "cannot write %.400s: %.400s", files[ev].tmp, strerror(errno));
    if (!to_stdout) files[ev].records++;
    if (ev) res->eval++; else res->train++;
    res->records++;
    count_add(&by_signal, T(st, C_SIGNAL));
    count_add(&by_source, is_ai(T(st, C_SOURCE)) ? "ai" : "human");
  }
  if (!rc && step != SQLITE_DONE) {   /* a read error ends the rows early: the export is incomplete */
    rc = prefcap__sqlite_code(step);
    snprintf(err, errlen, "export query: %.400s", sqlite3_errmsg(db));
  }
  sqlite3_finalize(st);
  free(line.p);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (to_stdout) {
    if (!rc && fflush(stdout)) rc = PREFCAP_EIO;
    users_free(&users);
    free(plan.rows);
    return rc;
  }
  for (int i = 0; i < nfiles && !rc; i++) rc = out_close(&files[i], err, errlen);
  char mpath[PATH_MAX + 32];
  snprintf(mpath, sizeof mpath, "%s.manifest.json", o->out);
  if (!rc) rc = write_manifest(tf[2].fd, tf[2].tmp, o, id, from, to, files, nfiles, &by_signal, &by_source, &plan, pc->o.path, err, errlen);
  /* into place: data first, then the manifest (a manifest never describes a missing file); each target
   * checked again just before (it was checked before writing, but the directory may be shared) */
  for (int i = 0; i < nfiles && !rc; i++) {
    if ((rc = check_target(files[i].path, err, errlen))) break;
    if (rename(files[i].tmp, files[i].path)) { rc = PREFCAP_EIO; snprintf(err, errlen, "cannot rename %.400s: %.400s", files[i].tmp, strerror(errno)); }
    else tf[i].tmp[0] = 0;
  }
  if (!rc && !(rc = check_target(mpath, err, errlen))) {
    if (rename(tf[2].tmp, mpath)) { rc = PREFCAP_EIO; snprintf(err, errlen, "cannot rename %.400s: %.400s", tf[2].tmp, strerror(errno)); }
    else tf[2].tmp[0] = 0;
  }
  if (!rc) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", o->out);
    fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY);
  }
  if (rc) { for (int i = 0; i < nfiles; i++) out_abort(&files[i]); users_free(&users); free(plan.rows); return rc; }

  if (o->upload_url) {
    char uerr[512];
    rc = prefcap__upload(o->upload_opts, o->out, o->upload_url, uerr, sizeof uerr);
    if (!rc && nfiles == 2) {
      /* the eval part beside the train part, without a manifest of its own */
      char eurl[4096];
      eval_path(o->upload_url, eurl, sizeof eurl);
      prefcap_upload_options_t *eo = prefcap_upload_options_new();
      if (!eo) rc = PREFCAP_ENOMEM;
      else {
        prefcap_upload_options_set_manifest(eo, 0);
        rc = prefcap__upload(eo, evp, eurl, uerr, sizeof uerr);
        prefcap_upload_options_free(eo);
      }
    }
    if (rc) {
      snprintf(err, errlen, "the export was written to %.400s but not uploaded (the watermark did not move; run again): %.400s", o->out, uerr);
      users_free(&users);
      free(plan.rows);
      return rc;
    }
  }
  rc = users.oom ? PREFCAP_ENOMEM : publish(pc, o, id, from, to, &plan, &users, files[0].sha_hex, res->records, err, errlen);
  users_free(&users);
  free(plan.rows);
  return rc;
}

/* Files first (see "files written safely"): the targets checked, the directory's leftovers removed,
 * the temporary files created and recorded; then the export; then the temporary files that were not
 * renamed into place removed, and their records with them. */
static int do_export(prefcap_t *pc, const prefcap_export_options_t *o, prefcap_export_result_t *res, char *err, size_t errlen) {
  bool events = o->format == PREFCAP_FORMAT_EVENTS;
  if (!strcmp(o->out, "-")) {
    if (!events) return export_body(pc, o, res, NULL, err, errlen);
    snprintf(err, errlen, "an events export needs a file (--out PATH)");
    return PREFCAP_EINVAL;
  }
  char evp[PATH_MAX], mpath[PATH_MAX + 32], dir[PATH_MAX];
  eval_path(o->out, evp, sizeof evp);
  snprintf(mpath, sizeof mpath, "%s.manifest.json", o->out);
  const char *targets[3] = {o->out, o->eval_fraction > 0 && !events ? evp : NULL, mpath};
  int rc = PREFCAP_OK;
  for (int i = 0; i < 3 && !rc; i++)
    if (targets[i]) rc = check_target(targets[i], err, errlen);
  if (rc) return rc;
  if (!abs_dir(o->out, dir)) {
    snprintf(err, errlen, "cannot write %.400s: its directory: %s", o->out, strerror(errno));
    return PREFCAP_EIO;
  }
  if ((rc = prefcap__export_remove_leftovers(pc, dir, NULL, NULL, err, errlen))) return rc;
  tempfile tf[3];
  char names[3][sizeof tf[0].tmp];
  for (int i = 0; i < 3; i++) { tf[i] = (tempfile){"", -1, -1}; names[i][0] = 0; }
  for (int i = 0; i < 3 && !rc; i++) {
    if (!targets[i]) continue;
    const char *base = strrchr(targets[i], '/');
    char abs[PATH_MAX];
    if (snprintf(abs, sizeof abs, "%s/%s", dir, base ? base + 1 : targets[i]) >= (int)sizeof abs) {
      snprintf(err, errlen, "path too long: %.400s", targets[i]);
      rc = PREFCAP_EINVAL;
      break;
    }
    if (!(rc = temp_name(&tf[i], abs, err, errlen))) memcpy(names[i], tf[i].tmp, sizeof names[i]);
  }
  /* recorded, then created: a kill between the two leaves a record of nothing, which is dropped */
  const char *recorded[3] = {names[0], names[1], names[2]};
  bool kept = !rc && !(rc = temps_record(pc, recorded, 3, true, err, errlen));
  for (int i = 0; i < 3 && kept && !rc; i++)
    if (tf[i].tmp[0]) rc = temp_create(&tf[i], o->mode, err, errlen);
  if (kept && !rc)
    rc = o->format == PREFCAP_FORMAT_EVENTS
             ? prefcap__export_events(pc, o->out, o->since_last, o->upload_url, o->upload_opts, &tf[0], &tf[2], res, err, errlen)
             : export_body(pc, o, res, tf, err, errlen);
  for (int i = 0; i < 3; i++) temp_release(&tf[i]);
  if (kept) {   /* a failure here leaves rows naming files that are gone: the next export drops them */
    char e2[256];
    temps_record(pc, recorded, 3, false, e2, sizeof e2);
  }
  return rc;
}

int prefcap_export(prefcap_t *pc, const prefcap_export_options_t *o, prefcap_export_result_t *out) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_export: no handle");
  if (!o) return prefcap__fail(pc, PREFCAP_EINVAL, "prefcap_export: no options");
  /* the result is written up to the caller's size (include/prefcap.h: growable structs) */
  const size_t min = offsetof(prefcap_export_result_t, more) + sizeof(int);
  if (out && out->size < min)
    return prefcap__fail(pc, PREFCAP_EINVAL, "prefcap_export_result_t.size is %zu, less than %zu: initialise it "
                         "with PREFCAP_EXPORT_RESULT_INIT", out->size, min);
  prefcap_export_result_t res;
  memset(&res, 0, sizeof res);
  char err[1024] = "";
  pthread_mutex_lock(&pc->db_mu);
  int rc = do_export(pc, o, &res, err, sizeof err);
  pthread_mutex_unlock(&pc->db_mu);
  if (out) {
    size_t keep = out->size;
    memcpy(out, &res, keep < sizeof res ? keep : sizeof res);
    out->size = keep;
  }
  return rc ? prefcap__fail(pc, rc, "%s", err) : PREFCAP_OK;
}
