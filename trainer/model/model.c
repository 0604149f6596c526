/* trainer/model/model.c: GPT-2 and Llama-family forward passes over the backend interface, weight loading
 * from Hugging Face checkpoints (with LoRA merging), and completion log-probs.
 *
 * Layout follows llm.c's train_gpt2.c: one function per layer kind with the shapes in comments. The
 * batch is packed (N rows = the sum of the sequence lengths, no padding), so every token-wise op runs
 * over exactly the tokens there are; only attention and RoPE look at sequence boundaries. Forward
 * only: activations are reused from layer to layer (the training issue keeps them per layer). */
#include "model/model.h"
#include "util/err.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

typedef struct {
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;  /* (C); biases only for LayerNorm */
  pc_weight qkv;                               /* GPT-2: fused (C, 3C) Conv1D */
  pc_weight q, k, v;                           /* Llama family: (NH*HD, C), (NKV*HD, C), (NKV*HD, C) */
  pc_weight o;                                 /* (C, NH*HD) */
  const float *q_norm, *k_norm;                /* Qwen3: (HD) */
  pc_weight fc, proj;                          /* GPT-2 MLP: (C, FF) and (FF, C) Conv1D */
  pc_weight gate, up, down;                    /* SwiGLU MLP: (FF, C), (FF, C), (C, FF) */
} layer_w;

typedef struct { void *p; int backend; } owned_buf;

struct pc_model {
  pc_config cfg;
  pc_backend *be;
  pc_ckpt *ckpt;
  const float *wte, *wpe;        /* (V, C), (max_pos, C) */
  const float *lnf_w, *lnf_b;    /* (C) */
  pc_weight head;                /* (V, C): lm_head or the tied wte */
  layer_w *L;
  owned_buf *owned;
  int nowned, capowned;
  /* LoRA adapter being merged during load (NULL after) */
  pc_ckpt *lora;
  double lora_scale;
  int lora_fan_in_fan_out, lora_merged;
  /* RoPE tables (rope_cap, HD/2), backend memory, grown on demand */
  float *cos_t, *sin_t;
  int rope_cap;
  double *inv_freq;              /* (HD/2), host */
  /* activations (backend memory), grown on demand */
  size_t cap_n, cap_m;
  int32_t *ids, *pos, *rows, *targets;
  float *x, *h, *qkvb, *att, *f1, *f2, *xm, *hm, *lp;
  float *lp_host;
};


const pc_config *pc_model_config(const pc_model *m) { return &m->cfg; }

// ---- weights ------------------------------------------------------------------------------------

static int keep(pc_model *m, void *p, int backend) {
  if (m->nowned == m->capowned) {
    int nc = m->capowned ? 2 * m->capowned : 64;
    owned_buf *no = realloc(m->owned, sizeof *no * (size_t)nc);
    if (!no) return -1;
    m->owned = no;
    m->capowned = nc;
  }
  m->owned[m->nowned++] = (owned_buf){p, backend};
  return 0;
}

void pc_lora_apply(float *w, pc_wlayout layout, int out_f, int in_f, const float *a, const float *b, int r, float s) {
  if (layout == PC_W_OUT_IN)  // W (out, in) += s * B (out, r) A (r, in)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out_f, in_f, r, s, b, r, a, in_f, 1.0f, w, in_f);
  else  // W (in, out) += s * A^T (in, r) B^T (r, out)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, in_f, out_f, r, s, a, in_f, b, r, 1.0f, w, out_f);
}

/* Merges the adapter's lora_A/lora_B for module `mod` (a path without ".weight") into w, a host copy
 * that we own, laid out (rows, cols) as in the checkpoint. Returns 1 when merged, 0 when the adapter
 * has no such module, -1 on error. */
static int lora_merge(pc_model *m, const char *mod, float *w, int64_t rows, int64_t cols, pc_wlayout layout,
                      char *err, size_t errlen) {
  char ka[1200], kb[1200];
  const pc_st_tensor *A = NULL, *B = NULL;
  // PEFT names modules by their path in the *ForCausalLM model; a bare GPT2Model checkpoint lacks
  // the "transformer." that the adapter has.
  const char *tries[2] = {mod, NULL};
  char alt[560];
  if (m->cfg.family == PC_FAM_GPT2 && strncmp(mod, "transformer.", 12) != 0) {
    snprintf(alt, sizeof alt, "transformer.%s", mod);
    tries[1] = alt;
  }
  for (int i = 0; i < 2 && tries[i] && !A; i++) {
    snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", tries[i]);
    snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", tries[i]);
    A = pc_ckpt_find(m->lora, ka);
    B = pc_ckpt_find(m->lora, kb);
    if (A && !B) { pc_seterr(err, errlen, "%s: has %s but no %s", A->file, ka, kb); return -1; }
  }
  if (!A) return 0;
  // nn.Linear: W (out, in); A (r, in), B (out, r). Conv1D (fan_in_fan_out): W (in, out) and the delta
  // is (B A)^T.
  int64_t out_f = layout == PC_W_OUT_IN ? rows : cols, in_f = layout == PC_W_OUT_IN ? cols : rows;
  if (A->ndim != 2 || B->ndim != 2 || A->shape[1] != in_f || B->shape[0] != out_f || B->shape[1] != A->shape[0]) {
    pc_seterr(err, errlen, "%s: LoRA tensors for %s have shapes that do not fit the weight (%lld x %lld)", A->file,
           mod, (long long)rows, (long long)cols);
    return -1;
  }
  int r = (int)A->shape[0];
  float *a = malloc(sizeof(float) * (size_t)A->numel), *b = malloc(sizeof(float) * (size_t)B->numel);
  if (!a || !b || pc_tensor_to_f32(A, a, err, errlen) || pc_tensor_to_f32(B, b, err, errlen)) {
    if (!a || !b) pc_seterr(err, errlen, "out of memory merging LoRA");
    free(a);
    free(b);
    return -1;
  }
  pc_lora_apply(w, layout, (int)out_f, (int)in_f, a, b, r, (float)m->lora_scale);
  free(a);
  free(b);
  m->lora_merged++;
  return 1;
}

/* Loads tensor `name` with the expected shape as backend float32. Missing → NULL with err set, unless
 * optional (then NULL with err empty). */
static const float *load(pc_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int optional,
                         pc_wlayout layout, char *err, size_t errlen) {
  err[0] = 0;
  const pc_st_tensor *t = pc_ckpt_find(m->ckpt, name);
  if (!t) {
    if (!optional) pc_seterr(err, errlen, "missing tensor '%s' in the checkpoint", name);
    return NULL;
  }
  int64_t dims[2] = {d0, d1};
  if (pc_tensor_check_shape(t, ndim, dims, err, errlen) != 0) return NULL;
  size_t n = (size_t)t->numel;
  float *host = NULL;
  const float *src;
  int lora = 0;
  if (m->lora && ndim == 2) {  // probe: does the adapter touch this module?
    char mod[512];
    snprintf(mod, sizeof mod, "%.*s", (int)(strlen(name) - 7), name);  // strip ".weight"
    char ka[600];
    snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", mod);
    char kb[620];
    snprintf(kb, sizeof kb, "base_model.model.transformer.%s.lora_A.weight", mod);
    lora = pc_ckpt_find(m->lora, ka) || (m->cfg.family == PC_FAM_GPT2 && pc_ckpt_find(m->lora, kb));
  }
  if (t->dtype == PC_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0 && !lora) {
    src = t->data;  // in place, from the mapping
  } else {
    host = malloc(sizeof(float) * (n ? n : 1));
    if (!host) { pc_seterr(err, errlen, "out of memory loading '%s'", name); return NULL; }
    if (pc_tensor_to_f32(t, host, err, errlen) != 0) { free(host); return NULL; }
    if (lora) {
      char mod[512];
      snprintf(mod, sizeof mod, "%.*s", (int)(strlen(name) - 7), name);
      if (lora_merge(m, mod, host, d0, d1, layout, err, errlen) < 0) { free(host); return NULL; }
    }
    src = host;
  }
  int owned = 0;
  const float *w = m->be->ops->weight(m->be, src, n, &owned);
  if (!w) { free(host); pc_seterr(err, errlen, "backend out of memory for '%s'", name); return NULL; }
  if (owned && keep(m, (void *)w, 1) != 0) { free(host); pc_seterr(err, errlen, "out of memory"); return NULL; }
  if (host) {
    if (w == host) { if (keep(m, host, 0) != 0) { free(host); pc_seterr(err, errlen, "out of memory"); return NULL; } }
    else free(host);
  }
  return w;
}

static int load_gpt2(pc_model *m, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  int64_t C = c->hidden, V = c->vocab, FF = c->intermediate;
  const char *pf = pc_ckpt_find(m->ckpt, "transformer.wte.weight") ? "transformer." : "";
  char nm[256];
#define LD(var, nd, a, b, opt, lay, ...)                                   \
  do {                                                                     \
    snprintf(nm, sizeof nm, __VA_ARGS__);                                  \
    var = load(m, nm, nd, a, b, opt, lay, err, errlen);                    \
    if (!var && (!(opt) || err[0])) return -1;                             \
  } while (0)
  LD(m->wte, 2, V, C, 0, PC_W_OUT_IN, "%swte.weight", pf);
  LD(m->wpe, 2, c->max_pos, C, 0, PC_W_OUT_IN, "%swpe.weight", pf);
  for (int l = 0; l < c->layers; l++) {
    layer_w *w = &m->L[l];
    LD(w->ln1_w, 1, C, 0, 0, PC_W_OUT_IN, "%sh.%d.ln_1.weight", pf, l);
    LD(w->ln1_b, 1, C, 0, 0, PC_W_OUT_IN, "%sh.%d.ln_1.bias", pf, l);
    LD(w->qkv.w, 2, C, 3 * C, 0, PC_W_IN_OUT, "%sh.%d.attn.c_attn.weight", pf, l);
    LD(w->qkv.b, 1, 3 * C, 0, 0, PC_W_OUT_IN, "%sh.%d.attn.c_attn.bias", pf, l);
    LD(w->o.w, 2, C, C, 0, PC_W_IN_OUT, "%sh.%d.attn.c_proj.weight", pf, l);
    LD(w->o.b, 1, C, 0, 0, PC_W_OUT_IN, "%sh.%d.attn.c_proj.bias", pf, l);
    LD(w->ln2_w, 1, C, 0, 0, PC_W_OUT_IN, "%sh.%d.ln_2.weight", pf, l);
    LD(w->ln2_b, 1, C, 0, 0, PC_W_OUT_IN, "%sh.%d.ln_2.bias", pf, l);
    LD(w->fc.w, 2, C, FF, 0, PC_W_IN_OUT, "%sh.%d.mlp.c_fc.weight", pf, l);
    LD(w->fc.b, 1, FF, 0, 0, PC_W_OUT_IN, "%sh.%d.mlp.c_fc.bias", pf, l);
    LD(w->proj.w, 2, FF, C, 0, PC_W_IN_OUT, "%sh.%d.mlp.c_proj.weight", pf, l);
    LD(w->proj.b, 1, C, 0, 0, PC_W_OUT_IN, "%sh.%d.mlp.c_proj.bias", pf, l);
    w->qkv.layout = w->o.layout = w->fc.layout = w->proj.layout = PC_W_IN_OUT;
  }
  LD(m->lnf_w, 1, C, 0, 0, PC_W_OUT_IN, "%sln_f.weight", pf);
  LD(m->lnf_b, 1, C, 0, 0, PC_W_OUT_IN, "%sln_f.bias", pf);
  const float *head = NULL;
  if (!c->tie_embeddings) LD(head, 2, V, C, 0, PC_W_OUT_IN, "lm_head.weight");
  m->head = (pc_weight){head ? head : m->wte, NULL, PC_W_OUT_IN};
  return 0;
}

static int load_llama(pc_model *m, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  int64_t C = c->hidden, V = c->vocab, FF = c->intermediate, HD = c->head_dim;
  int64_t QD = (int64_t)c->heads * HD, KD = (int64_t)c->kv_heads * HD;
  char nm[256];
  LD(m->wte, 2, V, C, 0, PC_W_OUT_IN, "model.embed_tokens.weight");
  for (int l = 0; l < c->layers; l++) {
    layer_w *w = &m->L[l];
    const char *p = "model.layers";
    LD(w->ln1_w, 1, C, 0, 0, PC_W_OUT_IN, "%s.%d.input_layernorm.weight", p, l);
    LD(w->ln2_w, 1, C, 0, 0, PC_W_OUT_IN, "%s.%d.post_attention_layernorm.weight", p, l);
    LD(w->q.w, 2, QD, C, 0, PC_W_OUT_IN, "%s.%d.self_attn.q_proj.weight", p, l);
    LD(w->k.w, 2, KD, C, 0, PC_W_OUT_IN, "%s.%d.self_attn.k_proj.weight", p, l);
    LD(w->v.w, 2, KD, C, 0, PC_W_OUT_IN, "%s.%d.self_attn.v_proj.weight", p, l);
    LD(w->o.w, 2, C, QD, 0, PC_W_OUT_IN, "%s.%d.self_attn.o_proj.weight", p, l);
    if (c->qkv_bias) {
      LD(w->q.b, 1, QD, 0, 0, PC_W_OUT_IN, "%s.%d.self_attn.q_proj.bias", p, l);
      LD(w->k.b, 1, KD, 0, 0, PC_W_OUT_IN, "%s.%d.self_attn.k_proj.bias", p, l);
      LD(w->v.b, 1, KD, 0, 0, PC_W_OUT_IN, "%s.%d.self_attn.v_proj.bias", p, l);
    }
    if (c->o_bias) LD(w->o.b, 1, C, 0, 0, PC_W_OUT_IN, "%s.%d.self_attn.o_proj.bias", p, l);
    if (c->qk_norm) {
      LD(w->q_norm, 1, HD, 0, 0, PC_W_OUT_IN, "%s.%d.self_attn.q_norm.weight", p, l);
      LD(w->k_norm, 1, HD, 0, 0, PC_W_OUT_IN, "%s.%d.self_attn.k_norm.weight", p, l);
    }
    LD(w->gate.w, 2, FF, C, 0, PC_W_OUT_IN, "%s.%d.mlp.gate_proj.weight", p, l);
    LD(w->up.w, 2, FF, C, 0, PC_W_OUT_IN, "%s.%d.mlp.up_proj.weight", p, l);
    LD(w->down.w, 2, C, FF, 0, PC_W_OUT_IN, "%s.%d.mlp.down_proj.weight", p, l);
    if (c->mlp_bias) {
      LD(w->gate.b, 1, FF, 0, 0, PC_W_OUT_IN, "%s.%d.mlp.gate_proj.bias", p, l);
      LD(w->up.b, 1, FF, 0, 0, PC_W_OUT_IN, "%s.%d.mlp.up_proj.bias", p, l);
      LD(w->down.b, 1, C, 0, 0, PC_W_OUT_IN, "%s.%d.mlp.down_proj.bias", p, l);
    }
  }
  LD(m->lnf_w, 1, C, 0, 0, PC_W_OUT_IN, "model.norm.weight");
  const float *head = NULL;
  if (!c->tie_embeddings) LD(head, 2, V, C, 0, PC_W_OUT_IN, "lm_head.weight");
  m->head = (pc_weight){head ? head : m->wte, NULL, PC_W_OUT_IN};
#undef LD
  // inverse frequencies in double (Hugging Face computes them in float32; double is the exact value
  // the float64 reference uses), with Llama 3's piecewise rescaling
  m->inv_freq = malloc(sizeof(double) * (size_t)(HD / 2));
  if (!m->inv_freq) { pc_seterr(err, errlen, "out of memory"); return -1; }
  pc_rope_inv_freq(c, m->inv_freq);
  return 0;
}

void pc_rope_inv_freq(const pc_config *c, double *out) {
  int HD = c->head_dim, half = HD / 2;
  for (int i = 0; i < half; i++) {
    double f = 1.0 / pow(c->rope_theta, (2.0 * i) / (double)HD);
    if (c->rope_llama3) {
      double old = c->rope_original_max_pos, lf = c->rope_low_freq_factor, hf = c->rope_high_freq_factor;
      double wavelen = 2 * M_PI / f, low_wl = old / lf, high_wl = old / hf;
      if (wavelen > low_wl) f = f / c->rope_factor;
      else if (!(wavelen < high_wl)) {
        double smooth = (old / wavelen - lf) / (hf - lf);
        f = (1 - smooth) * f / c->rope_factor + smooth * f;
      }
    }
    out[i] = f;
  }
}

int pc_rope_tables(const double *inv_freq, int half, int T, float **cos_out, float **sin_out) {
  size_t n = (size_t)T * (size_t)half;
  float *c = malloc(n * 4 + 4), *s = malloc(n * 4 + 4);
  if (!c || !s) { free(c); free(s); return -1; }
  for (int p = 0; p < T; p++)
    for (int i = 0; i < half; i++) {
      double a = p * inv_freq[i];
      c[(size_t)p * half + i] = (float)cos(a);
      s[(size_t)p * half + i] = (float)sin(a);
    }
  *cos_out = c;
  *sin_out = s;
  return 0;
}

int pc_adapter_config(const char *dir, double *r_out, double *alpha_out, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  FILE *fp = fopen(path, "rb");
  if (!fp) { pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return -1; }
  char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = 0;
  cJSON *o = cJSON_Parse(buf);
  int rc = -1;
  if (!cJSON_IsObject(o)) { pc_seterr(err, errlen, "%s: not a JSON object", path); goto done; }
  cJSON *pt = cJSON_GetObjectItemCaseSensitive(o, "peft_type");
  if (cJSON_IsString(pt) && strcmp(pt->valuestring, "LORA") != 0) {
    pc_seterr(err, errlen, "%s: peft_type \"%s\" is not supported (only LORA)", path, pt->valuestring);
    goto done;
  }
  cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "r"), *alpha = cJSON_GetObjectItemCaseSensitive(o, "lora_alpha");
  if (!cJSON_IsNumber(r) || r->valuedouble <= 0 || !cJSON_IsNumber(alpha)) {
    pc_seterr(err, errlen, "%s: field \"r\" (positive) and \"lora_alpha\" (number) are required", path);
    goto done;
  }
  static const char *refused[] = {"use_dora", "use_rslora"};
  for (int i = 0; i < 2; i++)
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, refused[i]))) {
      pc_seterr(err, errlen, "%s: option %s=true is not supported", path, refused[i]);
      goto done;
    }
  cJSON *bias = cJSON_GetObjectItemCaseSensitive(o, "bias");
  if (cJSON_IsString(bias) && strcmp(bias->valuestring, "none") != 0) {
    pc_seterr(err, errlen, "%s: option bias=\"%s\" is not supported (only \"none\")", path, bias->valuestring);
    goto done;
  }
  static const char *nonempty[] = {"rank_pattern", "alpha_pattern", "modules_to_save"};
  for (int i = 0; i < 3; i++) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, nonempty[i]);
    if (v && !cJSON_IsNull(v) && cJSON_GetArraySize(v) > 0) {
      pc_seterr(err, errlen, "%s: option %s is not supported (must be empty)", path, nonempty[i]);
      goto done;
    }
  }
  *r_out = r->valuedouble;
  *alpha_out = alpha->valuedouble;
  rc = 0;
done:
  cJSON_Delete(o);
  return rc;
}

int pc_model_load(const char *dir, const char *adapter_dir, pc_backend *be, pc_model **out, char *err,
                  size_t errlen) {
  *out = NULL;
  pc_model *m = calloc(1, sizeof *m);
  if (!m) { pc_seterr(err, errlen, "out of memory"); return -1; }
  m->be = be;
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (pc_config_load(path, &m->cfg, err, errlen) != 0) goto fail;
  if (pc_ckpt_open(dir, &m->ckpt, err, errlen) != 0) goto fail;
  if (adapter_dir) {
    double r, alpha;
    if (pc_adapter_config(adapter_dir, &r, &alpha, err, errlen) != 0) goto fail;
    m->lora_scale = alpha / r;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", adapter_dir);
    if (pc_ckpt_open_file(path, &m->lora, err, errlen) != 0) goto fail;
  }
  m->L = calloc((size_t)m->cfg.layers, sizeof *m->L);
  if (!m->L) { pc_seterr(err, errlen, "out of memory"); goto fail; }
  char e2[1024];
  int rc = m->cfg.family == PC_FAM_GPT2 ? load_gpt2(m, e2, sizeof e2) : load_llama(m, e2, sizeof e2);
  if (rc != 0) {
    // name the directory when the message does not already carry a file
    if (strstr(e2, ".safetensors") || strstr(e2, ".json")) pc_seterr(err, errlen, "%s", e2);
    else pc_seterr(err, errlen, "%s: %s", dir, e2);
    goto fail;
  }
  if (m->lora) {
    int nl = 0;
    for (int i = 0; i < pc_ckpt_count(m->lora); i++) nl += strstr(pc_ckpt_at(m->lora, i)->name, ".lora_A.") != NULL;
    if (nl != m->lora_merged) {
      pc_seterr(err, errlen, "%s/adapter_model.safetensors: %d LoRA modules, but only %d match weights of the model",
             adapter_dir, nl, m->lora_merged);
      goto fail;
    }
    pc_ckpt_close(m->lora);
    m->lora = NULL;
  }
  *out = m;
  return 0;
fail:
  pc_model_free(m);
  return -1;
}

void pc_model_free(pc_model *m) {
  if (!m) return;
  pc_backend *be = m->be;
  for (int i = 0; i < m->nowned; i++) {
    if (m->owned[i].backend) be->ops->free(be, m->owned[i].p);
    else free(m->owned[i].p);
  }
  free(m->owned);
  void *acts[] = {m->ids, m->pos, m->rows, m->targets, m->x, m->h, m->qkvb, m->att, m->f1, m->f2, m->xm, m->hm,
                  m->lp, m->cos_t, m->sin_t};
  for (size_t i = 0; i < sizeof acts / sizeof *acts; i++)
    if (acts[i]) be->ops->free(be, acts[i]);
  free(m->lp_host);
  free(m->inv_freq);
  free(m->L);
  pc_ckpt_close(m->lora);
  pc_ckpt_close(m->ckpt);
  free(m);
}

// ---- activations --------------------------------------------------------------------------------

static int grow(pc_model *m, void **p, size_t bytes) {
  if (*p) m->be->ops->free(m->be, *p);
  *p = m->be->ops->alloc(m->be, bytes);
  return *p ? 0 : -1;
}

/* Buffers for N rows and M scored rows; they only grow, so steady-state scoring allocates nothing. */
static int reserve(pc_model *m, size_t N, size_t M) {
  const pc_config *c = &m->cfg;
  size_t C = (size_t)c->hidden, FF = (size_t)c->intermediate, HD = (size_t)c->head_dim;
  size_t QKV = ((size_t)c->heads + 2 * (size_t)c->kv_heads) * HD, A = (size_t)c->heads * HD;
  if (N > m->cap_n) {
    size_t n = N + N / 4;
    if (grow(m, (void **)&m->ids, n * 4) || grow(m, (void **)&m->pos, n * 4) ||
        grow(m, (void **)&m->x, n * C * 4) || grow(m, (void **)&m->h, n * C * 4) ||
        grow(m, (void **)&m->qkvb, n * QKV * 4) || grow(m, (void **)&m->att, n * A * 4) ||
        grow(m, (void **)&m->f1, n * FF * 4) || grow(m, (void **)&m->f2, (c->rms_norm ? n * FF : 1) * 4))
      return -1;
    m->cap_n = n;
  }
  if (M > m->cap_m) {
    size_t n = M + M / 4;
    if (grow(m, (void **)&m->rows, n * 4) || grow(m, (void **)&m->targets, n * 4) ||
        grow(m, (void **)&m->xm, n * C * 4) || grow(m, (void **)&m->hm, n * C * 4) ||
        grow(m, (void **)&m->lp, n * 4))
      return -1;
    free(m->lp_host);
    m->lp_host = malloc(n * 4);
    if (!m->lp_host) return -1;
    m->cap_m = n;
  }
  return 0;
}

/* cos/sin tables (T, HD/2) for positions 0..T-1, computed in double and rounded once. */
static int rope_reserve(pc_model *m, int T) {
  if (!m->cfg.rms_norm || T <= m->rope_cap) return 0;
  int half = m->cfg.head_dim / 2, cap = T + 64;
  size_t n = (size_t)cap * (size_t)half;
  float *c, *s;
  if (pc_rope_tables(m->inv_freq, half, cap, &c, &s) != 0) return -1;
  pc_backend *be = m->be;
  int rc = grow(m, (void **)&m->cos_t, n * 4) || grow(m, (void **)&m->sin_t, n * 4);
  if (!rc) {
    be->ops->upload(be, m->cos_t, c, n * 4);
    be->ops->upload(be, m->sin_t, s, n * 4);
    m->rope_cap = cap;
  }
  free(c);
  free(s);
  return rc ? -1 : 0;
}

// ---- layers -------------------------------------------------------------------------------------

/* x (N, C) += attention(norm1(x)) for layer l: GPT-2's fused c_attn or the Llama family's q/k/v with
 * biases (Qwen2), per-head q/k RMSNorm (Qwen3), RoPE and grouped-query heads. */
static void attention_block(pc_model *m, const layer_w *w, float *x, const pc_batch *bt, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  int C = c->hidden, NH = c->heads, NKV = c->kv_heads, HD = c->head_dim;
  if (c->family == PC_FAM_GPT2) {
    op->layernorm(be, m->h, x, w->ln1_w, w->ln1_b, (float)c->norm_eps, N, C, NULL, NULL);    // h (N, C)
    op->matmul(be, m->qkvb, m->h, &w->qkv, N, C, 3 * C, 0);              // qkv (N, 3C)
    op->attention(be, m->att, m->qkvb, m->qkvb + C, m->qkvb + 2 * C, 3 * C, 3 * C, bt, N, NH, NH, HD, 0, NULL);
  } else {
    int QD = NH * HD, KD = NKV * HD;
    float *q = m->qkvb, *k = q + (size_t)N * QD, *v = k + (size_t)N * KD;
    op->rmsnorm(be, m->h, x, w->ln1_w, (float)c->norm_eps, N, C, C, NULL);              // h (N, C)
    op->matmul(be, q, m->h, &w->q, N, C, QD, 0);                          // q (N, NH, HD)
    op->matmul(be, k, m->h, &w->k, N, C, KD, 0);                          // k (N, NKV, HD)
    op->matmul(be, v, m->h, &w->v, N, C, KD, 0);                          // v (N, NKV, HD)
    if (c->qk_norm) {
      op->rmsnorm(be, q, q, w->q_norm, (float)c->norm_eps, N * NH, HD, HD, NULL);
      op->rmsnorm(be, k, k, w->k_norm, (float)c->norm_eps, N * NKV, HD, HD, NULL);
    }
    op->rope(be, q, m->cos_t, m->sin_t, bt, N, NH, HD, QD);
    op->rope(be, k, m->cos_t, m->sin_t, bt, N, NKV, HD, KD);
    op->attention(be, m->att, q, k, v, QD, KD, bt, N, NH, NKV, HD, c->sliding_window, NULL);  // att (N, NH*HD)
  }
  op->matmul(be, x, m->att, &w->o, N, NH * HD, C, 1);                     // x (N, C) += att · Wo
}

/* x (N, C) += mlp(norm2(x)): GELU MLP (GPT-2) or SwiGLU (Llama family). */
static void mlp_block(pc_model *m, const layer_w *w, float *x, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  int C = c->hidden, FF = c->intermediate;
  if (c->family == PC_FAM_GPT2) {
    op->layernorm(be, m->h, x, w->ln2_w, w->ln2_b, (float)c->norm_eps, N, C, NULL, NULL);    // h (N, C)
    op->matmul(be, m->f1, m->h, &w->fc, N, C, FF, 0);                      // f1 (N, FF)
    op->gelu(be, m->f1, (size_t)N * FF, c->act == PC_ACT_GELU_TANH);
    op->matmul(be, x, m->f1, &w->proj, N, FF, C, 1);                       // x (N, C) += f1 · Wproj
  } else {
    op->rmsnorm(be, m->h, x, w->ln2_w, (float)c->norm_eps, N, C, C, NULL);
    op->matmul(be, m->f1, m->h, &w->gate, N, C, FF, 0);                    // gate (N, FF)
    op->matmul(be, m->f2, m->h, &w->up, N, C, FF, 0);                      // up (N, FF)
    op->swiglu(be, m->f1, m->f1, m->f2, (size_t)N * FF);                   // silu(gate) * up
    op->matmul(be, x, m->f1, &w->down, N, FF, C, 1);                       // x (N, C) += f · Wdown
  }
}

// ---- scoring ------------------------------------------------------------------------------------

int pc_model_logps(pc_model *m, const pc_model_seq *seqs, int nseq, double *sum, int *count, float *tok_logps,
                   char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  pc_layout lay;
  if (pc_layout_build(c, seqs, nseq, &lay, err, errlen) != 0) return -1;
  size_t N = lay.N, M = lay.M;
  if (reserve(m, N, M) != 0 || rope_reserve(m, lay.maxT) != 0) {
    pc_layout_free(&lay);
    pc_seterr(err, errlen, "out of memory for activations");
    return -1;
  }
  if (N) {
    op->upload(be, m->ids, lay.ids, N * 4);
    op->upload(be, m->pos, lay.pos, N * 4);
  }
  pc_batch bt = {nseq, lay.start, m->pos, lay.shares ? lay.plen : NULL};

  // ---- the stack
  float *x = m->x;
  if (N) {
    op->embedding(be, x, m->ids, m->wte, c->learned_pos ? m->wpe : NULL, &bt, (int)N, c->hidden);  // x (N, C)
    for (int l = 0; l < c->layers; l++) {
      attention_block(m, &m->L[l], x, &bt, (int)N);
      mlp_block(m, &m->L[l], x, (int)N);
    }
  }

  // ---- final norm and the fused LM head + log-softmax, only on rows whose next token is scored
  if (M > 0) {
    op->upload(be, m->rows, lay.rows, M * 4);
    op->upload(be, m->targets, lay.targets, M * 4);
    op->gather_rows(be, m->xm, x, m->rows, (int)M, c->hidden);                       // xm (M, C)
    if (c->rms_norm) op->rmsnorm(be, m->hm, m->xm, m->lnf_w, (float)c->norm_eps, (int)M, c->hidden, c->hidden, NULL);
    else op->layernorm(be, m->hm, m->xm, m->lnf_w, m->lnf_b, (float)c->norm_eps, (int)M, c->hidden, NULL, NULL);
    op->logprob(be, m->lp, m->hm, &m->head, m->targets, (int)M, c->hidden, c->vocab, NULL);  // lp (M)
    op->download(be, m->lp_host, m->lp, M * 4);
  }
  size_t k = 0;
  for (int s = 0; s < nseq; s++) {
    int f = seqs[s].score_from < 1 ? 1 : seqs[s].score_from;
    double acc = 0;
    int cnt = 0;
    for (int i = f; i < seqs[s].n; i++, cnt++) {
      acc += m->lp_host[k];
      if (tok_logps) tok_logps[k] = m->lp_host[k];
      k++;
    }
    sum[s] = acc;
    count[s] = cnt;
  }
  pc_layout_free(&lay);
  return 0;
}

// ---- batch layout -------------------------------------------------------------------------------

void pc_layout_free(pc_layout *L) {
  free(L->start);
  free(L->ids);
  memset(L, 0, sizeof *L);
}

int pc_layout_build(const pc_config *c, const pc_model_seq *seqs, int nseq, pc_layout *L, char *err, size_t errlen) {
  memset(L, 0, sizeof *L);
  size_t N = 0, M = 0;
  for (int s = 0; s < nseq; s++) {
    const pc_model_seq *q = &seqs[s];
    if (q->n < 0) { pc_seterr(err, errlen, "sequence %d: negative length", s); return -1; }
    int k = q->shared_prefix;
    if (k < 0 || (k > 0 && (s == 0 || seqs[s - 1].shared_prefix != 0 || k > q->n || k > seqs[s - 1].n ||
                            memcmp(q->ids, seqs[s - 1].ids, sizeof(int32_t) * (size_t)k) != 0))) {
      pc_seterr(err, errlen, "sequence %d: shared_prefix %d does not match the previous sequence", s, k);
      return -1;
    }
    L->shares |= k > 0;
    N += (size_t)(q->n - k);
    int f = q->score_from < 1 ? 1 : q->score_from;
    if (q->n > f) M += (size_t)(q->n - f);
    if (q->n > L->maxT) L->maxT = q->n;
    if (c->learned_pos && q->n > c->max_pos) {
      pc_seterr(err, errlen, "sequence %d has %d tokens; the model has only %d positions (n_positions)", s, q->n,
                c->max_pos);
      return -1;
    }
    for (int i = 0; i < q->n; i++)
      if (q->ids[i] < 0 || q->ids[i] >= c->vocab) {
        pc_seterr(err, errlen, "sequence %d, position %d: token id %d is outside the vocabulary (0..%d)", s, i,
                  q->ids[i], c->vocab - 1);
        return -1;
      }
  }
  if (N > (size_t)1 << 30) { pc_seterr(err, errlen, "batch of %zu tokens is too large", N); return -1; }
  L->N = N;
  L->M = M;
  L->start = malloc(sizeof(int) * (size_t)(3 * nseq + 1));
  L->ids = malloc(sizeof(int32_t) * (2 * N + 2 * M + 1));
  if (!L->start || !L->ids) {
    pc_layout_free(L);
    pc_seterr(err, errlen, "out of memory");
    return -1;
  }
  L->plen = L->start + nseq + 1;
  L->cnt = L->plen + nseq;
  L->pos = L->ids + N;
  L->rows = L->pos + N;
  L->targets = L->rows + M;
  size_t r = 0;
  for (int s = 0; s < nseq; s++) {
    L->start[s] = (int)r;
    L->plen[s] = seqs[s].shared_prefix;
    for (int i = L->plen[s]; i < seqs[s].n; i++) {
      L->ids[r] = seqs[s].ids[i];
      L->pos[r++] = i;
    }
  }
  L->start[nseq] = (int)r;
  // the row holding position p of sequence s: in s-1's rows when p is inside the shared prefix
#define ROW_OF(s, p) ((p) < L->plen[s] ? L->start[(s) - 1] + (p) : L->start[s] + (p) - L->plen[s])
  size_t k = 0;
  for (int s = 0; s < nseq; s++) {
    int f = seqs[s].score_from < 1 ? 1 : seqs[s].score_from;
    L->cnt[s] = seqs[s].n > f ? seqs[s].n - f : 0;
    for (int i = f; i < seqs[s].n; i++, k++) {
      L->rows[k] = ROW_OF(s, i - 1);
      L->targets[k] = seqs[s].ids[i];
    }
  }
#undef ROW_OF
  return 0;
}
