/* sdk/md5.h: MD5 and base64, only for the Content-MD5 header of uploads, which S3, GCS and most
 * object stores check against the body they received; over libcrypto's EVP (sdk/digest.c). MD5 is
 * not used for anything where collisions matter; an export's integrity claim is its SHA-256. */
#ifndef PREFCAP_MD5_H
#define PREFCAP_MD5_H

#include <stddef.h>
#include <stdint.h>

struct evp_md_ctx_st;
typedef struct prefcap__md5_ctx {
  struct evp_md_ctx_st *md;   /* as prefcap__sha256_ctx */
  int failed;
} prefcap__md5_ctx;

void prefcap__md5_init(prefcap__md5_ctx *c);
void prefcap__md5_update(prefcap__md5_ctx *c, const void *data, size_t len);
/* 0, or -1 (out is zeroed); releases the context. */
int prefcap__md5_final(prefcap__md5_ctx *c, uint8_t out[16]);
void prefcap__md5_free(prefcap__md5_ctx *c);
/* Standard base64 with padding; writes 4*ceil(len/3) chars + NUL to out. */
void prefcap__base64(const uint8_t *in, size_t len, char *out);

#endif
