/* prefcap.h: the one public header of libprefcap, the capture SDK.
 *
 * A product backend embeds prefcap to log every LLM generation with its context and the implicit
 * feedback that follows it (regenerate, edit, copy, accept, rating, abandon, side-by-side choice) into a
 * local SQLite file, from which preference pairs and unpaired labels are derived for DPO/KTO training.
 *
 * Conventions (they hold for every function below unless its comment says otherwise):
 * - Every function returns an int code: PREFCAP_OK (0) or a PREFCAP_E* code. Codes are only ever
 *   appended; prefcap_strerror() names them and prefcap_errmsg() gives the detail of the last failure
 *   on a handle (the field, the file, SQLite's own message).
 * - Strings passed in are borrowed for the duration of the call and copied before it returns; the
 *   caller keeps ownership. Strings returned are either owned by the handle (valid until the next call
 *   on it, said so) or must be freed with prefcap_free().
 * - All text is UTF-8. Invalid UTF-8, an embedded NUL (through the JSON paths) or a text longer than
 *   the configured maximum is refused with a code naming the field, and nothing is stored.
 * - The library never exits, aborts or prints; diagnostics go to the logger callback, if one is set.
 * - Names: the library defines only names that start with prefcap_ (public) or prefcap__ (internal),
 *   in libprefcap.so and in libprefcap.a alike, so nothing it links can clash with the application's.
 * - Thread safety: see the table below.
 * - Errors: every failing call leaves a detail, in this thread, that names what failed (the file, for
 *   a failure of the store, an export or an uploaded file; the field, for a refused argument) and the
 *   reason: prefcap_errmsg(handle) after a call on a handle,
 *   prefcap_errmsg(NULL) after a call that has none (prefcap_open, prefcap_upload, the options'
 *   setters), in the way errno works: read it right after the failing call, in the same thread.
 * - Growable structs: every struct the caller allocates or the library writes into starts with a
 *   `size_t size` member that the caller sets to sizeof the struct as it was compiled, with the
 *   struct's PREFCAP_..._INIT macro. Fields are only ever appended. The library reads and writes only
 *   the bytes that size covers (fields past it read as 0, so an older caller keeps its old behaviour),
 *   and ignores fields a newer caller has past the library's own struct (check prefcap_version_num()
 *   when a field's effect matters). Structs the library hands to a callback (prefcap_export_info_t,
 *   prefcap_upload_progress_t) are the library's: they only grow at the end, so a callback built
 *   against an older header reads the fields it knows. prefcap_message_t is fixed (role, content).
 *   Programs built against 0.1's header, where these structs had no size, keep working: the shared
 *   library carries the 0.1 entry points under the symbol version PREFCAP_0.1.
 * - Durability: in PREFCAP_SYNC mode a log call returns after its SQLite commit (the event is on disk,
 *   as far as SQLite's synchronous=FULL can promise). In PREFCAP_ASYNC mode it returns once the event
 *   is in a bounded in-memory queue; a writer thread commits queued events in batches; a full queue
 *   drops the event, returns PREFCAP_EQUEUEFULL and counts it; prefcap_flush() waits for the queue.
 */
#ifndef PREFCAP_H
#define PREFCAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
/* The library is built with hidden visibility; what this header declares is its exported ABI.
 *
 * Thread safety, by function (sentry.h's way: one table, every public call in it):
 *
 *   function                                     | thread-safe on one handle?
 *   ---------------------------------------------+---------------------------------------------------
 *   prefcap_strerror, prefcap_version(_num),     | yes, always (no state)
 *   prefcap_free                                 |
 *   prefcap_errmsg                               | yes: the detail is kept per thread
 *   prefcap_options_*, prefcap_export_options_*, | no: one thread sets an options object; once set,
 *   prefcap_upload_options_*                     | several calls may read it at once (open, upload)
 *   prefcap_open                                 | yes (each call makes its own handle)
 *   prefcap_log_generation, _log_feedback,       | yes: any number of threads at once on one handle
 *   _log_json, prefcap_get_counters              |
 *   prefcap_flush, prefcap_derive,               | no: not concurrently with each other, nor with
 *   prefcap_export, prefcap_forget_user,         | close, on one handle (they may run while other
 *   prefcap_lineage_*, prefcap_prune             | threads log, except forget_user: stop logging)
 *   prefcap_close                                | no: nothing else may use the handle during or after
 *   prefcap_upload                               | yes (calls share nothing; see its comment on curl)
 *
 * Several processes may open the same store file at once (SQLite's locking, WAL). */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* The version of this header. The Makefile reads PREFCAP_VERSION from here (the one source);
 * prefcap_version() and prefcap_version_num() give the library's at run time, which may be newer.
 * PREFCAP_VERSION_NUM is major * 1000000 + minor * 1000 + patch, as SQLite numbers its releases. */
#define PREFCAP_VERSION "0.2.0"
#define PREFCAP_VERSION_NUM 2000
#define PREFCAP_VERSION_STRING PREFCAP_VERSION   /* the 0.1 name, kept */
/* The store's schema version this library writes; older stores are migrated on open. */
#define PREFCAP_SCHEMA_VERSION 4
/* Longest id (generation, event, user, session) in bytes, excluding the NUL. */
#define PREFCAP_ID_MAX 128

// ---- result codes (only ever appended) -------------------------------------------------------------
enum {
  PREFCAP_OK = 0,
  PREFCAP_EINVAL = 1,      /* an argument is missing or malformed (errmsg names it) */
  PREFCAP_ENOMEM = 2,      /* out of memory */
  PREFCAP_EIO = 3,         /* the store could not be read or written (errmsg has SQLite's message) */
  PREFCAP_EFULL = 4,       /* the disk or file-size limit is full; nothing half-stored; retry later */
  PREFCAP_EBUSY = 5,       /* the store stayed locked by another writer past the busy timeout */
  PREFCAP_ETOOBIG = 6,     /* a text is longer than the configured maximum */
  PREFCAP_EUTF8 = 7,       /* a text is not valid UTF-8 or holds a NUL byte */
  PREFCAP_EQUEUEFULL = 8,  /* async mode: the queue was full; the event was dropped and counted */
  PREFCAP_ETIMEDOUT = 9,   /* flush or close ran out of time with events still queued */
  PREFCAP_ECLOSED = 10,    /* the handle is closing */
  PREFCAP_ECORRUPT = 11,   /* the file is not a prefcap store, or is damaged */
  PREFCAP_ESCHEMA = 12,    /* the store was written by a newer prefcap (schema version too high) */
  PREFCAP_ENOTFOUND = 13,  /* no such record */
  PREFCAP_EJSON = 14,      /* a JSON value (event line, params) could not be parsed */
  PREFCAP_EREFUSED = 15,   /* refused by policy (e.g. an event for an erased user) */
  PREFCAP_ENETWORK = 16,   /* upload: connection failed, timed out, or was dropped (after retries) */
  PREFCAP_EHTTP = 17,      /* upload: the server answered with an error status (errmsg has it) */
  PREFCAP_ECRYPTO = 18,    /* a checksum or signature could not be computed or did not match */
  /* Not a code: one past the last, so it moves when a code is appended. prefcap_strerror's table is
   * checked against it when the library is compiled (a code cannot ship without its name). */
  PREFCAP__NCODES
};

/* A short, static, English name for a code ("invalid argument"); never NULL. */
const char *prefcap_strerror(int code);
/* The version of the library at run time, e.g. "0.2.0", and as a number (PREFCAP_VERSION_NUM's). */
const char *prefcap_version(void);
int prefcap_version_num(void);
/* Frees memory that a prefcap function handed to the caller. NULL is a no-op. */
void prefcap_free(void *p);

// ---- options -------------------------------------------------------------------------------------
typedef struct prefcap_options prefcap_options_t;
typedef struct prefcap prefcap_t;

typedef enum { PREFCAP_SYNC = 0, PREFCAP_ASYNC = 1 } prefcap_durability_t;
typedef enum { PREFCAP_LOG_DEBUG = 0, PREFCAP_LOG_INFO = 1, PREFCAP_LOG_WARN = 2, PREFCAP_LOG_ERROR = 3 } prefcap_log_level_t;
/* Called from whichever thread hit the condition (the writer thread, in async mode): it must be
 * thread-safe and must not call back into prefcap. msg is borrowed for the call. */
typedef void (*prefcap_logger_fn)(prefcap_log_level_t level, const char *msg, void *userdata);

/* A new options object with the defaults: path "prefcap.db", PREFCAP_ASYNC, queue 65536 events,
 * busy timeout 5000 ms, max text 1 MiB, no logger, redaction off, default pairing weights.
 * NULL when out of memory. Free with prefcap_options_free (NULL is a no-op). Not shared across
 * threads while being set; prefcap_open copies what it needs, so it may be freed right after. */
prefcap_options_t *prefcap_options_new(void);
void prefcap_options_free(prefcap_options_t *opts);
int prefcap_options_set_path(prefcap_options_t *opts, const char *path);          /* copied */
int prefcap_options_set_durability(prefcap_options_t *opts, prefcap_durability_t mode);
int prefcap_options_set_queue_capacity(prefcap_options_t *opts, size_t events);  /* >= 1; async only */
int prefcap_options_set_busy_timeout_ms(prefcap_options_t *opts, int ms);         /* >= 0 */
int prefcap_options_set_max_text_bytes(prefcap_options_t *opts, size_t bytes);    /* >= 1 */
int prefcap_options_set_logger(prefcap_options_t *opts, prefcap_logger_fn fn, void *userdata);
/* Replace e-mail addresses, phone numbers, card-like numbers and API keys in logged text with typed
 * placeholders before anything is stored (docs/redaction.md). Off by default. */
int prefcap_options_set_redact(prefcap_options_t *opts, int on);
/* Async mode: a log call on a full queue waits for space instead of dropping the event. For batch
 * importers (`prefcap ingest`), never for a request path. Off by default. */
int prefcap_options_set_block_when_full(prefcap_options_t *opts, int on);
/* Overrides one pairing weight or threshold by name (docs/pairing.md lists them, e.g. "edit",
 * "regenerate", "choice", "rating", "label.copy", "edit.light_max"). PREFCAP_EINVAL for an unknown
 * name or a value outside [0,1]. Weights set here are stored in the file at open, so every process
 * and the CLI derive with the same rules. */
int prefcap_options_set_weight(prefcap_options_t *opts, const char *name, double value);

// ---- open / close --------------------------------------------------------------------------------
/* Opens (creating it 0600 if missing) the store at the options' path, migrates its schema and, in
 * async mode, starts the writer thread. On failure *out is NULL, the code says why, and the detail
 * (the file and the reason, e.g. "x.db: file is not a database") is prefcap_errmsg(NULL) in this
 * thread until its next failing call; it also goes to the logger. */
int prefcap_open(const prefcap_options_t *opts, prefcap_t **out);
/* Flushes within timeout_ms (negative: wait as long as it takes), derives pending pairs, stops the
 * writer and closes the file. Events still queued at the deadline are dropped and counted as failed;
 * the code is then PREFCAP_ETIMEDOUT, but the handle is freed all the same. NULL is a no-op. */
int prefcap_close(prefcap_t *pc, int timeout_ms);
/* The detail of the last failure on this handle, in this thread (pc NULL: of the last failing call
 * without a handle: prefcap_open, prefcap_upload, a setter of an options object). It names the file
 * and the reason. Owned by the library, per thread; valid until the next prefcap call from the same
 * thread. "" when there was none. */
const char *prefcap_errmsg(prefcap_t *pc);

// ---- logging --------------------------------------------------------------------------------------
typedef struct prefcap_message {
  const char *role;      /* "system", "user", "assistant", "tool", ... */
  const char *content;
} prefcap_message_t;

/* One generation. Initialise it with PREFCAP_GENERATION_INIT (it sets size, and everything else to
 * 0) and set what you have: unset pointers are NULL, unset numbers are 0 (ts_ms 0 = now; latency and
 * token counts 0 = unknown). A size of 0 (a struct zeroed with {0}) is PREFCAP_EINVAL. */
typedef struct prefcap_generation {
  size_t size;                      /* sizeof(prefcap_generation_t): PREFCAP_GENERATION_INIT */
  const char *id;                   /* caller's id; NULL: one is generated and returned */
  const char *prompt;               /* the prompt as text, or ... */
  const prefcap_message_t *messages; size_t n_messages;  /* ... the messages array (role/content) */
  const char *system;               /* optional system prompt (text prompts) */
  const char *completion;           /* required */
  const char *model;                /* model id, e.g. "acme-chat" */
  const char *model_version;        /* e.g. "2026-11-01" */
  const char *params_json;          /* sampling params as a JSON object, e.g. {"temperature":0.7} */
  const char *user_id;
  const char *session_id;
  const char *regenerates;          /* id of the generation this one replaced, if any */
  const char *event_id;             /* idempotency key; NULL: a hash of the content */
  int64_t ts_ms;                    /* Unix time in milliseconds; 0 = now (the time of the call) */
  int64_t latency_ms;
  int64_t prompt_tokens, completion_tokens;
} prefcap_generation_t;
#define PREFCAP_GENERATION_INIT { .size = sizeof(prefcap_generation_t) }

/* Logs a generation. If id_out is not NULL it receives the generation's id (the caller's, or the one
 * generated), NUL-terminated, at most PREFCAP_ID_MAX bytes + 1. Thread-safe. Replaying the same event
 * (same event_id, or the same content with no event_id) stores nothing the second time. */
int prefcap_log_generation(prefcap_t *pc, const prefcap_generation_t *gen, char id_out[PREFCAP_ID_MAX + 1]);

typedef enum {
  PREFCAP_FB_REGENERATE = 1,  /* the user asked for another answer instead of this one */
  PREFCAP_FB_EDIT = 2,        /* the user changed the answer; text = their final text */
  PREFCAP_FB_COPY = 3,        /* the user copied the answer */
  PREFCAP_FB_ACCEPT = 4,      /* the user accepted/applied the answer */
  PREFCAP_FB_RATING = 5,      /* rating = +1 or -1 */
  PREFCAP_FB_ABANDON = 6,     /* the user left without using the answer */
  PREFCAP_FB_CHOICE = 7,      /* side by side: id = chosen, rejected_id = rejected */
} prefcap_feedback_kind_t;

/* Initialise with PREFCAP_FEEDBACK_INIT, as prefcap_generation_t. */
typedef struct prefcap_feedback {
  size_t size;                /* sizeof(prefcap_feedback_t): PREFCAP_FEEDBACK_INIT */
  prefcap_feedback_kind_t kind;
  const char *id;             /* the generation the feedback is about (the chosen one for CHOICE) */
  const char *text;           /* EDIT: the user's final text */
  int rating;                 /* RATING: +1 or -1 */
  const char *rejected_id;    /* CHOICE: the rejected generation */
  const char *source;         /* NULL or "human": a person; "ai:<judge model id>": an AI judge */
  const char *event_id;       /* idempotency key; NULL: a hash of the content */
  int64_t ts_ms;              /* 0 = now */
} prefcap_feedback_t;
#define PREFCAP_FEEDBACK_INIT { .size = sizeof(prefcap_feedback_t) }

/* Logs feedback on a generation. The generation need not be stored yet (another process, clock
 * skew): feedback is kept and paired once it arrives. Thread-safe; idempotent like log_generation. */
int prefcap_log_feedback(prefcap_t *pc, const prefcap_feedback_t *fb);

/* Logs one event given as a JSON object, in the shape of docs/events.md (what `prefcap ingest`
 * reads: {"type":"generation",...} or a feedback type). Same semantics as the two calls above. The
 * generated id of a generation without one is written to id_out if not NULL. Thread-safe. */
int prefcap_log_json(prefcap_t *pc, const char *json, size_t len, char id_out[PREFCAP_ID_MAX + 1]);

/* Async mode: waits until every event queued before the call is committed, or timeout_ms passes
 * (negative: no limit). PREFCAP_ETIMEDOUT then. Sync mode: returns PREFCAP_OK at once. */
int prefcap_flush(prefcap_t *pc, int timeout_ms);

/* Derives pairs and labels from the events not yet derived (all = 0), or re-derives the whole history
 * with the store's current rules (all = 1, after a rule or weight change). Runs in the caller's thread;
 * the async writer also derives when idle, and close derives what is left. */
int prefcap_derive(prefcap_t *pc, int all);

/* Written by the library, up to the caller's size: declare it with PREFCAP_COUNTERS_INIT. */
typedef struct prefcap_counters {
  size_t size;        /* sizeof(prefcap_counters_t): PREFCAP_COUNTERS_INIT; kept as it was */
  uint64_t accepted;  /* log calls that returned PREFCAP_OK, this handle */
  uint64_t stored;    /* events committed, this handle (replays of known events included) */
  uint64_t duplicates;/* of those, events that were already stored (nothing written) */
  uint64_t dropped;   /* async: refused because the queue was full */
  uint64_t failed;    /* accepted, then not stored (a write error that outlived the retries, or close timed out) */
  uint64_t queued;    /* async: waiting in the queue now */
  uint64_t retrying;  /* async: events the writer holds and keeps retrying because the store refuses
                         writes for now (a read-only file, a full disk, a lock held past the busy
                         timeout; the logger has the reason); 0 while writes succeed */
} prefcap_counters_t;
#define PREFCAP_COUNTERS_INIT { .size = sizeof(prefcap_counters_t) }
/* This handle's counters since open, written up to out->size. Thread-safe. (Dropped and failed are also added to the store's
 * own totals, which `prefcap stats` shows across processes and runs.) */
int prefcap_get_counters(prefcap_t *pc, prefcap_counters_t *out);

/* ==== upload (sdk/upload.c) ======================================================================= */
/* Uploads an export (or any file) to object storage over HTTP(S) with libcurl: a plain PUT (a
 * presigned URL works as is) or a PUT signed with AWS Signature Version 4 (S3 and S3-compatible
 * stores). The manifest FILE.manifest.json, when it exists, is uploaded after the data file, so a
 * reader that sees the manifest sees a complete data file. Before anything is sent, the data file's
 * SHA-256 must equal the manifest's top-level "sha256" field (PREFCAP_ECRYPTO otherwise).
 *
 * Checksums: every PUT carries Content-MD5 (checked by S3, GCS and most stores); signed PUTs also
 * carry x-amz-content-sha256, the body's SHA-256, which S3 checks and which is signed.
 * Retries: timeouts, connection failures, dropped connections and HTTP 408, 429 and 5xx are retried
 * with exponential backoff and jitter (the wait before retry k, k = 1, 2, ..., is drawn uniformly from
 * [d/2, d] with d = min(backoff_max, backoff_base * 2^(k-1))); a Retry-After header (seconds or an
 * HTTP date) replaces that wait, and if it asks for more than retry_after_max the upload fails at once
 * instead. Other 4xx and 3xx answers are never retried. Credentials (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) are never put in an error message or passed to the progress
 * callback, and URLs appear there without their query string (a presigned URL's query is a credential).
 * TLS peers are always verified (libcurl's default CA bundle, or the one set with _set_cacert); there
 * is no option to turn verification off. */
typedef struct prefcap_upload_options prefcap_upload_options_t;

typedef enum {
  /* s3:// URLs and, when AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set, URLs without a
   * presigned query (X-Amz-Signature, X-Goog-Signature, Signature=, sig=): SigV4; else plain. */
  PREFCAP_UPLOAD_AUTO = 0,
  PREFCAP_UPLOAD_PLAIN = 1,   /* an unsigned PUT: presigned URLs, or servers with their own auth */
  PREFCAP_UPLOAD_SIGV4 = 2,   /* SigV4 from the environment's credentials (PREFCAP_EINVAL without them) */
} prefcap_upload_auth_t;

typedef enum {
  PREFCAP_UPLOAD_EV_START = 0,     /* an attempt is starting (attempt, max_attempts, total set) */
  PREFCAP_UPLOAD_EV_PROGRESS = 1,  /* bytes moved (sent, total, elapsed_s); at most ~5 times a second */
  PREFCAP_UPLOAD_EV_RETRY = 2,     /* the attempt failed and will be retried after retry_in_ms (reason) */
  PREFCAP_UPLOAD_EV_DONE = 3,      /* this file is stored (status = the HTTP status) */
} prefcap_upload_event_t;

typedef struct prefcap_upload_progress {
  prefcap_upload_event_t event;
  const char *file;          /* the local file being sent (the data file or its manifest) */
  const char *url;           /* where to, without its query string */
  uint64_t sent, total;      /* body bytes sent in this attempt, and the file's size */
  double elapsed_s;          /* since this attempt started */
  int attempt, max_attempts; /* 1-based */
  int retry_in_ms;           /* EV_RETRY: the wait before the next attempt */
  const char *reason;        /* EV_RETRY: why ("HTTP 503", "timed out: no progress for 30 s") */
  long status;               /* EV_DONE and EV_RETRY after an answer: the HTTP status; else 0 */
} prefcap_upload_progress_t;
/* Called in the uploading thread; p and its strings are borrowed for the call. Return 0 to go on,
 * non-zero to cancel the upload (prefcap_upload then returns PREFCAP_ENETWORK, "cancelled"). */
typedef int (*prefcap_upload_progress_fn)(const prefcap_upload_progress_t *p, void *userdata);

/* A new options object with the defaults: auth PREFCAP_UPLOAD_AUTO, 4 retries (5 attempts),
 * backoff 500 ms doubling to at most 30000 ms, Retry-After honoured up to 120 s, connect timeout
 * 10 s, stall timeout 30 s (an attempt fails when fewer than 1 byte/s moved for that long, waiting
 * for the answer included), no total time limit, region from AWS_REGION, else AWS_DEFAULT_REGION,
 * else "us-east-1", service "s3", manifest uploaded when present, no progress callback. NULL when out
 * of memory. Free with prefcap_upload_options_free (NULL is a no-op). Not shared across threads while
 * being set; prefcap_upload only reads it, so one object may serve uploads in several threads. */
prefcap_upload_options_t *prefcap_upload_options_new(void);
void prefcap_upload_options_free(prefcap_upload_options_t *o);
int prefcap_upload_options_set_auth(prefcap_upload_options_t *o, prefcap_upload_auth_t auth);
/* retries >= 0: attempts after the first. */
int prefcap_upload_options_set_retries(prefcap_upload_options_t *o, int retries);
/* base_ms >= 1, max_ms >= base_ms; retry_after_max_s >= 0 (0: a Retry-After always fails at once). */
int prefcap_upload_options_set_backoff(prefcap_upload_options_t *o, int base_ms, int max_ms, int retry_after_max_s);
/* Seconds, each >= 1 except total_s (0 = no limit): connect, stall (no progress), whole attempt. */
int prefcap_upload_options_set_timeouts(prefcap_upload_options_t *o, int connect_s, int stall_s, int total_s);
/* A PEM file of CA certificates to trust instead of the system's (copied; NULL: the system's). */
int prefcap_upload_options_set_cacert(prefcap_upload_options_t *o, const char *path);
/* SigV4 region and service (copied; NULL: the default). */
int prefcap_upload_options_set_region(prefcap_upload_options_t *o, const char *region);
int prefcap_upload_options_set_service(prefcap_upload_options_t *o, const char *service);
/* Where the manifest goes (copied). NULL (the default): URL with ".manifest.json" appended to its
 * path, which only works without a query string; a URL with one (presigned) and a manifest beside
 * FILE is PREFCAP_EINVAL unless a manifest URL is given here (presign one for it) or the manifest is
 * turned off with _set_manifest(o, 0). */
int prefcap_upload_options_set_manifest_url(prefcap_upload_options_t *o, const char *url);
/* on = 1 (default): upload FILE.manifest.json too when it exists; 0: never (no sha256 check then). */
int prefcap_upload_options_set_manifest(prefcap_upload_options_t *o, int on);
int prefcap_upload_options_set_progress(prefcap_upload_options_t *o, prefcap_upload_progress_fn fn, void *userdata);

/* Uploads file to url (http://, https://, or s3://BUCKET/KEY, which becomes
 * https://BUCKET.s3.REGION.amazonaws.com/KEY signed with SigV4), then its manifest as above. opts may
 * be NULL for the defaults. Returns PREFCAP_OK, PREFCAP_EINVAL (bad URL or option, missing
 * credentials, presigned URL without a manifest URL), PREFCAP_EIO (the file cannot be read),
 * PREFCAP_ECRYPTO (the file's SHA-256 differs from the manifest's, or the file changed while it was
 * sent), PREFCAP_EHTTP (an error status, or 408/429/5xx after the last retry), PREFCAP_ENETWORK
 * (connection, TLS or timeout failure after the last retry, or cancelled), PREFCAP_ENOMEM. On failure
 * prefcap_errmsg(NULL), in this thread, is an English sentence naming the file, the URL without its
 * query, the status and the server's error code/message. (0.1's errbuf and errlen arguments are gone;
 * programs built against 0.1 still get them filled.) Thread-safe (calls share nothing), provided
 * curl_global_init has run (prefcap_upload calls it once; call it yourself first if other threads use
 * libcurl at the same time). */
int prefcap_upload(const prefcap_upload_options_t *opts, const char *file, const char *url);
/* ==== end upload ================================================================================== */

// ---- export (sdk/export.c) -----------------------------------------------------------------------
/* An export writes the derived pairs (or labels) as JSON lines that trainers read, with a manifest
 * beside it (PATH.manifest.json: id, name, time, format, filters, counts by signal and source, the
 * SHA-256 of the data, SDK and schema versions, and the records it holds, for lineage). The file is
 * written to a temporary name, fsynced and renamed into place: a reader never sees half a file.
 * With a name (since_last), only what is new since that name's last published export is written, and
 * the name's watermark moves only once the file is in place (and uploaded, when asked): an export
 * killed at any moment and run again publishes the same records, none missing, none twice. */
typedef struct prefcap_export_options prefcap_export_options_t;
typedef enum {
  PREFCAP_FORMAT_TRL_DPO = 0,     /* {"prompt","chosen","rejected"} (+ provenance), TRL's DPO format */
  PREFCAP_FORMAT_TRL_KTO = 1,     /* {"prompt","completion","label"} from the unpaired labels */
  PREFCAP_FORMAT_OPENAI_DPO = 2,  /* {"input":{"messages"},"preferred_output","non_preferred_output"} */
  PREFCAP_FORMAT_EVENTS = 3,      /* the raw event log in the ingest format, for a central store (docs/fleet.md) */
} prefcap_format_t;

/* Defaults: trl-dpo, no filters, no split, no name, out "prefcap-export.jsonl". Free with
 * prefcap_export_options_free (NULL is a no-op). Setters copy their strings. */
prefcap_export_options_t *prefcap_export_options_new(void);
void prefcap_export_options_free(prefcap_export_options_t *o);
int prefcap_export_options_set_format(prefcap_export_options_t *o, prefcap_format_t format);
int prefcap_export_options_set_out(prefcap_export_options_t *o, const char *path);      /* "-": stdout, no manifest */
const char *prefcap_export_options_out(const prefcap_export_options_t *o);                 /* borrowed */
int prefcap_export_options_set_gzip(prefcap_export_options_t *o, int on);
int prefcap_export_options_set_time_range(prefcap_export_options_t *o, int64_t since_ms, int64_t until_ms); /* 0: open */
int prefcap_export_options_set_signals(prefcap_export_options_t *o, const char *comma_list);  /* e.g. "edit,choice" */
int prefcap_export_options_set_min_weight(prefcap_export_options_t *o, double w);
int prefcap_export_options_set_model(prefcap_export_options_t *o, const char *model);
int prefcap_export_options_set_user(prefcap_export_options_t *o, const char *user_id);
/* Pairs whose label came from an AI judge are capped at this fraction of the export (0..1; 1 = no cap). */
int prefcap_export_options_set_max_ai_fraction(prefcap_export_options_t *o, double f);
int prefcap_export_options_set_dedup(prefcap_export_options_t *o, int on);
/* A deterministic train/eval split by a hash of the prompt: one prompt never lands on both sides, and
 * the split is stable from night to night. The eval part goes to PATH with ".eval" before its
 * extension (out.jsonl -> out.eval.jsonl). 0 = no split. */
int prefcap_export_options_set_eval_fraction(prefcap_export_options_t *o, double f);
int prefcap_export_options_set_since_last(prefcap_export_options_t *o, const char *name);
/* The permission bits of the files written (data, eval part, manifest): 0600 by default, as every file
 * prefcap writes, since an export holds users' text; 0 to 0777. */
int prefcap_export_options_set_mode(prefcap_export_options_t *o, unsigned mode);
/* Upload the file and its manifest after writing them; the watermark moves only if that succeeds.
 * upload_opts may be NULL (defaults); it is borrowed until prefcap_export returns. */
int prefcap_export_options_set_upload(prefcap_export_options_t *o, const char *url,
                                      const prefcap_upload_options_t *upload_opts);

/* Written by the library, up to the caller's size: declare it with PREFCAP_EXPORT_RESULT_INIT. */
typedef struct prefcap_export_result {
  size_t size;            /* sizeof(prefcap_export_result_t): PREFCAP_EXPORT_RESULT_INIT; kept */
  char export_id[40];     /* "exp-" + 32 hex digits */
  uint64_t records;       /* lines written, train + eval */
  uint64_t train, eval;
  uint64_t skipped_ai;    /* left out by the AI-fraction cap */
  uint64_t skipped_dup;   /* left out by dedup */
  int nothing_new;        /* since_last: nothing new, no file written */
  int resumed;            /* since_last: a killed export of this name was completed (same range) */
  int more;               /* resumed, and more came since: run the export again to take it */
} prefcap_export_result_t;
#define PREFCAP_EXPORT_RESULT_INIT { .size = sizeof(prefcap_export_result_t) }

/* Runs an export on an open store (derives pending pairs first). result may be NULL; if not, its size
 * must be set (PREFCAP_EXPORT_RESULT_INIT). Not thread-safe with open, close, flush or derive on the
 * same handle. */
int prefcap_export(prefcap_t *pc, const prefcap_export_options_t *o, prefcap_export_result_t *result);

// ---- erasure, lineage, retention (sdk/forget.c) ---------------------------------------------------
/* A published export, as lineage reports it. Strings are borrowed for the duration of the callback.
 * The library's struct, handed to callbacks: it only grows at the end (see the conventions above). */
typedef struct prefcap_export_info {
  const char *id, *name, *path, *format;
  const char *upload_url;  /* where it was uploaded, NULL if not: without userinfo or query (credentials) */
  int64_t created_ms, published_ms;
  uint64_t records;        /* all records in the export */
  uint64_t user_records;   /* of those, the user's (lineage by user and forget) */
} prefcap_export_info_t;
typedef void (*prefcap_export_fn)(const prefcap_export_info_t *info, void *userdata);

/* Erases a user: their generations, feedback, pairs and labels are deleted so that their text is gone
 * from the file itself (deleted, then VACUUM, which rewrites the file without stale copies of moved
 * cells, then a WAL checkpoint that truncates the WAL), a tombstone (the SHA-256 of the id) and the
 * hashes of their generation ids refuse their late events, and fn is called for every export that
 * held their records (a pending one too: its file may exist), so the operator knows which datasets
 * and fine-tunes to rebuild. *erased (if not NULL) receives the number of rows deleted.
 * PREFCAP_EBUSY: the rows are gone, but another connection was reading and the WAL could not be
 * truncated: run it again when readers are done. VACUUM holds the write lock while it rewrites the
 * file: run erasures in a quiet window. Not thread-safe with logging on the same handle. */
int prefcap_forget_user(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata, uint64_t *erased);
/* Every published export that held records of this user (erased or not). */
int prefcap_lineage_user(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata);
/* What one export held: fn is called once for the export; then each record as a JSON line to record_fn
 * (borrowed; {"kind":"pair","id":N,"user_hash":"…"}, one line per user whose text the record holds).
 * Either callback may be NULL. record_fn runs under the handle's lock: it must not call prefcap on
 * this handle. */
int prefcap_lineage_export(prefcap_t *pc, const char *export_id, prefcap_export_fn fn,
                           void (*record_fn)(const char *json_line, void *userdata), void *userdata);
/* Deletes events and generations older than older_than_ms (Unix ms) that no live pair or label needs,
 * and the pairs and labels that only they derived. *deleted (if not NULL) receives the rows deleted. */
int prefcap_prune(prefcap_t *pc, int64_t older_than_ms, uint64_t *deleted);

// ==== reading the store (sdk/query.c) ========================================================
/* What the `prefcap` command reads, for any program: the derived pairs and labels with filters, the
 * store's counts (a struct) and its breakdowns (JSON), an integrity check, erasure and retention with
 * their counts, and the small helpers the lineage and time options need. The CLI in sdk/cli/ uses
 * nothing else than this header.
 *
 * Growing structs: every struct below starts with `size`. A struct the caller fills (a query) is
 * initialised with its _INIT macro, which sets size to the caller's sizeof; the library reads only
 * the fields that size covers, so a program built against this header keeps working with a later
 * library that has more fields. A struct the library fills for a callback carries the library's size:
 * a field past it was not filled. A struct the library fills into caller memory (stats, reports) is
 * written only as far as the caller's size says.
 *
 * Reads see a consistent snapshot of the file (one read transaction per call). They take the
 * handle's lock: they may run from any thread, but they wait for (and make wait) the async writer's
 * batches, and the callbacks run under that lock, so a callback must not call prefcap on the same
 * handle. Every call returns PREFCAP_OK or a code with the detail in prefcap_errmsg: PREFCAP_EINVAL
 * for a bad argument, PREFCAP_ECORRUPT with SQLite's message when the file is damaged (run
 * prefcap_check), PREFCAP_EIO for another read error, PREFCAP_ENOMEM. A read that fails part way
 * has already called the callback for the rows before the failure: treat the result as incomplete. */

/* Filters for pairs and labels. Unset (NULL or 0) fields do not filter. */
typedef struct prefcap_query {
  size_t size;               /* sizeof(prefcap_query_t), set by PREFCAP_QUERY_INIT */
  const char *signal;        /* pairs: "edit", "regenerate", "choice", "rating"; labels: "copy", "accept", ... */
  const char *model;         /* the model of the rejected generation (pairs) or the labelled one (labels) */
  const char *user_id;       /* the user of that generation */
  int64_t since_ms, until_ms;/* that generation's event time: since inclusive, until exclusive; 0: open */
  double min_weight;         /* weight >= min_weight */
  uint64_t limit;            /* at most this many, newest first; 0: all */
} prefcap_query_t;
#define PREFCAP_QUERY_INIT {sizeof(prefcap_query_t), NULL, NULL, NULL, 0, 0, 0.0, 0}

/* One derived pair, as the callback sees it. Strings are borrowed for the duration of the callback
 * (copy what you keep); an absent value is NULL. */
typedef struct prefcap_pair {
  size_t size;                       /* the library's sizeof(prefcap_pair_t) */
  int64_t id;                        /* the pair's number in the store (newer pairs have larger ones) */
  const char *signal;                /* "edit", "regenerate", "choice", "rating" */
  double weight;                     /* in [0,1] (docs/pairing.md) */
  const char *source;                /* "human" or "ai:<judge model id>" */
  const char *flags;                 /* "" or a comma list, e.g. "light_edit" */
  const char *system, *prompt;       /* the prompt as text (prompt NULL when messages_json is set) */
  const char *messages_json;         /* the prompt as a JSON array of {role, content}, or NULL */
  const char *chosen, *rejected;     /* completion texts */
  const char *chosen_id;             /* the chosen generation's id; NULL when chosen is a user's edit */
  const char *rejected_id;
  const char *model, *model_version, *user_id, *session_id;   /* of the rejected generation */
  int64_t created_ms;                /* when the pair was derived */
} prefcap_pair_t;
/* Return 0 to go on, non-zero to stop (the call then returns PREFCAP_OK). */
typedef int (*prefcap_pair_fn)(const prefcap_pair_t *pair, void *userdata);

/* One unpaired label (KTO): a generation judged desirable or not by one signal. Borrowed as above. */
typedef struct prefcap_label {
  size_t size;                       /* the library's sizeof(prefcap_label_t) */
  int64_t id;
  const char *gen_id;                /* the labelled generation */
  int desirable;                     /* 1 desirable, 0 undesirable */
  const char *signal;                /* "copy", "accept", "rating", "regenerate", "abandon" */
  double weight;
  const char *source;
  const char *system, *prompt, *messages_json, *completion;
  const char *model, *model_version, *user_id, *session_id;
  int64_t created_ms;
} prefcap_label_t;
typedef int (*prefcap_label_fn)(const prefcap_label_t *label, void *userdata);

/* Calls fn for each pair (or label) that passes the filters, newest first. query may be NULL (no
 * filter). Reads what is derived: call prefcap_derive first to include the latest events. */
int prefcap_pairs(prefcap_t *pc, const prefcap_query_t *query, prefcap_pair_fn fn, void *userdata);
int prefcap_labels(prefcap_t *pc, const prefcap_query_t *query, prefcap_label_fn fn, void *userdata);

/* The store's totals, across every process and run that wrote it. */
typedef struct prefcap_stats {
  size_t size;                 /* set by PREFCAP_STATS_INIT; the library fills what it covers */
  uint64_t generations;        /* generations stored */
  uint64_t feedback;           /* feedback events stored */
  uint64_t pairs, labels;      /* derived */
  uint64_t unknown_feedback;   /* feedback on a generation never stored */
  uint64_t dropped;            /* async queues were full (the store's persisted total) */
  uint64_t failed;             /* accepted, never stored (a write error outlived the retries) */
  uint64_t refused;            /* events of erased users */
  uint64_t exports;            /* exports recorded (published or pending) */
} prefcap_stats_t;
#define PREFCAP_STATS_INIT {sizeof(prefcap_stats_t), 0, 0, 0, 0, 0, 0, 0, 0, 0}
int prefcap_stats(prefcap_t *pc, prefcap_stats_t *out);

/* The breakdowns `prefcap stats --json` prints, as one JSON object (UTF-8, NUL-terminated), in this
 * order: "events" {type: count}, "pairs_by_signal" {signal: {"count","mean_weight"}},
 * "pairs_by_source" {"human"|"ai": count}, "pairs_flagged" {flags: count}, "labels"
 * {"signal (desirable|undesirable)": {"count","mean_weight"}}, "generations_by_model"
 * {"model version": count} (top 50), "pairs_by_model" {model: {"count","mean_weight"}} (top 50),
 * "events_by_day" {"YYYY-MM-DD": count} (the last `days` days with events, newest first; days >= 1),
 * "problems" {"feedback for unknown generations", "dropped (queue full)", "failed (not stored)",
 * "refused (erased users)": count}. Keys taken from the data (models, flags) are the stored text.
 * *json is allocated: free it with prefcap_free. */
int prefcap_stats_json(prefcap_t *pc, int days, char **json);

/* SQLite's integrity check of the whole file (quick = 1: quick_check, which skips the index
 * contents and is faster). fn (may be NULL) is called with each problem SQLite reports (borrowed;
 * at most 100), and *problems (may be NULL) receives their number. PREFCAP_OK: the file is sound;
 * PREFCAP_ECORRUPT: problems were found (errmsg has the first); another code: the check itself
 * could not run. docs/storage.md says how to recover a damaged store. */
int prefcap_check(prefcap_t *pc, int quick, void (*fn)(const char *problem, void *userdata), void *userdata,
                  uint64_t *problems);

/* What an erasure or a prune removed (or, for a dry run, would remove), table by table. */
typedef struct prefcap_erase_report {
  size_t size;                 /* set by PREFCAP_ERASE_REPORT_INIT */
  uint64_t generations, events, pairs, labels, rated;
  uint64_t total;              /* the sum of the five above */
  uint64_t kept_old;           /* prune: older generations kept because a live pair needs them */
  int committed;               /* forget: the rows are gone and the tombstone set, even if a later step failed */
  int rederived;               /* forget: pairs shared with other users were re-derived */
  int wal_truncated;           /* the WAL was checkpointed and truncated to zero bytes */
  char user_hash[65];          /* forget: the SHA-256 the user is known by in tombstones and lineage */
} prefcap_erase_report_t;
#define PREFCAP_ERASE_REPORT_INIT {sizeof(prefcap_erase_report_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {0}}

/* prefcap_forget_user with the counts by table; report may be NULL. Same codes and thread rules. */
int prefcap_forget_user_report(prefcap_t *pc, const char *user_id, prefcap_export_fn fn, void *userdata,
                               prefcap_erase_report_t *report);
enum {
  PREFCAP_PRUNE_DRY_RUN = 1,   /* count what would go, delete nothing */
  PREFCAP_PRUNE_VACUUM = 2,    /* then VACUUM: give the space back, leave no stale copy in page slack */
};
/* prefcap_prune with flags (PREFCAP_PRUNE_*) and the counts by table; report may be NULL. */
int prefcap_prune_report(prefcap_t *pc, int64_t older_than_ms, unsigned flags, prefcap_erase_report_t *report);

/* The hash a user id is known by in tombstones and lineage: SHA-256 of the id, 64 hex digits + NUL.
 * Thread-safe; no handle needed. */
void prefcap_user_hash(const char *user_id, char out[65]);
/* The names of the pairing weights prefcap_options_set_weight accepts: name i, or NULL past the last. */
const char *prefcap_weight_name(int i);
/* Parses an RFC 3339 time ("2026-11-21T10:00:00Z", with fractions or an offset) or a plain date
 * ("2026-11-21", midnight UTC) to Unix milliseconds. PREFCAP_EINVAL if malformed. Thread-safe. */
int prefcap_time_parse(const char *text, int64_t *ms);
/* Formats Unix milliseconds as "2026-11-21T10:00:00.000Z" (UTC) into buf (at least 32 bytes). */
void prefcap_time_format(int64_t ms, char buf[32]);
/* ==== end reading the store ====================================================================== */
// ---- a fleet: events across hosts (sdk/fleet.c; docs/fleet.md) ------------------------------------
/* An events export (prefcap_export with PREFCAP_FORMAT_EVENTS) writes a header line
 * {"type":"prefcap_events","events_schema":1,"store_id":…,"range":…}, every generation and feedback
 * event in the ingest format (docs/events.md) with its id, and an erase line
 * {"type":"erase","user_hash":…,"at":…,"generations":[…]} per erasure (the host kept only the hash of
 * the user's id). Of the export options only out, since_last, upload and mode apply. */

/* The store's id, a UUID made with the store (schema 4 gives older stores one), into out (NUL-ended).
 * Takes the handle's lock: thread-safe with logging, not with open or close. */
int prefcap_store_id(prefcap_t *pc, char out[37]);

/* One line of an events file: an events header (PREFCAP_ESCHEMA when it comes from a newer events
 * schema: read no further in that file), an erase line (flushes what is queued, then erases the user
 * here as prefcap_forget_user does, and records the tombstone and generation hashes so their later
 * events from any host are refused; the user named by user_hash, or by user_id hashed as a host does),
 * or any other event, which goes to prefcap_log_json unchanged. Header and erase lines get the same
 * checks as events (docs/events.md), and an unknown field is refused too. line is borrowed. Not thread-safe with other calls on the handle while an erase line runs. */
int prefcap_ingest_line(prefcap_t *pc, const char *line, size_t len);

// ---- did the fine-tune help? (sdk/compare.c) -------------------------------------------------------
/* What to compare: model (required, borrowed), baseline and candidate versions (both or neither;
 * neither: the two versions first used last), and a time range on the generations (ms; 0 = open). */
typedef struct prefcap_compare_options {
  size_t size;   /* sizeof(prefcap_compare_options_t): PREFCAP_COMPARE_OPTIONS_INIT */
  const char *model, *baseline, *candidate;
  int64_t since_ms, until_ms;
} prefcap_compare_options_t;
#define PREFCAP_COMPARE_OPTIONS_INIT { .size = sizeof(prefcap_compare_options_t) }

/* Per version of the model: generations; the rates of generations regenerated, edited, copied,
 * accepted, abandoned (each generation once per signal); mean edit size (bytes changed by the latest
 * edit); mean rating (each rated generation's latest, ±1); the win rate in choices between the two
 * compared versions; 95% intervals (Wilson for rates, a percentile bootstrap with a fixed seed for
 * means). Per metric: candidate minus baseline, its interval (Newcombe for rates, bootstrap for
 * means; win rate: the candidate's share minus 0.5), simultaneous 95% across the 8 comparisons
 * (Bonferroni: each at 99.375%, so identical versions rarely get any verdict but "no evidence"), and "better", "worse" or "no evidence" in the
 * stated direction ("better_if": lower for regenerate, edit, abandon, edit size). *json receives
 * {"model","versions":[{"version","generations","rates":{"regenerate":{"value","ci":[lo,hi],"n"},…},
 * "mean_edit_size",…}],"comparisons":[{"metric","baseline","candidate","difference","ci","better_if",
 * "verdict"}]}; free it with prefcap_free. PREFCAP_EINVAL: a version named has no generations. Takes
 * the handle's lock (thread-safe with logging; not with open or close). */
int prefcap_compare(prefcap_t *pc, const prefcap_compare_options_t *o, char **json);
/* Candidate minus baseline rate with Newcombe's hybrid score interval: out = {difference, lo, hi}; 95%,
 * or with simultaneous != 0 the interval compare's verdicts use (99.375%). Pure; thread-safe.
 * PREFCAP_EINVAL when k > n. */
int prefcap_rate_difference(uint64_t k_base, uint64_t n_base, uint64_t k_cand, uint64_t n_cand, int simultaneous, double out[3]);

// ---- a dashboard (sdk/report.c) ---------------------------------------------------------------------
/* Writes one self-contained HTML page to path (inline SVG and CSS; no script, nothing loaded from
 * elsewhere): events per day by signal, pairs and labels by signal and by source, the AI-judged
 * fraction against the last export's cap, the per-version comparison of the most used model with
 * intervals, the prompts most often regenerated (their text: the page is as private as the store),
 * exports over time, erasures (counts only). Aggregated in SQL and bounded in rows. Written to a
 * temporary file and renamed into place. Takes the handle's lock; not thread-safe with open or close. */
int prefcap_report(prefcap_t *pc, const char *path);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#ifdef __cplusplus
}
#endif
#endif /* PREFCAP_H */
