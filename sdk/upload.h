/* sdk/upload.h: the upload path's internals (sdk/upload.c): the call with an error buffer that export
 * uses, and the retry timing rules, exposed so the tests can check them without waiting on a server. */
#ifndef PREFCAP_UPLOAD_H
#define PREFCAP_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "prefcap.h"

/* prefcap_upload with its detail in errbuf (always NUL-terminated when errlen > 0), for callers that
 * report it themselves (an export puts it in its handle's errmsg). */
int prefcap__upload(const prefcap_upload_options_t *opts, const char *file, const char *url, char *errbuf,
                    size_t errlen);

/* A URL without its query and fragment (a presigned URL's query is a credential: "?…" marks that
 * there was one) and without its userinfo (user:PASSWORD@ becomes three stars and the @), which is
 * one too: for messages, and for the store's record of where an export went. out holds at most n - 1
 * bytes; strlen(url) + 8 is always enough. */
void prefcap__url_for_humans(const char *url, char *out, size_t n);
/* The same in a malloc'd string (free() it); NULL when out of memory. */
char *prefcap__url_for_humans_dup(const char *url);

/* The wait a Retry-After value asks for, in ms: delta-seconds ("120") or an HTTP date ("Wed, 21 Oct
 * 2015 07:28:00 GMT", or the obsolete forms), relative to now_s (Unix seconds); a date in the past is
 * 0. -1 when the value is neither. */
int64_t prefcap__retry_after_ms(const char *value, int64_t now_s);
/* The wait before retry number k (1-based): uniform in [d/2, d], d = min(max_ms, base_ms * 2^(k-1)).
 * *rng is the state of a xorshift64 generator (non-zero). */
int64_t prefcap__backoff_ms(int k, int base_ms, int max_ms, uint64_t *rng);

#endif
