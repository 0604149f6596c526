/* sdk/prefcap.c: the handle. Options, open and close, the two durability modes, the bounded queue
 * and the writer thread that owns the file in async mode, flush, counters, error reporting.
 *
 * The caller's thread does the work that can fail on the event's own account (validation, the
 * copy into one allocation), so a bad event is refused at the call; in async mode it then only takes
 * a mutex and appends a pointer to a ring. The writer takes up to WRITE_BATCH events per
 * transaction, retries what failed for want of space or a lock (keeping the events: logging resumes
 * when space returns, and new events meanwhile are dropped and counted, never blocked on), and
 * derives pairs in small steps between batches. */
#include "internal.h"
#include "redact.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define WRITE_BATCH 8192   /* a flood commits in large transactions: each rewrites the index pages it touched */
#define DERIVE_EVERY_MS 1000
#define DERIVE_MAX_LAG_MS 10000
/* A handle fed by prefcap_ingest_line (a central store taking events files, `prefcap ingest`) derives
 * a flood at most this often: deriving costs more per event than storing it, and passes every 10 s
 * during a million-event ingest held the store for most of its time (the longer the ingest, the more
 * passes: a third of the raw insert rate on a loaded machine; bench/RESULTS.md, "fleet"). The files
 * are derived once they are in (the queue idle for a second, prefcap_derive, or close), and a feed
 * that never pauses still every minute. */
#ifndef DERIVE_BULK_LAG_MS
#define DERIVE_BULK_LAG_MS 60000
#endif
#define WRITER_TICK_MS 2   /* how long queued events may wait for the writer while it is busy */
#define WAKE_AT 256        /* queued events that wake a ticking writer early */
#define RETRY_LOG_MS 60000 /* a write that keeps failing is logged again this often */

// ---- codes and messages --------------------------------------------------------------------------

/* Indexed by code. The table is positional, so the build fails when a code is appended to the enum
 * without its name here (PREFCAP__NCODES, the enum's last member, moves with it). */
static const char *const code_names[] = {
    "ok", "invalid argument", "out of memory", "I/O error", "disk full", "store busy (locked)",
    "text too big", "invalid UTF-8 or NUL byte", "queue full (event dropped)", "timed out",
    "handle closing", "not a prefcap store, or damaged", "store written by a newer prefcap",
    "not found", "invalid JSON", "refused", "network error", "HTTP error", "checksum or signature error"};
_Static_assert(sizeof code_names / sizeof *code_names == PREFCAP__NCODES, "prefcap_strerror: one name per code");

const char *prefcap_strerror(int code) {
  if (code >= 0 && code < PREFCAP__NCODES) return code_names[code];
  return "unknown error code";
}

const char *prefcap_version(void) { return PREFCAP_VERSION; }
int prefcap_version_num(void) { return PREFCAP_VERSION_NUM; }
void prefcap_free(void *p) { free(p); }

/* The last failure's detail, per thread, tagged with the handle it belongs to (NULL: a call without
 * one, such as open or upload). Per thread, so concurrent logging threads never see each other's. */
static _Thread_local char tl_errmsg[1024];
static _Thread_local const prefcap_t *tl_err_owner;
static _Thread_local bool tl_err_set;

const char *prefcap_errmsg(prefcap_t *pc) { return (tl_err_set && tl_err_owner == pc) ? tl_errmsg : ""; }

/* A failure of the store itself (I/O, a full disk, a lock, damage, a newer schema) starts with the
 * store's path ("x.db: ..."), unless the detail already names it, so that the message says which file
 * it is about. A refused argument (a field, UTF-8, a size) is about the call, and says which field. */
static bool about_the_file(int code) {
  return code == PREFCAP_EIO || code == PREFCAP_EFULL || code == PREFCAP_EBUSY || code == PREFCAP_ECORRUPT ||
         code == PREFCAP_ESCHEMA;
}

static void set_detail(const prefcap_t *pc, int code, const char *fmt, va_list ap) {
  char msg[sizeof tl_errmsg];
  vsnprintf(msg, sizeof msg, fmt, ap);
  const char *path = pc && about_the_file(code) ? pc->o.path : NULL;
  size_t pl = path && !strstr(msg, path) ? strlen(path) : 0;
  if (pl + 2 >= sizeof tl_errmsg) pl = 0;
  if (pl) { memcpy(tl_errmsg, path, pl); memcpy(tl_errmsg + pl, ": ", 2); pl += 2; }
  size_t ml = strnlen(msg, sizeof tl_errmsg - 1 - pl);   /* cut at the end of the buffer */
  memcpy(tl_errmsg + pl, msg, ml);
  tl_errmsg[pl + ml] = 0;
  tl_err_owner = pc;
  tl_err_set = true;
}

int prefcap__fail(prefcap_t *pc, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_detail(pc, code, fmt, ap);
  va_end(ap);
  return code;
}

int prefcap__fail0(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_detail(NULL, code, fmt, ap);
  va_end(ap);
  return code;
}

void prefcap__log(const prefcap_t *pc, prefcap_log_level_t lvl, const char *fmt, ...) {
  if (!pc || !pc->o.logger) return;
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pc->o.logger(lvl, msg, pc->o.logger_ud);
}

// ---- options -------------------------------------------------------------------------------------

prefcap_options_t *prefcap_options_new(void) {
  prefcap_options_t *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->path = strdup("prefcap.db");
  if (!o->path) { free(o); return NULL; }
  o->mode = PREFCAP_ASYNC;
  o->queue_capacity = 65536;
  o->busy_timeout_ms = 5000;
  o->max_text = 1 << 20;
  return o;
}

void prefcap_options_free(prefcap_options_t *o) {
  if (!o) return;
  free(o->path);
  for (int i = 0; i < o->n_weights; i++) free(o->weight_names[i]);
  free(o);
}

int prefcap_options_set_path(prefcap_options_t *o, const char *path) {
  if (!o || !path || !*path) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_path: %s", !o ? "no options object" : "no path given");
  char *p = strdup(path);
  if (!p) return prefcap__fail0(PREFCAP_ENOMEM, "prefcap_options_set_path: out of memory");
  free(o->path);
  o->path = p;
  return PREFCAP_OK;
}

int prefcap_options_set_durability(prefcap_options_t *o, prefcap_durability_t mode) {
  if (!o || (mode != PREFCAP_SYNC && mode != PREFCAP_ASYNC))
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_durability: %s", !o ? "no options object" : "mode is neither PREFCAP_SYNC nor PREFCAP_ASYNC");
  o->mode = mode;
  return PREFCAP_OK;
}

int prefcap_options_set_queue_capacity(prefcap_options_t *o, size_t n) {
  if (!o || n < 1 || n > ((size_t)1 << 28))
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_queue_capacity: %s", !o ? "no options object" : "capacity must be 1 to 2^28 events");
  o->queue_capacity = n;
  return PREFCAP_OK;
}

int prefcap_options_set_busy_timeout_ms(prefcap_options_t *o, int ms) {
  if (!o || ms < 0) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_busy_timeout_ms: %s", !o ? "no options object" : "negative timeout");
  o->busy_timeout_ms = ms;
  return PREFCAP_OK;
}

int prefcap_options_set_max_text_bytes(prefcap_options_t *o, size_t n) {
  if (!o || n < 1) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_max_text_bytes: %s", !o ? "no options object" : "must be at least 1");
  o->max_text = n;
  return PREFCAP_OK;
}

int prefcap_options_set_logger(prefcap_options_t *o, prefcap_logger_fn fn, void *ud) {
  if (!o) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_logger: no options object");
  o->logger = fn;
  o->logger_ud = ud;
  return PREFCAP_OK;
}

int prefcap_options_set_redact(prefcap_options_t *o, int on) {
  if (!o) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_redact: no options object");
  o->redact = on != 0;
  return PREFCAP_OK;
}

int prefcap_options_set_block_when_full(prefcap_options_t *o, int on) {
  if (!o) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_block_when_full: no options object");
  o->block_when_full = on != 0;
  return PREFCAP_OK;
}

int prefcap_options_set_weight(prefcap_options_t *o, const char *name, double v) {
  prefcap__rules r;
  if (!o || !name) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_weight: no %s", !o ? "options object" : "name");
  if (!prefcap__rules_field(&r, name)) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_weight: unknown weight '%s' (docs/pairing.md)", name);
  if (!(v >= 0.0 && v <= 1.0)) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_weight: %s = %g is outside [0,1]", name, v);
  for (int i = 0; i < o->n_weights; i++)
    if (!strcmp(o->weight_names[i], name)) { o->weight_values[i] = v; return PREFCAP_OK; }
  if (o->n_weights == (int)(sizeof o->weight_names / sizeof *o->weight_names))
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_options_set_weight: too many weights set");
  if (!(o->weight_names[o->n_weights] = strdup(name))) return prefcap__fail0(PREFCAP_ENOMEM, "prefcap_options_set_weight: out of memory");
  o->weight_values[o->n_weights++] = v;
  return PREFCAP_OK;
}

// ---- storing -------------------------------------------------------------------------------------

/* Adds what was dropped or failed since the last time to the store's own totals (inside an open
 * transaction), so `prefcap stats` sees them across processes and runs. Returns the deltas written. */
static void persist_counters(prefcap_t *pc, uint64_t *dd, uint64_t *df) {
  uint64_t d = atomic_load(&pc->c_dropped), f = atomic_load(&pc->c_failed);
  *dd = d - pc->persisted_dropped;
  *df = f - pc->persisted_failed;
  if (*dd && prefcap__store_add_counter(pc->store, "dropped", (int64_t)*dd)) *dd = 0;
  if (*df && prefcap__store_add_counter(pc->store, "failed", (int64_t)*df)) *df = 0;
}

/* Background derivation, at most every DERIVE_EVERY_MS. While events keep coming (busy: the queue is
 * not empty) it waits up to DERIVE_MAX_LAG_MS, so a flood is stored at full speed and derived after;
 * sustained load still derives at least that often. Failures are logged, not returned: derivation
 * catches up the next time. Caller holds db_mu. */
static void maybe_derive(prefcap_t *pc, bool busy) {
  int64_t now = prefcap__mono_ms();
  int64_t lag = atomic_load(&pc->bulk) ? DERIVE_BULK_LAG_MS : DERIVE_MAX_LAG_MS;
  if (now - pc->last_derive_ms < (busy ? lag : DERIVE_EVERY_MS)) return;
  pc->last_derive_ms = now;
  char err[256];
  int rc = prefcap__derive(pc->store, 0, err, sizeof err);
  if (rc) prefcap__log(pc, PREFCAP_LOG_WARN, "prefcap: deriving pairs failed (will retry): %s", err);
}

/* Stores events in one transaction. Returns PREFCAP_OK, or the code of a failure that left nothing
 * stored (the transaction is rolled back whole). refused[i] marks events refused by policy. */
static int store_events(prefcap_t *pc, prefcap__event **evs, size_t n, bool *refused, size_t *dups,
                        char *err, size_t errlen) {
  *dups = 0;
  int rc = prefcap__store_begin(pc->store, err, errlen);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++) {
    bool dup = false;
    refused[i] = false;
    rc = prefcap__store_insert(pc->store, evs[i], &dup, err, errlen);
    if (rc == PREFCAP_EREFUSED) { refused[i] = true; rc = PREFCAP_OK; continue; }
    if (rc) { prefcap__store_rollback(pc->store); return rc; }
    *dups += dup;
  }
  uint64_t dd, df;
  persist_counters(pc, &dd, &df);
  rc = prefcap__store_commit(pc->store, err, errlen);
  if (!rc) { pc->persisted_dropped += dd; pc->persisted_failed += df; }
  return rc;
}

static bool retryable(int code) { return code == PREFCAP_EFULL || code == PREFCAP_EBUSY || code == PREFCAP_EIO; }

/* The writer's side: stores a batch, retrying with backoff while the failure is one that time can
 * cure, until close's deadline. Events are freed here, stored or failed. */
static void write_batch(prefcap_t *pc, prefcap__event **evs, size_t n) {
  bool refused[WRITE_BATCH];
  char err[512];
  int backoff = 10, last_rc = 0;
  int64_t last_log_ms = 0, first_fail_ms = 0;
  for (;;) {
    size_t dups = 0;
    pthread_mutex_lock(&pc->db_mu);
    int rc = store_events(pc, evs, n, refused, &dups, err, sizeof err);
    pthread_mutex_unlock(&pc->db_mu);
    if (!rc) {
      atomic_store(&pc->c_retrying, 0);
      size_t nref = 0;
      for (size_t i = 0; i < n; i++) nref += refused[i];
      atomic_fetch_add(&pc->c_stored, n - nref);
      atomic_fetch_add(&pc->c_dup, dups);
      if (nref) {
        atomic_fetch_add(&pc->c_failed, nref);
        prefcap__log(pc, PREFCAP_LOG_WARN, "prefcap: %zu event(s) of erased users refused", nref);
      }
      if (last_rc) prefcap__log(pc, PREFCAP_LOG_INFO, "prefcap: storing resumed after: %s", prefcap_strerror(last_rc));
      break;
    }
    /* said when it starts, and again every RETRY_LOG_MS while it lasts: an application that only
     * reads its log still learns that capture is stalled, and why */
    int64_t now = prefcap__mono_ms();
    if (rc != last_rc || now - last_log_ms >= RETRY_LOG_MS) {
      if (rc == last_rc)
        prefcap__log(pc, PREFCAP_LOG_ERROR, "prefcap: still cannot store %zu queued event(s) after %lld s (retrying): %s",
                     n, (long long)((now - first_fail_ms) / 1000), err);
      else
        prefcap__log(pc, PREFCAP_LOG_ERROR, "prefcap: cannot store %zu queued event(s)%s: %s", n,
                     retryable(rc) ? " (retrying)" : "", err);
      last_log_ms = now;
      if (!last_rc) first_fail_ms = now;
    }
    last_rc = rc;
    atomic_store(&pc->c_retrying, retryable(rc) ? n : 0);
    pthread_mutex_lock(&pc->q_mu);
    bool give_up = !retryable(rc) || (pc->stopping && prefcap__mono_ms() >= pc->stop_deadline_ms);
    if (!give_up) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += (long)backoff * 1000000L;
      ts.tv_sec += ts.tv_nsec / 1000000000L;
      ts.tv_nsec %= 1000000000L;
      pthread_cond_timedwait(&pc->q_wake, &pc->q_mu, &ts);   /* close wakes us early */
    }
    pthread_mutex_unlock(&pc->q_mu);
    if (give_up) {
      atomic_store(&pc->c_retrying, 0);
      atomic_fetch_add(&pc->c_failed, n);
      prefcap__log(pc, PREFCAP_LOG_ERROR, "prefcap: %zu event(s) lost: %s", n, err);
      break;
    }
    backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
  }
  for (size_t i = 0; i < n; i++) free(evs[i]);
}

static void *writer_main(void *arg) {
  prefcap_t *pc = arg;
  prefcap__event *batch[WRITE_BATCH];
  pthread_mutex_lock(&pc->q_mu);
  for (;;) {
    /* While events flow, the writer wakes on a short timer (WRITER_TICK_MS) and producers never pay
     * for a wake-up; after a tick with nothing to do it sleeps deeply, and the first event after
     * that, or a queue filling up, wakes it (see submit). */
    bool deep = false;
    while (pc->count == 0 && !pc->stopping) {
      pc->writer_waiting = true;
      pc->writer_deep = deep;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      if (deep) ts.tv_sec += 1;   /* wake now and then to derive what came in */
      else {
        ts.tv_nsec += WRITER_TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
      }
      int w = pthread_cond_timedwait(&pc->q_wake, &pc->q_mu, &ts);
      pc->writer_waiting = false;
      if (w == ETIMEDOUT && pc->count == 0 && !deep) { deep = true; continue; }
      if (w == ETIMEDOUT && pc->count == 0) {
        pthread_mutex_unlock(&pc->q_mu);
        pthread_mutex_lock(&pc->db_mu);
        maybe_derive(pc, false);
        pthread_mutex_unlock(&pc->db_mu);
        pthread_mutex_lock(&pc->q_mu);
      }
    }
    if (pc->count == 0) break;   /* stopping, and nothing left */
    size_t n = pc->count < WRITE_BATCH ? pc->count : WRITE_BATCH;
    for (size_t i = 0; i < n; i++) {
      batch[i] = pc->ring[pc->head];
      pc->head = (pc->head + 1) % pc->cap;
    }
    pc->count -= n;
    pthread_cond_broadcast(&pc->q_space);
    pthread_mutex_unlock(&pc->q_mu);
    write_batch(pc, batch, n);
    pthread_mutex_lock(&pc->q_mu);
    pc->finished += n;
    pthread_cond_broadcast(&pc->q_done);   /* stored: flush returns; deriving comes after */
    /* a full batch is a flood (an ingest, a burst): its events are derived at the latest
     * DERIVE_MAX_LAG_MS on, not every time the queue happens to be empty for a moment, since each
     * derivation pass holds the store while the queue fills (a third of a bulk ingest's time) */
    bool busy = pc->count > 0 || n >= WAKE_AT;
    pthread_mutex_unlock(&pc->q_mu);
    pthread_mutex_lock(&pc->db_mu);
    maybe_derive(pc, busy);
    pthread_mutex_unlock(&pc->db_mu);
    pthread_mutex_lock(&pc->q_mu);
  }
  pthread_mutex_unlock(&pc->q_mu);
  return NULL;
}

// ---- open / close --------------------------------------------------------------------------------

int prefcap_open(const prefcap_options_t *opts, prefcap_t **out) {
  if (!out) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_open: no place for the handle (out is NULL)");
  *out = NULL;
  if (!opts) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_open: no options");
  prefcap_t *pc = calloc(1, sizeof *pc);
  if (!pc) return prefcap__fail0(PREFCAP_ENOMEM, "%s: out of memory", opts->path);
  pc->o = *opts;
  pc->o.n_weights = 0;
  pc->o.path = strdup(opts->path);
  pc->cap = opts->mode == PREFCAP_ASYNC ? opts->queue_capacity : 1;
  pc->ring = calloc(pc->cap, sizeof *pc->ring);
  if (!pc->o.path || !pc->ring) {
    free(pc->o.path); free(pc->ring); free(pc);
    return prefcap__fail0(PREFCAP_ENOMEM, "%s: out of memory (a queue of %zu events)", opts->path, opts->queue_capacity);
  }
  pthread_mutex_init(&pc->db_mu, NULL);
  pthread_mutex_init(&pc->q_mu, NULL);
  pthread_cond_init(&pc->q_wake, NULL);
  pthread_cond_init(&pc->q_space, NULL);
  pthread_cond_init(&pc->q_done, NULL);
  char err[512];
  int rc = prefcap__store_open(&pc->o, &pc->store, err, sizeof err);
  if (!rc && opts->n_weights) {
    /* weights live in the file, so every process and the CLI derive with the same rules */
    rc = prefcap__store_begin(pc->store, err, sizeof err);
    for (int i = 0; i < opts->n_weights && !rc; i++)
      rc = prefcap__store_save_rule(pc->store, opts->weight_names[i], opts->weight_values[i]);
    if (!rc) rc = prefcap__store_commit(pc->store, err, sizeof err);
    else { prefcap__store_rollback(pc->store); snprintf(err, sizeof err, "cannot store the pairing weights"); }
  }
  if (!rc && opts->mode == PREFCAP_ASYNC) {
    if (pthread_create(&pc->writer, NULL, writer_main, pc)) { rc = PREFCAP_ENOMEM; snprintf(err, sizeof err, "cannot start the writer thread"); }
    else pc->writer_started = true;
  }
  if (rc) {
    prefcap__log(pc, PREFCAP_LOG_ERROR, "prefcap: cannot open %s: %s", opts->path, err);
    prefcap__store_close(pc->store);
    pc->store = NULL;
    prefcap_close(pc, 0);
    /* after close, which must not clear it: the detail names the file unless the store's did */
    if (strstr(err, opts->path)) return prefcap__fail0(rc, "%s", err);
    return prefcap__fail0(rc, "%s: %s", opts->path, err);
  }
  /* prefcap creates the store 0600 (sdk/store.c); one made or changed by someone else may be open to
   * others, and it holds users' text: said, not changed (the operator may mean it) */
  struct stat st;
  if (!stat(opts->path, &st) && (st.st_mode & 077))
    prefcap__log(pc, PREFCAP_LOG_WARN, "prefcap: %s is open to %s (mode %04o): it holds users' text; chmod 600 it", opts->path,
                 st.st_mode & 07 ? "every user" : "its group", (unsigned)(st.st_mode & 07777));
  *out = pc;
  return PREFCAP_OK;
}

int prefcap_close(prefcap_t *pc, int timeout_ms) {
  if (!pc) return PREFCAP_OK;
  int rc = PREFCAP_OK;
  if (pc->writer_started) {
    rc = prefcap_flush(pc, timeout_ms);
    pthread_mutex_lock(&pc->q_mu);
    pc->stopping = true;
    pc->stop_deadline_ms = prefcap__mono_ms() + (rc ? 0 : (timeout_ms < 0 ? INT32_MAX : timeout_ms));
    pthread_cond_broadcast(&pc->q_wake);
    pthread_cond_broadcast(&pc->q_space);
    pthread_mutex_unlock(&pc->q_mu);
    pthread_join(pc->writer, NULL);
  }
  if (pc->store) {
    char err[256];
    pthread_mutex_lock(&pc->db_mu);
    if (prefcap__derive(pc->store, 0, err, sizeof err)) prefcap__log(pc, PREFCAP_LOG_WARN, "prefcap: deriving at close: %s", err);
    if (!prefcap__store_begin(pc->store, err, sizeof err)) {
      uint64_t dd, df;
      persist_counters(pc, &dd, &df);
      if (prefcap__store_commit(pc->store, err, sizeof err) == PREFCAP_OK) { pc->persisted_dropped += dd; pc->persisted_failed += df; }
    }
    pthread_mutex_unlock(&pc->db_mu);
    prefcap__store_close(pc->store);
  }
  pthread_mutex_destroy(&pc->db_mu);
  pthread_mutex_destroy(&pc->q_mu);
  pthread_cond_destroy(&pc->q_wake);
  pthread_cond_destroy(&pc->q_space);
  pthread_cond_destroy(&pc->q_done);
  free(pc->ring);
  free(pc->o.path);
  if (tl_err_owner == pc && tl_err_set) { tl_err_set = false; tl_err_owner = NULL; }   /* a later handle may get this address */
  free(pc);
  return rc;
}

// ---- logging -------------------------------------------------------------------------------------

/* Redacts an event's free text (never its ids: a user id must stay erasable by its value). The
 * event is rebuilt from redacted copies, since placeholders can be longer than what they replace. */
static int redact_event(prefcap_t *pc, prefcap__event **evp) {
  prefcap__event *ev = *evp;
  char *r[4] = {0};
  const char *src[4] = {ev->prompt, ev->system, ev->completion, ev->text};
  int rc = PREFCAP_OK;
  for (int i = 0; i < 4 && !rc; i++)
    if (src[i]) { size_t n; rc = prefcap__redact(src[i], strlen(src[i]), &r[i], &n); }
  prefcap_message_t *msgs = NULL;
  size_t nm = 0;
  cJSON *arr = NULL;
  if (!rc && ev->messages_json) {
    arr = cJSON_Parse(ev->messages_json);
    nm = (size_t)cJSON_GetArraySize(arr);
    msgs = calloc(nm ? nm : 1, sizeof *msgs);
    if (!arr || !msgs) rc = PREFCAP_ENOMEM;
    for (size_t i = 0; i < nm && !rc; i++) {
      cJSON *m = cJSON_GetArrayItem(arr, (int)i);
      const char *content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
      char *red = NULL; size_t n;
      msgs[i].role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "role"));
      if (content && !(rc = prefcap__redact(content, strlen(content), &red, &n))) {
        cJSON_SetValuestring(cJSON_GetObjectItemCaseSensitive(m, "content"), red);
        msgs[i].content = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "content"));
      }
      free(red);
    }
  }
  prefcap__event *out = NULL;
  char err[256];
  if (!rc) {
    if (ev->type == PREFCAP__EV_GENERATION) {
      prefcap_generation_t g = {.size = sizeof g, .id = ev->id, .prompt = r[0], .messages = msgs, .n_messages = nm,
                                .system = r[1], .completion = r[2], .model = ev->model,
                                .model_version = ev->model_version, .params_json = ev->params_json,
                                .user_id = ev->user_id, .session_id = ev->session_id,
                                .regenerates = ev->regenerates, .event_id = ev->event_id, .ts_ms = ev->ts_ms,
                                .latency_ms = ev->latency_ms, .prompt_tokens = ev->prompt_tokens,
                                .completion_tokens = ev->completion_tokens};
      rc = prefcap__event_from_generation(&g, pc->o.max_text * 2, &out, err, sizeof err);
    } else {
      prefcap_feedback_t f = {.size = sizeof f, .kind = (prefcap_feedback_kind_t)ev->type, .id = ev->id, .text = r[3],
                              .rating = ev->rating, .rejected_id = ev->other_id, .source = ev->source,
                              .event_id = ev->event_id, .ts_ms = ev->ts_ms};
      rc = prefcap__event_from_feedback(&f, pc->o.max_text * 2, &out, err, sizeof err);
    }
    if (!rc) { out->ts_given = ev->ts_given; out->id_generated = ev->id_generated; }
  }
  for (int i = 0; i < 4; i++) free(r[i]);
  free(msgs);
  cJSON_Delete(arr);
  if (rc) return prefcap__fail(pc, rc, "redaction failed: %s", prefcap_strerror(rc));
  free(ev);
  *evp = out;
  return PREFCAP_OK;
}

/* Takes ownership of ev: stores it now (sync) or queues it (async). */
static int submit(prefcap_t *pc, prefcap__event *ev) {
  if (pc->o.redact) {
    int rc = redact_event(pc, &ev);
    if (rc) { free(ev); return rc; }
  }
  if (pc->o.mode == PREFCAP_SYNC) {
    char err[512];
    bool refused = false;
    size_t dups = 0;
    pthread_mutex_lock(&pc->db_mu);
    int rc = store_events(pc, &ev, 1, &refused, &dups, err, sizeof err);
    if (!rc) maybe_derive(pc, false);
    pthread_mutex_unlock(&pc->db_mu);
    if (!rc && refused) rc = prefcap__fail(pc, PREFCAP_EREFUSED, "the event belongs to an erased user: refused");
    else if (rc) prefcap__fail(pc, rc, "%s", err);
    free(ev);
    if (!rc) {
      atomic_fetch_add(&pc->c_accepted, 1);
      atomic_fetch_add(&pc->c_stored, 1);
      atomic_fetch_add(&pc->c_dup, dups);
    }
    return rc;
  }
  pthread_mutex_lock(&pc->q_mu);
  while (pc->count == pc->cap && pc->o.block_when_full && !pc->stopping) pthread_cond_wait(&pc->q_space, &pc->q_mu);
  if (pc->stopping) {
    pthread_mutex_unlock(&pc->q_mu);
    free(ev);
    return prefcap__fail(pc, PREFCAP_ECLOSED, "the handle is closing");
  }
  if (pc->count == pc->cap) {
    pthread_mutex_unlock(&pc->q_mu);
    free(ev);
    atomic_fetch_add(&pc->c_dropped, 1);
    return prefcap__fail(pc, PREFCAP_EQUEUEFULL, "the queue is full (%zu events): the event was dropped", pc->cap);
  }
  pc->ring[(pc->head + pc->count) % pc->cap] = ev;
  pc->count++;
  pc->enqueued++;
  if (pc->writer_waiting && (pc->writer_deep || pc->count >= WAKE_AT || pc->count * 4 >= pc->cap))
    pthread_cond_signal(&pc->q_wake);
  pthread_mutex_unlock(&pc->q_mu);
  atomic_fetch_add(&pc->c_accepted, 1);
  return PREFCAP_OK;
}

/* A caller's struct of the given size, as the library's own: the bytes past the caller's size read
 * as 0 (an older caller), and a newer caller's extra fields are left out. NULL when size is too
 * small to hold the first fields. */
#define SIZED_COPY(dst, src, min_size) \
  ((src) && (src)->size >= (min_size) \
       ? (memset(&(dst), 0, sizeof (dst)), \
          memcpy(&(dst), (src), (src)->size < sizeof (dst) ? (src)->size : sizeof (dst)), (dst).size = sizeof (dst), &(dst)) \
       : NULL)

/* The smallest sizes accepted: 0.2's structs, the first with a size. */
#define GEN_MIN_SIZE (offsetof(prefcap_generation_t, completion_tokens) + sizeof(int64_t))
#define FB_MIN_SIZE (offsetof(prefcap_feedback_t, ts_ms) + sizeof(int64_t))
#define COUNTERS_MIN_SIZE (offsetof(prefcap_counters_t, queued) + sizeof(uint64_t))

static int bad_size(prefcap_t *pc, const char *what, const char *init, const void *p, size_t size, size_t min) {
  if (!p) return prefcap__fail(pc, PREFCAP_EINVAL, "no %s given", what);
  return prefcap__fail(pc, PREFCAP_EINVAL, "%s.size is %zu, less than %zu: initialise it with %s", what, size, min, init);
}

int prefcap_log_generation(prefcap_t *pc, const prefcap_generation_t *gen_in, char id_out[PREFCAP_ID_MAX + 1]) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_log_generation: no handle");
  prefcap_generation_t g;
  const prefcap_generation_t *gen = SIZED_COPY(g, gen_in, GEN_MIN_SIZE);
  if (!gen) return bad_size(pc, "prefcap_generation_t", "PREFCAP_GENERATION_INIT", gen_in, gen_in ? gen_in->size : 0, GEN_MIN_SIZE);
  prefcap__event *ev;
  char err[256];
  /* A live call without a time happens now: stamping it before the id is made from the content
   * keeps two identical answers served at different moments apart. (A JSON line without a time is
   * a replay, and hashes without one; docs/events.md.) */
  if (g.ts_ms == 0) g.ts_ms = prefcap__now_ms();
  int rc = prefcap__event_from_generation(gen, pc->o.max_text, &ev, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  if (id_out) memcpy(id_out, ev->id, strlen(ev->id) + 1);
  return submit(pc, ev);
}

int prefcap_log_feedback(prefcap_t *pc, const prefcap_feedback_t *fb_in) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_log_feedback: no handle");
  prefcap_feedback_t f;
  const prefcap_feedback_t *fb = SIZED_COPY(f, fb_in, FB_MIN_SIZE);
  if (!fb) return bad_size(pc, "prefcap_feedback_t", "PREFCAP_FEEDBACK_INIT", fb_in, fb_in ? fb_in->size : 0, FB_MIN_SIZE);
  prefcap__event *ev;
  char err[256];
  if (f.ts_ms == 0) f.ts_ms = prefcap__now_ms();   /* as above */
  int rc = prefcap__event_from_feedback(fb, pc->o.max_text, &ev, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  return submit(pc, ev);
}

int prefcap_log_json(prefcap_t *pc, const char *json, size_t len, char id_out[PREFCAP_ID_MAX + 1]) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_log_json: no handle");
  if (!json) return prefcap__fail(pc, PREFCAP_EINVAL, "prefcap_log_json: no JSON given");
  prefcap__event *ev;
  char err[256];
  int rc = prefcap__event_from_json(json, len, pc->o.max_text, &ev, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  if (id_out) memcpy(id_out, ev->id, strlen(ev->id) + 1);
  return submit(pc, ev);
}

int prefcap_flush(prefcap_t *pc, int timeout_ms) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_flush: no handle");
  if (!pc->writer_started) return PREFCAP_OK;
  int64_t deadline = prefcap__mono_ms() + timeout_ms;
  pthread_mutex_lock(&pc->q_mu);
  uint64_t target = pc->enqueued;
  if (pc->writer_waiting) pthread_cond_signal(&pc->q_wake);
  while (pc->finished < target) {
    if (timeout_ms < 0) { pthread_cond_wait(&pc->q_done, &pc->q_mu); continue; }
    int64_t left = deadline - prefcap__mono_ms();
    if (left <= 0) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t step = left < 50 ? left : 50;
    ts.tv_nsec += (long)(step * 1000000);
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&pc->q_done, &pc->q_mu, &ts);
  }
  uint64_t left_events = target - (pc->finished < target ? pc->finished : target);
  pthread_mutex_unlock(&pc->q_mu);
  if (left_events) return prefcap__fail(pc, PREFCAP_ETIMEDOUT, "flush timed out with %llu event(s) not yet stored", (unsigned long long)left_events);
  return PREFCAP_OK;
}

int prefcap_derive(prefcap_t *pc, int all) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_derive: no handle");
  char err[512];
  pthread_mutex_lock(&pc->db_mu);
  int rc = prefcap__derive(pc->store, all, err, sizeof err);
  pthread_mutex_unlock(&pc->db_mu);
  return rc ? prefcap__fail(pc, rc, "%s", err) : PREFCAP_OK;
}

int prefcap_get_counters(prefcap_t *pc, prefcap_counters_t *out) {
  if (!pc) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_get_counters: no handle");
  if (!out || out->size < COUNTERS_MIN_SIZE)
    return bad_size(pc, "prefcap_counters_t", "PREFCAP_COUNTERS_INIT", out, out ? out->size : 0, COUNTERS_MIN_SIZE);
  prefcap_counters_t k = {.size = out->size};
  k.accepted = atomic_load(&pc->c_accepted);
  k.stored = atomic_load(&pc->c_stored);
  k.duplicates = atomic_load(&pc->c_dup);
  k.dropped = atomic_load(&pc->c_dropped);
  k.failed = atomic_load(&pc->c_failed);
  k.retrying = atomic_load(&pc->c_retrying);   /* 0.2's trailing field: copied only if out->size covers it */
  pthread_mutex_lock(&pc->q_mu);
  k.queued = pc->count;
  pthread_mutex_unlock(&pc->q_mu);
  memcpy(out, &k, out->size < sizeof k ? out->size : sizeof k);   /* only what the caller has room for */
  return PREFCAP_OK;
}

/* For the CLI and the tests: the handle's connection, used only under the handle's own lock. */
sqlite3 *prefcap__db(prefcap_t *pc) { return pc && pc->store ? prefcap__store_db(pc->store) : NULL; }
