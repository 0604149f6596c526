/* sdk/sha256.c: SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104), written out so the SDK needs no
 * crypto library. Checked against the NIST and RFC 4231 vectors in tests/sdk/test_upload.c. */
#include "sha256.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// ---- SHA-256 --------------------------------------------------------------------------------------
static const uint32_t K[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t h[8], const uint8_t p[64]) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

// ---- SHA-256 with the x86 SHA extensions ----------------------------------------------------------
/* Export and upload checksums hash whole files (gigabytes for a large export): on CPUs with the SHA
 * extensions (Intel since Goldmont/Ice Lake, AMD since Zen) the rounds run in hardware, ~10x faster
 * than the portable rounds above, which remain the reference (and the fallback): tests/sdk/test_upload
 * checks both against NIST's vectors and against each other on random inputs. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_SHANI_PATH 1

__attribute__((target("sha,sse4.1"))) static void compress_shani(uint32_t h[8], const uint8_t *p, size_t blocks) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);   /* CDAB */
  __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);   /* EFGH */
  __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                          /* ABEF */
  st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                               /* CDGH */
  for (; blocks--; p += 64) {
    __m128i save0 = st0, save1 = st1, w[4];
    for (int i = 0; i < 16; i++) {
      __m128i m;
      if (i < 4) m = w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
      else {   /* W[4i..4i+3] from the previous sixteen words */
        __m128i x = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
        m = w[i & 3] = _mm_sha256msg2_epu32(x, w[(i + 3) & 3]);
      }
      m = _mm_add_epi32(m, _mm_loadu_si128((const __m128i *)&K[4 * i]));
      st1 = _mm_sha256rnds2_epu32(st1, st0, m);
      st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(m, 0x0E));
    }
    st0 = _mm_add_epi32(st0, save0);
    st1 = _mm_add_epi32(st1, save1);
  }
  tmp = _mm_shuffle_epi32(st0, 0x1B);                  /* FEBA */
  st1 = _mm_shuffle_epi32(st1, 0xB1);                  /* DCHG */
  st0 = _mm_blend_epi16(tmp, st1, 0xF0);               /* DCBA */
  st1 = _mm_alignr_epi8(st1, tmp, 8);                  /* ABEF */
  _mm_storeu_si128((__m128i *)&h[0], st0);
  _mm_storeu_si128((__m128i *)&h[4], st1);
}
#endif

/* 0: portable; 1: SHA extensions. Decided once per process (the writer thread and an export may hash
 * at the same time); PREFCAP_SHA256_PORTABLE=1 forces the portable rounds (for the tests that compare
 * the two). */
static int sha_impl;
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

static void choose_impl(void) {
#ifdef HAVE_SHANI_PATH
  const char *force = getenv("PREFCAP_SHA256_PORTABLE");
  __builtin_cpu_init();
  sha_impl = (!force || strcmp(force, "1")) && __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
#endif
}

static void compress_blocks(uint32_t h[8], const uint8_t *p, size_t blocks) {
  pthread_once(&sha_once, choose_impl);
#ifdef HAVE_SHANI_PATH
  if (sha_impl == 1) { compress_shani(h, p, blocks); return; }
#endif
  for (; blocks--; p += 64) compress(h, p);
}

int prefcap__sha256_hw(void) {
  pthread_once(&sha_once, choose_impl);
  return sha_impl == 1;
}

void prefcap__sha256_init(prefcap__sha256_ctx *c) {
  static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
  memcpy(c->h, iv, sizeof iv);
  c->nbytes = 0;
  c->nbuf = 0;
}

void prefcap__sha256_update(prefcap__sha256_ctx *c, const void *data, size_t len) {
  const uint8_t *p = data;
  c->nbytes += len;
  if (c->nbuf) {
    size_t take = 64 - c->nbuf < len ? 64 - c->nbuf : len;
    memcpy(c->buf + c->nbuf, p, take);
    c->nbuf += take; p += take; len -= take;
    if (c->nbuf < 64) return;
    compress_blocks(c->h, c->buf, 1);
    c->nbuf = 0;
  }
  if (len >= 64) { compress_blocks(c->h, p, len / 64); p += len & ~(size_t)63; len &= 63; }
  if (len) { memcpy(c->buf, p, len); c->nbuf = len; }
}

void prefcap__sha256_final(prefcap__sha256_ctx *c, uint8_t out[32]) {
  uint64_t bits = c->nbytes * 8;
  uint8_t pad[72] = { 0x80 };
  /* pad to 56 mod 64, then the 64-bit big-endian length */
  size_t padlen = (c->nbuf < 56 ? 56 : 120) - c->nbuf;
  for (int i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
  uint64_t keep = c->nbytes;
  prefcap__sha256_update(c, pad, padlen + 8);
  c->nbytes = keep;
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(c->h[i] >> 24); out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(c->h[i] >> 8); out[4 * i + 3] = (uint8_t)c->h[i];
  }
}

void prefcap__sha256(const void *data, size_t len, uint8_t out[32]) {
  prefcap__sha256_ctx c;
  prefcap__sha256_init(&c);
  prefcap__sha256_update(&c, data, len);
  prefcap__sha256_final(&c, out);
}

// ---- HMAC ------------------------------------------------------------------------------------------
void prefcap__hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen, uint8_t out[32]) {
  uint8_t k[64] = { 0 }, pad[64], inner[32];
  if (keylen > 64) prefcap__sha256(key, keylen, k);   /* long keys are hashed first (RFC 2104) */
  else if (keylen) memcpy(k, key, keylen);
  prefcap__sha256_ctx c;
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  prefcap__sha256_init(&c);
  prefcap__sha256_update(&c, pad, 64);
  prefcap__sha256_update(&c, msg, msglen);
  prefcap__sha256_final(&c, inner);
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  prefcap__sha256_init(&c);
  prefcap__sha256_update(&c, pad, 64);
  prefcap__sha256_update(&c, inner, 32);
  prefcap__sha256_final(&c, out);
  memset(k, 0, sizeof k);   /* the key may be a signing secret */
  memset(pad, 0, sizeof pad);
}

// ---- hex -------------------------------------------------------------------------------------------
void prefcap__hex(const uint8_t *in, size_t len, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) { out[2 * i] = d[in[i] >> 4]; out[2 * i + 1] = d[in[i] & 15]; }
  out[2 * len] = 0;
}

void prefcap__sha256_hex(const void *data, size_t len, char out[65]) {
  uint8_t d[32];
  prefcap__sha256(data, len, d);
  prefcap__hex(d, 32, out);
}
