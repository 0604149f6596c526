/* sdk/event.c: turning what a caller hands in (a prefcap_generation_t, a prefcap_feedback_t) into one
 * validated, self-contained allocation that the queue can own; and the small utilities every path
 * shares: UTF-8 validation, clocks and RFC 3339 times, content hashes, a growable JSON buffer.
 *
 * Validation happens here, in the caller's thread, so that a bad event is refused with a code that
 * names the field before anything is queued: nothing is ever stored half-way. */
#include "internal.h"
#include "sha256.h"
#include "jsonstr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const type_names[] = {"generation", "regenerate", "edit", "copy", "accept",
                                         "rating", "abandon", "choice"};

const char *prefcap__event_type_name(int type) {
  return (type >= 0 && type < (int)(sizeof type_names / sizeof *type_names)) ? type_names[type] : NULL;
}

int prefcap__event_type_from_name(const char *name) {
  for (int i = 0; i < (int)(sizeof type_names / sizeof *type_names); i++)
    if (strcmp(type_names[i], name) == 0) return i;
  return -1;
}

// ---- UTF-8 ---------------------------------------------------------------------------------------

/* Well-formed UTF-8 per RFC 3629 (Unicode's table 3-7): no overlong forms, no surrogates, nothing
 * past U+10FFFF, and no NUL (a NUL would silently cut the text in every C consumer downstream). */
bool prefcap__utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str, *e = s + len;
  while (s < e) {
    /* fast path: 8 ASCII bytes, none of them NUL, at a time (this scan is on the caller's path) */
    while (e - s >= 8) {
      uint64_t w;
      memcpy(&w, s, 8);
      if ((w & 0x8080808080808080ULL) || ((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL)) break;
      s += 8;
    }
    if (s == e) break;
    unsigned char c = *s;
    if (c < 0x80) {
      if (c == 0) return false;
      s++;
      continue;
    }
    size_t n; unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) { n = 2; lo = 0xA0; }
    else if (c == 0xED) { n = 2; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) n = 2;
    else if (c == 0xF0) { n = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else if (c == 0xF4) { n = 3; hi = 0x8F; }
    else return false;
    if ((size_t)(e - s) < n + 1) return false;
    if (s[1] < lo || s[1] > hi) return false;
    for (size_t i = 2; i <= n; i++)
      if (s[i] < 0x80 || s[i] > 0xBF) return false;
    s += n + 1;
  }
  return true;
}

// ---- clocks and times ----------------------------------------------------------------------------

int64_t prefcap__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t prefcap__mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int digits(const char **p, int n) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (**p < '0' || **p > '9') return -1;
    v = v * 10 + (*(*p)++ - '0');
  }
  return v;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's algorithm),
 * so no timegm/TZ dependence. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

bool prefcap__parse_time(const char *s, int64_t *ms) {
  const char *p = s;
  int y = digits(&p, 4); if (y < 0 || *p++ != '-') return false;
  int mo = digits(&p, 2); if (mo < 1 || mo > 12 || *p++ != '-') return false;
  int d = digits(&p, 2); if (d < 1 || d > 31) return false;
  if (*p != 'T' && *p != 't' && *p != ' ') return false;
  p++;
  int h = digits(&p, 2); if (h < 0 || h > 23 || *p++ != ':') return false;
  int mi = digits(&p, 2); if (mi < 0 || mi > 59 || *p++ != ':') return false;
  int se = digits(&p, 2); if (se < 0 || se > 60) return false;
  int frac = 0;
  if (*p == '.') {
    p++;
    int n = 0;
    while (*p >= '0' && *p <= '9') { if (n < 3) frac = frac * 10 + (*p - '0'); n++; p++; }
    if (n == 0) return false;
    for (; n < 3; n++) frac *= 10;
  }
  int off = 0;
  if (*p == 'Z' || *p == 'z') p++;
  else if (*p == '+' || *p == '-') {
    int sign = *p++ == '-' ? -1 : 1;
    int oh = digits(&p, 2); if (oh < 0 || oh > 23 || *p++ != ':') return false;
    int om = digits(&p, 2); if (om < 0 || om > 59) return false;
    off = sign * (oh * 60 + om);
  } else return false;
  if (*p) return false;
  int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
  *ms = ((days * 86400 + h * 3600 + mi * 60 + se) - (int64_t)off * 60) * 1000 + frac;
  return true;
}

void prefcap__format_time(int64_t ms, char *buf, size_t len) {
  time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int frac = (int)(ms - (int64_t)t * 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

// ---- a growable buffer for JSON ------------------------------------------------------------------

void prefcap__buf_reserve(prefcap__buf *b, size_t extra) {
  if (b->oom || b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) { b->oom = true; return; }
  b->p = p; b->cap = cap;
  b->p[b->len] = 0;   /* always a string, even before the first byte is put */
}

void prefcap__buf_putn(prefcap__buf *b, const char *s, size_t n) {
  prefcap__buf_reserve(b, n);
  if (b->oom) return;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

void prefcap__buf_puts(prefcap__buf *b, const char *s) { prefcap__buf_putn(b, s, strlen(s)); }

void prefcap__buf_printf(prefcap__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) { b->oom = true; return; }
  prefcap__buf_reserve(b, (size_t)n);
  if (b->oom) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* JSON string literal per RFC 8259 (common/jsonstr.c, the project's one escaper); UTF-8 passes
 * through as is (it was validated on the way in). */
void prefcap__buf_json_str(prefcap__buf *b, const char *s) {
  size_t n = strlen(s), q = pc_json_quoted_len(s, n);
  prefcap__buf_reserve(b, q);
  if (b->oom) return;
  b->len += pc_json_quote(b->p + b->len, s, n);
}

void prefcap__sha256_opt(prefcap__sha256_ctx *c, const char *s) {
  uint8_t tag = s ? 1 : 0;
  prefcap__sha256_update(c, &tag, 1);
  if (s) prefcap__sha256_update(c, s, strlen(s) + 1);
}

// ---- building events -----------------------------------------------------------------------------

/* Strings to copy into the event's single allocation, in field order. */
typedef struct { const char *src; char **dst; const char *field; bool is_id; } copy_item;

static int check_text(const char *s, const char *field, bool is_id, size_t max_text, char *err, size_t errlen) {
  size_t n = strlen(s);
  if (is_id) {
    if (n == 0) { snprintf(err, errlen, "field '%s' is empty", field); return PREFCAP_EINVAL; }
    if (n > PREFCAP_ID_MAX) {
      snprintf(err, errlen, "field '%s' is %zu bytes, longer than the %d allowed for ids", field, n, PREFCAP_ID_MAX);
      return PREFCAP_ETOOBIG;
    }
  } else if (n > max_text) {
    snprintf(err, errlen, "field '%s' is %zu bytes, longer than the maximum of %zu", field, n, max_text);
    return PREFCAP_ETOOBIG;
  }
  if (!prefcap__utf8_valid(s, n)) {
    snprintf(err, errlen, "field '%s' is not valid UTF-8", field);
    return PREFCAP_EUTF8;
  }
  return PREFCAP_OK;
}

/* Validates each item and copies them all into one block appended to a zeroed event. */
static int build(prefcap__event *proto, copy_item *items, int n, size_t max_text, prefcap__event **out,
                 char *err, size_t errlen) {
  size_t total = sizeof(prefcap__event);
  for (int i = 0; i < n; i++) {
    if (!items[i].src) continue;
    int rc = check_text(items[i].src, items[i].field, items[i].is_id, max_text, err, errlen);
    if (rc) return rc;
    total += strlen(items[i].src) + 1;
  }
  prefcap__event *ev = malloc(total);
  if (!ev) { snprintf(err, errlen, "out of memory for a %zu-byte event", total); return PREFCAP_ENOMEM; }
  *ev = *proto;
  char *p = (char *)(ev + 1);
  for (int i = 0; i < n; i++) {
    /* the destination is the same field in the new event as in the prototype */
    char **dst = (char **)((char *)ev + ((char *)items[i].dst - (char *)proto));
    if (!items[i].src) { *dst = NULL; continue; }
    size_t len = strlen(items[i].src) + 1;
    memcpy(p, items[i].src, len);
    *dst = p;
    p += len;
  }
  *out = ev;
  return PREFCAP_OK;
}

static int check_source(const char *src, char *err, size_t errlen) {
  if (!src || strcmp(src, "human") == 0) return PREFCAP_OK;
  if (strncmp(src, "ai:", 3) == 0 && src[3]) return PREFCAP_OK;
  snprintf(err, errlen, "field 'source' must be \"human\" or \"ai:<judge model id>\", not \"%.60s\"", src);
  return PREFCAP_EINVAL;
}

/* The messages array as a compact JSON string (what the store keeps and exports read back). */
static char *messages_json(const prefcap_message_t *m, size_t n, size_t max_text, char *err, size_t errlen, int *rc) {
  prefcap__buf b = {0};
  prefcap__buf_puts(&b, "[");
  for (size_t i = 0; i < n; i++) {
    char field[48];
    if (!m[i].role || !m[i].content) {
      snprintf(err, errlen, "messages[%zu] has no %s", i, m[i].role ? "content" : "role");
      *rc = PREFCAP_EINVAL; free(b.p); return NULL;
    }
    snprintf(field, sizeof field, "messages[%zu].role", i);
    if ((*rc = check_text(m[i].role, field, true, max_text, err, errlen))) { free(b.p); return NULL; }
    snprintf(field, sizeof field, "messages[%zu].content", i);
    if ((*rc = check_text(m[i].content, field, false, max_text, err, errlen))) { free(b.p); return NULL; }
    prefcap__buf_puts(&b, i ? ",{\"role\":" : "{\"role\":");
    prefcap__buf_json_str(&b, m[i].role);
    prefcap__buf_puts(&b, ",\"content\":");
    prefcap__buf_json_str(&b, m[i].content);
    prefcap__buf_puts(&b, "}");
  }
  prefcap__buf_puts(&b, "]");
  if (b.oom) { free(b.p); *rc = PREFCAP_ENOMEM; snprintf(err, errlen, "out of memory"); return NULL; }
  if (b.len > max_text) {
    snprintf(err, errlen, "field 'messages' is %zu bytes as JSON, longer than the maximum of %zu", b.len, max_text);
    free(b.p); *rc = PREFCAP_ETOOBIG; return NULL;
  }
  *rc = PREFCAP_OK;
  return b.p;
}

/* A generation logged without an id gets one made from its content (or its event id), so that a
 * replay of the same generation finds the same id, and a second, identical log call is a duplicate. */
static void generated_id(const prefcap_generation_t *g, const char *msgs, char out[PREFCAP_ID_MAX + 1]) {
  prefcap__sha256_ctx c;
  prefcap__sha256_init(&c);
  const char *parts[] = {g->event_id, g->prompt, msgs, g->system, g->completion, g->model,
                         g->model_version, g->params_json, g->user_id, g->session_id, g->regenerates};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    if (g->event_id && i > 0) break;   /* an event id alone identifies the event */
    prefcap__sha256_opt(&c, parts[i]);
  }
  if (!g->event_id) prefcap__sha256_update(&c, &g->ts_ms, sizeof g->ts_ms);
  uint8_t d[32];
  prefcap__sha256_final(&c, d);
  memcpy(out, "g-", 2);
  prefcap__hex(d, 16, out + 2);
}

int prefcap__event_from_generation(const prefcap_generation_t *g, size_t max_text, prefcap__event **out,
                                   char *err, size_t errlen) {
  *out = NULL;
  if (!g) { snprintf(err, errlen, "generation is NULL"); return PREFCAP_EINVAL; }
  if (!g->completion) { snprintf(err, errlen, "field 'completion' is required"); return PREFCAP_EINVAL; }
  if (!g->prompt && !g->n_messages) {
    snprintf(err, errlen, "a generation needs 'prompt' or 'messages'");
    return PREFCAP_EINVAL;
  }
  if (g->prompt && g->n_messages) {
    snprintf(err, errlen, "give 'prompt' or 'messages', not both");
    return PREFCAP_EINVAL;
  }
  if (g->n_messages && !g->messages) { snprintf(err, errlen, "'n_messages' is set but 'messages' is NULL"); return PREFCAP_EINVAL; }
  if (g->ts_ms < 0 || g->latency_ms < 0 || g->prompt_tokens < 0 || g->completion_tokens < 0) {
    snprintf(err, errlen, "%s is negative", g->ts_ms < 0 ? "'ts'" : g->latency_ms < 0 ? "'latency_ms'" : "a token count");
    return PREFCAP_EINVAL;
  }
  int rc = PREFCAP_OK;
  char *msgs = NULL;
  if (g->n_messages && !(msgs = messages_json(g->messages, g->n_messages, max_text, err, errlen, &rc))) return rc;
  if (g->params_json) {
    /* params must be a JSON object; parsed here so that a bad one is refused at the call */
    size_t n = strlen(g->params_json);
    const char *p = g->params_json;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p != '{' || n > max_text) {
      snprintf(err, errlen, n > max_text ? "field 'params' is too long" : "field 'params' must be a JSON object");
      free(msgs); return n > max_text ? PREFCAP_ETOOBIG : PREFCAP_EJSON;
    }
  }
  char idbuf[PREFCAP_ID_MAX + 1];
  const char *id = g->id;
  prefcap__event proto = {0};
  proto.type = PREFCAP__EV_GENERATION;
  if (!id) {
    generated_id(g, msgs, idbuf);
    id = idbuf;
    proto.id_generated = true;
  }
  proto.ts_given = g->ts_ms != 0;
  proto.ts_ms = g->ts_ms ? g->ts_ms : prefcap__now_ms();
  proto.latency_ms = g->latency_ms;
  proto.prompt_tokens = g->prompt_tokens;
  proto.completion_tokens = g->completion_tokens;
  copy_item items[] = {
      {id, &proto.id, "id", true},
      {g->event_id, &proto.event_id, "event_id", true},
      {g->prompt, &proto.prompt, "prompt", false},
      {msgs, &proto.messages_json, "messages", false},
      {g->system, &proto.system, "system", false},
      {g->completion, &proto.completion, "completion", false},
      {g->model, &proto.model, "model", true},
      {g->model_version, &proto.model_version, "model_version", true},
      {g->params_json, &proto.params_json, "params", false},
      {g->user_id, &proto.user_id, "user_id", true},
      {g->session_id, &proto.session_id, "session_id", true},
      {g->regenerates, &proto.regenerates, "regenerates", true},
  };
  rc = build(&proto, items, (int)(sizeof items / sizeof *items), max_text, out, err, errlen);
  free(msgs);
  return rc;
}

int prefcap__event_from_feedback(const prefcap_feedback_t *f, size_t max_text, prefcap__event **out,
                                 char *err, size_t errlen) {
  *out = NULL;
  if (!f) { snprintf(err, errlen, "feedback is NULL"); return PREFCAP_EINVAL; }
  if (!prefcap__event_type_name((int)f->kind) || f->kind == 0) {
    snprintf(err, errlen, "unknown feedback kind %d", (int)f->kind);
    return PREFCAP_EINVAL;
  }
  if (!f->id) { snprintf(err, errlen, "field '%s' is required", f->kind == PREFCAP_FB_CHOICE ? "chosen" : "id"); return PREFCAP_EINVAL; }
  if (f->kind == PREFCAP_FB_EDIT && !f->text) { snprintf(err, errlen, "an edit needs 'text'"); return PREFCAP_EINVAL; }
  if (f->kind == PREFCAP_FB_RATING && f->rating != 1 && f->rating != -1) {
    snprintf(err, errlen, "field 'value' of a rating must be 1 or -1, not %d", f->rating);
    return PREFCAP_EINVAL;
  }
  if (f->kind == PREFCAP_FB_CHOICE) {
    if (!f->rejected_id) { snprintf(err, errlen, "a choice needs 'rejected'"); return PREFCAP_EINVAL; }
    if (strcmp(f->rejected_id, f->id) == 0) { snprintf(err, errlen, "a choice's 'chosen' and 'rejected' are the same id"); return PREFCAP_EINVAL; }
  }
  if (f->ts_ms < 0) { snprintf(err, errlen, "'ts' is negative"); return PREFCAP_EINVAL; }
  int rc = check_source(f->source, err, errlen);
  if (rc) return rc;
  prefcap__event proto = {0};
  proto.type = (int)f->kind;
  proto.rating = f->kind == PREFCAP_FB_RATING ? f->rating : 0;
  proto.ts_given = f->ts_ms != 0;
  proto.ts_ms = f->ts_ms ? f->ts_ms : prefcap__now_ms();
  copy_item items[] = {
      {f->id, &proto.id, f->kind == PREFCAP_FB_CHOICE ? "chosen" : "id", true},
      {f->kind == PREFCAP_FB_CHOICE ? f->rejected_id : NULL, &proto.other_id, "rejected", true},
      {f->event_id, &proto.event_id, "event_id", true},
      {f->kind == PREFCAP_FB_EDIT ? f->text : NULL, &proto.text, "text", false},
      {f->source ? f->source : "human", &proto.source, "source", true},
  };
  return build(&proto, items, (int)(sizeof items / sizeof *items), max_text, out, err, errlen);
}

/* The default idempotency key of a feedback event: every field the caller gave, the time only when
 * it was given (a replayed line without a time is the same event). */
void prefcap__event_hash(const prefcap__event *ev, char out[65]) {
  prefcap__sha256_ctx c;
  prefcap__sha256_init(&c);
  int32_t hdr[2] = {ev->type, ev->rating};
  prefcap__sha256_update(&c, hdr, sizeof hdr);
  const char *parts[] = {ev->id, ev->other_id, ev->text, ev->source};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    prefcap__sha256_opt(&c, parts[i]);
  }
  if (ev->ts_given) prefcap__sha256_update(&c, &ev->ts_ms, sizeof ev->ts_ms);
  uint8_t d[32];
  prefcap__sha256_final(&c, d);
  prefcap__hex(d, 32, out);
}
