/* trainer/model/families.c: the tensor tables of families.h, one per family, in checkpoint order. */
#include "model/families.h"

#define W_OI PC_W_OUT_IN
#define W_IO PC_W_IN_OUT

static const pc_tensor_spec GPT2[] = {
  {"transformer.wte.weight", 0, PC_G_WTE, PC_DIM_V, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"transformer.wpe.weight", 0, PC_G_WPE, PC_DIM_POS, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"transformer.h.%d.ln_1.weight", 1, PC_L_LN1_W, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ONES},
  {"transformer.h.%d.ln_1.bias", 1, PC_L_LN1_B, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"transformer.h.%d.attn.c_attn.weight", 1, PC_L_W + PC_MOD_Q, PC_DIM_C, PC_DIM_3C, W_IO, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"transformer.h.%d.attn.c_attn.bias", 1, PC_L_B + PC_MOD_Q, PC_DIM_3C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"transformer.h.%d.attn.c_proj.weight", 1, PC_L_W + PC_MOD_O, PC_DIM_C, PC_DIM_C, W_IO, PC_IF_ALWAYS, PC_INIT_NORMAL_RESID},
  {"transformer.h.%d.attn.c_proj.bias", 1, PC_L_B + PC_MOD_O, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"transformer.h.%d.ln_2.weight", 1, PC_L_LN2_W, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ONES},
  {"transformer.h.%d.ln_2.bias", 1, PC_L_LN2_B, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"transformer.h.%d.mlp.c_fc.weight", 1, PC_L_W + PC_MOD_GATE, PC_DIM_C, PC_DIM_FF, W_IO, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"transformer.h.%d.mlp.c_fc.bias", 1, PC_L_B + PC_MOD_GATE, PC_DIM_FF, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"transformer.h.%d.mlp.c_proj.weight", 1, PC_L_W + PC_MOD_DOWN, PC_DIM_FF, PC_DIM_C, W_IO, PC_IF_ALWAYS, PC_INIT_NORMAL_RESID},
  {"transformer.h.%d.mlp.c_proj.bias", 1, PC_L_B + PC_MOD_DOWN, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"transformer.ln_f.weight", 0, PC_G_LNF_W, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ONES},
  {"transformer.ln_f.bias", 0, PC_G_LNF_B, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ZEROS},
  {"lm_head.weight", 0, PC_G_HEAD, PC_DIM_V, PC_DIM_C, W_OI, PC_IF_UNTIED, PC_INIT_NORMAL},
};

/* Llama, Mistral, Qwen2 and Qwen3: one layout, the differences are config flags. */
static const pc_tensor_spec LLAMA[] = {
  {"model.embed_tokens.weight", 0, PC_G_WTE, PC_DIM_V, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.input_layernorm.weight", 1, PC_L_LN1_W, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ONES},
  {"model.layers.%d.self_attn.q_proj.weight", 1, PC_L_W + PC_MOD_Q, PC_DIM_QD, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.self_attn.k_proj.weight", 1, PC_L_W + PC_MOD_K, PC_DIM_KD, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.self_attn.v_proj.weight", 1, PC_L_W + PC_MOD_V, PC_DIM_KD, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.self_attn.q_proj.bias", 1, PC_L_B + PC_MOD_Q, PC_DIM_QD, PC_DIM_NONE, W_OI, PC_IF_QKV_BIAS, PC_INIT_ZEROS},
  {"model.layers.%d.self_attn.k_proj.bias", 1, PC_L_B + PC_MOD_K, PC_DIM_KD, PC_DIM_NONE, W_OI, PC_IF_QKV_BIAS, PC_INIT_ZEROS},
  {"model.layers.%d.self_attn.v_proj.bias", 1, PC_L_B + PC_MOD_V, PC_DIM_KD, PC_DIM_NONE, W_OI, PC_IF_QKV_BIAS, PC_INIT_ZEROS},
  {"model.layers.%d.self_attn.o_proj.weight", 1, PC_L_W + PC_MOD_O, PC_DIM_C, PC_DIM_QD, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.self_attn.o_proj.bias", 1, PC_L_B + PC_MOD_O, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_O_BIAS, PC_INIT_ZEROS},
  {"model.layers.%d.self_attn.q_norm.weight", 1, PC_L_Q_NORM, PC_DIM_HD, PC_DIM_NONE, W_OI, PC_IF_QK_NORM, PC_INIT_ONES},
  {"model.layers.%d.self_attn.k_norm.weight", 1, PC_L_K_NORM, PC_DIM_HD, PC_DIM_NONE, W_OI, PC_IF_QK_NORM, PC_INIT_ONES},
  {"model.layers.%d.post_attention_layernorm.weight", 1, PC_L_LN2_W, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ONES},
  {"model.layers.%d.mlp.gate_proj.weight", 1, PC_L_W + PC_MOD_GATE, PC_DIM_FF, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.mlp.up_proj.weight", 1, PC_L_W + PC_MOD_UP, PC_DIM_FF, PC_DIM_C, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.mlp.down_proj.weight", 1, PC_L_W + PC_MOD_DOWN, PC_DIM_C, PC_DIM_FF, W_OI, PC_IF_ALWAYS, PC_INIT_NORMAL},
  {"model.layers.%d.mlp.gate_proj.bias", 1, PC_L_B + PC_MOD_GATE, PC_DIM_FF, PC_DIM_NONE, W_OI, PC_IF_MLP_BIAS, PC_INIT_ZEROS},
  {"model.layers.%d.mlp.up_proj.bias", 1, PC_L_B + PC_MOD_UP, PC_DIM_FF, PC_DIM_NONE, W_OI, PC_IF_MLP_BIAS, PC_INIT_ZEROS},
  {"model.layers.%d.mlp.down_proj.bias", 1, PC_L_B + PC_MOD_DOWN, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_MLP_BIAS, PC_INIT_ZEROS},
  {"model.norm.weight", 0, PC_G_LNF_W, PC_DIM_C, PC_DIM_NONE, W_OI, PC_IF_ALWAYS, PC_INIT_ONES},
  {"lm_head.weight", 0, PC_G_HEAD, PC_DIM_V, PC_DIM_C, W_OI, PC_IF_UNTIED, PC_INIT_NORMAL},
};

#define N(a) (int)(sizeof a / sizeof *a)
static const pc_family_table GPT2_TABLE = {GPT2, N(GPT2), "transformer.", "c_attn,c_proj,c_fc"};
static const pc_family_table LLAMA_TABLE = {LLAMA, N(LLAMA), "",
                                            "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"};

const pc_family_table *pc_family_table_of(pc_family f) { return f == PC_FAM_GPT2 ? &GPT2_TABLE : &LLAMA_TABLE; }

int pc_tensor_present(const pc_tensor_spec *t, const pc_config *c) {
  switch (t->when) {
    case PC_IF_UNTIED: return !c->tie_embeddings;
    case PC_IF_QKV_BIAS: return c->qkv_bias;
    case PC_IF_O_BIAS: return c->o_bias;
    case PC_IF_MLP_BIAS: return c->mlp_bias;
    case PC_IF_QK_NORM: return c->qk_norm;
    default: return 1;
  }
}

static int64_t dim_of(pc_dim d, const pc_config *c) {
  switch (d) {
    case PC_DIM_C: return c->hidden;
    case PC_DIM_3C: return 3 * (int64_t)c->hidden;
    case PC_DIM_V: return c->vocab;
    case PC_DIM_POS: return c->max_pos;
    case PC_DIM_FF: return c->intermediate;
    case PC_DIM_QD: return (int64_t)c->heads * c->head_dim;
    case PC_DIM_KD: return (int64_t)c->kv_heads * c->head_dim;
    case PC_DIM_HD: return c->head_dim;
    default: return 0;
  }
}

int pc_tensor_shape(const pc_tensor_spec *t, const pc_config *c, int64_t dims[2]) {
  dims[0] = dim_of(t->d0, c);
  dims[1] = t->d1 == PC_DIM_NONE ? 0 : dim_of(t->d1, c);
  return t->d1 == PC_DIM_NONE ? 1 : 2;
}
