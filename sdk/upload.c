/* sdk/upload.c: prefcap_upload, an export's way to object storage (include/prefcap.h has the
 * contract). One PUT per file over libcurl, plain or SigV4-signed by libcurl itself (CURLOPT_AWS_SIGV4,
 * with the body's SHA-256 given to it in x-amz-content-sha256, since curl cannot hash a streamed
 * body), with Content-MD5 and
 * x-amz-content-sha256 checksums, bounded retries with backoff and jitter that honour Retry-After, TLS
 * verification always on, and a stall timeout so a server that stops reading fails the attempt.
 * Library code: it never prints; what the caller sees is the return code, the detail (prefcap_errmsg(NULL)) and the progress
 * callback, none of which ever carries a credential or a URL's query string. */
#include "upload.h"

#include "internal.h"
#include "readfile.h"

#include "md5.h"
#include "prefcap.h"
#include "sha256.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* CURLOPT_AWS_SIGV4 came in 7.75; it signs with a caller's x-amz-content-sha256 since 7.87 (before,
 * it signed an empty body's hash and the server refused the request). Older libcurl has no SigV4 we
 * can use, and no hand-written signer is kept for it: build against 7.87 or later. The library the
 * program runs with is checked too (sigv4_supported). */
#if LIBCURL_VERSION_NUM < 0x075700
#error "prefcap needs libcurl 7.87 or later (CURLOPT_AWS_SIGV4 with x-amz-content-sha256)"
#endif
#define SIGV4_MIN_CURL 0x075700



// ---- options ------------------------------------------------------------------------------------------
struct prefcap_upload_options {
  prefcap_upload_auth_t auth;
  int retries, backoff_base_ms, backoff_max_ms, retry_after_max_s;
  int connect_s, stall_s, total_s;
  char *cacert, *region, *service, *manifest_url;
  int manifest;
  prefcap_upload_progress_fn progress;
  void *progress_ud;
};

static const struct prefcap_upload_options defaults = {
  .auth = PREFCAP_UPLOAD_AUTO, .retries = 4, .backoff_base_ms = 500, .backoff_max_ms = 30000,
  .retry_after_max_s = 120, .connect_s = 10, .stall_s = 30, .total_s = 0, .manifest = 1,
};

prefcap_upload_options_t *prefcap_upload_options_new(void) {
  prefcap_upload_options_t *o = malloc(sizeof *o);
  if (o) *o = defaults;
  return o;
}

void prefcap_upload_options_free(prefcap_upload_options_t *o) {
  if (!o) return;
  free(o->cacert); free(o->region); free(o->service); free(o->manifest_url);
  free(o);
}

static int set_str(char **dst, const char *s) {
  char *c = NULL;
  if (s && !(c = strdup(s))) return prefcap__fail0(PREFCAP_ENOMEM, "upload options: out of memory");
  free(*dst);
  *dst = c;
  return PREFCAP_OK;
}

int prefcap_upload_options_set_auth(prefcap_upload_options_t *o, prefcap_upload_auth_t auth) {
  if (!o || auth < PREFCAP_UPLOAD_AUTO || auth > PREFCAP_UPLOAD_SIGV4)
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_auth: %s", o ? "unknown auth mode" : "no options object");
  o->auth = auth;
  return PREFCAP_OK;
}
int prefcap_upload_options_set_retries(prefcap_upload_options_t *o, int retries) {
  if (!o || retries < 0 || retries > 1000)
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_retries: %s", o ? "retries must be 0 to 1000" : "no options object");
  o->retries = retries;
  return PREFCAP_OK;
}
int prefcap_upload_options_set_backoff(prefcap_upload_options_t *o, int base_ms, int max_ms, int retry_after_max_s) {
  if (!o || base_ms < 1 || max_ms < base_ms || retry_after_max_s < 0)
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_backoff: %s",
                          o ? "needs base_ms >= 1, max_ms >= base_ms, retry_after_max_s >= 0" : "no options object");
  o->backoff_base_ms = base_ms; o->backoff_max_ms = max_ms; o->retry_after_max_s = retry_after_max_s;
  return PREFCAP_OK;
}
int prefcap_upload_options_set_timeouts(prefcap_upload_options_t *o, int connect_s, int stall_s, int total_s) {
  if (!o || connect_s < 1 || stall_s < 1 || total_s < 0)
    return prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_timeouts: %s",
                          o ? "needs connect_s >= 1, stall_s >= 1, total_s >= 0" : "no options object");
  o->connect_s = connect_s; o->stall_s = stall_s; o->total_s = total_s;
  return PREFCAP_OK;
}
int prefcap_upload_options_set_cacert(prefcap_upload_options_t *o, const char *path) {
  return o ? set_str(&o->cacert, path) : prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_cacert: no options object");
}
int prefcap_upload_options_set_region(prefcap_upload_options_t *o, const char *region) {
  return o ? set_str(&o->region, region) : prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_region: no options object");
}
int prefcap_upload_options_set_service(prefcap_upload_options_t *o, const char *service) {
  return o ? set_str(&o->service, service) : prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_service: no options object");
}
int prefcap_upload_options_set_manifest_url(prefcap_upload_options_t *o, const char *url) {
  return o ? set_str(&o->manifest_url, url) : prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_manifest_url: no options object");
}
int prefcap_upload_options_set_manifest(prefcap_upload_options_t *o, int on) {
  if (!o) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_manifest: no options object");
  o->manifest = on != 0;
  return PREFCAP_OK;
}
int prefcap_upload_options_set_progress(prefcap_upload_options_t *o, prefcap_upload_progress_fn fn, void *userdata) {
  if (!o) return prefcap__fail0(PREFCAP_EINVAL, "prefcap_upload_options_set_progress: no options object");
  o->progress = fn; o->progress_ud = userdata;
  return PREFCAP_OK;
}

// ---- small helpers -----------------------------------------------------------------------------------------
static int fail(char *errbuf, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *errbuf, size_t errlen, int code, const char *fmt, ...) {
  if (errbuf && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  int64_t end = mono_ms() + ms;
  for (int64_t left = ms; left > 0; left = end - mono_ms()) {
    struct timespec ts = { (time_t)(left / 1000), (long)(left % 1000) * 1000000L };
    nanosleep(&ts, NULL);   /* EINTR: loop and sleep what is left */
  }
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

/* upload.h */
void prefcap__url_for_humans(const char *url, char *out, size_t n) {
  size_t len = strcspn(url, "?#");
  const char *sep = strstr(url, "://");
  if (sep && (size_t)(sep - url) < len) {
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
      if (auth[i] == '@') at = auth + i;
    if (at) {
      snprintf(out, n, "%.*s***%.*s%s", (int)(auth - url), url, (int)(url + len - at), at, url[len] == '?' ? "?…" : "");
      return;
    }
  }
  snprintf(out, n, "%.*s%s", (int)len, url, url[len] == '?' ? "?…" : "");
}

char *prefcap__url_for_humans_dup(const char *url) {
  size_t n = strlen(url) + 8;
  char *out = malloc(n);
  if (out) prefcap__url_for_humans(url, out, n);
  return out;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static const char *content_type_for(const char *file) {
  if (ends_with(file, ".json")) return "application/json";
  if (ends_with(file, ".jsonl")) return "application/jsonl";
  if (ends_with(file, ".gz")) return "application/gzip";
  return "application/octet-stream";
}

// ---- retry timing -----------------------------------------------------------------------------------------
int64_t prefcap__retry_after_ms(const char *value, int64_t now_s) {
  if (!value) return -1;
  while (*value == ' ' || *value == '\t') value++;
  size_t n = strlen(value);
  while (n && (value[n - 1] == ' ' || value[n - 1] == '\t' || value[n - 1] == '\r' || value[n - 1] == '\n')) n--;
  if (!n) return -1;
  bool digits = true;
  for (size_t i = 0; i < n; i++) digits &= isdigit((unsigned char)value[i]) != 0;
  if (digits) {
    if (n > 9) return (int64_t)999999999 * 1000;   /* absurd, and it will exceed any cap */
    return (int64_t)strtol(value, NULL, 10) * 1000;
  }
  char tmp[128];
  if (n >= sizeof tmp) return -1;
  memcpy(tmp, value, n); tmp[n] = 0;
  time_t t = curl_getdate(tmp, NULL);   /* RFC 1123, RFC 850 and asctime forms */
  if (t == (time_t)-1) return -1;
  return t <= now_s ? 0 : ((int64_t)t - now_s) * 1000;
}

int64_t prefcap__backoff_ms(int k, int base_ms, int max_ms, uint64_t *rng) {
  int64_t d = base_ms;
  for (int i = 1; i < k && d < max_ms; i++) d *= 2;
  if (d > max_ms) d = max_ms;
  int64_t lo = d / 2;
  return lo + (int64_t)(xorshift(rng) % (uint64_t)(d - lo + 1));
}

// ---- the file --------------------------------------------------------------------------------------------
typedef struct {
  const char *path;
  FILE *f;
  uint64_t size;
  uint8_t sha256[32], md5[16];
  char sha256_hex[65], md5_b64[25];
} src_file;

static int open_and_hash(src_file *s, const char *path, char *errbuf, size_t errlen) {
  memset(s, 0, sizeof *s);
  s->path = path;
  s->f = fopen(path, "rb");
  if (!s->f) return fail(errbuf, errlen, PREFCAP_EIO, "upload: cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(s->f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(s->f); s->f = NULL;
    return fail(errbuf, errlen, PREFCAP_EIO, "upload: %s is not a regular file", path);
  }
  prefcap__sha256_ctx sc; prefcap__md5_ctx mc;
  prefcap__sha256_init(&sc); prefcap__md5_init(&mc);
  static const size_t CH = 1 << 16;
  uint8_t *buf = malloc(CH);
  if (!buf) {
    prefcap__sha256_free(&sc); prefcap__md5_free(&mc);
    fclose(s->f); s->f = NULL;
    return fail(errbuf, errlen, PREFCAP_ENOMEM, "upload: out of memory reading %s", path);
  }
  size_t n;
  while ((n = fread(buf, 1, CH, s->f)) > 0) {
    prefcap__sha256_update(&sc, buf, n);
    prefcap__md5_update(&mc, buf, n);
    s->size += n;
  }
  free(buf);
  if (ferror(s->f)) {
    prefcap__sha256_free(&sc); prefcap__md5_free(&mc);
    fclose(s->f); s->f = NULL;
    return fail(errbuf, errlen, PREFCAP_EIO, "upload: error reading %s: %s", path, strerror(errno));
  }
  if (prefcap__sha256_final(&sc, s->sha256) | prefcap__md5_final(&mc, s->md5)) {
    fclose(s->f); s->f = NULL;
    return fail(errbuf, errlen, PREFCAP_ECRYPTO, "upload: cannot hash %s (libcrypto failed)", path);
  }
  prefcap__hex(s->sha256, 32, s->sha256_hex);
  prefcap__base64(s->md5, 16, s->md5_b64);
  return PREFCAP_OK;
}

// ---- one transfer -----------------------------------------------------------------------------------------
typedef struct {
  const prefcap_upload_options_t *o;
  src_file *src;
  const char *url_h;               /* for messages */
  prefcap__sha256_ctx stream;      /* what was actually sent, to catch a file changing under us */
  uint64_t sent_bytes;
  bool read_error;
  char body[2048]; size_t body_len;
  char retry_after[128];
  int64_t start_ms, last_progress_ms;
  int attempt, max_attempts;
  bool cancelled;
  /* stall detection: curl's own low-speed check averages over ~5 s, too slow to notice a server that
   * stopped reading; here an attempt fails once no byte moved either way for stall_s seconds */
  int64_t last_move_ms;
  curl_off_t last_ul, last_dl;
  bool stalled;
} xfer;

static size_t read_cb(char *dst, size_t size, size_t nitems, void *ud) {
  xfer *x = ud;
  size_t n = fread(dst, 1, size * nitems, x->src->f);
  if (n == 0 && ferror(x->src->f)) { x->read_error = true; return CURL_READFUNC_ABORT; }
  prefcap__sha256_update(&x->stream, dst, n);
  x->sent_bytes += n;
  return n;
}

static int seek_cb(void *ud, curl_off_t offset, int origin) {
  xfer *x = ud;
  if (origin != SEEK_SET || offset != 0) return CURL_SEEKFUNC_CANTSEEK;
  if (fseek(x->src->f, 0, SEEK_SET) != 0) return CURL_SEEKFUNC_FAIL;
  prefcap__sha256_free(&x->stream);
  prefcap__sha256_init(&x->stream);
  x->sent_bytes = 0;
  return CURL_SEEKFUNC_OK;
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n, room = sizeof x->body - 1 - x->body_len;
  memcpy(x->body + x->body_len, p, len < room ? len : room);
  x->body_len += len < room ? len : room;
  x->body[x->body_len] = 0;
  return len;   /* keep reading past what we keep: the rest is not an error */
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud) {
  xfer *x = ud;
  size_t len = size * n;
  if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
    size_t v = len - 12 < sizeof x->retry_after - 1 ? len - 12 : sizeof x->retry_after - 1;
    memcpy(x->retry_after, p + 12, v);
    x->retry_after[v] = 0;
  } else if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
    x->retry_after[0] = 0;   /* a new response (after 100 Continue): forget the old one's headers */
  }
  return len;
}

static int emit(xfer *x, prefcap_upload_event_t ev, int retry_in_ms, const char *reason, long status) {
  if (!x->o->progress) return 0;
  prefcap_upload_progress_t p = {
    .event = ev, .file = x->src->path, .url = x->url_h, .sent = x->sent_bytes, .total = x->src->size,
    .elapsed_s = (double)(mono_ms() - x->start_ms) / 1000.0, .attempt = x->attempt,
    .max_attempts = x->max_attempts, .retry_in_ms = retry_in_ms, .reason = reason, .status = status,
  };
  int r = x->o->progress(&p, x->o->progress_ud);
  if (r) x->cancelled = true;
  return r;
}

static int xferinfo_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  xfer *x = ud;
  int64_t now = mono_ms();
  if (ulnow != x->last_ul || dlnow != x->last_dl) { x->last_ul = ulnow; x->last_dl = dlnow; x->last_move_ms = now; }
  else if (now - x->last_move_ms >= (int64_t)x->o->stall_s * 1000) { x->stalled = true; return 1; }
  if (now - x->last_progress_ms < 200 && (uint64_t)ulnow != x->src->size) return 0;
  x->last_progress_ms = now;
  return emit(x, PREFCAP_UPLOAD_EV_PROGRESS, 0, NULL, 0);
}

/* An S3 error body's <Code> and <Message>, or the first printable line of any other body. */
static void describe_body(const char *body, char *out, size_t n) {
  out[0] = 0;
  const char *c = strstr(body, "<Code>"), *m = strstr(body, "<Message>");
  if (c) {
    const char *ce = strstr(c, "</Code>"), *me = m ? strstr(m, "</Message>") : NULL;
    if (ce) {
      if (m && me) snprintf(out, n, ": %.*s: %.*s", (int)(ce - c - 6), c + 6, (int)(me - m - 9), m + 9);
      else snprintf(out, n, ": %.*s", (int)(ce - c - 6), c + 6);
      return;
    }
  }
  size_t len = 0;
  while (body[len] && body[len] != '\n' && body[len] != '\r' && len < 200) len++;
  if (len) snprintf(out, n, ": %.*s", (int)len, body);
  for (char *p = out; *p; p++) if ((unsigned char)*p < 0x20) *p = ' ';
}

static bool retryable_curl(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT: case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    case CURLE_UPLOAD_FAILED: case CURLE_WEIRD_SERVER_REPLY:
      return true;
    default:
      return false;
  }
}

static bool retryable_status(long s) { return s == 408 || s == 429 || (s >= 500 && s <= 599); }

// ---- the request: URL, auth, headers --------------------------------------------------------------------
typedef struct {
  bool sigv4;
  char *send_url;     /* what curl gets */
  char *authority;    /* host[:port], the signed Host */
  char *path, *query; /* raw, from the URL */
} target;

static void target_free(target *t) { free(t->send_url); free(t->authority); free(t->path); free(t->query); }

typedef struct { char access[256], secret[256], token[4096]; bool have; } creds;

static void creds_load(creds *c) {
  memset(c, 0, sizeof *c);
  const char *a = getenv("AWS_ACCESS_KEY_ID"), *s = getenv("AWS_SECRET_ACCESS_KEY"), *t = getenv("AWS_SESSION_TOKEN");
  if (a && *a && s && *s && strlen(a) < sizeof c->access && strlen(s) < sizeof c->secret) {
    strcpy(c->access, a); strcpy(c->secret, s);
    if (t && strlen(t) < sizeof c->token) strcpy(c->token, t);
    c->have = true;
  }
}

static void creds_wipe(creds *c) { prefcap__wipe(c, sizeof *c); }

static bool presigned_query(const char *q) {
  if (!q) return false;
  static const char *const marks[] = { "X-Amz-Signature=", "X-Goog-Signature=", "Signature=", "sig=", NULL };
  for (int i = 0; marks[i]; i++) {
    for (const char *p = q; (p = strstr(p, marks[i])); p++)
      if (p == q || p[-1] == '&') return true;
  }
  return false;
}

/* The libcurl the program runs with can sign (see SIGV4_MIN_CURL). */
static bool sigv4_supported(void) {
  const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  return v && v->version_num >= SIGV4_MIN_CURL;
}

/* An S3 path as S3 signs it: each segment decoded, then encoded once (RFC 3986's unreserved
 * characters kept, everything else %XX), the slashes kept. curl's escape and unescape do the work. */
static char *s3_path(const char *path) {
  size_t cap = strlen(path) * 3 + 1, len = 0;
  char *out = malloc(cap);
  if (!out) return NULL;
  for (const char *p = path;;) {
    size_t n = strcspn(p, "/");
    if (n) {   /* (a length of 0 means "up to the NUL" to curl: empty segments are skipped) */
      int dl = 0;
      char *dec = curl_easy_unescape(NULL, p, (int)n, &dl);
      char *enc = dec && dl ? curl_easy_escape(NULL, dec, dl) : NULL;
      curl_free(dec);
      if (dl && (!enc || len + strlen(enc) + 2 > cap)) { curl_free(enc); free(out); return NULL; }
      if (enc) { memcpy(out + len, enc, strlen(enc)); len += strlen(enc); }
      curl_free(enc);
    }
    if (!p[n]) break;
    out[len++] = '/';
    p += n + 1;
  }
  out[len] = 0;
  return out;
}

/* Resolves url into what to send and how to sign it. */
static int resolve_target(const char *url, const prefcap_upload_options_t *o, const char *region, const creds *cr,
                          target *t, char *errbuf, size_t errlen) {
  memset(t, 0, sizeof *t);
  char hu[512];
  prefcap__url_for_humans(url, hu, sizeof hu);
  char *built = NULL;
  bool s3scheme = strncmp(url, "s3://", 5) == 0;
  if (s3scheme) {
    const char *b = url + 5, *slash = strchr(b, '/');
    if (!slash || slash == b || !slash[1])
      return fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s: an s3:// URL needs a bucket and a key (s3://BUCKET/KEY)", hu);
    size_t bl = (size_t)(slash - b);
    size_t n = strlen(url) + strlen(region) + 64;
    built = malloc(n);
    if (!built) return fail(errbuf, errlen, PREFCAP_ENOMEM, "upload: out of memory");
    if (memchr(b, '.', bl))   /* dotted bucket names break the TLS wildcard: path style */
      snprintf(built, n, "https://s3.%s.amazonaws.com/%.*s%s", region, (int)bl, b, slash);
    else
      snprintf(built, n, "https://%.*s.s3.%s.amazonaws.com%s", (int)bl, b, region, slash);
    url = built;
  }
  CURLU *u = curl_url();
  if (!u) { free(built); return fail(errbuf, errlen, PREFCAP_ENOMEM, "upload: out of memory"); }
  char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL;
  int rc = PREFCAP_OK;
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s is not a valid URL", hu);
    goto out;
  }
  if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
    rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s: only http://, https:// and s3:// URLs are supported", hu);
    goto out;
  }
  curl_url_get(u, CURLUPART_PORT, &port, 0);   /* absent unless written in the URL */
  curl_url_get(u, CURLUPART_PATH, &path, 0);
  curl_url_get(u, CURLUPART_QUERY, &query, 0);

  prefcap_upload_auth_t auth = o->auth;
  if (auth == PREFCAP_UPLOAD_AUTO)
    auth = s3scheme || (cr->have && !presigned_query(query)) ? PREFCAP_UPLOAD_SIGV4 : PREFCAP_UPLOAD_PLAIN;
  if (s3scheme && auth != PREFCAP_UPLOAD_SIGV4) {
    rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s: s3:// URLs are signed with SigV4; a plain PUT needs an https:// (presigned) URL", hu);
    goto out;
  }
  if (auth == PREFCAP_UPLOAD_SIGV4 && !sigv4_supported()) {
    rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s: SigV4 signing needs libcurl 7.87 or later; this program "
              "runs with %s", hu, curl_version_info(CURLVERSION_NOW)->version);
    goto out;
  }
  if (auth == PREFCAP_UPLOAD_SIGV4 && !cr->have) {
    rc = fail(errbuf, errlen, PREFCAP_EINVAL,
              "upload: %s: SigV4 signing needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment", hu);
    goto out;
  }
  t->sigv4 = auth == PREFCAP_UPLOAD_SIGV4;
  size_t alen = strlen(host) + (port ? strlen(port) + 1 : 0) + 1;
  t->authority = malloc(alen);
  t->path = strdup(path ? path : "/");
  t->query = query ? strdup(query) : NULL;
  if (!t->authority || !t->path || (query && !t->query)) { rc = PREFCAP_ENOMEM; goto out; }
  snprintf(t->authority, alen, "%s%s%s", host, port ? ":" : "", port ? port : "");
  if (t->sigv4 && strcmp(o->service ? o->service : "s3", "s3") == 0) {
    /* S3 signs the path encoded once; send exactly the path that is signed, so the two cannot differ
     * (curl would otherwise leave the path as the user typed it). */
    char *enc = s3_path(t->path);
    if (!enc) { rc = PREFCAP_ENOMEM; goto out; }
    size_t n = strlen(scheme) + strlen(t->authority) + strlen(enc) + (query ? strlen(query) : 0) + 8;
    t->send_url = malloc(n);
    if (t->send_url) snprintf(t->send_url, n, "%s://%s%s%s%s", scheme, t->authority, enc, query ? "?" : "", query ? query : "");
    free(enc);
  } else {
    t->send_url = strdup(url);
  }
  if (!t->send_url) rc = PREFCAP_ENOMEM;
out:
  curl_free(scheme); curl_free(host); curl_free(port); curl_free(path); curl_free(query);
  curl_url_cleanup(u);
  free(built);
  if (rc) target_free(t);
  return rc;
}

/* Builds the header list for one attempt. With SigV4, curl signs every header listed here (and adds
 * x-amz-date and Authorization): Host is given explicitly so the signed Host carries the port, and
 * x-amz-content-sha256 carries the body's hash, which curl signs as the payload's. */
static int build_headers(const target *t, src_file *src, const creds *cr, struct curl_slist **out) {
  struct curl_slist *h = NULL, *n;
  char line[4400];
  int rc = PREFCAP_ENOMEM;
#define ADD(...) do { snprintf(line, sizeof line, __VA_ARGS__); if (!(n = curl_slist_append(h, line))) goto done; h = n; } while (0)
  ADD("Content-Type: %s", content_type_for(src->path));
  ADD("Content-MD5: %s", src->md5_b64);
  if (t->sigv4) {
    ADD("Host: %s", t->authority);
    ADD("x-amz-content-sha256: %s", src->sha256_hex);
    if (cr->token[0]) ADD("x-amz-security-token: %s", cr->token);
  }
#undef ADD
  rc = PREFCAP_OK;
done:
  prefcap__wipe(line, sizeof line);   /* it held the session token */
  if (rc) { curl_slist_free_all(h); h = NULL; }
  *out = h;
  return rc;
}

// ---- one file, with retries --------------------------------------------------------------------------------
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static int upload_file(const prefcap_upload_options_t *o, src_file *src, const char *url, const char *region,
                       const char *service, const creds *cr, uint64_t *rng, char *errbuf, size_t errlen) {
  char hu[512];
  prefcap__url_for_humans(url, hu, sizeof hu);
  target t;
  int rc = resolve_target(url, o, region, cr, &t, errbuf, errlen);
  if (rc) return rc;
  CURL *c = curl_easy_init();
  if (!c) { target_free(&t); return fail(errbuf, errlen, PREFCAP_ENOMEM, "upload: curl_easy_init failed"); }
  xfer x = { .o = o, .src = src, .url_h = hu, .max_attempts = o->retries + 1 };
  char sigv4_param[256];   /* "aws:amz:REGION:SERVICE": what curl signs with */
  snprintf(sigv4_param, sizeof sigv4_param, "aws:amz:%s:%s", region, service);
  char why[512] = "";
  rc = PREFCAP_ENETWORK;
  for (x.attempt = 1; x.attempt <= x.max_attempts; x.attempt++) {
    struct curl_slist *hdrs = NULL;
    int hrc = build_headers(&t, src, cr, &hdrs);
    if (hrc) { rc = fail(errbuf, errlen, hrc, "upload of %s: out of memory building the request for %s", src->path, hu); break; }
    if (fseek(src->f, 0, SEEK_SET) != 0) {
      curl_slist_free_all(hdrs);
      rc = fail(errbuf, errlen, PREFCAP_EIO, "upload: cannot rewind %s: %s", src->path, strerror(errno));
      break;
    }
    prefcap__sha256_free(&x.stream);
    prefcap__sha256_init(&x.stream);
    x.sent_bytes = 0; x.read_error = false; x.body_len = 0; x.body[0] = 0; x.retry_after[0] = 0;
    x.start_ms = x.last_progress_ms = x.last_move_ms = mono_ms();
    x.last_ul = x.last_dl = 0; x.stalled = false;
    if (emit(&x, PREFCAP_UPLOAD_EV_START, 0, NULL, 0)) { curl_slist_free_all(hdrs); break; }

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, t.send_url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)src->size);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &x);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_cb);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, &x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);   /* a redirected signed PUT would not verify */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (o->cacert) curl_easy_setopt(c, CURLOPT_CAINFO, o->cacert);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)o->connect_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)o->stall_s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)o->total_s);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "prefcap/" PREFCAP_VERSION);
    if (t.sigv4) {
      curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);   /* send the signed path untouched */
      curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4_param);
      curl_easy_setopt(c, CURLOPT_USERNAME, cr->access);
      curl_easy_setopt(c, CURLOPT_PASSWORD, cr->secret);
    }
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);

    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    char detail[400];
    describe_body(x.body, detail, sizeof detail);
    bool retry = false;

    if (x.stalled && cc == CURLE_ABORTED_BY_CALLBACK) cc = CURLE_OPERATION_TIMEDOUT;
    if (x.cancelled || cc == CURLE_ABORTED_BY_CALLBACK) {
      rc = fail(errbuf, errlen, PREFCAP_ENETWORK, "upload of %s to %s cancelled", src->path, hu);
      break;
    }
    if (x.read_error || cc == CURLE_READ_ERROR) {
      rc = fail(errbuf, errlen, PREFCAP_EIO, "upload: error reading %s while sending it", src->path);
      break;
    }
    if (cc == CURLE_OK && status >= 200 && status <= 299) {
      uint8_t got[32];
      prefcap__sha256_final(&x.stream, got);
      if (x.sent_bytes != src->size || memcmp(got, src->sha256, 32) != 0) {
        rc = fail(errbuf, errlen, PREFCAP_ECRYPTO,
                  "upload: %s changed while it was being uploaded to %s (the bytes sent do not match its SHA-256)",
                  src->path, hu);
        break;
      }
      emit(&x, PREFCAP_UPLOAD_EV_DONE, 0, NULL, status);
      rc = PREFCAP_OK;
      break;
    }
    if (status >= 100 && (cc == CURLE_OK || status >= 300)) {
      /* an answer: its status decides, even if the connection broke after it */
      snprintf(why, sizeof why, "HTTP %ld%s", status, detail);
      if (!retryable_status(status)) {
        rc = fail(errbuf, errlen, PREFCAP_EHTTP, "upload of %s to %s failed: %s%s", src->path, hu, why,
                  status >= 300 && status < 400 ? " (redirects are not followed: use the final URL)" : "");
        break;
      }
      rc = PREFCAP_EHTTP;
      retry = true;
    } else if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE || cc == CURLE_SSL_CERTPROBLEM) {
      rc = fail(errbuf, errlen, PREFCAP_ENETWORK, "upload of %s to %s failed: TLS verification: %s", src->path, hu,
                cerr[0] ? cerr : curl_easy_strerror(cc));
      break;
    } else if (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL) {
      rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s: %s", hu, curl_easy_strerror(cc));
      break;
    } else if (retryable_curl(cc)) {
      if (x.stalled)
        snprintf(why, sizeof why, "timed out: no progress for %d s", o->stall_s);
      else if (cc == CURLE_OPERATION_TIMEDOUT)
        snprintf(why, sizeof why, "timed out (%s)", cerr[0] ? cerr : "no progress");
      else
        snprintf(why, sizeof why, "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
      rc = PREFCAP_ENETWORK;
      retry = true;
    } else {
      rc = fail(errbuf, errlen, PREFCAP_ENETWORK, "upload of %s to %s failed: %s", src->path, hu,
                cerr[0] ? cerr : curl_easy_strerror(cc));
      break;
    }
    /* curl's messages may name the URL with its query: keep only the part before it */
    char *q = strchr(why, '?');
    if (q) { q[0] = 0; strncat(why, "?…", sizeof why - strlen(why) - 1); }

    if (!retry || x.attempt == x.max_attempts) break;
    int64_t wait = prefcap__backoff_ms(x.attempt, o->backoff_base_ms, o->backoff_max_ms, rng);
    int64_t ra = x.retry_after[0] ? prefcap__retry_after_ms(x.retry_after, (int64_t)time(NULL)) : -1;
    if (ra >= 0) {
      if (ra > (int64_t)o->retry_after_max_s * 1000) {
        rc = fail(errbuf, errlen, rc, "upload of %s to %s failed: %s, and the server asks to retry after %lld s, "
                  "more than the %d s allowed", src->path, hu, why, (long long)(ra / 1000), o->retry_after_max_s);
        why[0] = 0;
        goto done;
      }
      wait = ra;
    }
    if (emit(&x, PREFCAP_UPLOAD_EV_RETRY, (int)wait, why, status)) {
      rc = fail(errbuf, errlen, PREFCAP_ENETWORK, "upload of %s to %s cancelled", src->path, hu);
      goto done;
    }
    sleep_ms(wait);
  }
  if (rc != PREFCAP_OK && why[0] && x.attempt >= x.max_attempts)
    fail(errbuf, errlen, rc, "upload of %s to %s failed after %d attempt%s: %s", src->path, hu, x.max_attempts,
         x.max_attempts == 1 ? "" : "s", why);
done:
  curl_easy_reset(c);   /* drops the credentials curl copied before the handle goes */
  curl_easy_cleanup(c);
  prefcap__sha256_free(&x.stream);
  target_free(&t);
  return rc;
}

// ---- the manifest ------------------------------------------------------------------------------------------
/* The manifest's "sha256" must equal the data file's: a mismatch means the export and its manifest
 * are not from the same run, and shipping them together would publish a false checksum. */
static int check_manifest(const char *mpath, const src_file *data, char *errbuf, size_t errlen) {
  size_t len;
  int e = 0;
  char *buf = pc_read_file(mpath, &len, &e);
  if (!buf) return fail(errbuf, errlen, e == ENOMEM ? PREFCAP_ENOMEM : PREFCAP_EIO, "upload: cannot read %s: %s", mpath, strerror(e));
  cJSON *j = buf ? cJSON_ParseWithLength(buf, len) : NULL;
  free(buf);
  if (!j) return fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s is not valid JSON", mpath);
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "sha256");
  int rc = PREFCAP_OK;
  if (!cJSON_IsString(s))
    rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s has no \"sha256\" string field", mpath);
  else if (strlen(s->valuestring) != 64 || strncasecmp(s->valuestring, data->sha256_hex, 64) != 0)
    rc = fail(errbuf, errlen, PREFCAP_ECRYPTO, "upload: %s: its \"sha256\" (%.64s) is not the SHA-256 of %s (%s); "
              "nothing was uploaded", mpath, s->valuestring, data->path, data->sha256_hex);
  cJSON_Delete(j);
  return rc;
}

// ---- prefcap_upload ------------------------------------------------------------------------------------------
int prefcap__upload(const prefcap_upload_options_t *opts, const char *file, const char *url,
                    char *errbuf, size_t errlen) {
  if (errbuf && errlen) errbuf[0] = 0;
  const prefcap_upload_options_t *o = opts ? opts : &defaults;
  if (!file || !*file) return fail(errbuf, errlen, PREFCAP_EINVAL, "upload: no file given");
  if (!url || !*url) return fail(errbuf, errlen, PREFCAP_EINVAL, "upload: no URL given for %s", file);
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK) return fail(errbuf, errlen, PREFCAP_ENETWORK, "upload: libcurl failed to initialise");

  const char *region = o->region;
  if (!region || !*region) region = getenv("AWS_REGION");
  if (!region || !*region) region = getenv("AWS_DEFAULT_REGION");
  if (!region || !*region) region = "us-east-1";
  const char *service = o->service && *o->service ? o->service : "s3";

  /* the manifest, if any, and where it goes */
  size_t fl = strlen(file);
  char *mpath = malloc(fl + sizeof ".manifest.json");
  if (!mpath) return fail(errbuf, errlen, PREFCAP_ENOMEM, "upload of %s: out of memory", file);
  memcpy(mpath, file, fl);
  memcpy(mpath + fl, ".manifest.json", sizeof ".manifest.json");
  bool with_manifest = o->manifest && access(mpath, F_OK) == 0;
  char *murl = NULL;
  int rc = PREFCAP_OK;
  if (with_manifest) {
    if (o->manifest_url && *o->manifest_url) {
      murl = strdup(o->manifest_url);
    } else if (strpbrk(url, "?#")) {
      char hu[512];
      prefcap__url_for_humans(url, hu, sizeof hu);
      rc = fail(errbuf, errlen, PREFCAP_EINVAL, "upload: %s exists but %s has a query string (a presigned URL?), so the "
                "manifest's URL cannot be derived from it: give one (--manifest-url) or skip the manifest", mpath, hu);
      goto out_nofile;
    } else {
      size_t ul = strlen(url);
      murl = malloc(ul + sizeof ".manifest.json");
      if (murl) { memcpy(murl, url, ul); memcpy(murl + ul, ".manifest.json", sizeof ".manifest.json"); }
    }
    if (!murl) { rc = PREFCAP_ENOMEM; goto out_nofile; }
  }

  /* bad URLs and missing credentials are reported before a large file is read */
  creds cr;
  creds_load(&cr);
  for (int k = 0; k < (with_manifest ? 2 : 1); k++) {
    target t;
    rc = resolve_target(k ? murl : url, o, region, &cr, &t, errbuf, errlen);
    if (rc) { creds_wipe(&cr); goto out_nofile; }
    target_free(&t);
  }
  src_file data, man;
  memset(&man, 0, sizeof man);
  rc = open_and_hash(&data, file, errbuf, errlen);
  if (rc) { creds_wipe(&cr); goto out_nofile; }
  if (with_manifest && (rc = check_manifest(mpath, &data, errbuf, errlen)) != PREFCAP_OK) { creds_wipe(&cr); goto out; }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t rng = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&rng;
  if (!rng) rng = 1;
  rc = upload_file(o, &data, url, region, service, &cr, &rng, errbuf, errlen);
  if (rc == PREFCAP_OK && with_manifest) {
    rc = open_and_hash(&man, mpath, errbuf, errlen);
    if (rc == PREFCAP_OK) rc = upload_file(o, &man, murl, region, service, &cr, &rng, errbuf, errlen);
  }
  creds_wipe(&cr);
out:
  if (data.f) fclose(data.f);
  if (man.f) fclose(man.f);
out_nofile:
  free(mpath);
  free(murl);
  return rc;
}

/* The public call reports through the library's one error channel (prefcap_errmsg(NULL)); the
 * detail always names the file, even for the failures that had no sentence of their own. */
int prefcap_upload(const prefcap_upload_options_t *opts, const char *file, const char *url) {
  char err[1024] = "";
  int rc = prefcap__upload(opts, file, url, err, sizeof err);
  if (!rc) return PREFCAP_OK;
  if (!err[0]) return prefcap__fail0(rc, "upload of %s: %s", file ? file : "(no file)", prefcap_strerror(rc));
  return prefcap__fail0(rc, "%s", err);
}
