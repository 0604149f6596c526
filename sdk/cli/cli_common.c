/* sdk/cli/cli_common.c: what every `prefcap` command shares: the default store, opening it with the
 * library's own reason on failure (prefcap_errmsg(NULL)), and making text from outside safe to print
 * (no terminal escape sequences, no bells, no forged lines, no URL passwords). Public API only
 * (include/prefcap.h). */
#include "cli.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *safe_copy(const char *text);

// ---- the store -----------------------------------------------------------------------------------

const char *cli_default_db(void) {
  const char *e = getenv("PREFCAP_DB");
  return e && *e ? e : "prefcap.db";
}

/* The library reports through its logger, from whichever thread hit the condition (the writer, in
 * async mode): the CLI keeps the last error (the reason a write failed, which no call returns in
 * async mode) and, for ingest, prints warnings and errors as they come. Why an open failed is not
 * taken from here but from prefcap_errmsg(NULL), the channel of calls without a handle. One handle
 * is open at a time in the CLI. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_logged[768];
static bool print_warnings;

static void cli_logger(prefcap_log_level_t level, const char *msg, void *ud) {
  (void)ud;
  pthread_mutex_lock(&log_mu);
  if (level >= PREFCAP_LOG_ERROR) snprintf(last_logged, sizeof last_logged, "%s", msg);
  if (print_warnings && level >= PREFCAP_LOG_WARN) {
    char *safe = safe_copy(msg);
    fprintf(stderr, "%s\n", safe ? safe : msg);
    free(safe);
  }
  pthread_mutex_unlock(&log_mu);
}

void cli_log_warnings(bool on) {
  pthread_mutex_lock(&log_mu);
  print_warnings = on;
  pthread_mutex_unlock(&log_mu);
}

void cli_last_logged(char *buf, size_t len) {
  pthread_mutex_lock(&log_mu);
  snprintf(buf, len, "%s", last_logged);
  pthread_mutex_unlock(&log_mu);
}

int cli_open(const char *db, prefcap_durability_t mode, prefcap_options_t *o_in, bool warnings, prefcap_t **pc) {
  prefcap_options_t *o = o_in ? o_in : prefcap_options_new();
  if (!o) { fprintf(stderr, "prefcap: out of memory\n"); return 1; }
  pthread_mutex_lock(&log_mu);
  last_logged[0] = 0;
  print_warnings = warnings;
  pthread_mutex_unlock(&log_mu);
  prefcap_options_set_logger(o, cli_logger, NULL);
  prefcap_options_set_path(o, db);
  prefcap_options_set_durability(o, mode);
  int rc = prefcap_open(o, pc);
  if (!o_in) prefcap_options_free(o);
  if (rc) {
    /* the library's detail for a call without a handle: "PATH: REASON", this thread's */
    const char *why = prefcap_errmsg(NULL);
    fprintf(stderr, "prefcap: cannot open %s: %s%s%s\n", S(db), prefcap_strerror(rc), why[0] ? ": " : "", S(why));
    if (rc == PREFCAP_ECORRUPT) fprintf(stderr, "prefcap: see 'prefcap check --help' and docs/storage.md (a damaged store)\n");
    return 1;
  }
  return 0;
}

int cli_open_existing(const char *cmd, const char *db, prefcap_t **pc) {
  if (access(db, F_OK) != 0) { fprintf(stderr, "prefcap %s: no store at %s\n", cmd, S(db)); return 1; }
  return cli_open(db, PREFCAP_SYNC, NULL, false, pc);
}

void cli_fail(const char *cmd, prefcap_t *pc, int code) {
  const char *d = prefcap_errmsg(pc);
  fprintf(stderr, "prefcap %s: %s%s%s\n", cmd, prefcap_strerror(code), d[0] ? ": " : "", d[0] ? S(d) : "");
  if (code == PREFCAP_ECORRUPT)
    fprintf(stderr, "prefcap %s: the store is damaged: run 'prefcap check' and see docs/storage.md to recover\n", cmd);
}

int cli_usage_error(const char *cmd, const char *msg) {
  fprintf(stderr, "prefcap %s: %s (see 'prefcap %s --help')\n", cmd, msg, cmd);
  return 2;
}

// ---- safe text -----------------------------------------------------------------------------------

/* Length of a valid UTF-8 sequence at p (1-4), 0 if invalid; C1 controls (U+0080..U+009F) count as
 * invalid here so that they are escaped too. */
static size_t utf8_len(const unsigned char *p) {
  if (p[0] < 0x80) return 1;
  if (p[0] >= 0xC2 && p[0] <= 0xDF) return (p[1] & 0xC0) == 0x80 && !(p[0] == 0xC2 && p[1] < 0xA0) ? 2 : 0;
  if (p[0] >= 0xE0 && p[0] <= 0xEF) {
    if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0)) return 0;   /* overlong, surrogate */
    return 3;
  }
  if (p[0] >= 0xF0 && p[0] <= 0xF4) {
    if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    if ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90)) return 0;
    return 4;
  }
  return 0;
}

/* If a URL's authority starts at p (just after "://"), the length of its userinfo with the '@'. */
static size_t userinfo_len(const char *p) {
  size_t auth = strcspn(p, "/?# \t\r\n\"'<>");
  const char *at = NULL;
  for (size_t i = 0; i < auth; i++)
    if (p[i] == '@') at = p + i;
  return at ? (size_t)(at - p) + 1 : 0;
}

/* The safe copy of text (malloc'd; NULL when out of memory). */
static char *safe_copy(const char *text) {
  size_t n = strlen(text);
  char *out = malloc(n * 4 + 1);
  if (!out) return NULL;
  const unsigned char *p = (const unsigned char *)text;
  char *w = out;
  while (*p) {
    if (p > (const unsigned char *)text + 2 && p[-1] == '/' && p[-2] == '/' && p[-3] == ':') {
      size_t u = userinfo_len((const char *)p);
      if (u) { memcpy(w, "***@", 4); w += 4; p += u; continue; }
    }
    size_t k = utf8_len(p);
    if (k == 1 && *p >= 0x20 && *p != 0x7F) *w++ = (char)*p++;
    else if (k > 1) { memcpy(w, p, k); w += k; p += k; }
    else {
      if (*p == '\n') { memcpy(w, "\\n", 2); w += 2; }
      else if (*p == '\r') { memcpy(w, "\\r", 2); w += 2; }
      else if (*p == '\t') { memcpy(w, "\\t", 2); w += 2; }
      else { snprintf(w, 5, "\\x%02X", *p); w += 4; }
      p++;
    }
  }
  *w = 0;
  return out;
}

const char *S(const char *text) {
  /* only the main thread prints through S() (the logger, which the writer thread calls, uses
   * safe_copy), so these buffers are freed by reuse and still reachable at exit */
  static char *ring[8];
  static int next;
  if (!text) return "-";
  char *out = safe_copy(text);
  if (!out) return "(out of memory)";
  free(ring[next]);
  ring[next] = out;
  next = (next + 1) % 8;
  return out;
}
