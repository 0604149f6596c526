/* sdk/sigv4.c: AWS Signature Version 4, header-based (see sigv4.h). Rules followed, in the order of
 * AWS's "Create a signed AWS API request" page: canonical request (method, URI, query, headers, signed
 * header list, payload hash), string to sign, derived signing key, signature, Authorization. */
#include "sigv4.h"

#include "internal.h"
#include "sha256.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

// ---- a growing string (prefcap__buf) -------------------------------------------------------------
static void sb_putc(prefcap__buf *b, char c) { prefcap__buf_putn(b, &c, 1); }

// ---- percent-encoding ----------------------------------------------------------------------------------
static bool unreserved(unsigned char c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

char *prefcap__uri_encode(const char *s, size_t len, int keep_slash) {
  static const char hex[] = "0123456789ABCDEF";
  char *out = malloc(3 * len + 1), *o = out;
  if (!out) return NULL;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (unreserved(c) || (keep_slash && c == '/')) *o++ = (char)c;
    else { *o++ = '%'; *o++ = hex[c >> 4]; *o++ = hex[c & 15]; }
  }
  *o = 0;
  return out;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char *prefcap__uri_decode(const char *s, size_t len, size_t *outlen) {
  char *out = malloc(len + 1), *o = out;
  if (!out) return NULL;
  for (size_t i = 0; i < len; i++) {
    int h, l;
    if (s[i] == '%' && i + 2 < len && (h = hexval((unsigned char)s[i + 1])) >= 0 &&
        (l = hexval((unsigned char)s[i + 2])) >= 0) {
      *o++ = (char)(h << 4 | l);
      i += 2;
    } else {
      *o++ = s[i];
    }
  }
  *o = 0;
  if (outlen) *outlen = (size_t)(o - out);
  return out;
}

// ---- canonical URI ----------------------------------------------------------------------------------
/* Generic services: RFC 3986 remove_dot_segments plus collapsing empty segments, then encode as given.
 * The trailing slash is kept ("//example//" -> "/example/"). */
static char *canonical_uri(const char *path, bool s3) {
  if (!path || !*path) return strdup("/");
  if (s3) {
    size_t n;
    char *dec = prefcap__uri_decode(path, strlen(path), &n);
    if (!dec) return NULL;
    char *enc = prefcap__uri_encode(dec, n, 1);
    free(dec);
    if (enc && enc[0] != '/') {   /* "test$file.text" on a request line: the path is rooted */
      char *r = malloc(strlen(enc) + 2);
      if (r) { r[0] = '/'; strcpy(r + 1, enc); }
      free(enc);
      return r;
    }
    return enc;
  }
  size_t len = strlen(path);
  /* segments kept, as (start, length) into path */
  size_t (*seg)[2] = malloc((len + 1) * sizeof *seg);
  if (!seg) return NULL;
  size_t nseg = 0;
  for (size_t i = 0; i <= len;) {
    size_t j = i;
    while (j < len && path[j] != '/') j++;
    size_t n = j - i;
    if (n == 0 || (n == 1 && path[i] == '.')) { /* empty or "." : drop */ }
    else if (n == 2 && path[i] == '.' && path[i + 1] == '.') { if (nseg) nseg--; }
    else { seg[nseg][0] = i; seg[nseg][1] = n; nseg++; }
    i = j + 1;
  }
  bool trailing = len > 0 && (path[len - 1] == '/' ||
                  (len >= 2 && path[len - 1] == '.' && path[len - 2] == '/') ||
                  (len >= 3 && path[len - 1] == '.' && path[len - 2] == '.' && path[len - 3] == '/'));
  prefcap__buf b = { 0 };
  for (size_t k = 0; k < nseg; k++) {
    sb_putc(&b, '/');
    char *e = prefcap__uri_encode(path + seg[k][0], seg[k][1], 0);
    if (!e) { b.oom = true; break; }
    prefcap__buf_puts(&b, e);
    free(e);
  }
  if (nseg == 0 || trailing) sb_putc(&b, '/');
  free(seg);
  if (b.oom) { free(b.p); return NULL; }
  return b.p;
}

// ---- canonical query ----------------------------------------------------------------------------------
typedef struct { char *k, *v; } kv;

static int kv_cmp(const void *a, const void *b) {
  const kv *x = a, *y = b;
  int c = strcmp(x->k, y->k);
  return c ? c : strcmp(x->v, y->v);
}

static char *canonical_query(const char *q) {
  if (!q || !*q) return strdup("");
  size_t n = 1;
  for (const char *p = q; *p; p++) n += *p == '&';
  kv *a = calloc(n, sizeof *a);
  if (!a) return NULL;
  size_t m = 0;
  bool oom = false;
  for (const char *p = q; !oom;) {
    const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
    if (end > p) {   /* "a&&b": empty parameters are not parameters */
      const char *eq = memchr(p, '=', (size_t)(end - p));
      const char *ke = eq ? eq : end, *vs = eq ? eq + 1 : end;
      size_t kl, vl;
      char *kd = prefcap__uri_decode(p, (size_t)(ke - p), &kl), *vd = prefcap__uri_decode(vs, (size_t)(end - vs), &vl);
      if (kd && vd) { a[m].k = prefcap__uri_encode(kd, kl, 0); a[m].v = prefcap__uri_encode(vd, vl, 0); }
      free(kd); free(vd);
      if (!a[m].k || !a[m].v) oom = true;
      m++;
    }
    if (!amp) break;
    p = amp + 1;
  }
  prefcap__buf b = { 0 };
  if (!oom) {
    qsort(a, m, sizeof *a, kv_cmp);
    prefcap__buf_puts(&b, "");
    for (size_t i = 0; i < m; i++) {
      if (i) sb_putc(&b, '&');
      prefcap__buf_puts(&b, a[i].k); sb_putc(&b, '='); prefcap__buf_puts(&b, a[i].v);
    }
  }
  for (size_t i = 0; i < m; i++) { free(a[i].k); free(a[i].v); }
  free(a);
  if (oom || b.oom) { free(b.p); return NULL; }
  return b.p;
}

// ---- canonical headers -------------------------------------------------------------------------------
typedef struct { char *name; const char *value; size_t order; } hdr;

static int hdr_cmp(const void *a, const void *b) {
  const hdr *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  if (c) return c;
  return x->order < y->order ? -1 : x->order > y->order;   /* stable: duplicates keep their order */
}

/* Appends value trimmed, with inner runs of whitespace collapsed to one space. */
static void put_trimmed(prefcap__buf *b, const char *v) {
  while (*v == ' ' || *v == '\t') v++;
  bool space = false;
  for (; *v; v++) {
    if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') { space = true; continue; }
    if (space) sb_putc(b, ' ');
    space = false;
    sb_putc(b, *v);
  }
}

// ---- signing ------------------------------------------------------------------------------------------
static bool valid_amz_date(const char *d) {
  if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z') return false;
  for (int i = 0; i < 15; i++) if (i != 8 && !isdigit((unsigned char)d[i])) return false;
  return true;
}

void prefcap__sigv4_out_free(prefcap__sigv4_out *out) {
  if (!out) return;
  free(out->canonical_request); free(out->string_to_sign); free(out->authorization);
  out->canonical_request = out->string_to_sign = out->authorization = NULL;
}

int prefcap__sigv4_sign(const prefcap__sigv4_req *r, const char *access_key, const char *secret_key,
                        prefcap__sigv4_out *out) {
  memset(out, 0, sizeof *out);
  if (!r || !r->method || !r->payload_sha256 || !r->region || !r->service || !access_key || !secret_key ||
      !valid_amz_date(r->amz_date) || (r->n_headers && !r->headers))
    return PREFCAP_EINVAL;
  int rc = PREFCAP_ENOMEM;
  char *uri = NULL, *query = NULL;
  hdr *h = NULL;
  prefcap__buf creq = { 0 }, signed_h = { 0 }, sts = { 0 }, authz = { 0 };

  uri = canonical_uri(r->path, r->s3);
  query = canonical_query(r->query);
  h = calloc(r->n_headers ? r->n_headers : 1, sizeof *h);
  if (!uri || !query || !h) goto done;
  for (size_t i = 0; i < r->n_headers; i++) {
    if (!r->headers[i].name || !r->headers[i].value) { rc = PREFCAP_EINVAL; goto done; }
    h[i].name = strdup(r->headers[i].name);
    if (!h[i].name) goto done;
    for (char *c = h[i].name; *c; c++) *c = (char)tolower((unsigned char)*c);
    h[i].value = r->headers[i].value;
    h[i].order = i;
  }
  qsort(h, r->n_headers, sizeof *h, hdr_cmp);

  prefcap__buf_puts(&creq, r->method); sb_putc(&creq, '\n');
  prefcap__buf_puts(&creq, uri); sb_putc(&creq, '\n');
  prefcap__buf_puts(&creq, query); sb_putc(&creq, '\n');
  for (size_t i = 0; i < r->n_headers; i++) {
    bool first = i == 0 || strcmp(h[i].name, h[i - 1].name) != 0;
    if (first) {
      if (i) { sb_putc(&creq, '\n'); sb_putc(&signed_h, ';'); }
      prefcap__buf_puts(&creq, h[i].name); sb_putc(&creq, ':');
      prefcap__buf_puts(&signed_h, h[i].name);
    } else {
      sb_putc(&creq, ',');
    }
    put_trimmed(&creq, h[i].value);
  }
  if (r->n_headers) sb_putc(&creq, '\n');
  sb_putc(&creq, '\n');
  prefcap__buf_puts(&creq, signed_h.p ? signed_h.p : ""); sb_putc(&creq, '\n');
  prefcap__buf_puts(&creq, r->payload_sha256);
  if (creq.oom || signed_h.oom) goto done;

  char date8[9], creq_hash[65];
  memcpy(date8, r->amz_date, 8); date8[8] = 0;
  prefcap__sha256_hex(creq.p, creq.len, creq_hash);
  prefcap__buf_puts(&sts, "AWS4-HMAC-SHA256\n");
  prefcap__buf_puts(&sts, r->amz_date); sb_putc(&sts, '\n');
  prefcap__buf_puts(&sts, date8); sb_putc(&sts, '/'); prefcap__buf_puts(&sts, r->region); sb_putc(&sts, '/');
  prefcap__buf_puts(&sts, r->service); prefcap__buf_puts(&sts, "/aws4_request\n");
  prefcap__buf_puts(&sts, creq_hash);
  if (sts.oom) goto done;

  /* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
  {
    size_t sl = strlen(secret_key);
    char *k0 = malloc(sl + 5);
    if (!k0) goto done;
    memcpy(k0, "AWS4", 4); memcpy(k0 + 4, secret_key, sl + 1);
    uint8_t k[32], sig[32];
    prefcap__hmac_sha256(k0, sl + 4, date8, 8, k);
    memset(k0, 0, sl + 4);
    free(k0);
    prefcap__hmac_sha256(k, 32, r->region, strlen(r->region), k);
    prefcap__hmac_sha256(k, 32, r->service, strlen(r->service), k);
    prefcap__hmac_sha256(k, 32, "aws4_request", 12, k);
    prefcap__hmac_sha256(k, 32, sts.p, sts.len, sig);
    memset(k, 0, sizeof k);
    prefcap__hex(sig, 32, out->signature);
  }
  prefcap__buf_puts(&authz, "AWS4-HMAC-SHA256 Credential=");
  prefcap__buf_puts(&authz, access_key); sb_putc(&authz, '/');
  prefcap__buf_puts(&authz, date8); sb_putc(&authz, '/'); prefcap__buf_puts(&authz, r->region); sb_putc(&authz, '/');
  prefcap__buf_puts(&authz, r->service); prefcap__buf_puts(&authz, "/aws4_request, SignedHeaders=");
  prefcap__buf_puts(&authz, signed_h.p ? signed_h.p : "");
  prefcap__buf_puts(&authz, ", Signature="); prefcap__buf_puts(&authz, out->signature);
  if (authz.oom) goto done;

  out->canonical_request = creq.p; creq.p = NULL;
  out->string_to_sign = sts.p; sts.p = NULL;
  out->authorization = authz.p; authz.p = NULL;
  rc = PREFCAP_OK;
done:
  free(uri); free(query);
  if (h) for (size_t i = 0; i < r->n_headers; i++) free(h[i].name);
  free(h);
  free(creq.p); free(signed_h.p); free(sts.p); free(authz.p);
  return rc;
}
