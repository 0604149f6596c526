/* trainer/train/optim.c: see optim.h. */
#include "train/optim.h"
#include "util/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int pc_schedule_from_name(const char *s) {
  static const char *names[] = {"constant", "linear", "cosine"};
  for (int i = 0; i < 3; i++)
    if (!strcmp(s, names[i])) return i;
  return -1;
}

double pc_schedule_lr(pc_schedule s, double peak, int W, int k, int T) {
  if (k < W) return peak * (double)k / (double)(W > 1 ? W : 1);
  double span = (double)(T - W > 1 ? T - W : 1);
  if (s == PC_SCHED_LINEAR) return peak * fmax(0.0, (double)(T - k) / span);
  if (s == PC_SCHED_COSINE) return peak * fmax(0.0, 0.5 * (1 + cos(M_PI * (double)(k - W) / span)));
  return peak;
}

int pc_adamw_init(pc_adamw *o, pc_model *m, pc_backend *be, double weight_decay, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  o->model = m;
  o->be = be;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->eps = 1e-8;
  o->weight_decay = weight_decay;
  int np = pc_model_nparams(m);
  o->exp_avg = calloc((size_t)np + 1, sizeof *o->exp_avg);
  o->exp_avg_sq = calloc((size_t)np + 1, sizeof *o->exp_avg_sq);
  if (!o->exp_avg || !o->exp_avg_sq) { pc_seterr(err, errlen, "out of memory"); return -1; }
  for (int i = 0; i < np; i++) {
    pc_param *p = pc_model_param(m, i);
    if (!p->g) continue;
    o->exp_avg[i] = be->ops->alloc(be, sizeof(float) * p->n);
    o->exp_avg_sq[i] = be->ops->alloc(be, sizeof(float) * p->n);
    if (!o->exp_avg[i] || !o->exp_avg_sq[i]) { pc_seterr(err, errlen, "out of memory for the optimizer state"); return -1; }
    be->ops->zero(be, o->exp_avg[i], sizeof(float) * p->n);
    be->ops->zero(be, o->exp_avg_sq[i], sizeof(float) * p->n);
  }
  return 0;
}

void pc_adamw_free(pc_adamw *o) {
  if (!o->model) return;
  for (int i = 0; i < pc_model_nparams(o->model); i++) {
    if (o->exp_avg && o->exp_avg[i]) o->be->ops->free(o->be, o->exp_avg[i]);
    if (o->exp_avg_sq && o->exp_avg_sq[i]) o->be->ops->free(o->be, o->exp_avg_sq[i]);
  }
  free(o->exp_avg);
  free(o->exp_avg_sq);
  memset(o, 0, sizeof *o);
}

int pc_grad_norm(pc_model *m, pc_backend *be, double *norm, char *err, size_t errlen) {
  double ss = 0;
  for (int i = 0; i < pc_model_nparams(m); i++) {
    pc_param *p = pc_model_param(m, i);
    double x = 0;
    if (!p->g) continue;
    if (be->ops->sumsq(be, p->g, p->n, &x) != 0) {
      const char *e = be->ops->error(be);
      pc_seterr(err, errlen, "backend %s: gradient norm: %s", be->ops->name, e ? e : "failed");
      return -1;
    }
    ss += x;
  }
  *norm = sqrt(ss);
  return 0;
}

void pc_clip_grads(pc_model *m, pc_backend *be, double norm, double max_norm) {
  if (max_norm <= 0) return;
  double coef = max_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
  if (coef >= 1) return;
  for (int i = 0; i < pc_model_nparams(m); i++) {
    pc_param *p = pc_model_param(m, i);
    if (p->g) be->ops->scale(be, p->g, p->n, (float)coef);
  }
}

void pc_adamw_step(pc_adamw *o, int t, double lr) {
  // bias corrections folded into the step size and the denominator, as torch does
  float step_size = (float)(lr / (1 - pow(o->beta1, t))), bc2_sqrt = (float)sqrt(1 - pow(o->beta2, t));
  for (int i = 0; i < pc_model_nparams(o->model); i++) {
    pc_param *p = pc_model_param(o->model, i);
    if (!p->g) continue;
    o->be->ops->adamw(o->be, p->w, p->g, o->exp_avg[i], o->exp_avg_sq[i], p->n, (float)lr,
                      p->decay ? (float)o->weight_decay : 0.0f, (float)o->beta1, (float)o->beta2, (float)o->eps,
                      step_size, bc2_sqrt);
  }
}
