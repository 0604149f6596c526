/* sdk/md5.h: MD5 (RFC 1321) and base64 (RFC 4648), only for the Content-MD5 header of uploads, which
 * S3, GCS and most object stores check against the body they received. MD5 is not used for anything
 * where collisions matter; the integrity claim of an export is its SHA-256 (sdk/sha256.h). */
#ifndef PREFCAP_MD5_H
#define PREFCAP_MD5_H

#include <stddef.h>
#include <stdint.h>

typedef struct prefcap__md5_ctx {
  uint32_t s[4];
  uint64_t nbytes;
  uint8_t buf[64];
  size_t nbuf;
} prefcap__md5_ctx;

void prefcap__md5_init(prefcap__md5_ctx *c);
void prefcap__md5_update(prefcap__md5_ctx *c, const void *data, size_t len);
void prefcap__md5_final(prefcap__md5_ctx *c, uint8_t out[16]);
/* Standard base64 with padding; writes 4*ceil(len/3) chars + NUL to out. */
void prefcap__base64(const uint8_t *in, size_t len, char *out);

#endif
