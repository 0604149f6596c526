/* trainer/train/refcache.c: see refcache.h (the keys, the pack format, the rules for damaged packs).
 *
 * In memory the cache is one open-addressing table of every good record of the model's packs plus
 * what this run adds; a lookup is a SHA-256 of the sequence and a probe. Packs are small (48 bytes a
 * sequence: 100k pairs make 9.6 MB), so reading them all at open is cheap next to loading a model. */
#include "train/refcache.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* Paths are built into fixed buffers; a path long enough to be cut is also too long to open. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define PROG "reference cache"
#define MAGIC "PCREFLP1"
#define HDR 64          /* magic 8, model key 32, record count 8 (LE), zeros 12, CRC-32 of bytes 0..59 4 */
#define REC 48          /* key 32, sum 8 (IEEE double bits, LE), count 4 (LE), CRC-32 of bytes 0..43 4 */
#define STALE_TMP_S (24 * 3600)  /* a temporary file this old belongs to a run that was killed */

typedef struct {
  uint8_t key[32];
  double sum;
  int32_t cnt;
  uint8_t used, write;  /* write: goes into this run's pack (new, or moved from a retired pack) */
} entry;

struct pc_refcache {
  char path[4200];      /* DIR/ref-v1/<model key> */
  char keyhex[65];
  uint8_t mkey[32];
  entry *tab;
  size_t cap, count;    /* cap: a power of two, kept >= 2 count */
  char **retire;        /* pack names to remove after this run's pack is in place */
  size_t nretire;
  pc_refcache_stats st;
};

// ---- little-endian fields and hashing --------------------------------------------------------------

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint32_t crc(const uint8_t *p, size_t n) { return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n); }

static void hex(const uint8_t *d, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static int sha256(const void *data, size_t n, uint8_t out[32]) {
  unsigned len = 0;
  return EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -1;
}

/* A sequence's key: SHA-256(model key, first scored position, length, ids), integers as LE int32. */
static int seq_key(const pc_refcache *c, const pc_model_seq *s, uint8_t out[32]) {
  EVP_MD_CTX *m = EVP_MD_CTX_new();
  uint8_t hdr[8], buf[4096];
  int from = s->score_from < 1 ? 1 : s->score_from;  // 0 and 1 score the same tokens (nothing predicts token 0)
  put32(hdr, (uint32_t)from);
  put32(hdr + 4, (uint32_t)s->n);
  int ok = m && EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(m, c->mkey, 32) == 1 &&
           EVP_DigestUpdate(m, hdr, 8) == 1;
  for (int i = 0; ok && i < s->n;) {
    size_t k = 0;
    for (; i < s->n && k + 4 <= sizeof buf; i++, k += 4) put32(buf + k, (uint32_t)s->ids[i]);
    ok = EVP_DigestUpdate(m, buf, k) == 1;
  }
  unsigned len = 0;
  ok = ok && EVP_DigestFinal_ex(m, out, &len) == 1 && len == 32;
  EVP_MD_CTX_free(m);
  return ok ? 0 : -1;
}

// ---- the table -------------------------------------------------------------------------------------

static entry *slot(pc_refcache *c, const uint8_t key[32]) {
  size_t h = (size_t)get64(key) & (c->cap - 1);
  while (c->tab[h].used && memcmp(c->tab[h].key, key, 32)) h = (h + 1) & (c->cap - 1);
  return &c->tab[h];
}

static int grow(pc_refcache *c) {
  if (2 * (c->count + 1) <= c->cap) return 0;
  size_t ocap = c->cap;
  entry *old = c->tab;
  c->cap = ocap ? 2 * ocap : 1024;
  if (!(c->tab = calloc(c->cap, sizeof *c->tab))) { c->tab = old; c->cap = ocap; return -1; }
  for (size_t i = 0; i < ocap; i++)
    if (old[i].used) *slot(c, old[i].key) = old[i];
  free(old);
  return 0;
}

/* Adds a record unless its key is held (the first value stays). -1 when out of memory. */
static int add(pc_refcache *c, const uint8_t key[32], double sum, int32_t cnt, int write) {
  if (grow(c) != 0) return -1;
  entry *e = slot(c, key);
  if (e->used) return 0;
  *e = (entry){.sum = sum, .cnt = cnt, .used = 1, .write = (uint8_t)write};
  memcpy(e->key, key, 32);
  c->count++;
  return 0;
}

// ---- the model key ---------------------------------------------------------------------------------

/* Appends "name sha256\n" (or "name absent\n") for dir/name to the identity text; -1 when the file
 * exists but cannot be read. */
static int ident_file(char **txt, size_t *len, const char *dir, const char *name, char *why, size_t whylen) {
  char path[4200], h[65], line[400];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (pc_sha256_file(path, h) != 0) {
    if (errno != ENOENT) { snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno)); return -1; }
    strcpy(h, "absent");
  }
  int n = snprintf(line, sizeof line, "file %s %s\n", name, h);
  char *t = realloc(*txt, *len + (size_t)n + 1);
  if (!t) { snprintf(why, whylen, "out of memory"); return -1; }
  memcpy(t + *len, line, (size_t)n + 1);
  *txt = t;
  *len += (size_t)n;
  return 0;
}

static int is_safetensors(const struct dirent *d) {
  size_t l = strlen(d->d_name);
  return l > 12 && !strcmp(d->d_name + l - 12, ".safetensors");
}

static int model_key(const pc_refcache_ident *id, uint8_t out[32], char *why, size_t whylen) {
  static const char *tok_files[] = {"config.json", "model.safetensors.index.json", "tokenizer.json",
                                    "tokenizer_config.json", "special_tokens_map.json", "chat_template.json",
                                    "chat_template.jinja"};
  size_t len = 0;
  char *txt = NULL;
  int n = asprintf(&txt, "prefcap reference log-prob cache 1\nnumerics %s\ntokenization %s\nadapter %s\n", id->numerics,
                   id->tokenization, id->adapter_dir ? "merged" : "none");
  if (n < 0) { snprintf(why, whylen, "out of memory"); return -1; }
  len = (size_t)n;
  int rc = 0;
  for (size_t i = 0; !rc && i < sizeof tok_files / sizeof *tok_files; i++)
    rc = ident_file(&txt, &len, id->model_dir, tok_files[i], why, whylen);
  struct dirent **list = NULL;
  int nw = rc ? 0 : scandir(id->model_dir, &list, is_safetensors, alphasort);
  if (nw < 0) { snprintf(why, whylen, "%s: cannot list: %s", id->model_dir, strerror(errno)); rc = -1; }
  for (int i = 0; i < nw; i++) {
    if (!rc) rc = ident_file(&txt, &len, id->model_dir, list[i]->d_name, why, whylen);
    free(list[i]);
  }
  free(list);
  if (!rc && id->adapter_dir) {
    rc = ident_file(&txt, &len, id->adapter_dir, "adapter_config.json", why, whylen);
    if (!rc) rc = ident_file(&txt, &len, id->adapter_dir, "adapter_model.safetensors", why, whylen);
  }
  if (!rc && sha256(txt, len, out) != 0) { snprintf(why, whylen, "SHA-256 failed"); rc = -1; }
  free(txt);
  return rc;
}

// ---- reading the packs -----------------------------------------------------------------------------

static int is_pack(const struct dirent *d) {
  size_t l = strlen(d->d_name);
  return l == 64 + 5 && !strcmp(d->d_name + 64, ".pack");
}

static int retire(pc_refcache *c, const char *name) {
  char **r = realloc(c->retire, sizeof *r * (c->nretire + 1));
  if (!r) return -1;
  c->retire = r;
  if (!(r[c->nretire] = strdup(name))) return -1;
  c->nretire++;
  return 0;
}

/* Reads one pack; its good records enter the table, marked for this run's pack when merge is set or
 * the pack is damaged (it will be removed). Returns how many records it lost (corrupt, cut off by a
 * truncation, or 1 for a bad header or trailing bytes), 0 for a sound pack. */
static size_t read_pack(pc_refcache *c, const char *name, int merge, FILE *log) {
  char path[4300];
  snprintf(path, sizeof path, "%s/%s", c->path, name);
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;  // removed by another run between the listing and now: nothing lost
  struct stat sb;
  uint8_t *b = NULL;
  size_t size = 0, lost = 0;
  ssize_t r = 0;
  if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (b = malloc((size_t)sb.st_size + 1)))
    while (size < (size_t)sb.st_size && (r = read(fd, b + size, (size_t)sb.st_size - size)) > 0) size += (size_t)r;
  close(fd);
  if (!b || r < 0) {  // not the pack's fault (memory, an I/O error): left alone, not used this time
    if (log) fprintf(log, PROG ": warning: %s: cannot read; not used\n", path);
    free(b);
    return 0;
  }
  if (size < HDR || memcmp(b, MAGIC, 8) || get32(b + 60) != crc(b, 60) || memcmp(b + 8, c->mkey, 32)) {
    if (log) fprintf(log, PROG ": warning: %s: damaged header (or not a pack of this model); not trusted, removed\n", path);
    free(b);
    return 1;
  }
  uint64_t nrec = get64(b + 48), whole = (size - HDR) / REC;
  if (whole > nrec) whole = nrec;
  for (uint64_t i = 0; i < whole; i++) lost += get32(b + HDR + i * REC + 44) != crc(b + HDR + i * REC, 44);
  int truncated = whole < nrec;
  lost += (size_t)(nrec - whole);
  if (size != HDR + nrec * REC && !lost) lost = 1;  // trailing bytes: not what was written
  for (uint64_t i = 0; i < whole; i++) {
    const uint8_t *p = b + HDR + i * REC;
    if (get32(p + 44) != crc(p, 44)) continue;
    uint64_t bits = get64(p + 32);
    double sum;
    memcpy(&sum, &bits, sizeof sum);
    if (add(c, p, sum, (int32_t)get32(p + 40), merge || lost) == 0) c->st.loaded++;
  }
  if (lost && log)
    fprintf(log, PROG ": warning: %s: %zu of %llu entries damaged (%s); they are recomputed, not trusted\n", path,
            lost, (unsigned long long)nrec, truncated ? "truncated" : "checksum mismatch");
  free(b);
  return lost;
}

/* Removes temporary files left by killed runs (older than a day: a live run's is minutes old). */
static void sweep_tmp(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  time_t now = time(NULL);
  while (d && (e = readdir(d))) {
    if (strncmp(e->d_name, ".tmp-", 5)) continue;
    struct stat sb;
    if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && now - sb.st_mtime > STALE_TMP_S)
      unlinkat(dirfd(d), e->d_name, 0);
  }
  if (d) closedir(d);
}

static int mkdir_0700(const char *p) { return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1; }

pc_refcache *pc_refcache_open(const char *dir, const pc_refcache_ident *id, FILE *log) {
  pc_refcache *c = calloc(1, sizeof *c);
  char why[4400] = "out of memory", top[4200];
  if (!c || model_key(id, c->mkey, why, sizeof why) != 0) goto fail;
  hex(c->mkey, 32, c->keyhex);
  snprintf(top, sizeof top, "%s/ref-v1", dir);
  snprintf(c->path, sizeof c->path, "%s/%s", top, c->keyhex);
  // DIR itself as mkdir -p makes it (it may be shared, ~/.cache/prefcap); ours below it 0700
  if (pc_mkdir_p(dir) != 0 || mkdir_0700(top) != 0 || mkdir_0700(c->path) != 0) {
    snprintf(why, sizeof why, "cannot create %s: %s", c->path, strerror(errno));
    goto fail;
  }
  sweep_tmp(c->path);
  struct dirent **list = NULL;
  int n = scandir(c->path, &list, is_pack, alphasort);
  if (n < 0) { snprintf(why, sizeof why, "cannot list %s: %s", c->path, strerror(errno)); goto fail; }
  int merge = n > PC_REFCACHE_MAX_PACKS;  // too many packs: this run's pack takes them all in
  for (int i = 0; i < n; i++) {
    size_t lost = read_pack(c, list[i]->d_name, merge, log);
    c->st.damaged += lost;
    // a pack that is retired only if its records are in this run's pack (retire failing: keep it)
    if (lost || merge) retire(c, list[i]->d_name);
    free(list[i]);
  }
  free(list);
  return c;
fail:
  if (log) fprintf(log, PROG ": warning: %s; running without the reference cache\n", why);
  pc_refcache_close(c);
  return NULL;
}

// ---- lookups and stores ----------------------------------------------------------------------------

size_t pc_refcache_get(pc_refcache *c, const pc_model_seq *seqs, size_t n, double *sum, int *cnt, char *hit) {
  size_t found = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t key[32];
    entry *e = c->cap && seq_key(c, &seqs[i], key) == 0 ? slot(c, key) : NULL;
    int from = seqs[i].score_from < 1 ? 1 : seqs[i].score_from, want = seqs[i].n > from ? seqs[i].n - from : 0;
    hit[i] = e && e->used && e->cnt == want;  // a count that cannot be this sequence's: not trusted
    if (e && e->used && !hit[i]) c->st.damaged++;
    if (hit[i]) {
      sum[i] = e->sum;
      cnt[i] = e->cnt;
      found++;
    }
  }
  c->st.hits += found;
  c->st.misses += n - found;
  return found;
}

int pc_refcache_put(pc_refcache *c, const pc_model_seq *seqs, size_t n, const double *sum, const int *cnt) {
  for (size_t i = 0; i < n; i++) {
    uint8_t key[32];
    if (seq_key(c, &seqs[i], key) != 0 || add(c, key, sum[i], cnt[i], 1) != 0) return -1;
  }
  return 0;
}

static int cmp_key(const void *a, const void *b) { return memcmp(((const entry *)a)->key, ((const entry *)b)->key, 32); }

static void fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) { fsync(fd); close(fd); }
}

/* The pack of the entries marked for writing, sorted by key (the same entries make the same bytes,
 * and so the same name). NULL when out of memory; *len its size, *nrec its records. */
static uint8_t *build_pack(const pc_refcache *c, size_t *len, size_t *nrec) {
  size_t n = 0;
  for (size_t i = 0; i < c->cap; i++) n += c->tab[i].used && c->tab[i].write;
  entry *es = malloc(sizeof *es * (n + 1));
  uint8_t *b = malloc(HDR + REC * n);
  if (!es || !b) { free(es); free(b); return NULL; }
  n = 0;
  for (size_t i = 0; i < c->cap; i++)
    if (c->tab[i].used && c->tab[i].write) es[n++] = c->tab[i];
  qsort(es, n, sizeof *es, cmp_key);
  memset(b, 0, HDR);
  memcpy(b, MAGIC, 8);
  memcpy(b + 8, c->mkey, 32);
  put64(b + 48, n);
  put32(b + 60, crc(b, 60));
  for (size_t i = 0; i < n; i++) {
    uint8_t *p = b + HDR + i * REC;
    uint64_t bits;
    memcpy(&bits, &es[i].sum, sizeof bits);
    memcpy(p, es[i].key, 32);
    put64(p + 32, bits);
    put32(p + 40, (uint32_t)es[i].cnt);
    put32(p + 44, crc(p, 44));
  }
  free(es);
  *len = HDR + REC * n;
  *nrec = n;
  return b;
}

/* Writes b to a temporary file beside the packs, fsynced, renamed to name = <SHA-256>.pack. 0 or -1
 * (errno set). */
static int write_pack(const pc_refcache *c, const uint8_t *b, size_t len, char name[80]) {
  uint8_t d[32];
  char final[4400], tmp[4400];
  if (sha256(b, len, d) != 0) { errno = ENOMEM; return -1; }
  hex(d, 32, name);
  strcat(name, ".pack");
  snprintf(final, sizeof final, "%s/%s", c->path, name);
  int fd = -1;
  uint64_t s = (uint64_t)getpid() ^ ((uint64_t)time(NULL) << 20) ^ (uint64_t)(uintptr_t)&fd;
  for (int tries = 0; fd < 0 && tries < 16; tries++) {
    snprintf(tmp, sizeof tmp, "%s/.tmp-%d-%016llx", c->path, (int)getpid(), (unsigned long long)pc_splitmix64(&s));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) return -1;
  }
  if (fd < 0) return -1;
  size_t off = 0;
  ssize_t w = 0;
  while (off < len && (w = write(fd, b + off, len - off)) > 0) off += (size_t)w;
  int e = off == len ? 0 : w < 0 ? errno : EIO;
  if (!e && fsync(fd) != 0) e = errno;
  if (close(fd) != 0 && !e) e = errno;
  if (!e && rename(tmp, final) != 0) e = errno;
  if (e) { unlink(tmp); errno = e; return -1; }
  fsync_dir(c->path);
  return 0;
}

void pc_refcache_commit(pc_refcache *c, FILE *log) {
  if (!c) return;
  size_t len, nrec;
  uint8_t *b = build_pack(c, &len, &nrec);
  if (!b) { c->st.write_failed = 1; if (log) fprintf(log, PROG ": warning: out of memory; nothing stored\n"); return; }
  if (nrec || c->nretire) {  // nothing new and nothing retired: no pack (an empty one when all were damaged)
    char name[80];
    if (write_pack(c, b, len, name) != 0) {
      c->st.write_failed = 1;
      if (log) fprintf(log, PROG ": warning: cannot write in %s: %s; this run's %zu entries are not cached\n", c->path,
                       strerror(errno), nrec);
    } else {
      c->st.stored = nrec;
      char path[4400];
      for (size_t i = 0; i < c->nretire; i++) {  // their good records are in the new pack now
        snprintf(path, sizeof path, "%s/%s", c->path, c->retire[i]);
        if (strcmp(c->retire[i], name)) unlink(path);  // (a merge can rebuild a pack byte for byte)
      }
      if (c->nretire) fsync_dir(c->path);
      for (size_t i = 0; i < c->cap; i++) c->tab[i].write = 0;
    }
  }
  free(b);
}

const pc_refcache_stats *pc_refcache_get_stats(const pc_refcache *c) { return &c->st; }
const char *pc_refcache_path(const pc_refcache *c) { return c->path; }
const char *pc_refcache_model_key(const pc_refcache *c) { return c->keyhex; }

void pc_refcache_close(pc_refcache *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nretire; i++) free(c->retire[i]);
  free(c->retire);
  free(c->tab);
  free(c);
}
