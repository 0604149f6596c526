/* sdk/sigv4.h: AWS Signature Version 4 (header-based), the request signing that S3 and S3-compatible
 * stores (MinIO, R2, Ceph, GCS interop) accept. The upload path signs with it, and the AWS signing
 * test suite (tests/sdk/sigv4_vectors/) checks the canonical request, string to sign and
 * Authorization it produces, so what ships is exactly what the vectors exercise. */
#ifndef PREFCAP_SIGV4_H
#define PREFCAP_SIGV4_H

#include <stddef.h>

typedef struct prefcap__http_header {
  const char *name;     /* any case; canonicalised to lower case */
  const char *value;    /* trimmed and inner runs of spaces collapsed when canonicalised */
} prefcap__http_header;

typedef struct prefcap__sigv4_req {
  const char *method;            /* "PUT", "GET", ... */
  const char *path;              /* as on the request line, before '?': raw or percent-encoded */
  const char *query;             /* after '?', without it; NULL or "" when there is none */
  /* The headers to sign (every one given is signed). A name given more than once is joined with ','
   * in the order given, as the signing rules say. */
  const prefcap__http_header *headers;
  size_t n_headers;
  const char *payload_sha256;    /* 64 lower-case hex digits of the body's SHA-256, or "UNSIGNED-PAYLOAD" */
  const char *amz_date;          /* the X-Amz-Date value, "YYYYMMDDTHHMMSSZ" (UTC) */
  const char *region;            /* "us-east-1" */
  const char *service;           /* "s3", or "service" in the generic test suite */
  /* S3 rules (service "s3"): the path is used as is, without removing "." / ".." segments or empty
   * segments, and is percent-encoded once (decoded first, so an already-encoded path is not encoded
   * twice). Other services: dot segments and repeated slashes are removed and the path is encoded as
   * given (a '%' in it becomes %25, AWS's double encoding). */
  int s3;
} prefcap__sigv4_req;

typedef struct prefcap__sigv4_out {
  char *canonical_request;       /* malloc'd; free with prefcap__sigv4_out_free */
  char *string_to_sign;          /* malloc'd */
  char *authorization;           /* malloc'd: the whole Authorization header value */
  char signature[65];            /* hex */
} prefcap__sigv4_out;

/* Signs r with the given credentials. Returns 0, PREFCAP_EINVAL (a missing field, a malformed date)
 * or PREFCAP_ENOMEM. The secret is used only to derive the signing key and is wiped from the stack. */
int prefcap__sigv4_sign(const prefcap__sigv4_req *r, const char *access_key, const char *secret_key,
                        prefcap__sigv4_out *out);
void prefcap__sigv4_out_free(prefcap__sigv4_out *out);

/* Percent-encodes bytes outside RFC 3986's unreserved set (A-Z a-z 0-9 - . _ ~), keeping '/' when
 * keep_slash; upper-case hex. Returns a malloc'd string or NULL when out of memory. */
char *prefcap__uri_encode(const char *s, size_t len, int keep_slash);
/* Decodes %XX escapes (a malformed escape is kept literally). Returns a malloc'd string, *outlen set. */
char *prefcap__uri_decode(const char *s, size_t len, size_t *outlen);

#endif
