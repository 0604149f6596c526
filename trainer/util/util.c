/* trainer/util/util.c: see util.h. */
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
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

/* Files already hashed by this process, by identity: a run hashes the model's weights for the
 * reference cache's key and again for run.json (and a rebuilt run a third time to check them), which
 * for a 140 GB checkpoint is minutes each. A file is the same when its device, inode, size, mtime and
 * ctime are: a rewrite in place changes ctime (which, unlike mtime, no one can set back), a rename over
 * it changes the inode. Only within one process: across runs the bytes are hashed again (refcache.h). */
#define SHA_MEMO 64
static struct { struct stat st; char hex[65]; } sha_memo[SHA_MEMO];
static int sha_memo_n, sha_memo_next;
static size_t sha_files_read;
static pthread_mutex_t sha_mu = PTHREAD_MUTEX_INITIALIZER;

static int same_file(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
         a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

size_t pc_sha256_files_read(void) {
  pthread_mutex_lock(&sha_mu);
  size_t n = sha_files_read;
  pthread_mutex_unlock(&sha_mu);
  return n;
}

int pc_sha256_file(const char *path, char hex[65]) {
  struct stat before, after;
  if (stat(path, &before) == 0 && S_ISREG(before.st_mode)) {   // known: not even opened
    pthread_mutex_lock(&sha_mu);
    for (int i = 0; i < sha_memo_n; i++)
      if (same_file(&before, &sha_memo[i].st)) {
        memcpy(hex, sha_memo[i].hex, 65);
        pthread_mutex_unlock(&sha_mu);
        return 0;
      }
    pthread_mutex_unlock(&sha_mu);
  }
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  int regular = fstat(fileno(f), &before) == 0 && S_ISREG(before.st_mode);   // what is read is what is remembered
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
  unsigned char buf[1 << 16], d[EVP_MAX_MD_SIZE];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = EVP_DigestUpdate(c, buf, n) == 1;
  unsigned dl = 0;
  if (ferror(f)) { ok = 0; errno = EIO; }
  if (ok) ok = EVP_DigestFinal_ex(c, d, &dl) == 1 && dl == 32;
  EVP_MD_CTX_free(c);
  // remembered only when nothing changed while it was read
  if (ok && regular && (fstat(fileno(f), &after) != 0 || !same_file(&before, &after))) regular = 0;
  fclose(f);
  pthread_mutex_lock(&sha_mu);
  sha_files_read++;
  pthread_mutex_unlock(&sha_mu);
  if (!ok) return -1;
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  if (regular) {
    pthread_mutex_lock(&sha_mu);
    int i = sha_memo_n < SHA_MEMO ? sha_memo_n++ : sha_memo_next++ % SHA_MEMO;
    sha_memo[i].st = before;
    memcpy(sha_memo[i].hex, hex, 65);
    pthread_mutex_unlock(&sha_mu);
  }
  return 0;
}
