/* trainer/dist/zero.c: see zero.h. */
#include "dist/zero.h"
#include "model/safetensors.h"
#include "train/checkpoint.h"
#include "train/manifest.h"
#include "util/util.h"
#include "util/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Paths are built into fixed buffers; a path long enough to be cut is also too long to open. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define NOT_TRAINED SIZE_MAX

struct pc_zero {
  pc_comm *c;   /* the host-side communicator: scalars (the norm, agreements) and checkpoints */
  pc_comm *dc;  /* the one that moves the flat gradient and parameter vectors (backend memory): c
                   itself when the backend's memory is host memory, NCCL on a GPU */
  pc_model *m;
  pc_backend *be;
  double beta1, beta2, eps, weight_decay;
  size_t P, S, lo, hi;  /* flat size, shard size (padded), this rank's range [lo, hi) */
  size_t *off;          /* (parameters): flat offset, NOT_TRAINED for a frozen one */
  float *flat;          /* (N S) backend: packed gradients, then gathered parameters */
  float *gshard;        /* (S) backend: this rank's summed gradients */
  float *exp_avg, *exp_avg_sq;  /* (S) backend: this rank's AdamW state */
};

/* The flat layout: every trainable parameter in model order. Returns P. */
static size_t layout(pc_model *m, size_t *off) {
  size_t P = 0;
  for (int i = 0; i < pc_model_nparams(m); i++) {
    pc_param *p = pc_model_param(m, i);
    off[i] = p->g ? P : NOT_TRAINED;
    if (p->g) P += p->n;
  }
  return P;
}

static int backend_fail(pc_backend *be, char *err, size_t errlen, const char *what) {
  const char *e = be->ops->error(be);
  pc_seterr(err, errlen, "backend %s: %s: %s", be->ops->name, what, e ? e : "failed");
  return -1;
}

static int comm_fail(pc_comm *c, char *err, size_t errlen) {
  pc_seterr(err, errlen, "%s", pc_comm_error(c));
  return -1;
}

int pc_zero_new(pc_comm *c, pc_comm *dc, pc_model *m, pc_backend *be, const pc_adamw *d, pc_zero **out, char *err,
                size_t errlen) {
  pc_zero *z = calloc(1, sizeof *z);
  *out = z;
  if (!z || !(z->off = malloc(sizeof *z->off * ((size_t)pc_model_nparams(m) + 1)))) {
    pc_seterr(err, errlen, "out of memory");
    return -1;
  }
  *z = (pc_zero){.c = c, .dc = dc ? dc : c, .m = m, .be = be, .beta1 = d->beta1, .beta2 = d->beta2, .eps = d->eps,
                 .weight_decay = d->weight_decay, .off = z->off};
  size_t N = (size_t)c->size;
  z->P = layout(m, z->off);
  z->S = (z->P + N - 1) / N;
  if (z->S == 0) z->S = 1;
  z->lo = (size_t)c->rank * z->S;
  z->hi = z->lo + z->S < z->P ? z->lo + z->S : z->P;
  if (z->lo > z->hi) z->lo = z->hi;  // a rank past the end (P < N) owns nothing
  z->flat = be->ops->alloc(be, sizeof(float) * N * z->S);
  z->gshard = be->ops->alloc(be, sizeof(float) * z->S);
  z->exp_avg = be->ops->alloc(be, sizeof(float) * z->S);
  z->exp_avg_sq = be->ops->alloc(be, sizeof(float) * z->S);
  if (!z->flat || !z->gshard || !z->exp_avg || !z->exp_avg_sq) {
    pc_seterr(err, errlen, "out of memory for ZeRO's buffers (%zu parameters over %d ranks)", z->P, c->size);
    return -1;
  }
  be->ops->zero(be, z->flat, sizeof(float) * N * z->S);  // the padding past P stays zero
  be->ops->zero(be, z->exp_avg, sizeof(float) * z->S);
  be->ops->zero(be, z->exp_avg_sq, sizeof(float) * z->S);
  return 0;
}

void pc_zero_free(pc_zero *z) {
  if (!z) return;
  float *bufs[] = {z->flat, z->gshard, z->exp_avg, z->exp_avg_sq};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
    if (bufs[i]) z->be->ops->free(z->be, bufs[i]);
  free(z->off);
  free(z);
}

size_t pc_zero_flat_size(const pc_zero *z) { return z->P; }
size_t pc_zero_shard_size(const pc_zero *z) { return z->hi - z->lo; }

// ---- a step ---------------------------------------------------------------------------------------

int pc_zero_reduce_grads(pc_zero *z, double *norm, char *err, size_t errlen) {
  pc_backend *be = z->be;
  for (int i = 0; i < pc_model_nparams(z->m); i++) {
    pc_param *p = pc_model_param(z->m, i);
    if (z->off[i] != NOT_TRAINED) be->ops->copy(be, z->flat + z->off[i], p->g, sizeof(float) * p->n);
  }
  if (pc_comm_reduce_scatter(z->dc, z->flat, z->gshard, z->S, PC_COMM_F32) != 0) return comm_fail(z->dc, err, errlen);
  double ss = 0;
  if (z->hi > z->lo && be->ops->sumsq(be, z->gshard, z->hi - z->lo, &ss) != 0)
    return backend_fail(be, err, errlen, "gradient norm");
  if (pc_comm_all_reduce(z->c, &ss, 1, PC_COMM_F64) != 0) return comm_fail(z->c, err, errlen);
  *norm = sqrt(ss);
  return 0;
}

void pc_zero_clip(pc_zero *z, double norm, double max_norm) {
  if (max_norm <= 0) return;
  double coef = max_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_, as pc_clip_grads
  if (coef < 1 && z->hi > z->lo) z->be->ops->scale(z->be, z->gshard, z->hi - z->lo, (float)coef);
}

int pc_zero_step(pc_zero *z, int t, double lr, char *err, size_t errlen) {
  pc_backend *be = z->be;
  // bias corrections folded into the step size and the denominator, exactly as pc_adamw_step
  float step_size = (float)(lr / (1 - pow(z->beta1, t))), bc2_sqrt = (float)sqrt(1 - pow(z->beta2, t));
  float *mine = z->flat + (size_t)z->c->rank * z->S;
  for (int i = 0; i < pc_model_nparams(z->m); i++) {
    pc_param *p = pc_model_param(z->m, i);
    size_t off = z->off[i];
    if (off == NOT_TRAINED) continue;
    // this parameter's overlap with the shard: flat [a, b)
    size_t a = off > z->lo ? off : z->lo, b = off + p->n < z->hi ? off + p->n : z->hi;
    if (a >= b) continue;
    size_t s = a - z->lo;
    be->ops->adamw(be, p->w + (a - off), z->gshard + s, z->exp_avg + s, z->exp_avg_sq + s, b - a, (float)lr,
                   p->decay ? (float)z->weight_decay : 0.0f, (float)z->beta1, (float)z->beta2, (float)z->eps,
                   step_size, bc2_sqrt);
    be->ops->copy(be, mine + s, p->w + (a - off), sizeof(float) * (b - a));
  }
  if (pc_comm_all_gather(z->dc, z->flat, sizeof(float) * z->S) != 0) return comm_fail(z->dc, err, errlen);
  for (int i = 0; i < pc_model_nparams(z->m); i++) {
    pc_param *p = pc_model_param(z->m, i);
    if (z->off[i] == NOT_TRAINED) continue;
    be->ops->copy(be, p->w, z->flat + z->off[i], sizeof(float) * p->n);
    be->ops->weight_updated(be, p->w, p->n);  // a copy, not adamw: the CUDA backend's bf16 twin is stale
  }
  return 0;
}

// ---- checkpoints ----------------------------------------------------------------------------------

static void shard_name(char *buf, size_t n, int rank, int size) {
  snprintf(buf, n, "optimizer-shard-%05d-of-%05d.safetensors", rank, size);
}

static cJSON *index_json(pc_zero *z) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "format", "prefcap ZeRO-1 optimizer shards (docs/training.md)");
  cJSON_AddNumberToObject(j, "world_size", z->c->size);
  cJSON_AddNumberToObject(j, "flat_size", (double)z->P);
  cJSON_AddNumberToObject(j, "shard_size", (double)z->S);
  cJSON *sh = cJSON_AddArrayToObject(j, "shards");
  for (int r = 0; r < z->c->size; r++) {
    char name[96];
    size_t lo = (size_t)r * z->S < z->P ? (size_t)r * z->S : z->P, hi = lo + z->S < z->P ? lo + z->S : z->P;
    shard_name(name, sizeof name, r, z->c->size);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "file", name);
    cJSON_AddNumberToObject(e, "start", (double)lo);
    cJSON_AddNumberToObject(e, "count", (double)(hi - lo));
    cJSON_AddItemToArray(sh, e);
  }
  cJSON *ps = cJSON_AddArrayToObject(j, "params");
  for (int i = 0; i < pc_model_nparams(z->m); i++) {
    pc_param *p = pc_model_param(z->m, i);
    if (z->off[i] == NOT_TRAINED) continue;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", p->name);
    cJSON_AddNumberToObject(e, "offset", (double)z->off[i]);
    cJSON_AddNumberToObject(e, "numel", (double)p->n);
    cJSON_AddItemToArray(ps, e);
  }
  return j;
}

static int save_mine(pc_zero *z, const char *dir, char *err, size_t errlen) {
  size_t n = z->hi - z->lo;
  float *h = malloc(sizeof(float) * 2 * (n ? n : 1));
  char path[4400], name[96];
  if (!h) { pc_seterr(err, errlen, "out of memory"); return -1; }
  if (n && (z->be->ops->download(z->be, h, z->exp_avg, sizeof(float) * n) != 0 ||
            z->be->ops->download(z->be, h + n, z->exp_avg_sq, sizeof(float) * n) != 0)) {
    free(h);
    return backend_fail(z->be, err, errlen, "download of the optimizer shard");
  }
  pc_st_write_tensor ts[2] = {{"exp_avg", 1, {(int64_t)n}, h}, {"exp_avg_sq", 1, {(int64_t)n}, h + n}};
  shard_name(name, sizeof name, z->c->rank, z->c->size);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int rc = pc_st_write(path, ts, 2, PC_DT_F32, err, errlen);
  free(h);
  if (rc == 0 && z->c->rank == 0) {
    cJSON *j = index_json(z);
    snprintf(path, sizeof path, "%s/zero_index.json", dir);
    rc = pc_json_write(path, j);
    cJSON_Delete(j);
    if (rc != 0) pc_seterr(err, errlen, "%s: cannot write", path);
  }
  return rc;
}

int pc_zero_save(pc_zero *z, const char *dir, char *err, size_t errlen) {
  int rc = save_mine(z, dir, err, errlen);
  // every rank learns whether every shard was written: a checkpoint is sealed whole or not at all
  double bad = rc != 0;
  if (pc_comm_all_reduce(z->c, &bad, 1, PC_COMM_F64) != 0) return comm_fail(z->c, err, errlen);
  if (bad && rc == 0) pc_seterr(err, errlen, "another rank could not write its optimizer shard");
  return bad ? -1 : 0;
}

int pc_zero_checkpoint(pc_zero *z, const char *out, int step, int total_steps, int lora, const char *base_model,
                       char *err, size_t errlen) {
  char tmp[4200];
  pc_checkpoint_tmpdir(tmp, sizeof tmp, out, step);
  // rank 0 makes the folder, every rank writes its shard (pc_zero_save agrees on the outcome), rank 0
  // seals it (parameters, adapter, state.json, the rename) and says whether that worked
  double bad = z->c->rank == 0 && pc_mkdir_p(tmp) != 0;
  if (bad) pc_seterr(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
  if (pc_comm_broadcast(z->c, &bad, sizeof bad, 0) != 0) return comm_fail(z->c, err, errlen);
  if (bad) {
    if (z->c->rank) pc_seterr(err, errlen, "rank 0 could not create %s", tmp);
    return -1;
  }
  if (pc_zero_save(z, tmp, err, errlen) != 0) return -1;
  bad = z->c->rank == 0 && pc_checkpoint_seal(out, step, total_steps, z->m, z->be, lora, base_model, err, errlen) != 0;
  if (pc_comm_broadcast(z->c, &bad, sizeof bad, 0) != 0) return comm_fail(z->c, err, errlen);
  if (bad && z->c->rank) pc_seterr(err, errlen, "rank 0 could not seal checkpoint-%d", step);
  return bad ? -1 : 0;
}

int pc_zero_is_sharded(const char *dir) {
  char path[4400];
  snprintf(path, sizeof path, "%s/zero_index.json", dir);
  return access(path, F_OK) == 0;
}

/* One tensor of a safetensors file into out (numel floats). */
static int read_tensor(const char *path, const char *name, float *out, size_t numel, char *err, size_t errlen) {
  pc_ckpt *ck = NULL;
  if (pc_ckpt_open_file(path, &ck, err, errlen) != 0) return -1;
  const pc_st_tensor *t = pc_ckpt_find(ck, name);
  int rc = 0;
  err[0] = 0;
  if (!t || (size_t)t->numel != numel || pc_tensor_to_f32(t, out, err, errlen) != 0) {
    if (!t || !err[0])
      pc_seterr(err, errlen, "%s: missing or wrong tensor '%s' (want %zu elements, found %lld)", path, name, numel,
                t ? (long long)t->numel : -1LL);
    rc = -1;
  }
  pc_ckpt_close(ck);
  return rc;
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* The whole flat state (P floats each) of checkpoint dir, sharded or a single process's. */
static int read_full(const char *dir, pc_model *m, const size_t *off, size_t P, float *avg, float *sq, char *err,
                     size_t errlen) {
  char path[4400];
  if (!pc_zero_is_sharded(dir)) {
    for (int i = 0; i < pc_model_nparams(m); i++) {
      pc_param *p = pc_model_param(m, i);
      char name[240];
      if (off[i] == NOT_TRAINED) continue;
      snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
      snprintf(name, sizeof name, "exp_avg.%s", p->name);
      if (read_tensor(path, name, avg + off[i], p->n, err, errlen) != 0) return -1;
      snprintf(path, sizeof path, "%s/optimizer_sq.safetensors", dir);
      snprintf(name, sizeof name, "exp_avg_sq.%s", p->name);
      if (read_tensor(path, name, sq + off[i], p->n, err, errlen) != 0) return -1;
    }
    return 0;
  }
  snprintf(path, sizeof path, "%s/zero_index.json", dir);
  cJSON *j = pc_json_read(path, err, errlen);
  if (!j) return -1;
  int rc = -1;
  const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "params"), *sh = cJSON_GetObjectItemCaseSensitive(j, "shards");
  if (num(j, "flat_size") != (double)P || !cJSON_IsArray(ps) || !cJSON_IsArray(sh)) {
    pc_seterr(err, errlen, "%s: a state of %.0f parameters, the model trains %zu", path, num(j, "flat_size"), P);
    goto done;
  }
  // the layout must be the model's: the same parameters in the same places
  const cJSON *e;
  int k = 0;
  for (int i = 0; i < pc_model_nparams(m); i++) {
    pc_param *p = pc_model_param(m, i);
    if (off[i] == NOT_TRAINED) continue;
    e = cJSON_GetArrayItem(ps, k++);
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (!cJSON_IsString(nm) || strcmp(nm->valuestring, p->name) || num(e, "offset") != (double)off[i] ||
        num(e, "numel") != (double)p->n) {
      pc_seterr(err, errlen, "%s: parameter %d is not the model's '%s' (%zu elements at %zu)", path, k - 1, p->name,
                p->n, off[i]);
      goto done;
    }
  }
  size_t covered = 0;
  cJSON_ArrayForEach(e, sh) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
    double st = num(e, "start"), cnt = num(e, "count");
    if (!cJSON_IsString(f) || strchr(f->valuestring, '/') || st != (double)covered || cnt < 0 || st + cnt > (double)P) {
      pc_seterr(err, errlen, "%s: shard %zu's entry is malformed or out of order", path, (size_t)cJSON_GetArraySize(sh));
      goto done;
    }
    char sp[4700];
    snprintf(sp, sizeof sp, "%s/%s", dir, f->valuestring);
    if (read_tensor(sp, "exp_avg", avg + covered, (size_t)cnt, err, errlen) != 0 ||
        read_tensor(sp, "exp_avg_sq", sq + covered, (size_t)cnt, err, errlen) != 0)
      goto done;
    covered += (size_t)cnt;
  }
  if (covered != P) { pc_seterr(err, errlen, "%s: the shards cover %zu of %zu elements", path, covered, P); goto done; }
  rc = 0;
done:
  cJSON_Delete(j);
  return rc;
}

int pc_zero_load(pc_zero *z, const char *dir, char *err, size_t errlen) {
  float *avg = malloc(sizeof(float) * (z->P + 1)), *sq = malloc(sizeof(float) * (z->P + 1));
  int rc = -1;
  if (!avg || !sq) pc_seterr(err, errlen, "out of memory");
  else if (read_full(dir, z->m, z->off, z->P, avg, sq, err, errlen) == 0) {
    size_t n = z->hi - z->lo;
    rc = 0;
    if (n && (z->be->ops->upload(z->be, z->exp_avg, avg + z->lo, sizeof(float) * n) != 0 ||
              z->be->ops->upload(z->be, z->exp_avg_sq, sq + z->lo, sizeof(float) * n) != 0))
      rc = backend_fail(z->be, err, errlen, "upload of the optimizer shard");
  }
  free(avg);
  free(sq);
  return rc;
}

int pc_zero_load_full(const char *dir, pc_model *m, pc_adamw *opt, char *err, size_t errlen) {
  size_t *off = malloc(sizeof *off * ((size_t)pc_model_nparams(m) + 1));
  if (!off) { pc_seterr(err, errlen, "out of memory"); return -1; }
  size_t P = layout(m, off);
  float *avg = malloc(sizeof(float) * (P + 1)), *sq = malloc(sizeof(float) * (P + 1));
  int rc = -1;
  if (!avg || !sq) pc_seterr(err, errlen, "out of memory");
  else if (read_full(dir, m, off, P, avg, sq, err, errlen) == 0) {
    rc = 0;
    for (int i = 0; i < pc_model_nparams(m) && rc == 0; i++) {
      pc_param *p = pc_model_param(m, i);
      if (off[i] == NOT_TRAINED) continue;
      if (opt->be->ops->upload(opt->be, opt->exp_avg[i], avg + off[i], sizeof(float) * p->n) != 0 ||
          opt->be->ops->upload(opt->be, opt->exp_avg_sq[i], sq + off[i], sizeof(float) * p->n) != 0)
        rc = backend_fail(opt->be, err, errlen, "upload of the optimizer state");
    }
  }
  free(avg);
  free(sq);
  free(off);
  return rc;
}
