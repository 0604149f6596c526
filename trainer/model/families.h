/* trainer/model/families.h: the one table of Hugging Face tensor names and shapes per model family.
 *
 * Every reader and writer of weights walks this table: the model's loader (model.c), `init`
 * (cli/cmd_init.c: which tensors a new model has and how transformers initialises them), the
 * checkpoint and merged-model writers (they write the parameters the loader made from it, under the
 * names it found) and the PEFT adapter writer (module paths and default LoRA targets). Adding a
 * family means adding its table here and whatever math is new in model.c, nowhere else.
 *
 * Names: per-layer entries hold one "%d" (the layer). GPT-2's names are written with the
 * "transformer." prefix that GPT2LMHeadModel (and so PEFT) uses; a bare GPT2Model checkpoint without
 * it is read too (model.c strips the prefix when the checkpoint lacks it). */
#ifndef PC_FAMILIES_H
#define PC_FAMILIES_H
#include "backend/backend.h"
#include "model/config.h"

/* A tensor's dimension, in terms of the config. */
typedef enum {
  PC_DIM_NONE,  /* (second dimension only) a vector */
  PC_DIM_C,     /* hidden */
  PC_DIM_3C,    /* GPT-2's fused q, k, v */
  PC_DIM_V,     /* vocabulary */
  PC_DIM_POS,   /* learned positions */
  PC_DIM_FF,    /* MLP width */
  PC_DIM_QD,    /* heads * head_dim */
  PC_DIM_KD,    /* kv_heads * head_dim */
  PC_DIM_HD,    /* head_dim */
} pc_dim;

/* When a tensor exists. */
typedef enum { PC_IF_ALWAYS, PC_IF_UNTIED, PC_IF_QKV_BIAS, PC_IF_O_BIAS, PC_IF_MLP_BIAS, PC_IF_QK_NORM } pc_cond;

/* transformers' _init_weights, for `init`: normal(0, 0.02), the same scaled by 1/sqrt(2 layers)
 * (GPT-2's residual projections), ones (norm weights), zeros (biases). */
typedef enum { PC_INIT_NORMAL, PC_INIT_NORMAL_RESID, PC_INIT_ONES, PC_INIT_ZEROS } pc_init;

/* The linear modules of a layer. GPT-2 fills Q with its fused c_attn, O with attn.c_proj, GATE with
 * mlp.c_fc and DOWN with mlp.c_proj. */
enum { PC_MOD_Q, PC_MOD_K, PC_MOD_V, PC_MOD_O, PC_MOD_GATE, PC_MOD_UP, PC_MOD_DOWN, PC_MOD_COUNT };

/* Where the model keeps a tensor: whole-model slots, then per-layer slots. A linear module's weight
 * is PC_L_W + module, its bias PC_L_B + module. */
enum { PC_G_WTE, PC_G_WPE, PC_G_LNF_W, PC_G_LNF_B, PC_G_HEAD, PC_G_COUNT };
enum {
  PC_L_LN1_W, PC_L_LN1_B, PC_L_LN2_W, PC_L_LN2_B, PC_L_Q_NORM, PC_L_K_NORM,
  PC_L_W, PC_L_B = PC_L_W + PC_MOD_COUNT, PC_L_COUNT = PC_L_B + PC_MOD_COUNT
};

typedef struct {
  const char *name;    /* Hugging Face name; "%d" for the layer when per_layer */
  int per_layer;
  int slot;            /* PC_G_* (whole model) or PC_L_* (per layer) */
  pc_dim d0, d1;       /* shape as stored in the checkpoint; d1 PC_DIM_NONE: a vector */
  pc_wlayout layout;   /* linear weights: nn.Linear (OUT_IN) or GPT-2's Conv1D (IN_OUT) */
  pc_cond when;
  pc_init init;
} pc_tensor_spec;

typedef struct {
  const pc_tensor_spec *tensors;  /* in checkpoint order (the order `init` writes and draws them) */
  int count;
  const char *prefix;             /* optional in a checkpoint: "transformer." for GPT-2, else "" */
  const char *lora_targets;       /* the default LoRA targets, as adapter_config.json lists them */
} pc_family_table;

const pc_family_table *pc_family_table_of(pc_family f);
/* Whether the tensor exists in a model of this config. */
int pc_tensor_present(const pc_tensor_spec *t, const pc_config *c);
/* The tensor's shape for this config: 1 or 2 dimensions into dims. */
int pc_tensor_shape(const pc_tensor_spec *t, const pc_config *c, int64_t dims[2]);

#endif
