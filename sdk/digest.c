/* sdk/digest.c: the SDK's hashes over libcrypto's EVP interface (sdk/sha256.h, sdk/md5.h): SHA-256
 * for content hashes and checksums, HMAC-SHA-256, MD5 for Content-MD5, base64 and hex, and a wipe
 * that the compiler cannot drop. No hash is implemented here: this file only adapts EVP's calls to the
 * init/update/final shape the SDK's callers use, and makes a failure visible (a zeroed digest and -1)
 * instead of a plausible wrong one. */
#include "md5.h"
#include "sha256.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

// ---- a streaming digest, for either algorithm ----------------------------------------------------
static void md_init(struct evp_md_ctx_st **md, int *failed, const EVP_MD *type) {
  *md = EVP_MD_CTX_new();
  *failed = !*md || EVP_DigestInit_ex(*md, type, NULL) != 1;
}

static void md_update(struct evp_md_ctx_st *md, int *failed, const void *data, size_t len) {
  if (*failed || !len) return;
  if (EVP_DigestUpdate(md, data, len) != 1) *failed = 1;
}

static void md_free(struct evp_md_ctx_st **md) {
  EVP_MD_CTX_free(*md);   /* NULL: nothing */
  *md = NULL;
}

static int md_final(struct evp_md_ctx_st **md, int *failed, uint8_t *out, unsigned n) {
  unsigned got = 0;
  int ok = !*failed && EVP_DigestFinal_ex(*md, out, &got) == 1 && got == n;
  md_free(md);
  if (!ok) memset(out, 0, n);
  return ok ? 0 : -1;
}

// ---- SHA-256 -------------------------------------------------------------------------------------
void prefcap__sha256_init(prefcap__sha256_ctx *c) { md_init(&c->md, &c->failed, EVP_sha256()); }
void prefcap__sha256_update(prefcap__sha256_ctx *c, const void *data, size_t len) { md_update(c->md, &c->failed, data, len); }
int prefcap__sha256_final(prefcap__sha256_ctx *c, uint8_t out[32]) { return md_final(&c->md, &c->failed, out, 32); }
void prefcap__sha256_free(prefcap__sha256_ctx *c) { if (c) md_free(&c->md); }

int prefcap__sha256(const void *data, size_t len, uint8_t out[32]) {
  unsigned n = 0;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32) return 0;
  memset(out, 0, 32);
  return -1;
}

int prefcap__hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen, uint8_t out[32]) {
  unsigned n = 0;
  if (keylen <= 0x7fffffff && HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &n) && n == 32) return 0;
  memset(out, 0, 32);
  return -1;
}

void prefcap__hex(const uint8_t *in, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * len] = 0;
}

void prefcap__sha256_hex(const void *data, size_t len, char out[65]) {
  uint8_t d[32];
  prefcap__sha256(data, len, d);
  prefcap__hex(d, 32, out);
}

void prefcap__wipe(void *p, size_t n) { OPENSSL_cleanse(p, n); }

// ---- MD5 and base64 ------------------------------------------------------------------------------
void prefcap__md5_init(prefcap__md5_ctx *c) { md_init(&c->md, &c->failed, EVP_md5()); }
void prefcap__md5_update(prefcap__md5_ctx *c, const void *data, size_t len) { md_update(c->md, &c->failed, data, len); }
int prefcap__md5_final(prefcap__md5_ctx *c, uint8_t out[16]) { return md_final(&c->md, &c->failed, out, 16); }
void prefcap__md5_free(prefcap__md5_ctx *c) { if (c) md_free(&c->md); }

void prefcap__base64(const uint8_t *in, size_t len, char *out) {
  EVP_EncodeBlock((unsigned char *)out, in, (int)len);   /* writes the NUL too */
}
