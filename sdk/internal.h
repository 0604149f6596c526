/* sdk/internal.h: what the SDK's files share and the public header does not show: the queued event,
 * the handle, the store's statements, the pairing rules' weights, and small utilities.
 * Names shared across files are prefcap__name; everything else stays static in its file. */
#ifndef PREFCAP_INTERNAL_H
#define PREFCAP_INTERNAL_H

#include "prefcap.h"
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

// ---- events --------------------------------------------------------------------------------------
/* Event types as stored (events.type / generations). The numbers equal prefcap_feedback_kind_t for
 * feedback; 0 is a generation. */
enum { PREFCAP__EV_GENERATION = 0 };
const char *prefcap__event_type_name(int type);   /* "generation", "edit", ... ; NULL if unknown */
int prefcap__event_type_from_name(const char *name); /* -1 if unknown */

/* One event, validated and copied: every string points into the same allocation (one malloc, one
 * free), so the queue owns it with a single pointer. Unset strings are NULL. */
typedef struct prefcap__event {
  int type;
  bool id_generated;      /* the generation id was made from the content, not given */
  bool ts_given;
  char *id;               /* generation id; feedback: the generation it is about (chosen for choice) */
  char *other_id;         /* choice: rejected */
  char *event_id;         /* given, or NULL (the writer hashes the content) */
  char *prompt, *messages_json, *system, *completion, *model, *model_version, *params_json;
  char *user_id, *session_id, *regenerates;
  char *text;             /* edit */
  char *source;           /* "human" or "ai:<model>" */
  int rating;
  int64_t ts_ms, latency_ms, prompt_tokens, completion_tokens;
} prefcap__event;

// ---- pairing rules -------------------------------------------------------------------------------
/* Named weights and thresholds, all in [0,1]; docs/pairing.md says what each does and why. */
typedef struct prefcap__rules {
  double edit, edit_light_max, edit_rewrite_min, edit_rewrite_factor;
  double regenerate, regenerate_light_edit;
  double choice, rating;
  double label_accept, label_copy, label_rating, label_regenerated, label_abandon;
} prefcap__rules;
void prefcap__rules_default(prefcap__rules *r);
/* Pointer to the named field, NULL for an unknown name. */
double *prefcap__rules_field(prefcap__rules *r, const char *name);
/* Every name, NULL-terminated (for the CLI and the store). */
extern const char *const prefcap__rule_names[];

// ---- the handle ----------------------------------------------------------------------------------
struct prefcap_options {
  char *path;
  prefcap_durability_t mode;
  size_t queue_capacity;
  int busy_timeout_ms;
  size_t max_text;
  prefcap_logger_fn logger; void *logger_ud;
  int redact;
  int block_when_full;
  int n_weights; char *weight_names[32]; double weight_values[32];
};

typedef struct prefcap__store prefcap__store;

struct prefcap {
  prefcap_options_t o;           /* a copy; path owned */
  prefcap__store *store;         /* the connection and its statements; guarded by db_mu */
  pthread_mutex_t db_mu;
  /* async queue: a ring of event pointers */
  pthread_mutex_t q_mu;
  pthread_cond_t q_wake, q_space, q_done;
  prefcap__event **ring;
  size_t cap, head, count;
  bool writer_waiting, writer_deep, stopping, writer_started;
  uint64_t enqueued, finished;   /* finished = committed or failed, in queue order */
  int64_t stop_deadline_ms;      /* close: past this, queued events are failed instead of retried */
  pthread_t writer;
  /* counters */
  _Atomic uint64_t c_accepted, c_stored, c_dup, c_dropped, c_failed;
  _Atomic uint64_t c_retrying;   /* events of a batch the writer is retrying now */
  uint64_t persisted_dropped, persisted_failed;   /* already added to the store's totals */
  int64_t last_derive_ms;        /* paces background derivation; under db_mu */
  _Atomic bool bulk;             /* fed by prefcap_ingest_line: floods are derived after (prefcap.c) */
};

/* Records the failure detail for this thread and handle; returns code. A failure of the store itself
 * (EIO, EFULL, EBUSY, ECORRUPT, ESCHEMA) is prefixed with its path unless the detail names it. */
int prefcap__fail(prefcap_t *pc, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for a call without a handle (open, upload, options): prefcap_errmsg(NULL) shows it. */
int prefcap__fail0(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void prefcap__log(const prefcap_t *pc, prefcap_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The handle's connection, for the CLI and tests (use under no concurrent logging). */
sqlite3 *prefcap__db(prefcap_t *pc);

// ---- store (sdk/store.c) -------------------------------------------------------------------------
/* Opens the file (0600 when created), sets WAL and pragmas, migrates, prepares statements. On
 * failure returns a code with the detail in err. */
int prefcap__store_open(const prefcap_options_t *o, prefcap__store **out, char *err, size_t errlen);
void prefcap__store_close(prefcap__store *s);
sqlite3 *prefcap__store_db(prefcap__store *s);
/* Maps a SQLite result code to a PREFCAP code. */
int prefcap__sqlite_code(int rc);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK; a code and detail on failure. */
int prefcap__store_begin(prefcap__store *s, char *err, size_t errlen);
int prefcap__store_commit(prefcap__store *s, char *err, size_t errlen);
void prefcap__store_rollback(prefcap__store *s);
/* Inserts one event inside an open transaction. *dup is set when it was already stored. */
int prefcap__store_insert(prefcap__store *s, const prefcap__event *ev, bool *dup, char *err, size_t errlen);
/* Adds to a persistent counter ("dropped", "failed") inside an open transaction. */
int prefcap__store_add_counter(prefcap__store *s, const char *name, int64_t delta);
/* Loads the store's rules (defaults overridden by what is stored), and stores overrides. */
int prefcap__store_load_rules(prefcap__store *s, prefcap__rules *r);
int prefcap__store_save_rule(prefcap__store *s, const char *name, double v);
/* The hash a user id is known by in tombstones and lineage (SHA-256, hex). */
void prefcap__user_hash(const char *user_id, char out[65]);
/* Is this user erased (a tombstone exists)? */
bool prefcap__store_user_erased(prefcap__store *s, const char *user_id);

// ---- derivation (sdk/derive.c) -------------------------------------------------------------------
/* Derives pairs and labels for events not yet derived (all=0) or everything (all=1). Takes and
 * commits its own transactions. */
int prefcap__derive(prefcap__store *s, int all, char *err, size_t errlen);
extern int prefcap__derive_batch;   /* generations (and events) per derivation batch: 2000; tests lower it */
extern void (*prefcap__derive_after_batch)(void *arg);   /* tests: called between the batches of a pass */
extern void *prefcap__derive_after_batch_arg;
/* Normalised word-level edit distance between two texts in [0,1] (exposed for tests). */
double prefcap__edit_distance(const char *a, const char *b);
/* True when a and b differ only in whitespace. */
bool prefcap__same_but_whitespace(const char *a, const char *b);

// ---- events from JSON (sdk/event_json.c) ---------------------------------------------------------
/* Parses one JSON event (docs/events.md) into a freshly allocated, validated event. On failure a code
 * and the detail (naming the field) in err. */
int prefcap__event_from_json(const char *json, size_t len, size_t max_text, prefcap__event **out,
                             char *err, size_t errlen);
/* The checks every JSON line passes before its fields are read (docs/events.md, "Refusals"): no NUL
 * (raw or \u0000), valid UTF-8, no byte order mark, one JSON object and nothing after it, no key twice
 * in one object. *out (free with cJSON_Delete) on success; a code and the reason in err otherwise. */
struct cJSON;
int prefcap__json_parse_strict(const char *json, size_t len, struct cJSON **out, char *err, size_t errlen);

// ---- building and validating events (sdk/event.c) ------------------------------------------------
/* Copies a generation / feedback into one allocation after validating it. */
int prefcap__event_from_generation(const prefcap_generation_t *g, size_t max_text, prefcap__event **out,
                                   char *err, size_t errlen);
int prefcap__event_from_feedback(const prefcap_feedback_t *f, size_t max_text, prefcap__event **out,
                                 char *err, size_t errlen);
/* Validates UTF-8 (no NUL, no overlongs or surrogates). */
bool prefcap__utf8_valid(const char *s, size_t len);
/* Milliseconds since the Unix epoch, and a monotonic clock in ms. */
int64_t prefcap__now_ms(void);
int64_t prefcap__mono_ms(void);
/* Parses RFC 3339 ("2026-11-21T10:00:00Z", fractions, offsets) to ms; false if malformed. */
bool prefcap__parse_time(const char *s, int64_t *ms);
/* Formats ms as "2026-11-21T10:00:00.000Z" into buf (>= 32 bytes). */
void prefcap__format_time(int64_t ms, char *buf, size_t len);
/* Adds an optional string to a hash: a tag byte (0 absent, 1 present), then the string with its NUL,
 * so that (NULL, "a") and ("a", NULL) and ("", ...) all hash apart. Every content hash in the SDK
 * (generated ids, idempotency keys, prompt keys, dedup) is built this way; ids made from it are
 * stored, so the encoding must never change. */
struct prefcap__sha256_ctx;
void prefcap__sha256_opt(struct prefcap__sha256_ctx *c, const char *s);
/* The event's content hash (hex, 64 chars + NUL), the default idempotency key. */
void prefcap__event_hash(const prefcap__event *ev, char out[65]);
/* Appends a JSON string literal for s to a growing buffer. */
typedef struct { char *p; size_t len, cap; bool oom; } prefcap__buf;
void prefcap__buf_puts(prefcap__buf *b, const char *s);
/* Makes room for extra more bytes (and the NUL) up front; sets oom on failure. */
void prefcap__buf_reserve(prefcap__buf *b, size_t extra);
void prefcap__buf_putn(prefcap__buf *b, const char *s, size_t n);
void prefcap__buf_json_str(prefcap__buf *b, const char *s);
void prefcap__buf_printf(prefcap__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// ---- lineage of an export (sdk/export.c) ---------------------------------------------------------
/* An export's records as a byte string: for each record, in ascending id order, the id (as a varint
 * delta from the previous one), the number of users whose text it holds (0-2) and their indexes into
 * the export's rows of export_users (varints). */
void prefcap__lineage_put(prefcap__buf *b, int64_t *prev_id, int64_t id, const int32_t *users, int nusers);
typedef struct { const uint8_t *p, *end; int64_t id; } prefcap__lineage_iter;
/* The next record; false at the end, or (with *bad set) on a malformed blob. */
bool prefcap__lineage_next(prefcap__lineage_iter *it, int64_t *id, int32_t users[2], int *nusers, bool *bad);
/* Removes the temporary files that killed exports left (their names are recorded in the store before
 * they are created) and that no running export holds: those in dir (absolute), or all when dir is NULL. Each
 * one that stays is passed to left (may be NULL) with the reason. Caller holds db_mu. */
/* A temporary file of an export (sdk/export.c, "files written safely"): named with random bits and
 * recorded in the store before it is created O_EXCL|O_NOFOLLOW, locked while written; renamed into
 * place by whoever finishes it, who then clears tmp[0] so that it is not removed. */
typedef struct { char tmp[4096]; int fd, lockfd; } prefcap__tempfile;
/* An events export (sdk/fleet.c), called by prefcap_export under db_mu with its data and manifest
 * temporary files created and recorded; streams the events into data->fd. */
int prefcap__export_events(prefcap_t *pc, const char *out, const char *name, const char *upload_url,
                           const prefcap_upload_options_t *uo, prefcap__tempfile *data, prefcap__tempfile *manifest,
                           prefcap_export_result_t *res, char *err, size_t errlen);
typedef void (*prefcap__leftover_fn)(const char *path, const char *why, void *ud);
int prefcap__export_remove_leftovers(prefcap_t *pc, const char *dir, prefcap__leftover_fn left, void *ud,
                                     char *err, size_t errlen);

#endif
