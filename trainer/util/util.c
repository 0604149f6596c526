/* trainer/util/util.c: see util.h. */
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint64_t pc_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double pc_rand_unit(uint64_t *s) { return ((pc_splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

int pc_copy_file(const char *src, const char *dst) {
  FILE *in = fopen(src, "rb");
  if (!in) return errno == ENOENT ? 1 : -1;
  FILE *out = fopen(dst, "wb");
  if (!out) { fclose(in); return -1; }
  char buf[65536];
  size_t n;
  int bad = 0;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0)
    if (fwrite(buf, 1, n, out) != n) { bad = 1; break; }
  if (ferror(in)) bad = 1;
  fclose(in);
  if (fclose(out) != 0) bad = 1;
  return bad ? -1 : 0;
}

int pc_mkdir_p(const char *dir) {
  char p[4096];
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) { errno = ENAMETOOLONG; return -1; }
  for (char *s = p + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
      *s = '/';
    }
  return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int pc_parse_int(const char *s, int lo, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > INT_MAX) return -1;
  *out = (int)v;
  return 0;
}

int pc_sha256_file(const char *path, char hex[65]) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
  unsigned char buf[1 << 16], d[EVP_MAX_MD_SIZE];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = EVP_DigestUpdate(c, buf, n) == 1;
  unsigned dl = 0;
  if (ferror(f)) { ok = 0; errno = EIO; }
  if (ok) ok = EVP_DigestFinal_ex(c, d, &dl) == 1 && dl == 32;
  EVP_MD_CTX_free(c);
  fclose(f);
  if (!ok) return -1;
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return 0;
}
