/* sdk/event_json.c: one event as a JSON object (docs/events.md), the shape `prefcap ingest` reads and
 * prefcap_log_json takes, turned into the same validated event the C calls build. Every refusal names
 * the field; the C struct path then applies the very same checks, so both doors behave alike. */
#include "internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON may spell a NUL as \u0000, which cJSON would turn into a C string cut short: the stored text
 * would silently differ from what was sent. Find such an escape (one not itself escaped). */
static bool has_nul_escape(const char *s, size_t len) {
  for (size_t i = 0; i + 6 <= len; i++) {
    if (s[i] != '\\') continue;
    if (s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' && s[i + 5] == '0') return true;
    i++;   /* skip the escaped character, so "\\\\u0000" (a backslash, then text) is not taken */
  }
  return false;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The first key that appears twice in one object, at any depth, or NULL. cJSON keeps both and its
 * lookups return the first, while another reader may take the last: a second "user_id" would slip
 * past a check made on the first. Sorting each object's names keeps a wide object O(k log k). */
static const char *duplicate_key(const cJSON *v) {
  for (; v; v = v->next) {
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) continue;
    size_t k = 0;
    for (const cJSON *c = v->child; c; c = c->next) k++;
    if (cJSON_IsObject(v) && k > 1) {
      const char **names = malloc(k * sizeof *names);
      if (!names) return "(out of memory)";
      size_t i = 0;
      for (const cJSON *c = v->child; c; c = c->next) names[i++] = c->string ? c->string : "";
      qsort(names, k, sizeof *names, cmp_name);
      const char *dup = NULL;
      for (i = 1; i < k && !dup; i++) if (!strcmp(names[i], names[i - 1])) dup = names[i];
      free(names);
      if (dup) return dup;
    }
    const char *d = duplicate_key(v->child);
    if (d) return d;
  }
  return NULL;
}

typedef struct { cJSON *obj; char *err; size_t errlen; int rc; } reader;

static const char *str_field(reader *r, const char *name, bool required) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, name);
  if (!v || cJSON_IsNull(v)) {
    if (required && !r->rc) { snprintf(r->err, r->errlen, "field '%s' is required", name); r->rc = PREFCAP_EINVAL; }
    return NULL;
  }
  if (!cJSON_IsString(v)) {
    if (!r->rc) { snprintf(r->err, r->errlen, "field '%s' must be a string", name); r->rc = PREFCAP_EINVAL; }
    return NULL;
  }
  return v->valuestring;
}

static int64_t int_field(reader *r, const char *name, int64_t lo, int64_t hi) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, name);
  if (!v || cJSON_IsNull(v)) return 0;
  double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
  if (!(d == floor(d) && d >= (double)lo && d <= (double)hi)) {
    if (!r->rc) {
      snprintf(r->err, r->errlen, "field '%s' must be an integer from %lld to %lld", name, (long long)lo, (long long)hi);
      r->rc = PREFCAP_EINVAL;
    }
    return 0;
  }
  return (int64_t)d;
}

/* "ts": an RFC 3339 string or milliseconds since the epoch. */
static int64_t ts_field(reader *r) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, "ts");
  if (!v || cJSON_IsNull(v)) return 0;
  if (cJSON_IsString(v)) {
    int64_t ms;
    if (prefcap__parse_time(v->valuestring, &ms) && ms > 0) return ms;
    if (!r->rc) { snprintf(r->err, r->errlen, "field 'ts' is not an RFC 3339 time: \"%.40s\"", v->valuestring); r->rc = PREFCAP_EINVAL; }
    return 0;
  }
  return int_field(r, "ts", 1, (int64_t)1 << 50);
}

int prefcap__json_parse_strict(const char *json, size_t len, cJSON **out, char *err, size_t errlen) {
  *out = NULL;
  if (memchr(json, 0, len)) { snprintf(err, errlen, "the line holds a NUL byte"); return PREFCAP_EUTF8; }
  if (!prefcap__utf8_valid(json, len)) { snprintf(err, errlen, "the line is not valid UTF-8"); return PREFCAP_EUTF8; }
  if (has_nul_escape(json, len)) { snprintf(err, errlen, "a string holds a NUL character (\\u0000)"); return PREFCAP_EUTF8; }
  /* cJSON skips a byte order mark and stops at the end of the first value: both would let a line mean
   * something other than what it shows, so both are refused (docs/events.md) */
  if (len >= 3 && !memcmp(json, "\xEF\xBB\xBF", 3)) {
    snprintf(err, errlen, "the line starts with a UTF-8 byte order mark (U+FEFF): save the file without one");
    return PREFCAP_EJSON;
  }
  const char *end = NULL;
  cJSON *obj = cJSON_ParseWithLengthOpts(json, len, &end, false);
  if (!obj) {
    const char *at = cJSON_GetErrorPtr();
    snprintf(err, errlen, "invalid JSON near byte %ld", at && at >= json && at <= json + len ? (long)(at - json) : 0L);
    return PREFCAP_EJSON;
  }
  int rc = PREFCAP_OK;
  size_t used = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
  while (used < len && strchr(" \t\r\n", json[used])) used++;
  const char *dup;
  if (used < len) {
    snprintf(err, errlen, "unexpected text after the JSON object at byte %zu (one event per line)", used);
    rc = PREFCAP_EJSON;
  } else if (!cJSON_IsObject(obj)) {
    snprintf(err, errlen, "an event must be a JSON object");
    rc = PREFCAP_EINVAL;
  } else if ((dup = duplicate_key(obj))) {
    snprintf(err, errlen, "field '%.64s' appears twice in one object", dup);
    rc = PREFCAP_EINVAL;
  }
  if (rc) cJSON_Delete(obj);
  else *out = obj;
  return rc;
}

int prefcap__event_from_json(const char *json, size_t len, size_t max_text, prefcap__event **out,
                             char *err, size_t errlen) {
  *out = NULL;
  cJSON *obj;
  int rc = prefcap__json_parse_strict(json, len, &obj, err, errlen);
  if (rc) return rc;
  reader r = {obj, err, errlen, 0};
  const char *type = str_field(&r, "type", true);
  if (r.rc) { rc = r.rc; goto done; }
  int t = prefcap__event_type_from_name(type);
  if (t < 0) { snprintf(err, errlen, "unknown event type '%.40s'", type); rc = PREFCAP_EINVAL; goto done; }
  if (t == PREFCAP__EV_GENERATION) {
    prefcap_generation_t g = {0};
    g.id = str_field(&r, "id", false);
    g.prompt = str_field(&r, "prompt", false);
    g.system = str_field(&r, "system", false);
    g.completion = str_field(&r, "completion", true);
    g.model = str_field(&r, "model", false);
    g.model_version = str_field(&r, "model_version", false);
    g.user_id = str_field(&r, "user_id", false);
    g.session_id = str_field(&r, "session_id", false);
    g.regenerates = str_field(&r, "regenerates", false);
    g.event_id = str_field(&r, "event_id", false);
    g.ts_ms = ts_field(&r);
    g.latency_ms = int_field(&r, "latency_ms", 0, INT32_MAX);
    g.prompt_tokens = int_field(&r, "prompt_tokens", 0, INT32_MAX);
    g.completion_tokens = int_field(&r, "completion_tokens", 0, INT32_MAX);
    char *params = NULL;
    cJSON *p = cJSON_GetObjectItemCaseSensitive(obj, "params");
    if (p && !cJSON_IsNull(p)) {
      if (!cJSON_IsObject(p)) { if (!r.rc) { snprintf(err, errlen, "field 'params' must be an object"); r.rc = PREFCAP_EINVAL; } }
      else g.params_json = params = cJSON_PrintUnformatted(p);
    }
    prefcap_message_t *msgs = NULL;
    cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "messages");
    if (m && !cJSON_IsNull(m) && !r.rc) {
      int n = cJSON_GetArraySize(m);
      if (!cJSON_IsArray(m) || n == 0) { snprintf(err, errlen, "field 'messages' must be a non-empty array"); r.rc = PREFCAP_EINVAL; }
      else if (!(msgs = calloc((size_t)n, sizeof *msgs))) r.rc = PREFCAP_ENOMEM;
      for (int i = 0; i < n && !r.rc; i++) {
        cJSON *mi = cJSON_GetArrayItem(m, i);
        cJSON *role = cJSON_GetObjectItemCaseSensitive(mi, "role"), *content = cJSON_GetObjectItemCaseSensitive(mi, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
          snprintf(err, errlen, "messages[%d] needs string 'role' and 'content'", i);
          r.rc = PREFCAP_EINVAL;
        } else { msgs[i].role = role->valuestring; msgs[i].content = content->valuestring; }
      }
      g.messages = msgs;
      g.n_messages = r.rc ? 0 : (size_t)n;
    }
    rc = r.rc ? r.rc : prefcap__event_from_generation(&g, max_text, out, err, errlen);
    free(msgs);
    cJSON_free(params);
  } else {
    prefcap_feedback_t f = {0};
    f.kind = (prefcap_feedback_kind_t)t;
    if (t == PREFCAP_FB_CHOICE) {
      f.id = str_field(&r, "chosen", true);
      f.rejected_id = str_field(&r, "rejected", true);
    } else f.id = str_field(&r, "id", true);
    if (t == PREFCAP_FB_EDIT) f.text = str_field(&r, "text", true);
    if (t == PREFCAP_FB_RATING) {
      if (!cJSON_GetObjectItemCaseSensitive(obj, "value") && !r.rc) { snprintf(err, errlen, "field 'value' is required"); r.rc = PREFCAP_EINVAL; }
      f.rating = (int)int_field(&r, "value", -1, 1);
      if (!r.rc && f.rating == 0) { snprintf(err, errlen, "field 'value' of a rating must be 1 or -1, not 0"); r.rc = PREFCAP_EINVAL; }
    }
    f.source = str_field(&r, "source", false);
    f.event_id = str_field(&r, "event_id", false);
    f.ts_ms = ts_field(&r);
    rc = r.rc ? r.rc : prefcap__event_from_feedback(&f, max_text, out, err, errlen);
  }
done:
  cJSON_Delete(obj);
  return rc;
}
