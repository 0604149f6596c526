/* trainer/model/safetensors.c: memory-mapped safetensors files, their validation, sharded checkpoints,
 * dtype conversion to float32, and a writer.
 *
 * The header is untrusted: every number in it is checked against the file before a tensor is handed
 * out, so that a truncated download or a header that lies becomes an error naming the file and the
 * tensor instead of a read past the mapping. */
#include "model/safetensors.h"
#include "util/err.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct pc_st_file {
  char *path;
  void *map;
  size_t size;
  pc_st_tensor *ts;     /* sorted by name */
  char **names;
  int n;
  cJSON *meta;          /* "__metadata__" or NULL */
  cJSON *root;
};

struct pc_ckpt {
  pc_st_file **files;
  int nfiles;
  /* All tensors of all shards, sorted by name (pointers into the files). */
  const pc_st_tensor **all;
  int nall;
};


// ---- dtypes -------------------------------------------------------------------------------------

static const struct { const char *name; size_t size; } DTYPES[PC_DT_COUNT] = {
  [PC_DT_F32] = {"F32", 4}, [PC_DT_F16] = {"F16", 2}, [PC_DT_BF16] = {"BF16", 2},
  [PC_DT_F64] = {"F64", 8}, [PC_DT_I64] = {"I64", 8}, [PC_DT_I32] = {"I32", 4},
  [PC_DT_I16] = {"I16", 2}, [PC_DT_I8] = {"I8", 1}, [PC_DT_U8] = {"U8", 1}, [PC_DT_BOOL] = {"BOOL", 1},
  [PC_DT_F8_E4M3] = {"F8_E4M3", 1}, [PC_DT_F8_E5M2] = {"F8_E5M2", 1}, [PC_DT_U16] = {"U16", 2},
  [PC_DT_U32] = {"U32", 4}, [PC_DT_U64] = {"U64", 8},
};

const char *pc_dtype_name(pc_dtype dt) { return (unsigned)dt < PC_DT_COUNT ? DTYPES[dt].name : "?"; }
size_t pc_dtype_size(pc_dtype dt) { return (unsigned)dt < PC_DT_COUNT ? DTYPES[dt].size : 0; }

int pc_dtype_from_name(const char *name, pc_dtype *out) {
  for (int i = 0; i < PC_DT_COUNT; i++)
    if (strcmp(DTYPES[i].name, name) == 0) { *out = (pc_dtype)i; return 0; }
  return -1;
}

float pc_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float pc_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else {  // subnormal: renormalise
      int e = -1;
      do { e++; man <<= 1; } while (!(man & 0x400));
      u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t pc_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

uint16_t pc_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000, au = u & 0x7fffffffu;
  if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00);
  if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to inf
  if (au < 0x38800000u) {                                     // subnormal or zero in f16
    float a;
    memcpy(&a, &au, 4);
    // Scale so that the f16 subnormal unit (2^-24) becomes 1, then round to nearest even.
    float s = a * 16777216.0f;
    uint32_t m = (uint32_t)s;
    float rem = s - (float)m;
    if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t r = au + 0xfff + ((au >> 13) & 1);
  r -= (uint32_t)(127 - 15) << 23;
  return (uint16_t)(sign | (r >> 13));
}

// ---- one file -----------------------------------------------------------------------------------

static int cmp_tensor(const void *a, const void *b) {
  return strcmp(((const pc_st_tensor *)a)->name, ((const pc_st_tensor *)b)->name);
}

typedef struct { uint64_t begin, end; const char *name; } range;
static int cmp_range(const void *a, const void *b) {
  const range *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* Reads a JSON number that must be a non-negative integer (as a double it is exact below 2^53). */
static int json_u64(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return -1;
  double d = j->valuedouble;
  if (!(d >= 0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
  *out = (uint64_t)d;
  return 0;
}

void pc_st_close(pc_st_file *f) {
  if (!f) return;
  if (f->map && f->map != MAP_FAILED) munmap(f->map, f->size);
  cJSON_Delete(f->root);
  free(f->ts);
  free(f->path);
  free(f);
}

int pc_st_open(const char *path, pc_st_file **out, char *err, size_t errlen) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return -1; }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    pc_seterr(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  pc_st_file *f = calloc(1, sizeof *f);
  if (!f) { close(fd); pc_seterr(err, errlen, "%s: out of memory", path); return -1; }
  f->path = strdup(path);
  f->size = (size_t)st.st_size;
  if (f->size < 8) {
    pc_seterr(err, errlen, "%s: truncated safetensors file: %zu bytes, too short for the 8-byte header length",
           path, f->size);
    goto fail_fd;
  }
  f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (f->map == MAP_FAILED) {
    pc_seterr(err, errlen, "%s: cannot mmap: %s", path, strerror(errno));
    goto fail_fd;
  }
  close(fd);
  fd = -1;

  const unsigned char *p = f->map;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
  if (hlen > f->size - 8) {
    pc_seterr(err, errlen, "%s: truncated safetensors file: header length %" PRIu64 " but only %zu bytes follow",
           path, hlen, f->size - 8);
    goto fail;
  }
  if (hlen > 100u * 1024 * 1024) {
    pc_seterr(err, errlen, "%s: safetensors header of %" PRIu64 " bytes is larger than the 100 MB limit", path, hlen);
    goto fail;
  }
  f->root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
  if (!f->root || !cJSON_IsObject(f->root)) {
    pc_seterr(err, errlen, "%s: safetensors header is not a JSON object", path);
    goto fail;
  }
  uint64_t data_size = f->size - 8 - hlen;
  const unsigned char *data = p + 8 + hlen;
  int n = 0;
  for (cJSON *it = f->root->child; it; it = it->next) n++;
  f->ts = calloc((size_t)(n ? n : 1), sizeof *f->ts);
  range *rs = calloc((size_t)(n ? n : 1), sizeof *rs);
  if (!f->ts || !rs) { free(rs); pc_seterr(err, errlen, "%s: out of memory", path); goto fail; }
  int nr = 0;
  for (cJSON *it = f->root->child; it; it = it->next) {
    const char *name = it->string;
    if (strcmp(name, "__metadata__") == 0) { f->meta = it; continue; }
    if (!cJSON_IsObject(it)) {
      pc_seterr(err, errlen, "%s: tensor '%s': header entry is not an object", path, name);
      free(rs);
      goto fail;
    }
    pc_st_tensor *t = &f->ts[f->n];
    t->name = name;
    t->file = f->path;
    cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
    cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(jd) || pc_dtype_from_name(jd->valuestring, &t->dtype) != 0) {
      pc_seterr(err, errlen, "%s: tensor '%s': unknown or missing dtype %s%s%s", path, name,
             cJSON_IsString(jd) ? "'" : "", cJSON_IsString(jd) ? jd->valuestring : "", cJSON_IsString(jd) ? "'" : "");
      free(rs);
      goto fail;
    }
    if (!cJSON_IsArray(js) || cJSON_GetArraySize(js) > PC_ST_MAX_DIMS) {
      pc_seterr(err, errlen, "%s: tensor '%s': shape is missing or has more than %d dims", path, name, PC_ST_MAX_DIMS);
      free(rs);
      goto fail;
    }
    uint64_t numel = 1;
    int overflow = 0;
    for (cJSON *d = js->child; d; d = d->next) {
      uint64_t v;
      if (json_u64(d, &v) != 0) {
        pc_seterr(err, errlen, "%s: tensor '%s': shape holds a value that is not a non-negative integer", path, name);
        free(rs);
        goto fail;
      }
      t->shape[t->ndim++] = (int64_t)v;
      if (v && numel > UINT64_MAX / v) overflow = 1;
      numel *= v;
    }
    uint64_t b, e;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || json_u64(jo->child, &b) || json_u64(jo->child->next, &e) || e < b) {
      pc_seterr(err, errlen, "%s: tensor '%s': data_offsets must be [begin, end] with begin <= end", path, name);
      free(rs);
      goto fail;
    }
    size_t es = pc_dtype_size(t->dtype);
    if (overflow || numel > UINT64_MAX / es || numel * es != e - b) {
      char shp[160] = "";
      for (int d = 0; d < t->ndim; d++)
        snprintf(shp + strlen(shp), sizeof shp - strlen(shp), "%s%" PRId64, d ? ", " : "", t->shape[d]);
      pc_seterr(err, errlen, "%s: tensor '%s': header lies: dtype %s with shape [%s] needs %" PRIu64
             " bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64,
             path, name, pc_dtype_name(t->dtype), shp, overflow ? UINT64_MAX : numel * es, b, e, e - b);
      free(rs);
      goto fail;
    }
    if (e > data_size) {
      pc_seterr(err, errlen, "%s: truncated safetensors file: tensor '%s' needs data bytes [%" PRIu64 ", %" PRIu64
             ") but the file has only %" PRIu64 " data bytes", path, name, b, e, data_size);
      free(rs);
      goto fail;
    }
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)(e - b);
    t->data = data + b;
    rs[nr++] = (range){b, e, name};
    f->n++;
  }
  qsort(rs, (size_t)nr, sizeof *rs, cmp_range);
  // Empty tensors occupy no bytes; among the others, each must start at or after the furthest end
  // seen so far (comparing with the furthest end, not just the neighbour, catches nested ranges).
  int far = -1;
  for (int i = 0; i < nr; i++) {
    if (rs[i].end == rs[i].begin) continue;
    if (far >= 0 && rs[i].begin < rs[far].end) {
      pc_seterr(err, errlen, "%s: header lies: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64
             ") overlap", path, rs[far].name, rs[far].begin, rs[far].end, rs[i].name, rs[i].begin, rs[i].end);
      free(rs);
      goto fail;
    }
    if (far < 0 || rs[i].end > rs[far].end) far = i;
  }
  free(rs);
  qsort(f->ts, (size_t)f->n, sizeof *f->ts, cmp_tensor);
  for (int i = 1; i < f->n; i++)
    if (strcmp(f->ts[i].name, f->ts[i - 1].name) == 0) {
      pc_seterr(err, errlen, "%s: tensor '%s' appears twice in the header", path, f->ts[i].name);
      goto fail;
    }
  *out = f;
  return 0;
fail_fd:
  if (fd >= 0) close(fd);
fail:
  pc_st_close(f);
  return -1;
}


const pc_st_tensor *pc_st_find(const pc_st_file *f, const char *name) {
  pc_st_tensor key = {.name = name};
  return bsearch(&key, f->ts, (size_t)f->n, sizeof *f->ts, cmp_tensor);
}

const char *pc_st_metadata(const pc_st_file *f, const char *key) {
  if (!f->meta) return NULL;
  cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

// ---- checkpoints --------------------------------------------------------------------------------

static int cmp_tensor_ptr(const void *a, const void *b) {
  return strcmp((*(const pc_st_tensor *const *)a)->name, (*(const pc_st_tensor *const *)b)->name);
}

void pc_ckpt_close(pc_ckpt *c) {
  if (!c) return;
  for (int i = 0; i < c->nfiles; i++) pc_st_close(c->files[i]);
  free(c->files);
  free(c->all);
  free(c);
}

static int add_file(pc_ckpt *c, pc_st_file *f) {
  pc_st_file **nf = realloc(c->files, sizeof *nf * (size_t)(c->nfiles + 1));
  if (!nf) return -1;
  c->files = nf;
  c->files[c->nfiles++] = f;
  return 0;
}

static int index_all(pc_ckpt *c, const char *where, char *err, size_t errlen) {
  for (int i = 0; i < c->nfiles; i++) c->nall += c->files[i]->n;
  c->all = calloc((size_t)(c->nall ? c->nall : 1), sizeof *c->all);
  if (!c->all) { pc_seterr(err, errlen, "out of memory"); return -1; }
  int k = 0;
  for (int i = 0; i < c->nfiles; i++)
    for (int j = 0; j < c->files[i]->n; j++) c->all[k++] = &c->files[i]->ts[j];
  qsort(c->all, (size_t)c->nall, sizeof *c->all, cmp_tensor_ptr);
  for (int i = 1; i < c->nall; i++)
    if (strcmp(c->all[i]->name, c->all[i - 1]->name) == 0) {
      pc_seterr(err, errlen, "%s: tensor '%s' is in both %s and %s", where, c->all[i]->name, c->all[i - 1]->file, c->all[i]->file);
      return -1;
    }
  return 0;
}

int pc_ckpt_open_file(const char *path, pc_ckpt **out, char *err, size_t errlen) {
  *out = NULL;
  pc_ckpt *c = calloc(1, sizeof *c);
  pc_st_file *f = NULL;
  if (!c) { pc_seterr(err, errlen, "%s: out of memory", path); return -1; }
  if (pc_st_open(path, &f, err, errlen) != 0 || add_file(c, f) != 0 || index_all(c, path, err, errlen) != 0) {
    if (f && c->nfiles == 0) pc_st_close(f);
    pc_ckpt_close(c);
    return -1;
  }
  *out = c;
  return 0;
}

int pc_ckpt_open(const char *dir, pc_ckpt **out, char *err, size_t errlen) {
  *out = NULL;
  pc_ckpt *c = calloc(1, sizeof *c);
  if (!c) { pc_seterr(err, errlen, "%s: out of memory", dir); return -1; }
  char path[4096], idx[4096];
  snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  cJSON *index = NULL;
  if (access(path, F_OK) == 0) {
    pc_st_file *f;
    if (pc_st_open(path, &f, err, errlen) != 0) goto fail;
    if (add_file(c, f) != 0) { pc_st_close(f); pc_seterr(err, errlen, "out of memory"); goto fail; }
  } else if (access(idx, F_OK) == 0) {
    char *txt = pc_read_file(idx, NULL, NULL);
    if (!txt) { pc_seterr(err, errlen, "%s: cannot read: %s", idx, strerror(errno)); goto fail; }
    index = cJSON_Parse(txt);
    free(txt);
    cJSON *wm = index ? cJSON_GetObjectItemCaseSensitive(index, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
      pc_seterr(err, errlen, "%s: not JSON with a \"weight_map\" object", idx);
      goto fail;
    }
    // Open each distinct shard once, in the order the map first names it.
    for (cJSON *it = wm->child; it; it = it->next) {
      if (!cJSON_IsString(it) || strchr(it->valuestring, '/')) {
        pc_seterr(err, errlen, "%s: weight_map entry for '%s' is not a file name in the same directory", idx, it->string);
        goto fail;
      }
      int seen = 0;
      for (int i = 0; i < c->nfiles && !seen; i++) {
        const char *base = strrchr(c->files[i]->path, '/');
        seen = strcmp(base ? base + 1 : c->files[i]->path, it->valuestring) == 0;
      }
      if (seen) continue;
      snprintf(path, sizeof path, "%s/%s", dir, it->valuestring);
      if (access(path, F_OK) != 0) {
        pc_seterr(err, errlen, "%s: missing shard: %s (listed for tensor '%s') does not exist", idx, path, it->string);
        goto fail;
      }
      pc_st_file *f;
      if (pc_st_open(path, &f, err, errlen) != 0) goto fail;
      if (add_file(c, f) != 0) { pc_st_close(f); pc_seterr(err, errlen, "out of memory"); goto fail; }
    }
  } else {
    pc_seterr(err, errlen, "%s: no model.safetensors and no model.safetensors.index.json", dir);
    goto fail;
  }
  if (index_all(c, dir, err, errlen) != 0) goto fail;
  if (index) {  // every tensor the index names must be in the shard it names
    cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    for (cJSON *it = wm->child; it; it = it->next) {
      const pc_st_tensor *t = pc_ckpt_find(c, it->string);
      const char *base = t ? strrchr(t->file, '/') : NULL;
      if (!t || strcmp(base ? base + 1 : t->file, it->valuestring) != 0) {
        pc_seterr(err, errlen, "%s: lists tensor '%s' in shard %s, but that shard does not hold it", idx, it->string, it->valuestring);
        goto fail;
      }
    }
    cJSON_Delete(index);
  }
  *out = c;
  return 0;
fail:
  cJSON_Delete(index);
  pc_ckpt_close(c);
  return -1;
}

const pc_st_tensor *pc_ckpt_find(const pc_ckpt *c, const char *name) {
  pc_st_tensor key = {.name = name};
  const pc_st_tensor *kp = &key;
  const pc_st_tensor **r = bsearch(&kp, c->all, (size_t)c->nall, sizeof *c->all, cmp_tensor_ptr);
  return r ? *r : NULL;
}
int pc_ckpt_count(const pc_ckpt *c) { return c->nall; }
const pc_st_tensor *pc_ckpt_at(const pc_ckpt *c, int i) { return i >= 0 && i < c->nall ? c->all[i] : NULL; }

// ---- conversion ---------------------------------------------------------------------------------

int pc_tensor_to_f32(const pc_st_tensor *t, float *out, char *err, size_t errlen) {
  const unsigned char *p = t->data;
  size_t n = (size_t)t->numel;
  switch (t->dtype) {
  case PC_DT_F32: memcpy(out, p, n * 4); return 0;
  case PC_DT_BF16:
    for (size_t i = 0; i < n; i++) out[i] = pc_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    return 0;
  case PC_DT_F16:
    for (size_t i = 0; i < n; i++) out[i] = pc_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    return 0;
  default:
    pc_seterr(err, errlen, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 are supported",
           t->file, t->name, pc_dtype_name(t->dtype));
    return -1;
  }
}

int pc_tensor_check_shape(const pc_st_tensor *t, int ndim, const int64_t *dims, char *err, size_t errlen) {
  int ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
  if (ok) return 0;
  char want[160] = "", got[160] = "";
  for (int i = 0; i < ndim; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, i ? ", " : "", dims[i]);
  for (int i = 0; i < t->ndim; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, i ? ", " : "", t->shape[i]);
  pc_seterr(err, errlen, "%s: tensor '%s': shape mismatch: config.json implies [%s], the file has [%s]",
         t->file, t->name, want, got);
  return -1;
}

// ---- writing ------------------------------------------------------------------------------------

int pc_st_write(const char *path, const pc_st_write_tensor *ts, int n, pc_dtype dtype, char *err, size_t errlen) {
  if (dtype != PC_DT_F32 && dtype != PC_DT_F16 && dtype != PC_DT_BF16) {
    pc_seterr(err, errlen, "%s: cannot write dtype %s", path, pc_dtype_name(dtype));
    return -1;
  }
  size_t es = pc_dtype_size(dtype);
  cJSON *root = cJSON_CreateObject();
  cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
  cJSON_AddStringToObject(meta, "format", "pt");
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    cJSON *o = cJSON_AddObjectToObject(root, ts[i].name);
    cJSON_AddStringToObject(o, "dtype", pc_dtype_name(dtype));
    cJSON *s = cJSON_AddArrayToObject(o, "shape");
    uint64_t numel = 1;
    for (int d = 0; d < ts[i].ndim; d++) {
      cJSON_AddItemToArray(s, cJSON_CreateNumber((double)ts[i].shape[d]));
      numel *= (uint64_t)ts[i].shape[d];
    }
    cJSON *o2 = cJSON_AddArrayToObject(o, "data_offsets");
    cJSON_AddItemToArray(o2, cJSON_CreateNumber((double)off));
    off += numel * es;
    cJSON_AddItemToArray(o2, cJSON_CreateNumber((double)off));
  }
  char *hdr = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!hdr) { pc_seterr(err, errlen, "%s: out of memory", path); return -1; }
  size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;  // 8-aligned data keeps F32 tensors mappable in place
  FILE *fp = fopen(path, "wb");
  if (!fp) { pc_seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno)); free(hdr); return -1; }
  unsigned char lenb[8];
  for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  int bad = fwrite(lenb, 1, 8, fp) != 8 || fwrite(hdr, 1, hl, fp) != hl;
  for (size_t i = hl; i < padded && !bad; i++) bad = fputc(' ', fp) == EOF;
  free(hdr);
  unsigned char buf[8192];
  for (int i = 0; i < n && !bad; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < ts[i].ndim; d++) numel *= (uint64_t)ts[i].shape[d];
    size_t k = 0;
    for (uint64_t j = 0; j < numel && !bad; j++) {
      float v = ts[i].data[j];
      if (dtype == PC_DT_F32) memcpy(buf + k, &v, 4);
      else {
        uint16_t h = dtype == PC_DT_BF16 ? pc_f32_to_bf16(v) : pc_f32_to_f16(v);
        buf[k] = (unsigned char)h;
        buf[k + 1] = (unsigned char)(h >> 8);
      }
      k += es;
      if (k + es > sizeof buf || j + 1 == numel) {
        bad = fwrite(buf, 1, k, fp) != k;
        k = 0;
      }
    }
  }
  if (fclose(fp) != 0) bad = 1;
  if (bad) { pc_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno)); return -1; }
  return 0;
}
