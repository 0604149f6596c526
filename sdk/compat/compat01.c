/* sdk/compat/compat01.c: the 0.1 entry points of the five functions whose structs or arguments changed
 * in 0.2, so that a program built against 0.1's header keeps working with this library.
 *
 * 0.1's prefcap_generation_t, prefcap_feedback_t, prefcap_counters_t and prefcap_export_result_t had no
 * leading size, and prefcap_upload took an errbuf. A 0.1 program was linked against an unversioned
 * library, so at run time its references bind to the oldest symbol version, PREFCAP_0.1 (sdk/prefcap.map
 * puts it first): each function here is that version of its name, converts the 0.1 struct to the
 * current one and calls the current function. Only the shared library has them (a static link is
 * always against the header it was compiled with); tests/sdk/test_abi.sh runs a 0.1 client on them.
 *
 * The 0.1 layouts below are frozen: never edit them (tests/sdk/abi/prefcap-0.1.h is their source). */
#include "internal.h"
#include "upload.h"

#include <stdio.h>
#include <string.h>

#define COMPAT01(name) __attribute__((visibility("default"), symver(name "@PREFCAP_0.1")))

// ---- the 0.1 layouts -----------------------------------------------------------------------------
typedef struct {
  const char *id, *prompt;
  const prefcap_message_t *messages; size_t n_messages;
  const char *system, *completion, *model, *model_version, *params_json, *user_id, *session_id;
  const char *regenerates, *event_id;
  int64_t ts_ms, latency_ms, prompt_tokens, completion_tokens;
} generation01;

typedef struct {
  prefcap_feedback_kind_t kind;
  const char *id, *text;
  int rating;
  const char *rejected_id, *source, *event_id;
  int64_t ts_ms;
} feedback01;

typedef struct {
  uint64_t accepted, stored, duplicates, dropped, failed, queued;
} counters01;

typedef struct {
  char export_id[40];
  uint64_t records, train, eval, skipped_ai, skipped_dup;
  int nothing_new, resumed, more;
} export_result01;

// ---- the entry points ----------------------------------------------------------------------------
COMPAT01("prefcap_log_generation")
int compat01_log_generation(prefcap_t *pc, const generation01 *g, char id_out[PREFCAP_ID_MAX + 1]) {
  if (!g) return prefcap_log_generation(pc, NULL, id_out);
  prefcap_generation_t n = {
    .size = sizeof n, .id = g->id, .prompt = g->prompt, .messages = g->messages, .n_messages = g->n_messages,
    .system = g->system, .completion = g->completion, .model = g->model, .model_version = g->model_version,
    .params_json = g->params_json, .user_id = g->user_id, .session_id = g->session_id,
    .regenerates = g->regenerates, .event_id = g->event_id, .ts_ms = g->ts_ms, .latency_ms = g->latency_ms,
    .prompt_tokens = g->prompt_tokens, .completion_tokens = g->completion_tokens,
  };
  return prefcap_log_generation(pc, &n, id_out);
}

COMPAT01("prefcap_log_feedback")
int compat01_log_feedback(prefcap_t *pc, const feedback01 *f) {
  if (!f) return prefcap_log_feedback(pc, NULL);
  prefcap_feedback_t n = {
    .size = sizeof n, .kind = f->kind, .id = f->id, .text = f->text, .rating = f->rating,
    .rejected_id = f->rejected_id, .source = f->source, .event_id = f->event_id, .ts_ms = f->ts_ms,
  };
  return prefcap_log_feedback(pc, &n);
}

COMPAT01("prefcap_get_counters")
int compat01_get_counters(prefcap_t *pc, counters01 *out) {
  if (!out) return prefcap_get_counters(pc, NULL);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  int rc = prefcap_get_counters(pc, &k);
  if (!rc) *out = (counters01){k.accepted, k.stored, k.duplicates, k.dropped, k.failed, k.queued};
  return rc;
}

COMPAT01("prefcap_export")
int compat01_export(prefcap_t *pc, const prefcap_export_options_t *o, export_result01 *out) {
  prefcap_export_result_t r = PREFCAP_EXPORT_RESULT_INIT;
  int rc = prefcap_export(pc, o, &r);
  if (out) {
    memset(out, 0, sizeof *out);
    memcpy(out->export_id, r.export_id, sizeof out->export_id);
    out->records = r.records; out->train = r.train; out->eval = r.eval;
    out->skipped_ai = r.skipped_ai; out->skipped_dup = r.skipped_dup;
    out->nothing_new = r.nothing_new; out->resumed = r.resumed; out->more = r.more;
  }
  return rc;
}

/* 0.1 filled errbuf; 0.2 reports through prefcap_errmsg(NULL). Both are filled here. */
COMPAT01("prefcap_upload")
int compat01_upload(const prefcap_upload_options_t *opts, const char *file, const char *url, char *errbuf,
                      size_t errlen) {
  int rc = prefcap_upload(opts, file, url);
  if (errbuf && errlen) snprintf(errbuf, errlen, "%s", rc ? prefcap_errmsg(NULL) : "");
  return rc;
}
