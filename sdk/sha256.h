/* sdk/sha256.h: SHA-256, HMAC-SHA-256 and lower-case hex for the SDK's content hashes, export
 * checksums and upload checksums, over libcrypto's EVP interface (sdk/digest.c): OpenSSL picks the
 * fastest code for the CPU (SHA extensions, AVX2, ARMv8 crypto), and libcurl loads libcrypto anyway.
 * Internal to the SDK (prefcap__ names); a context belongs to whoever holds it. */
#ifndef PREFCAP_SHA256_H
#define PREFCAP_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct evp_md_ctx_st;
/* A streaming hash. init allocates libcrypto's context and final releases it; a context dropped
 * between the two (an aborted write) is released with prefcap__sha256_free. */
typedef struct prefcap__sha256_ctx {
  struct evp_md_ctx_st *md;   /* NULL: never initialised, finished, or out of memory at init */
  int failed;                 /* init or an update failed: final reports it */
} prefcap__sha256_ctx;

void prefcap__sha256_init(prefcap__sha256_ctx *c);
void prefcap__sha256_update(prefcap__sha256_ctx *c, const void *data, size_t len);
/* Writes the digest and releases the context. 0, or -1 (out of memory at some step: out is zeroed,
 * never a wrong digest that looks right). */
int prefcap__sha256_final(prefcap__sha256_ctx *c, uint8_t out[32]);
/* Releases a context that will not be finished. NULL context or already released: nothing. */
void prefcap__sha256_free(prefcap__sha256_ctx *c);
/* One-shot digest of len bytes; 0 or -1 as final. */
int prefcap__sha256(const void *data, size_t len, uint8_t out[32]);
/* HMAC-SHA-256 of msg under key (any key length); 0 or -1. */
int prefcap__hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen, uint8_t out[32]);
/* Writes 2*len lower-case hex digits and a NUL to out (which holds 2*len + 1 bytes). */
void prefcap__hex(const uint8_t *in, size_t len, char *out);
/* Digest of len bytes as 64 hex digits + NUL. */
void prefcap__sha256_hex(const void *data, size_t len, char out[65]);
/* Overwrites n bytes at p with zeros in a way the compiler may not remove (OPENSSL_cleanse): for keys,
 * secrets and anything derived from them. */
void prefcap__wipe(void *p, size_t n);

#endif
