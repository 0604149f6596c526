/* trainer/train/optim.h: the optimizer: torch.optim.AdamW (decoupled weight decay, bias correction),
 * torch.nn.utils.clip_grad_norm_, and Hugging Face's learning-rate schedules with linear warmup. The
 * arithmetic on the tensors runs through the backend table (sumsq, scale, adamw), so a backend that
 * supports those ops runs the optimizer where its parameters live.
 *
 * Ownership: an optimizer borrows the model and the backend and owns its state (exp_avg, exp_avg_sq:
 * backend memory, one pair per trainable parameter). */
#ifndef PC_OPTIM_H
#define PC_OPTIM_H
#include <stddef.h>

#include "backend/backend.h"
#include "model/model.h"

typedef enum { PC_SCHED_CONSTANT, PC_SCHED_LINEAR, PC_SCHED_COSINE } pc_schedule;

/* -1 when the name is unknown. */
int pc_schedule_from_name(const char *name);
/* The learning rate of optimizer step k (0-based) of total: warmup steps rising linearly from 0 to
 * peak, then constant, linear to 0, or a half cosine to 0 (get_*_schedule_with_warmup). */
double pc_schedule_lr(pc_schedule s, double peak, int warmup, int k, int total);

typedef struct {
  pc_model *model;
  pc_backend *be;
  float **exp_avg, **exp_avg_sq;  /* (parameters), NULL for a frozen parameter */
  double beta1, beta2, eps, weight_decay;
} pc_adamw;

/* State zeroed, torch's defaults (0.9, 0.999, 1e-8) and the given decay (applied only to parameters
 * with decay set: not biases or norm weights). */
int pc_adamw_init(pc_adamw *o, pc_model *m, pc_backend *be, double weight_decay, char *err, size_t errlen);
void pc_adamw_free(pc_adamw *o);

/* The global L2 norm of every gradient, summed in double in parameter order. -1 with err set when the
 * backend failed. */
int pc_grad_norm(pc_model *m, pc_backend *be, double *norm, char *err, size_t errlen);
/* clip_grad_norm_: gradients scaled by max_norm / (norm + 1e-6) when that is below 1; max_norm 0: off. */
void pc_clip_grads(pc_model *m, pc_backend *be, double norm, double max_norm);
/* One AdamW update of every trainable parameter: step t (1-based, for the bias corrections), rate lr. */
void pc_adamw_step(pc_adamw *o, int t, double lr);

#endif
