/* trainer/train/checkpoint.c: see checkpoint.h. */
#include "train/checkpoint.h"
#include "train/manifest.h"
#include "model/safetensors.h"
#include "util/err.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Paths are built into fixed buffers; a path long enough to be cut is also too long to open. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

int pc_dump_tensors(pc_model *m, const pc_adamw *opt, const char *path, pc_dump_what what, char *err, size_t errlen) {
  int np = pc_model_nparams(m), n = 0, rc = -1;
  pc_backend *be = opt->be;
  pc_st_write_tensor *ts = calloc((size_t)np + 1, sizeof *ts);
  float **hosts = calloc((size_t)np + 1, sizeof *hosts);
  char (*names)[220] = calloc((size_t)np + 1, sizeof *names);
  static const char *prefix[] = {"", "exp_avg.", "exp_avg_sq.", ""};
  err[0] = 0;
  if (!ts || !hosts || !names) goto done;
  for (int i = 0; i < np; i++) {
    pc_param *p = pc_model_param(m, i);
    if (!p->g) continue;
    const float *src = what == PC_DUMP_PARAMS ? p->w : what == PC_DUMP_EXP_AVG ? opt->exp_avg[i]
                     : what == PC_DUMP_EXP_AVG_SQ ? opt->exp_avg_sq[i] : p->g;
    hosts[n] = malloc(sizeof(float) * (p->n ? p->n : 1));
    if (!hosts[n]) goto done;
    if (be->ops->download(be, hosts[n], src, sizeof(float) * p->n) != 0) {
      const char *e = be->ops->error(be);
      pc_seterr(err, errlen, "backend %s: download of '%s': %s", be->ops->name, p->name, e ? e : "failed");
      goto done;
    }
    snprintf(names[n], sizeof names[n], "%s%s", prefix[what], p->name);
    ts[n] = (pc_st_write_tensor){names[n], p->ndim, {p->shape[0], p->shape[1]}, hosts[n]};
    n++;
  }
  rc = pc_st_write(path, ts, n, PC_DT_F32, err, errlen);
done:
  if (hosts)
    for (int i = 0; i < np; i++) free(hosts[i]);
  free(hosts);
  free(ts);
  free(names);
  if (rc != 0 && !err[0]) pc_seterr(err, errlen, "out of memory writing %s", path);
  return rc;
}

void pc_checkpoint_tmpdir(char *buf, size_t n, const char *out, int step) {
  snprintf(buf, n, "%s/.checkpoint-%d.tmp", out, step);
}

int pc_checkpoint_save(const char *out, int step, int total_steps, pc_model *m, const pc_adamw *opt, int lora,
                       const char *base_model, char *err, size_t errlen) {
  char tmp[4200], path[4400];
  pc_checkpoint_tmpdir(tmp, sizeof tmp, out, step);
  if (pc_mkdir_p(tmp) != 0) { pc_seterr(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); return -1; }
  static const struct { const char *file; pc_dump_what what; } parts[] = {
    {"optimizer.safetensors", PC_DUMP_EXP_AVG},
    {"optimizer_sq.safetensors", PC_DUMP_EXP_AVG_SQ},
  };
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    snprintf(path, sizeof path, "%s/%s", tmp, parts[i].file);
    if (pc_dump_tensors(m, opt, path, parts[i].what, err, errlen) != 0) return -1;
  }
  return pc_checkpoint_seal(out, step, total_steps, m, opt->be, lora, base_model, err, errlen);
}

int pc_checkpoint_seal(const char *out, int step, int total_steps, pc_model *m, pc_backend *be, int lora,
                       const char *base_model, char *err, size_t errlen) {
  char tmp[4200], dir[4200], path[4400];
  snprintf(dir, sizeof dir, "%s/checkpoint-%d", out, step);
  pc_checkpoint_tmpdir(tmp, sizeof tmp, out, step);
  pc_adamw params_only = {.model = m, .be = be};  // PC_DUMP_PARAMS reads no optimizer state
  snprintf(path, sizeof path, "%s/trainable.safetensors", tmp);
  if (pc_dump_tensors(m, &params_only, path, PC_DUMP_PARAMS, err, errlen) != 0) return -1;
  if (lora && pc_model_save_adapter(m, tmp, base_model, err, errlen) != 0) return -1;
  cJSON *st = cJSON_CreateObject();
  cJSON_AddNumberToObject(st, "step", step);
  cJSON_AddNumberToObject(st, "total_steps", total_steps);
  snprintf(path, sizeof path, "%s/state.json", tmp);
  int w = pc_json_write(path, st);
  cJSON_Delete(st);
  if (w != 0) { pc_seterr(err, errlen, "%s: cannot write", path); return -1; }
  // a checkpoint appears whole or not at all: written aside, then renamed into place
  if (rename(tmp, dir) != 0) {
    pc_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    return -1;
  }
  return 0;
}

int pc_checkpoint_latest(const char *out) {
  DIR *d = opendir(out);
  if (!d) return 0;
  int best = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int k;
    char tail;
    if (sscanf(e->d_name, "checkpoint-%d%c", &k, &tail) == 1 && k > best) best = k;
  }
  closedir(d);
  return best;
}

/* One optimizer-state file into exp_avg (or exp_avg_sq) of every trainable parameter. */
static int load_state(const char *path, const char *prefix, float **state, pc_model *m, pc_backend *be, char *err,
                      size_t errlen) {
  pc_ckpt *ck = NULL;
  if (pc_ckpt_open_file(path, &ck, err, errlen) != 0) return -1;
  int rc = 0;
  for (int i = 0; i < pc_model_nparams(m) && rc == 0; i++) {
    pc_param *p = pc_model_param(m, i);
    if (!p->g) continue;
    char name[240];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    const pc_st_tensor *t = pc_ckpt_find(ck, name);
    float *h = malloc(sizeof(float) * (p->n ? p->n : 1));
    err[0] = 0;
    if (!t || !h || (size_t)t->numel != p->n || pc_tensor_to_f32(t, h, err, errlen) != 0) {
      if (!err[0] || !t) pc_seterr(err, errlen, "%s: missing or wrong tensor '%s'", path, name);
      rc = -1;
    } else if (be->ops->upload(be, state[i], h, sizeof(float) * p->n) != 0) {
      const char *e = be->ops->error(be);
      pc_seterr(err, errlen, "backend %s: upload of '%s': %s", be->ops->name, name, e ? e : "failed");
      rc = -1;
    }
    free(h);
  }
  pc_ckpt_close(ck);
  return rc;
}

int pc_checkpoint_load(const char *out, int step, pc_model *m, pc_adamw *opt, char *err, size_t errlen) {
  char path[4400];
  int loaded;
  snprintf(path, sizeof path, "%s/checkpoint-%d/trainable.safetensors", out, step);
  if (pc_model_load_params(m, path, &loaded, err, errlen) != 0) return -1;
  snprintf(path, sizeof path, "%s/checkpoint-%d/optimizer.safetensors", out, step);
  if (load_state(path, "exp_avg.", opt->exp_avg, m, opt->be, err, errlen) != 0) return -1;
  snprintf(path, sizeof path, "%s/checkpoint-%d/optimizer_sq.safetensors", out, step);
  return load_state(path, "exp_avg_sq.", opt->exp_avg_sq, m, opt->be, err, errlen);
}

int pc_metrics_truncate(const char *path, int step) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *o = fopen(tmp, "wb");
  if (!o) { fclose(f); return -1; }
  char line[8192];
  while (fgets(line, sizeof line, f)) {
    int k;
    if (sscanf(line, "{\"step\": %d", &k) == 1 && k <= step && strchr(line, '\n')) fputs(line, o);
  }
  fclose(f);
  if (fclose(o) != 0) return -1;
  return rename(tmp, path);
}
