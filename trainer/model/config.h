/* trainer/model/config.h: a Hugging Face config.json read into the one description the model code uses.
 *
 * Families by model_type: gpt2, llama, mistral, qwen2, qwen3. Anything that would change the math and
 * that the model code does not implement (another family, an activation, a rope_scaling type, sliding
 * windows on Qwen, partial rotary embeddings, ...) is refused by name, so that a model is either
 * computed as Hugging Face computes it or not at all. */
#ifndef PC_CONFIG_H
#define PC_CONFIG_H
#include <stddef.h>

typedef enum { PC_FAM_GPT2, PC_FAM_LLAMA, PC_FAM_MISTRAL, PC_FAM_QWEN2, PC_FAM_QWEN3 } pc_family;
typedef enum { PC_ACT_GELU_TANH, PC_ACT_GELU_ERF, PC_ACT_SILU } pc_act;

typedef struct {
  pc_family family;
  char model_type[32];
  int vocab;          /* V */
  int hidden;         /* C */
  int layers;         /* L */
  int heads;          /* NH */
  int kv_heads;       /* NKV (NH for GPT-2) */
  int head_dim;       /* HD */
  int intermediate;   /* I: the MLP's inner width */
  int max_pos;        /* n_positions / max_position_embeddings */
  double norm_eps;
  int rms_norm;       /* 1: RMSNorm (Llama family), 0: LayerNorm with bias (GPT-2) */
  pc_act act;
  int tie_embeddings;
  int qkv_bias, o_bias, mlp_bias;
  int qk_norm;        /* Qwen3: RMSNorm over each head of q and k before RoPE */
  int learned_pos;    /* GPT-2: wpe */
  /* RoPE (Llama family) */
  double rope_theta;
  int rope_llama3;
  double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  int rope_original_max_pos;
  int sliding_window; /* 0: none; else key j is visible from query i when i - j < sliding_window */
  int bos_id, eos_id; /* -1 when absent; informational */
  char torch_dtype[16];
} pc_config;

const char *pc_family_name(pc_family f);
int pc_family_from_name(const char *name, pc_family *out);

/* Reads path (a config.json). Errors name the file and the field. */
int pc_config_load(const char *path, pc_config *cfg, char *err, size_t errlen);
/* Defaults for a family (as Hugging Face's config classes give them), for `init`. */
void pc_config_defaults(pc_config *cfg, pc_family fam);
/* Writes cfg as a Hugging Face config.json. */
int pc_config_write(const pc_config *cfg, const char *path, char *err, size_t errlen);

#endif
