/* trainer/model/config.c: config.json → pc_config, with Hugging Face's defaults per family, and back.
 *
 * Defaults follow transformers' configuration_*.py classes, so a config.json that leaves a field out
 * means what it means to Hugging Face. */
#include "model/config.h"
#include "util/err.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const char *FAMILIES[] = {"gpt2", "llama", "mistral", "qwen2", "qwen3"};

const char *pc_family_name(pc_family f) { return (unsigned)f < 5 ? FAMILIES[f] : "?"; }

int pc_family_from_name(const char *name, pc_family *out) {
  for (int i = 0; i < 5; i++)
    if (strcmp(name, FAMILIES[i]) == 0) { *out = (pc_family)i; return 0; }
  return -1;
}

void pc_config_defaults(pc_config *c, pc_family fam) {
  memset(c, 0, sizeof *c);
  c->family = fam;
  snprintf(c->model_type, sizeof c->model_type, "%s", pc_family_name(fam));
  c->bos_id = c->eos_id = -1;
  snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
  if (fam == PC_FAM_GPT2) {
    c->vocab = 50257; c->max_pos = 1024; c->hidden = 768; c->layers = 12; c->heads = 12;
    c->intermediate = 0; c->act = PC_ACT_GELU_TANH; c->norm_eps = 1e-5; c->tie_embeddings = 1;
    c->qkv_bias = c->o_bias = c->mlp_bias = 1; c->learned_pos = 1; c->bos_id = c->eos_id = 50256;
    return;
  }
  c->rms_norm = 1; c->act = PC_ACT_SILU; c->rope_theta = 10000.0; c->norm_eps = 1e-6;
  switch (fam) {
  case PC_FAM_LLAMA:
    c->vocab = 32000; c->hidden = 4096; c->intermediate = 11008; c->layers = 32; c->heads = 32;
    c->max_pos = 2048;
    break;
  case PC_FAM_MISTRAL:
    c->vocab = 32000; c->hidden = 4096; c->intermediate = 14336; c->layers = 32; c->heads = 32;
    c->kv_heads = 8; c->max_pos = 4096 * 32; c->sliding_window = 4096;
    break;
  case PC_FAM_QWEN2:
    c->vocab = 151936; c->hidden = 4096; c->intermediate = 22016; c->layers = 32; c->heads = 32;
    c->max_pos = 32768; c->qkv_bias = 1;
    break;
  case PC_FAM_QWEN3:
    c->vocab = 151936; c->hidden = 4096; c->intermediate = 22016; c->layers = 32; c->heads = 32;
    c->head_dim = 128; c->max_pos = 32768; c->qk_norm = 1;
    break;
  default: break;
  }
}

// ---- reading ------------------------------------------------------------------------------------

typedef struct { const char *path; char *err; size_t errlen; int bad; } config_reader;

/* Each getter leaves *out alone when the key is absent or null (the family default stands), and refuses
 * a value outside what the field can mean, naming the file and the field: a config.json is outside
 * input, and a zero head count or a negative epsilon would otherwise reach the model as a division by
 * zero or a NaN score. */
#define CFG_MAX_DIM (1 << 24)   /* beyond any real model's widths, and small enough for products in size_t */
static void get_int(config_reader *r, const cJSON *o, const char *key, int *out, int lo, int hi) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v) || r->bad) return;
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi) {
    if (cJSON_IsNumber(v)) pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be an integer from %d to %d, not %.17g",
                                     r->path, key, lo, hi, v->valuedouble);
    else pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be an integer from %d to %d", r->path, key, lo, hi);
    r->bad = 1;
    return;
  }
  *out = (int)v->valuedouble;
}
/* A real number; positive != 0 also asks for > 0. Never infinite (1e400 parses as inf). */
static void get_num(config_reader *r, const cJSON *o, const char *key, double *out, int positive) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v) || r->bad) return;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || (positive && !(v->valuedouble > 0))) {
    if (cJSON_IsNumber(v)) pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be a finite%s number, not %g", r->path, key,
                                     positive ? " positive" : "", v->valuedouble);
    else pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be a number", r->path, key);
    r->bad = 1;
    return;
  }
  *out = v->valuedouble;
}
static void get_bool(config_reader *r, const cJSON *o, const char *key, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v) || r->bad) return;
  if (!cJSON_IsBool(v)) {
    pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be true or false", r->path, key);
    r->bad = 1;
    return;
  }
  *out = cJSON_IsTrue(v);
}
static const char *get_str(config_reader *r, const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v) || r->bad) return NULL;
  if (!cJSON_IsString(v)) {
    pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be a string", r->path, key);
    r->bad = 1;
    return NULL;
  }
  return v->valuestring;
}
/* eos_token_id may be a list (Llama 3 instruct); the first entry is kept. A token id is an integer in
 * [0, INT_MAX]: converting 1e400 or 1e20 to int would be undefined behaviour. */
static void get_token_id(config_reader *r, const cJSON *o, const char *key, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v || cJSON_IsNull(v) || r->bad) return;
  const cJSON *e = cJSON_IsArray(v) ? v->child : v;
  if (!e) return;                                  /* [] : no token */
  for (const cJSON *x = e; x; x = cJSON_IsArray(v) ? x->next : NULL)
    if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 ||
        x->valuedouble > 2147483647.0) {
      pc_seterr(r->err, r->errlen, "%s: field \"%s\" must be a token id (an integer from 0 to 2147483647) or a "
                "list of them", r->path, key);
      r->bad = 1;
      return;
    }
  *out = (int)e->valuedouble;
}

static int refuse(config_reader *r, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pc_seterr(r->err, r->errlen, "%s: %s", r->path, msg);
  r->bad = 1;
  return -1;
}

int pc_config_load(const char *path, pc_config *c, char *err, size_t errlen) {
  config_reader r = {path, err, errlen, 0};
  char *txt = pc_read_file(path, NULL, NULL);
  if (!txt) { pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return -1; }
  const char *ep = NULL;
  cJSON *o = cJSON_ParseWithOpts(txt, &ep, 0);
  if (!o || !cJSON_IsObject(o)) {
    int line = 1;
    for (const char *q = txt; ep && q < ep; q++) line += *q == '\n';
    pc_seterr(err, errlen, "%s:%d: not a JSON object", path, line);
    free(txt);
    cJSON_Delete(o);
    return -1;
  }
  free(txt);
  const char *mt = get_str(&r, o, "model_type");
  pc_family fam;
  if (!mt) { if (!r.bad) refuse(&r, "field \"model_type\" is missing"); goto done; }
  if (pc_family_from_name(mt, &fam) != 0) {
    refuse(&r, "model_type \"%s\" is not supported (supported: gpt2, llama, mistral, qwen2, qwen3)", mt);
    goto done;
  }
  pc_config_defaults(c, fam);
  const char *td = get_str(&r, o, "torch_dtype");
  if (td) snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", td);
  get_token_id(&r, o, "bos_token_id", &c->bos_id);
  get_token_id(&r, o, "eos_token_id", &c->eos_id);
  get_int(&r, o, "vocab_size", &c->vocab, 1, CFG_MAX_DIM);

  if (fam == PC_FAM_GPT2) {
    get_int(&r, o, "n_embd", &c->hidden, 1, CFG_MAX_DIM);
    get_int(&r, o, "n_layer", &c->layers, 1, CFG_MAX_DIM);
    get_int(&r, o, "n_head", &c->heads, 1, CFG_MAX_DIM);
    get_int(&r, o, "n_inner", &c->intermediate, 1, CFG_MAX_DIM);
    get_int(&r, o, "n_positions", &c->max_pos, 1, CFG_MAX_DIM);
    get_num(&r, o, "layer_norm_epsilon", &c->norm_eps, 1);
    get_bool(&r, o, "tie_word_embeddings", &c->tie_embeddings);
    const char *act = get_str(&r, o, "activation_function");
    if (act) {
      if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")) c->act = PC_ACT_GELU_TANH;
      else if (!strcmp(act, "gelu")) c->act = PC_ACT_GELU_ERF;
      else { refuse(&r, "activation_function \"%s\" is not supported (gelu_new, gelu_pytorch_tanh, gelu)", act); goto done; }
    }
    int flag = 1;
    get_bool(&r, o, "scale_attn_weights", &flag);
    if (!flag) { refuse(&r, "option scale_attn_weights=false is not supported"); goto done; }
    flag = 0;
    get_bool(&r, o, "scale_attn_by_inverse_layer_idx", &flag);
    if (flag) { refuse(&r, "option scale_attn_by_inverse_layer_idx=true is not supported"); goto done; }
    flag = 0;
    get_bool(&r, o, "add_cross_attention", &flag);
    if (flag) { refuse(&r, "option add_cross_attention=true is not supported"); goto done; }
    if (c->intermediate == 0) c->intermediate = 4 * c->hidden;
    c->kv_heads = c->heads;
    if (c->heads > 0) c->head_dim = c->hidden / c->heads;
  } else {
    get_int(&r, o, "hidden_size", &c->hidden, 1, CFG_MAX_DIM);
    get_int(&r, o, "intermediate_size", &c->intermediate, 1, CFG_MAX_DIM);
    get_int(&r, o, "num_hidden_layers", &c->layers, 1, CFG_MAX_DIM);
    get_int(&r, o, "num_attention_heads", &c->heads, 1, CFG_MAX_DIM);
    get_int(&r, o, "num_key_value_heads", &c->kv_heads, 1, CFG_MAX_DIM);
    get_int(&r, o, "head_dim", &c->head_dim, 1, CFG_MAX_DIM);
    get_int(&r, o, "max_position_embeddings", &c->max_pos, 1, CFG_MAX_DIM);
    get_num(&r, o, "rms_norm_eps", &c->norm_eps, 1);
    get_num(&r, o, "rope_theta", &c->rope_theta, 1);
    get_bool(&r, o, "tie_word_embeddings", &c->tie_embeddings);
    const char *act = get_str(&r, o, "hidden_act");
    if (act && strcmp(act, "silu") != 0) { refuse(&r, "hidden_act \"%s\" is not supported (only silu)", act); goto done; }
    if (fam == PC_FAM_LLAMA || fam == PC_FAM_QWEN3) {
      int ab = 0;
      get_bool(&r, o, "attention_bias", &ab);
      c->qkv_bias = c->o_bias = ab;
    }
    if (fam == PC_FAM_LLAMA) get_bool(&r, o, "mlp_bias", &c->mlp_bias);
    if (fam == PC_FAM_MISTRAL) {
      const cJSON *sw = cJSON_GetObjectItemCaseSensitive(o, "sliding_window");
      if (cJSON_IsNull(sw)) c->sliding_window = 0;
      else get_int(&r, o, "sliding_window", &c->sliding_window, 0, INT_MAX);
    } else if (fam == PC_FAM_QWEN2 || fam == PC_FAM_QWEN3) {
      int usw = 0;
      get_bool(&r, o, "use_sliding_window", &usw);
      if (usw) { refuse(&r, "option use_sliding_window=true is not supported for %s", mt); goto done; }
    }
    double prf = 1.0;
    get_num(&r, o, "partial_rotary_factor", &prf, 0);
    if (prf != 1.0) { refuse(&r, "option partial_rotary_factor=%g is not supported", prf); goto done; }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
      if (!cJSON_IsObject(rs)) { refuse(&r, "field \"rope_scaling\" must be an object or null"); goto done; }
      const char *ty = get_str(&r, rs, "rope_type");
      if (!ty) ty = get_str(&r, rs, "type");
      if (!ty) { refuse(&r, "rope_scaling has neither \"rope_type\" nor \"type\""); goto done; }
      if (!strcmp(ty, "llama3")) {
        c->rope_llama3 = 1;
        c->rope_factor = 8; c->rope_low_freq_factor = 1; c->rope_high_freq_factor = 4;
        c->rope_original_max_pos = 8192;
        get_num(&r, rs, "factor", &c->rope_factor, 1);
        get_num(&r, rs, "low_freq_factor", &c->rope_low_freq_factor, 1);
        get_num(&r, rs, "high_freq_factor", &c->rope_high_freq_factor, 1);
        get_int(&r, rs, "original_max_position_embeddings", &c->rope_original_max_pos, 1, CFG_MAX_DIM);
        if (!r.bad && (c->rope_high_freq_factor <= c->rope_low_freq_factor || c->rope_factor <= 0 ||
                       c->rope_original_max_pos <= 0)) {
          refuse(&r, "rope_scaling llama3 needs factor > 0, high_freq_factor > low_freq_factor and original_max_position_embeddings > 0");
          goto done;
        }
      } else if (strcmp(ty, "default") != 0) {
        refuse(&r, "rope_scaling type \"%s\" is not supported (only llama3 and default)", ty);
        goto done;
      }
    }
    if (c->kv_heads == 0) c->kv_heads = c->heads;
    if (c->head_dim == 0 && c->heads > 0) c->head_dim = c->hidden / c->heads;
  }
  if (r.bad) goto done;
  // Shapes that the model code divides by or loops over must be sane before any allocation.
  if (c->vocab <= 0 || c->hidden <= 0 || c->layers <= 0 || c->heads <= 0 || c->kv_heads <= 0 ||
      c->head_dim <= 0 || c->intermediate <= 0) {
    refuse(&r, "vocab_size, hidden size, layers, heads, kv heads, head_dim and intermediate size must all be positive");
    goto done;
  }
  if ((long long)c->heads * c->head_dim > CFG_MAX_DIM) {
    refuse(&r, "num_attention_heads x head_dim (%d x %d) is beyond any real model (at most %d)", c->heads,
           c->head_dim, CFG_MAX_DIM);
    goto done;
  }
  if (c->heads % c->kv_heads != 0) {
    refuse(&r, "num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)", c->heads, c->kv_heads);
    goto done;
  }
  if (fam == PC_FAM_GPT2 && c->hidden % c->heads != 0) {
    refuse(&r, "n_embd (%d) is not a multiple of n_head (%d)", c->hidden, c->heads);
    goto done;
  }
  if (c->rms_norm && c->head_dim % 2 != 0) { refuse(&r, "head_dim (%d) must be even for RoPE", c->head_dim); goto done; }
done:
  cJSON_Delete(o);
  return r.bad ? -1 : 0;
}

// ---- writing ------------------------------------------------------------------------------------

int pc_config_write(const pc_config *c, const char *path, char *err, size_t errlen) {
  cJSON *o = cJSON_CreateObject();
  cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
  static const char *ARCH[] = {"GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM",
                               "Qwen2ForCausalLM", "Qwen3ForCausalLM"};
  cJSON_AddItemToArray(arch, cJSON_CreateString(ARCH[c->family]));
  cJSON_AddStringToObject(o, "model_type", pc_family_name(c->family));
  cJSON_AddNumberToObject(o, "vocab_size", c->vocab);
  if (c->bos_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
  if (c->eos_id >= 0) cJSON_AddNumberToObject(o, "eos_token_id", c->eos_id);
  cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings);
  cJSON_AddStringToObject(o, "torch_dtype", c->torch_dtype);
  if (c->family == PC_FAM_GPT2) {
    cJSON_AddNumberToObject(o, "n_embd", c->hidden);
    cJSON_AddNumberToObject(o, "n_layer", c->layers);
    cJSON_AddNumberToObject(o, "n_head", c->heads);
    cJSON_AddNumberToObject(o, "n_inner", c->intermediate);
    cJSON_AddNumberToObject(o, "n_positions", c->max_pos);
    cJSON_AddNumberToObject(o, "n_ctx", c->max_pos);
    cJSON_AddNumberToObject(o, "layer_norm_epsilon", c->norm_eps);
    cJSON_AddStringToObject(o, "activation_function", c->act == PC_ACT_GELU_ERF ? "gelu" : "gelu_new");
  } else {
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->norm_eps);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    if (c->family == PC_FAM_LLAMA || c->family == PC_FAM_QWEN3) cJSON_AddBoolToObject(o, "attention_bias", c->qkv_bias);
    if (c->family == PC_FAM_LLAMA) cJSON_AddBoolToObject(o, "mlp_bias", c->mlp_bias);
    if (c->family == PC_FAM_MISTRAL) {
      if (c->sliding_window) cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
      else cJSON_AddNullToObject(o, "sliding_window");
    }
    if (c->family == PC_FAM_QWEN2 || c->family == PC_FAM_QWEN3) cJSON_AddBoolToObject(o, "use_sliding_window", 0);
    if (c->rope_llama3) {
      cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
      cJSON_AddStringToObject(rs, "rope_type", "llama3");
      cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
      cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
      cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
      cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_original_max_pos);
    } else {
      cJSON_AddNullToObject(o, "rope_scaling");
    }
  }
  char *s = cJSON_Print(o);
  cJSON_Delete(o);
  FILE *fp = s ? fopen(path, "w") : NULL;
  int bad = !fp || fputs(s, fp) < 0 || fputc('\n', fp) == EOF;
  if (fp && fclose(fp) != 0) bad = 1;
  if (bad) pc_seterr(err, errlen, "%s: cannot write: %s", path, strerror(errno));
  free(s);
  return bad ? -1 : 0;
}
