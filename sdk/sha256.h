/* sdk/sha256.h: SHA-256 (FIPS 180-4), HMAC-SHA-256 (RFC 2104) and lower-case hex, for upload
 * checksums, SigV4 signing and export manifests. No dependency on a crypto library: the SDK links only
 * SQLite, cJSON, libcurl and zlib. Internal to the SDK (prefcap__ names); not thread-affine: a context
 * belongs to whoever holds it. */
#ifndef PREFCAP_SHA256_H
#define PREFCAP_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct prefcap__sha256_ctx {
  uint32_t h[8];
  uint64_t nbytes;      /* total bytes hashed so far */
  uint8_t buf[64];
  size_t nbuf;          /* bytes waiting in buf */
} prefcap__sha256_ctx;

void prefcap__sha256_init(prefcap__sha256_ctx *c);
void prefcap__sha256_update(prefcap__sha256_ctx *c, const void *data, size_t len);
void prefcap__sha256_final(prefcap__sha256_ctx *c, uint8_t out[32]);
/* One-shot digest of len bytes. */
void prefcap__sha256(const void *data, size_t len, uint8_t out[32]);
/* HMAC-SHA-256 of msg under key (any key length). */
void prefcap__hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen, uint8_t out[32]);
/* Writes 2*len lower-case hex digits and a NUL to out (which holds 2*len + 1 bytes). */
void prefcap__hex(const uint8_t *in, size_t len, char *out);
/* 1 when the CPU's SHA extensions do the rounds, 0 for the portable code. */
int prefcap__sha256_hw(void);
/* Digest of len bytes as 64 hex digits + NUL. */
void prefcap__sha256_hex(const void *data, size_t len, char out[65]);

#endif
