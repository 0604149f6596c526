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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITE_BATCH 512
#define DERIVE_EVERY_MS 1000
#define DERIVE_MAX_LAG_MS 10000
#define WRITER_TICK_MS 2   /* how long queued events may wait for the writer while it is busy */
#define WAKE_AT 256        /* queued events that wake a ticking writer early */
#define RETRY_LOG_MS 60000 /* a write that keeps failing is logged again this often */

// ---- codes and messages --------------------------------------------------------------------------

const char *prefcap_strerror(int code) {
  static const char *const names[] = {
      "ok", "invalid argument", "out of memory", "I/O error", "disk full", "store busy (locked)",
      "text too big", "invalid UTF-8 or NUL byte", "queue full (event dropped)", "timed out",
      "handle closing", "not a prefcap store, or damaged", "store written by a newer prefcap",
      "not found", "invalid JSON", "refused", "network error", "HTTP error", "checksum or signature error"};
  if (code >= 0 && code < (int)(sizeof names / sizeof *names)) return names[code];
  return "unknown error code";
}

const char *prefcap_version(void) { return PREFCAP_VERSION_STRING; }
void prefcap_free(void *p) { free(p); }

/* The last failure's detail, per thread, tagged with the handle it belongs to. */
static _Thread_local char tl_errmsg[512];
static _Thread_local const prefcap_t *tl_err_owner;

const char *prefcap_errmsg(prefcap_t *pc) { return (pc && tl_err_owner == pc) ? tl_errmsg : ""; }

int prefcap__fail(prefcap_t *pc, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tl_errmsg, sizeof tl_errmsg, fmt, ap);
  va_end(ap);
  tl_err_owner = pc;
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
  if (!o || !path || !*path) return PREFCAP_EINVAL;
  char *p = strdup(path);
  if (!p) return PREFCAP_ENOMEM;
  free(o->path);
  o->path = p;
  return PREFCAP_OK;
}

int prefcap_options_set_durability(prefcap_options_t *o, prefcap_durability_t mode) {
  if (!o || (mode != PREFCAP_SYNC && mode != PREFCAP_ASYNC)) return PREFCAP_EINVAL;
  o->mode = mode;
  return PREFCAP_OK;
}

int prefcap_options_set_queue_capacity(prefcap_options_t *o, size_t n) {
  if (!o || n < 1 || n > ((size_t)1 << 28)) return PREFCAP_EINVAL;
  o->queue_capacity = n;
  return PREFCAP_OK;
}

int prefcap_options_set_busy_timeout_ms(prefcap_options_t *o, int ms) {
  if (!o || ms < 0) return PREFCAP_EINVAL;
  o->busy_timeout_ms = ms;
  return PREFCAP_OK;
}

int prefcap_options_set_max_text_bytes(prefcap_options_t *o, size_t n) {
  if (!o || n < 1) return PREFCAP_EINVAL;
  o->max_text = n;
  return PREFCAP_OK;
}

int prefcap_options_set_logger(prefcap_options_t *o, prefcap_logger_fn fn, void *ud) {
  if (!o) return PREFCAP_EINVAL;
  o->logger = fn;
  o->logger_ud = ud;
  return PREFCAP_OK;
}

int prefcap_options_set_redact(prefcap_options_t *o, int on) {
  if (!o) return PREFCAP_EINVAL;
  o->redact = on != 0;
  return PREFCAP_OK;
}

int prefcap_options_set_block_when_full(prefcap_options_t *o, int on) {
  if (!o) return PREFCAP_EINVAL;
  o->block_when_full = on != 0;
  return PREFCAP_OK;
}

int prefcap_options_set_weight(prefcap_options_t *o, const char *name, double v) {
  prefcap__rules r;
  if (!o || !name || !prefcap__rules_field(&r, name) || !(v >= 0.0 && v <= 1.0)) return PREFCAP_EINVAL;
  for (int i = 0; i < o->n_weights; i++)
    if (!strcmp(o->weight_names[i], name)) { o->weight_values[i] = v; return PREFCAP_OK; }
  if (o->n_weights == (int)(sizeof o->weight_names / sizeof *o->weight_names)) return PREFCAP_EINVAL;
  if (!(o->weight_names[o->n_weights] = strdup(name))) return PREFCAP_ENOMEM;
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
  if (now - pc->last_derive_ms < (busy ? DERIVE_MAX_LAG_MS : DERIVE_EVERY_MS)) return;
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
    bool busy = pc->count > 0;
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
  if (!out) return PREFCAP_EINVAL;
  *out = NULL;
  if (!opts) return PREFCAP_EINVAL;
  prefcap_t *pc = calloc(1, sizeof *pc);
  if (!pc) return PREFCAP_ENOMEM;
  pc->o = *opts;
  pc->o.n_weights = 0;
  pc->o.path = strdup(opts->path);
  pc->cap = opts->mode == PREFCAP_ASYNC ? opts->queue_capacity : 1;
  pc->ring = calloc(pc->cap, sizeof *pc->ring);
  if (!pc->o.path || !pc->ring) { free(pc->o.path); free(pc->ring); free(pc); return PREFCAP_ENOMEM; }
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
    prefcap__fail(NULL, rc, "%s", err);
    prefcap__store_close(pc->store);
    pc->store = NULL;
    prefcap_close(pc, 0);
    return rc;
  }
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
  if (tl_err_owner == pc) tl_err_owner = NULL;
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
      prefcap_generation_t g = {.id = ev->id, .prompt = r[0], .messages = msgs, .n_messages = nm,
                                .system = r[1], .completion = r[2], .model = ev->model,
                                .model_version = ev->model_version, .params_json = ev->params_json,
                                .user_id = ev->user_id, .session_id = ev->session_id,
                                .regenerates = ev->regenerates, .event_id = ev->event_id, .ts_ms = ev->ts_ms,
                                .latency_ms = ev->latency_ms, .prompt_tokens = ev->prompt_tokens,
                                .completion_tokens = ev->completion_tokens};
      rc = prefcap__event_from_generation(&g, pc->o.max_text * 2, &out, err, sizeof err);
    } else {
      prefcap_feedback_t f = {.kind = (prefcap_feedback_kind_t)ev->type, .id = ev->id, .text = r[3],
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

int prefcap_log_generation(prefcap_t *pc, const prefcap_generation_t *gen, char id_out[PREFCAP_ID_MAX + 1]) {
  if (!pc) return PREFCAP_EINVAL;
  prefcap__event *ev;
  char err[256];
  /* A live call without a time happens now: stamping it before the id is made from the content
   * keeps two identical answers served at different moments apart. (A JSON line without a time is
   * a replay, and hashes without one; docs/events.md.) */
  prefcap_generation_t g;
  if (gen && gen->ts_ms == 0) { g = *gen; g.ts_ms = prefcap__now_ms(); gen = &g; }
  int rc = prefcap__event_from_generation(gen, pc->o.max_text, &ev, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  if (id_out) memcpy(id_out, ev->id, strlen(ev->id) + 1);
  return submit(pc, ev);
}

int prefcap_log_feedback(prefcap_t *pc, const prefcap_feedback_t *fb) {
  if (!pc) return PREFCAP_EINVAL;
  prefcap__event *ev;
  char err[256];
  prefcap_feedback_t f;
  if (fb && fb->ts_ms == 0) { f = *fb; f.ts_ms = prefcap__now_ms(); fb = &f; }   /* as above */
  int rc = prefcap__event_from_feedback(fb, pc->o.max_text, &ev, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  return submit(pc, ev);
}

int prefcap_log_json(prefcap_t *pc, const char *json, size_t len, char id_out[PREFCAP_ID_MAX + 1]) {
  if (!pc || !json) return PREFCAP_EINVAL;
  prefcap__event *ev;
  char err[256];
  int rc = prefcap__event_from_json(json, len, pc->o.max_text, &ev, err, sizeof err);
  if (rc) return prefcap__fail(pc, rc, "%s", err);
  if (id_out) memcpy(id_out, ev->id, strlen(ev->id) + 1);
  return submit(pc, ev);
}

int prefcap_flush(prefcap_t *pc, int timeout_ms) {
  if (!pc) return PREFCAP_EINVAL;
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
  if (!pc) return PREFCAP_EINVAL;
  char err[512];
  pthread_mutex_lock(&pc->db_mu);
  int rc = prefcap__derive(pc->store, all, err, sizeof err);
  pthread_mutex_unlock(&pc->db_mu);
  return rc ? prefcap__fail(pc, rc, "%s", err) : PREFCAP_OK;
}

int prefcap_get_counters(prefcap_t *pc, prefcap_counters_t *out) {
  if (!pc || !out) return PREFCAP_EINVAL;
  out->accepted = atomic_load(&pc->c_accepted);
  out->stored = atomic_load(&pc->c_stored);
  out->duplicates = atomic_load(&pc->c_dup);
  out->dropped = atomic_load(&pc->c_dropped);
  out->failed = atomic_load(&pc->c_failed);
  out->retrying = atomic_load(&pc->c_retrying);
  pthread_mutex_lock(&pc->q_mu);
  out->queued = pc->count;
  pthread_mutex_unlock(&pc->q_mu);
  return PREFCAP_OK;
}

/* For the CLI and the tests: the handle's connection, used only under the handle's own lock. */
sqlite3 *prefcap__db(prefcap_t *pc) { return pc && pc->store ? prefcap__store_db(pc->store) : NULL; }
