/* trainer/model/train_model.h: a trainable causal LM (GPT-2 or the Llama family): a forward pass that keeps
 * what the backward pass needs, the backward pass itself, LoRA adapters, and the parameters, their
 * gradients and names, for the optimizer and for writing adapters and checkpoints.
 *
 * The math is that of model.c (the scoring path, checked against PyTorch); this copy keeps every
 * layer's activations (llm.c's layout: one forward and one backward function per block, shapes in the
 * comments) and owns writable float32 copies of the weights. LoRA modules compute
 * y = x W^T + b + (alpha/r) (x A^T) B^T as PEFT does, with A (r, in) and B (out, r), also on GPT-2's
 * Conv1D modules (whose W is stored (in, out)).
 *
 * Ownership: the model borrows the backend and owns everything else. Errors go to err; nothing here
 * prints or exits. One thread drives a model. */
#ifndef PC_TRAIN_MODEL_H
#define PC_TRAIN_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/config.h"
#include "model/model.h"
#include "model/safetensors.h"

typedef struct {
  char name[200];      /* checkpoint name, or the PEFT key of a LoRA matrix */
  int ndim;
  int64_t shape[2];
  size_t n;            /* elements */
  float *w;            /* backend memory, owned */
  float *g;            /* gradient (backend memory), NULL when frozen */
  int decay;           /* 1: AdamW's weight decay applies (not biases and norm weights, as HF Trainer) */
  int lora;            /* 1: a LoRA A or B matrix */
} pc_param;

typedef struct {
  int lora_r;                /* 0: full fine-tune (every weight trainable) */
  double lora_alpha;
  const char *lora_targets;  /* comma-separated module names; NULL = attention and MLP projections */
  const char *init_adapter;  /* NULL, or a PEFT adapter directory to start from */
  uint64_t seed;             /* LoRA A's initialization */
} pc_tmodel_opts;

typedef struct pc_tmodel pc_tmodel;

int pc_tmodel_load(const char *dir, const pc_tmodel_opts *o, pc_backend *be, pc_tmodel **out, char *err,
                   size_t errlen);
void pc_tmodel_free(pc_tmodel *m);
const pc_config *pc_tmodel_config(const pc_tmodel *m);
int pc_tmodel_nparams(const pc_tmodel *m);
pc_param *pc_tmodel_param(pc_tmodel *m, int i);
/* Number of trainable elements, and (for messages) total elements. */
size_t pc_tmodel_trainable(const pc_tmodel *m, size_t *total);
/* The default LoRA targets of the model's family, as written in adapter_config.json. */
const char *pc_tmodel_default_targets(const pc_config *c);
/* The LoRA modules actually adapted (comma-separated module names matched), for adapter_config.json. */
const char *pc_tmodel_lora_targets(const pc_tmodel *m);

/* Forward over a packed batch (as pc_model_logps). sum[s], count[s] per sequence. The activations are
 * kept for pc_tmodel_backward until the next forward. */
int pc_tmodel_forward(pc_tmodel *m, const pc_model_seq *seqs, int nseq, double *sum, int *count, char *err,
                      size_t errlen);
/* Backward of the last forward: dsum[s] = dLoss/dsum[s]. Adds into the gradients (zero them with
 * pc_tmodel_zero_grad at the start of an optimizer step). */
int pc_tmodel_backward(pc_tmodel *m, const float *dsum, char *err, size_t errlen);
void pc_tmodel_zero_grad(pc_tmodel *m);

/* Writers. Adapter: adapter_config.json + adapter_model.safetensors (F32, PEFT keys). Full model:
 * model.safetensors in `dtype` (tied embeddings written once) + config.json; tokenizer files are
 * copied by the caller. merged: LoRA merged into the base weights. */
int pc_tmodel_save_adapter(pc_tmodel *m, const char *dir, const char *base_model, char *err, size_t errlen);
int pc_tmodel_save_model(pc_tmodel *m, const char *dir, pc_dtype dtype, int merged, char *err, size_t errlen);
/* Loads the values of the parameters that the safetensors file at path names (a checkpoint of this
 * run, for --resume); *loaded counts them. */
int pc_tmodel_load_params(pc_tmodel *m, const char *path, int *loaded, char *err, size_t errlen);
/* The checkpoint's own dtype (of its first floating tensor), for writing a full fine-tune back. */
pc_dtype pc_tmodel_dtype(const pc_tmodel *m);

#endif
