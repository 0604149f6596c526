/* trainer/model/train_model.c: the trainable model: parameters (writable float32 copies of the checkpoint,
 * plus LoRA matrices), a forward pass that keeps each layer's activations, and its backward pass.
 *
 * Layout follows llm.c's train_gpt2.c: per layer a forward and a backward function with the shapes
 * in comments, activations kept per layer in one block, gradient scratch shared by all layers. What
 * is cheap to recompute is not kept: attention probabilities (recomputed per tile from the row's
 * log-sum-exp), the MLP's activation output (recomputed from its input). Everything runs through the
 * backend table, so the CUDA backend gets training by implementing the same ops. */
#include "model/train_model.h"
#include "util/err.h"
#include "util/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- structures ---------------------------------------------------------------------------------

/* Module slots of a layer. GPT-2 uses Q for c_attn (q, k and v fused), O for attn.c_proj, GATE for
 * mlp.c_fc and DOWN for mlp.c_proj. */
enum { M_Q, M_K, M_V, M_O, M_GATE, M_UP, M_DOWN, M_COUNT };

typedef struct {
  int pw, pb;          /* parameter indices of weight and bias (-1: none); pw -1: slot unused */
  pc_wlayout layout;
  int in, out;
  int la, lb;          /* LoRA A (r, in) and B (out, r) parameter indices, -1 when not adapted */
  char path[160];      /* module path as PEFT names it */
} lin;

typedef struct {
  int ln1_w, ln1_b, ln2_w, ln2_b, q_norm, k_norm;  /* parameter indices, -1 when absent */
  lin mod[M_COUNT];
} tlayer;

/* What one layer's forward keeps for its backward (pointers into one block). N rows. */
typedef struct {
  float *res;                  /* (N, C) the layer's input, the residual stream */
  float *h1, *mean1, *rstd1;   /* norm1 output (N, C), its statistics (N) */
  float *qkv;                  /* GPT-2 (N, 3C); Llama family q (N, QD) | k (N, KD) | v (N, KD), after norm and rope */
  float *qraw, *kraw, *qrstd, *krstd;  /* Qwen3: q, k before their norms, and the norms' rstd */
  float *att, *lse;            /* attention output (N, QD), its row log-sum-exps (N, NH) */
  float *mid;                  /* (N, C) residual after attention */
  float *h2, *mean2, *rstd2;   /* norm2 output and statistics */
  float *f1, *f2;              /* GPT-2: c_fc output before GELU (N, FF); Llama: gate, up (N, FF) */
  float *lt[M_COUNT];          /* LoRA: (alpha/r) x A^T (N, r) per adapted module */
} tact;

struct pc_tmodel {
  pc_config cfg;
  pc_backend *be;
  pc_param *P;
  int np, capp;
  int wte, wpe, lnf_w, lnf_b, head;  /* parameter indices (head == wte when tied) */
  tlayer *L;
  int lora_r;
  double lora_scale;
  char lora_targets[512];
  pc_dtype dtype;
  double *inv_freq;
  float *cos_t, *sin_t;
  int rope_cap;
  // ---- activations for cap_n rows and cap_m scored rows (backend memory)
  size_t cap_n, cap_m;
  float *act_block;
  tact *A;                     /* (layers) */
  float *res_out;              /* (N, C) the last layer's output */
  int32_t *ids, *pos, *rows, *targets;
  float *xm, *hm, *meanf, *rstdf, *lse_lp, *lp, *dlp, *dhm, *dxm;
  float *dres, *dh, *dqkv, *datt, *dff1, *dff2, *fact, *dt;
  float *lp_host, *dlp_host;
  // ---- the last forward's layout (kept for the backward)
  pc_layout lay;
  int nseq;
  int have_fwd;
};

const pc_config *pc_tmodel_config(const pc_tmodel *m) { return &m->cfg; }
int pc_tmodel_nparams(const pc_tmodel *m) { return m->np; }
pc_param *pc_tmodel_param(pc_tmodel *m, int i) { return &m->P[i]; }
pc_dtype pc_tmodel_dtype(const pc_tmodel *m) { return m->dtype; }
const char *pc_tmodel_lora_targets(const pc_tmodel *m) { return m->lora_targets; }

size_t pc_tmodel_trainable(const pc_tmodel *m, size_t *total) {
  size_t t = 0, all = 0;
  for (int i = 0; i < m->np; i++) {
    all += m->P[i].n;
    if (m->P[i].g) t += m->P[i].n;
  }
  if (total) *total = all;
  return t;
}

const char *pc_tmodel_default_targets(const pc_config *c) {
  return c->family == PC_FAM_GPT2 ? "c_attn,c_proj,c_fc" : "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
}

// ---- parameters ---------------------------------------------------------------------------------

static int new_param(pc_tmodel *m, const char *name, int ndim, int64_t d0, int64_t d1, char *err, size_t errlen) {
  if (m->np == m->capp) {
    int nc = m->capp ? 2 * m->capp : 64;
    pc_param *np = realloc(m->P, sizeof *np * (size_t)nc);
    if (!np) { pc_seterr(err, errlen, "out of memory"); return -1; }
    m->P = np;
    m->capp = nc;
  }
  pc_param *p = &m->P[m->np];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndim = ndim;
  p->shape[0] = d0;
  p->shape[1] = ndim > 1 ? d1 : 1;
  p->n = (size_t)d0 * (size_t)p->shape[1];
  p->decay = ndim > 1;
  p->w = m->be->ops->alloc(m->be, p->n * sizeof(float));
  if (!p->w) { pc_seterr(err, errlen, "out of memory for '%s'", name); return -1; }
  return m->np++;
}

/* Loads checkpoint tensor `name` into a new parameter. Returns its index; -1 on error; -2 when
 * optional and absent. */
static int load_param(pc_tmodel *m, pc_ckpt *ck, const char *name, int ndim, int64_t d0, int64_t d1, int optional,
                      char *err, size_t errlen) {
  const pc_st_tensor *t = pc_ckpt_find(ck, name);
  if (!t) {
    if (optional) return -2;
    pc_seterr(err, errlen, "missing tensor '%s' in the checkpoint", name);
    return -1;
  }
  int64_t dims[2] = {d0, d1};
  if (pc_tensor_check_shape(t, ndim, dims, err, errlen) != 0) return -1;
  if (m->np == 0) m->dtype = t->dtype;
  float *host = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
  if (!host) { pc_seterr(err, errlen, "out of memory loading '%s'", name); return -1; }
  if (pc_tensor_to_f32(t, host, err, errlen) != 0) { free(host); return -1; }
  int i = new_param(m, name, ndim, d0, d1, err, errlen);
  if (i >= 0) m->be->ops->upload(m->be, m->P[i].w, host, m->P[i].n * sizeof(float));
  free(host);
  return i;
}

static void set_lin(lin *L, int pw, int pb, pc_wlayout layout, int in, int out, const char *path) {
  L->pw = pw;
  L->pb = pb < 0 ? -1 : pb;
  L->layout = layout;
  L->in = in;
  L->out = out;
  L->la = L->lb = -1;
  snprintf(L->path, sizeof L->path, "%s", path);
}

static int load_gpt2(pc_tmodel *m, pc_ckpt *ck, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  int64_t C = c->hidden, V = c->vocab, FF = c->intermediate;
  const char *pf = pc_ckpt_find(ck, "transformer.wte.weight") ? "transformer." : "";
  char nm[256], path[160];
  int a, b;
#define P(idx, nd, d0, d1, opt, ...)                                           \
  do {                                                                         \
    snprintf(nm, sizeof nm, __VA_ARGS__);                                      \
    idx = load_param(m, ck, nm, nd, d0, d1, opt, err, errlen);                 \
    if (idx == -1) return -1;                                                  \
  } while (0)
  P(m->wte, 2, V, C, 0, "%swte.weight", pf);
  P(m->wpe, 2, c->max_pos, C, 0, "%swpe.weight", pf);
  for (int l = 0; l < c->layers; l++) {
    tlayer *t = &m->L[l];
    for (int k = 0; k < M_COUNT; k++) t->mod[k].pw = -1;
    t->q_norm = t->k_norm = -1;
    P(t->ln1_w, 1, C, 0, 0, "%sh.%d.ln_1.weight", pf, l);
    P(t->ln1_b, 1, C, 0, 0, "%sh.%d.ln_1.bias", pf, l);
    // PEFT names modules by their path in GPT2LMHeadModel, always under "transformer."
    P(a, 2, C, 3 * C, 0, "%sh.%d.attn.c_attn.weight", pf, l);
    P(b, 1, 3 * C, 0, 0, "%sh.%d.attn.c_attn.bias", pf, l);
    snprintf(path, sizeof path, "transformer.h.%d.attn.c_attn", l);
    set_lin(&t->mod[M_Q], a, b, PC_W_IN_OUT, (int)C, 3 * (int)C, path);
    P(a, 2, C, C, 0, "%sh.%d.attn.c_proj.weight", pf, l);
    P(b, 1, C, 0, 0, "%sh.%d.attn.c_proj.bias", pf, l);
    snprintf(path, sizeof path, "transformer.h.%d.attn.c_proj", l);
    set_lin(&t->mod[M_O], a, b, PC_W_IN_OUT, (int)C, (int)C, path);
    P(t->ln2_w, 1, C, 0, 0, "%sh.%d.ln_2.weight", pf, l);
    P(t->ln2_b, 1, C, 0, 0, "%sh.%d.ln_2.bias", pf, l);
    P(a, 2, C, FF, 0, "%sh.%d.mlp.c_fc.weight", pf, l);
    P(b, 1, FF, 0, 0, "%sh.%d.mlp.c_fc.bias", pf, l);
    snprintf(path, sizeof path, "transformer.h.%d.mlp.c_fc", l);
    set_lin(&t->mod[M_GATE], a, b, PC_W_IN_OUT, (int)C, (int)FF, path);
    P(a, 2, FF, C, 0, "%sh.%d.mlp.c_proj.weight", pf, l);
    P(b, 1, C, 0, 0, "%sh.%d.mlp.c_proj.bias", pf, l);
    snprintf(path, sizeof path, "transformer.h.%d.mlp.c_proj", l);
    set_lin(&t->mod[M_DOWN], a, b, PC_W_IN_OUT, (int)FF, (int)C, path);
  }
  P(m->lnf_w, 1, C, 0, 0, "%sln_f.weight", pf);
  P(m->lnf_b, 1, C, 0, 0, "%sln_f.bias", pf);
  m->head = m->wte;
  if (!c->tie_embeddings) P(m->head, 2, V, C, 0, "lm_head.weight");
  return 0;
}

static int load_llama(pc_tmodel *m, pc_ckpt *ck, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  int64_t C = c->hidden, V = c->vocab, FF = c->intermediate, HD = c->head_dim;
  int64_t QD = (int64_t)c->heads * HD, KD = (int64_t)c->kv_heads * HD;
  char nm[256], path[160];
  int a, b;
  m->wpe = m->lnf_b = -1;
  P(m->wte, 2, V, C, 0, "model.embed_tokens.weight");
  static const char *names[M_COUNT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
  int64_t in[M_COUNT] = {C, C, C, QD, C, C, FF}, out[M_COUNT] = {QD, KD, KD, C, FF, FF, C};
  int bias[M_COUNT] = {c->qkv_bias, c->qkv_bias, c->qkv_bias, c->o_bias, c->mlp_bias, c->mlp_bias, c->mlp_bias};
  for (int l = 0; l < c->layers; l++) {
    tlayer *t = &m->L[l];
    t->ln1_b = t->ln2_b = t->q_norm = t->k_norm = -1;
    P(t->ln1_w, 1, C, 0, 0, "model.layers.%d.input_layernorm.weight", l);
    for (int k = 0; k < M_COUNT; k++) {
      P(a, 2, out[k], in[k], 0, "model.layers.%d.%s.weight", l, names[k]);
      b = -1;
      if (bias[k]) P(b, 1, out[k], 0, 0, "model.layers.%d.%s.bias", l, names[k]);
      snprintf(path, sizeof path, "model.layers.%d.%s", l, names[k]);
      set_lin(&t->mod[k], a, b, PC_W_OUT_IN, (int)in[k], (int)out[k], path);
      if (k == M_O) {
        if (c->qk_norm) {
          P(t->q_norm, 1, HD, 0, 0, "model.layers.%d.self_attn.q_norm.weight", l);
          P(t->k_norm, 1, HD, 0, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        P(t->ln2_w, 1, C, 0, 0, "model.layers.%d.post_attention_layernorm.weight", l);
      }
    }
  }
  P(m->lnf_w, 1, C, 0, 0, "model.norm.weight");
  m->head = m->wte;
  if (!c->tie_embeddings) P(m->head, 2, V, C, 0, "lm_head.weight");
#undef P
  return 0;
}

// ---- LoRA ---------------------------------------------------------------------------------------

/* PEFT's rule: a module is targeted when its name equals a target or ends with "." + target. */
static int targeted(const char *path, const char *targets) {
  const char *p = targets;
  size_t lp = strlen(path);
  while (*p) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n && lp >= n && memcmp(path + lp - n, p, n) == 0 && (lp == n || path[lp - n - 1] == '.')) return 1;
    p += n + (e ? 1 : 0);
  }
  return 0;
}

/* Adds A and B to every targeted module: PEFT's initialization (A ~ U(-1/sqrt(in), 1/sqrt(in)), the
 * bound of kaiming_uniform_(a=sqrt(5)); B = 0) or the matrices of an initial adapter. */
static int add_lora(pc_tmodel *m, const pc_tmodel_opts *o, char *err, size_t errlen) {
  const char *targets = o->lora_targets && *o->lora_targets ? o->lora_targets : pc_tmodel_default_targets(&m->cfg);
  pc_ckpt *init = NULL;
  int r = o->lora_r;
  double alpha = o->lora_alpha;
  if (o->init_adapter) {
    char path[4096];
    double rr;
    if (pc_adapter_config(o->init_adapter, &rr, &alpha, err, errlen) != 0) return -1;
    r = (int)rr;
    if (r != rr) { pc_seterr(err, errlen, "%s/adapter_config.json: \"r\" must be an integer", o->init_adapter); return -1; }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", o->init_adapter);
    if (pc_ckpt_open_file(path, &init, err, errlen) != 0) return -1;
  }
  m->lora_r = r;
  m->lora_scale = alpha / r;
  uint64_t rng = o->seed ^ 0x6C6F7261ull;  // "lora"
  int matched = 0, rc = -1, from_init = 0;
  m->lora_targets[0] = 0;
  for (int l = 0; l < m->cfg.layers; l++)
    for (int k = 0; k < M_COUNT; k++) {
      lin *L = &m->L[l].mod[k];
      if (L->pw < 0) continue;
      char ka[256], kb[256];
      snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", L->path);
      snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", L->path);
      const pc_st_tensor *ta = init ? pc_ckpt_find(init, ka) : NULL, *tb = init ? pc_ckpt_find(init, kb) : NULL;
      if (init ? !ta : !targeted(L->path, targets)) continue;
      if (init && !tb) { pc_seterr(err, errlen, "%s: has %s but no %s", ta->file, ka, kb); goto done; }
      // the module's own name (after the last dot) joins the list written to adapter_config.json
      const char *leaf = strrchr(L->path, '.') + 1;
      if (!targeted(leaf, m->lora_targets)) {
        size_t u = strlen(m->lora_targets);
        snprintf(m->lora_targets + u, sizeof m->lora_targets - u, "%s%s", u ? "," : "", leaf);
      }
      int64_t da[2] = {r, L->in}, db[2] = {L->out, r};
      if (init && (pc_tensor_check_shape(ta, 2, da, err, errlen) || pc_tensor_check_shape(tb, 2, db, err, errlen)))
        goto done;
      L->la = new_param(m, ka, 2, r, L->in, err, errlen);
      if (L->la < 0) goto done;
      L->lb = new_param(m, kb, 2, L->out, r, err, errlen);
      if (L->lb < 0) goto done;
      m->P[L->la].lora = m->P[L->lb].lora = 1;
      pc_param *A = &m->P[L->la], *B = &m->P[L->lb];
      float *ha = malloc(sizeof(float) * A->n), *hb = malloc(sizeof(float) * B->n);
      if (!ha || !hb) { free(ha); free(hb); pc_seterr(err, errlen, "out of memory"); goto done; }
      int bad = 0;
      if (init) {
        bad = pc_tensor_to_f32(ta, ha, err, errlen) || pc_tensor_to_f32(tb, hb, err, errlen);
        from_init++;
      } else {
        double bound = 1.0 / sqrt((double)L->in);
        for (size_t i = 0; i < A->n; i++)
          ha[i] = (float)((pc_rand_unit(&rng) * 2.0 - 1.0) * bound);
        memset(hb, 0, sizeof(float) * B->n);
      }
      if (!bad) {
        m->be->ops->upload(m->be, A->w, ha, sizeof(float) * A->n);
        m->be->ops->upload(m->be, B->w, hb, sizeof(float) * B->n);
      }
      free(ha);
      free(hb);
      if (bad) goto done;
      matched++;
    }
  if (init) {
    int nl = 0;
    for (int i = 0; i < pc_ckpt_count(init); i++) nl += strstr(pc_ckpt_at(init, i)->name, ".lora_A.") != NULL;
    if (nl != from_init) {
      pc_seterr(err, errlen, "%s/adapter_model.safetensors: %d LoRA modules, but only %d match modules of the model",
                o->init_adapter, nl, from_init);
      goto done;
    }
  }
  if (!matched) {
    pc_seterr(err, errlen, "LoRA targets '%s' match no module of this %s model (its modules: %s)", targets,
              m->cfg.model_type, pc_tmodel_default_targets(&m->cfg));
    goto done;
  }
  rc = 0;
done:
  pc_ckpt_close(init);
  return rc;
}

int pc_tmodel_load(const char *dir, const pc_tmodel_opts *o, pc_backend *be, pc_tmodel **out, char *err,
                   size_t errlen) {
  *out = NULL;
  pc_tmodel *m = calloc(1, sizeof *m);
  if (!m) { pc_seterr(err, errlen, "out of memory"); return -1; }
  m->be = be;
  pc_ckpt *ck = NULL;
  char path[4096], e2[1024];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (pc_config_load(path, &m->cfg, err, errlen) != 0) goto fail;
  if (pc_ckpt_open(dir, &ck, err, errlen) != 0) goto fail;
  m->L = calloc((size_t)m->cfg.layers, sizeof *m->L);
  m->A = calloc((size_t)m->cfg.layers, sizeof *m->A);
  m->inv_freq = malloc(sizeof(double) * (size_t)(m->cfg.head_dim / 2 + 1));
  if (!m->L || !m->A || !m->inv_freq) { pc_seterr(err, errlen, "out of memory"); goto fail; }
  pc_rope_inv_freq(&m->cfg, m->inv_freq);
  if ((m->cfg.family == PC_FAM_GPT2 ? load_gpt2(m, ck, e2, sizeof e2) : load_llama(m, ck, e2, sizeof e2)) != 0) {
    if (strstr(e2, ".safetensors")) pc_seterr(err, errlen, "%s", e2);
    else pc_seterr(err, errlen, "%s: %s", dir, e2);
    goto fail;
  }
  pc_ckpt_close(ck);
  ck = NULL;
  int nbase = m->np;
  if (o->lora_r > 0 || o->init_adapter) {
    if (add_lora(m, o, err, errlen) != 0) goto fail;
  }
  // gradients: everything in a full fine-tune, only the LoRA matrices otherwise
  int lora = m->np > nbase;
  for (int i = 0; i < m->np; i++) {
    pc_param *p = &m->P[i];
    if (lora && !p->lora) continue;
    p->g = be->ops->alloc(be, p->n * sizeof(float));
    if (!p->g) { pc_seterr(err, errlen, "out of memory for the gradient of '%s'", p->name); goto fail; }
    be->ops->zero(be, p->g, p->n * sizeof(float));
  }
  *out = m;
  return 0;
fail:
  pc_ckpt_close(ck);
  pc_tmodel_free(m);
  return -1;
}

static void free_acts(pc_tmodel *m) {
  pc_backend *be = m->be;
  if (m->act_block) be->ops->free(be, m->act_block);
  m->act_block = NULL;
  m->cap_n = m->cap_m = 0;
}

void pc_tmodel_free(pc_tmodel *m) {
  if (!m) return;
  pc_backend *be = m->be;
  for (int i = 0; i < m->np; i++) {
    if (m->P[i].w) be->ops->free(be, m->P[i].w);
    if (m->P[i].g) be->ops->free(be, m->P[i].g);
  }
  free(m->P);
  free_acts(m);
  if (m->cos_t) be->ops->free(be, m->cos_t);
  if (m->sin_t) be->ops->free(be, m->sin_t);
  free(m->lp_host);
  free(m->L);
  free(m->A);
  free(m->inv_freq);
  pc_layout_free(&m->lay);
  free(m);
}

void pc_tmodel_zero_grad(pc_tmodel *m) {
  for (int i = 0; i < m->np; i++)
    if (m->P[i].g) m->be->ops->zero(m->be, m->P[i].g, m->P[i].n * sizeof(float));
}

// ---- activations --------------------------------------------------------------------------------

/* One block of backend memory holds every layer's activations and the shared scratch: carved in
 * order by `take` (a first pass with base NULL measures it). */
typedef struct { char *base; size_t off; } carver;

static float *take(carver *c, size_t nfloats) {
  size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
  float *p = c->base ? (float *)(c->base + c->off) : NULL;
  c->off += bytes;
  return p;
}

static void carve(pc_tmodel *m, carver *cv, size_t N, size_t M) {
  const pc_config *c = &m->cfg;
  size_t C = (size_t)c->hidden, FF = (size_t)c->intermediate, HD = (size_t)c->head_dim;
  size_t NH = (size_t)c->heads, NKV = (size_t)c->kv_heads, QD = NH * HD, KD = NKV * HD, QKV = QD + 2 * KD;
  size_t r = (size_t)(m->lora_r > 0 ? m->lora_r : 1);
  for (int l = 0; l < c->layers; l++) {
    tact *a = &m->A[l];
    a->res = take(cv, N * C);
    a->h1 = take(cv, N * C);
    a->mean1 = take(cv, N);
    a->rstd1 = take(cv, N);
    a->qkv = take(cv, N * QKV);
    if (c->qk_norm) {
      a->qraw = take(cv, N * QD);
      a->kraw = take(cv, N * KD);
      a->qrstd = take(cv, N * NH);
      a->krstd = take(cv, N * NKV);
    }
    a->att = take(cv, N * QD);
    a->lse = take(cv, N * NH);
    a->mid = take(cv, N * C);
    a->h2 = take(cv, N * C);
    a->mean2 = take(cv, N);
    a->rstd2 = take(cv, N);
    a->f1 = take(cv, N * FF);
    a->f2 = c->rms_norm ? take(cv, N * FF) : NULL;
    for (int k = 0; k < M_COUNT; k++) a->lt[k] = m->L[l].mod[k].la >= 0 ? take(cv, N * r) : NULL;
  }
  m->res_out = take(cv, N * C);
  m->ids = (int32_t *)take(cv, N);
  m->pos = (int32_t *)take(cv, N);
  m->rows = (int32_t *)take(cv, M);
  m->targets = (int32_t *)take(cv, M);
  m->xm = take(cv, M * C);
  m->hm = take(cv, M * C);
  m->meanf = take(cv, M);
  m->rstdf = take(cv, M);
  m->lse_lp = take(cv, M);
  m->lp = take(cv, M);
  m->dlp = take(cv, M);
  m->dhm = take(cv, M * C);
  m->dxm = take(cv, M * C);
  m->dres = take(cv, N * C);
  m->dh = take(cv, N * C);
  m->dqkv = take(cv, N * QKV);
  m->datt = take(cv, N * QD);
  m->dff1 = take(cv, N * FF);
  m->dff2 = take(cv, N * FF);
  m->fact = take(cv, N * FF);
  m->dt = take(cv, N * r);
}

static int reserve(pc_tmodel *m, size_t N, size_t M) {
  if (N <= m->cap_n && M <= m->cap_m) return 0;
  size_t n = N > m->cap_n ? N + N / 4 : m->cap_n, mm = M > m->cap_m ? M + M / 4 : m->cap_m;
  free_acts(m);
  carver cv = {NULL, 0};
  carve(m, &cv, n, mm);
  m->act_block = m->be->ops->alloc(m->be, cv.off);
  free(m->lp_host);
  m->lp_host = malloc(sizeof(float) * 2 * (mm + 1));
  if (!m->act_block || !m->lp_host) return -1;
  cv = (carver){(char *)m->act_block, 0};
  carve(m, &cv, n, mm);
  m->dlp_host = m->lp_host + mm + 1;
  m->cap_n = n;
  m->cap_m = mm;
  return 0;
}

static int rope_reserve(pc_tmodel *m, int T) {
  if (!m->cfg.rms_norm || T <= m->rope_cap) return 0;
  int half = m->cfg.head_dim / 2, cap = T + 64;
  size_t n = (size_t)cap * (size_t)half * sizeof(float);
  float *c, *s;
  if (pc_rope_tables(m->inv_freq, half, cap, &c, &s) != 0) return -1;
  pc_backend *be = m->be;
  if (m->cos_t) be->ops->free(be, m->cos_t);
  if (m->sin_t) be->ops->free(be, m->sin_t);
  m->cos_t = be->ops->alloc(be, n);
  m->sin_t = be->ops->alloc(be, n);
  int ok = m->cos_t && m->sin_t;
  if (ok) {
    be->ops->upload(be, m->cos_t, c, n);
    be->ops->upload(be, m->sin_t, s, n);
    m->rope_cap = cap;
  }
  free(c);
  free(s);
  return ok ? 0 : -1;
}

// ---- linear modules with LoRA -------------------------------------------------------------------

static pc_weight wt(const pc_tmodel *m, const lin *L) {
  return (pc_weight){m->P[L->pw].w, L->pb >= 0 ? m->P[L->pb].w : NULL, L->layout};
}

/* out (N, out) (= or +=) inp (N, in) · W + b + scale (inp A^T) B^T; t (N, r) keeps scale inp A^T. */
static void lin_forward(pc_tmodel *m, const lin *L, float *out, const float *inp, float *t, int N, int accumulate) {
  const pc_backend_ops *op = m->be->ops;
  pc_weight w = wt(m, L);
  op->matmul(m->be, out, inp, &w, N, L->in, L->out, accumulate);
  if (L->la >= 0) {
    pc_weight A = {m->P[L->la].w, NULL, PC_W_OUT_IN}, B = {m->P[L->lb].w, NULL, PC_W_OUT_IN};
    op->matmul(m->be, t, inp, &A, N, L->in, m->lora_r, 0);              // t (N, r)
    op->scale(m->be, t, (size_t)N * (size_t)m->lora_r, (float)m->lora_scale);
    op->matmul(m->be, out, t, &B, N, m->lora_r, L->out, 1);             // out += t B^T
  }
}

/* The backward of lin_forward: dinp (N, in) (= or +=), and the gradients of the trainable ones of W,
 * b, A, B. */
static void lin_backward(pc_tmodel *m, const lin *L, float *dinp, const float *dout, const float *inp, const float *t,
                         int N, int accumulate) {
  const pc_backend_ops *op = m->be->ops;
  pc_weight w = wt(m, L);
  op->matmul_backward(m->be, dinp, m->P[L->pw].g, L->pb >= 0 ? m->P[L->pb].g : NULL, dout, inp, &w, N, L->in, L->out,
                      accumulate);
  if (L->la >= 0) {
    pc_weight A = {m->P[L->la].w, NULL, PC_W_OUT_IN}, B = {m->P[L->lb].w, NULL, PC_W_OUT_IN};
    int r = m->lora_r;
    op->matmul_backward(m->be, m->dt, m->P[L->lb].g, NULL, dout, t, &B, N, r, L->out, 0);  // dt = dout B; dB
    op->scale(m->be, m->dt, (size_t)N * (size_t)r, (float)m->lora_scale);
    op->matmul_backward(m->be, dinp, m->P[L->la].g, NULL, m->dt, inp, &A, N, L->in, r, 1);  // dinp += dt A; dA
  }
}

// ---- layers -------------------------------------------------------------------------------------

static const float *PW(const pc_tmodel *m, int i) { return i >= 0 ? m->P[i].w : NULL; }
static float *PG(const pc_tmodel *m, int i) { return i >= 0 ? m->P[i].g : NULL; }

/* mid (N, C) = res + attention(norm1(res)) */
static void attn_forward(pc_tmodel *m, int l, const pc_batch *bt, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const tlayer *t = &m->L[l];
  tact *a = &m->A[l];
  int C = c->hidden, NH = c->heads, NKV = c->kv_heads, HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
  float eps = (float)c->norm_eps;
  if (c->family == PC_FAM_GPT2) {
    op->layernorm(be, a->h1, a->res, PW(m, t->ln1_w), PW(m, t->ln1_b), eps, N, C, a->mean1, a->rstd1);
    lin_forward(m, &t->mod[M_Q], a->qkv, a->h1, a->lt[M_Q], N, 0);                   // qkv (N, 3C)
    op->attention(be, a->att, a->qkv, a->qkv + C, a->qkv + 2 * C, 3 * C, 3 * C, bt, N, NH, NH, HD, 0, a->lse);
  } else {
    float *q = a->qkv, *k = q + (size_t)N * QD, *v = k + (size_t)N * KD;
    op->rmsnorm(be, a->h1, a->res, PW(m, t->ln1_w), eps, N, C, C, a->rstd1);
    lin_forward(m, &t->mod[M_Q], c->qk_norm ? a->qraw : q, a->h1, a->lt[M_Q], N, 0);  // q (N, NH, HD)
    lin_forward(m, &t->mod[M_K], c->qk_norm ? a->kraw : k, a->h1, a->lt[M_K], N, 0);  // k (N, NKV, HD)
    lin_forward(m, &t->mod[M_V], v, a->h1, a->lt[M_V], N, 0);                         // v (N, NKV, HD)
    if (c->qk_norm) {
      op->rmsnorm(be, q, a->qraw, PW(m, t->q_norm), eps, N * NH, HD, HD, a->qrstd);
      op->rmsnorm(be, k, a->kraw, PW(m, t->k_norm), eps, N * NKV, HD, HD, a->krstd);
    }
    op->rope(be, q, m->cos_t, m->sin_t, bt, N, NH, HD, QD);
    op->rope(be, k, m->cos_t, m->sin_t, bt, N, NKV, HD, KD);
    op->attention(be, a->att, q, k, v, QD, KD, bt, N, NH, NKV, HD, c->sliding_window, a->lse);
  }
  op->copy(be, a->mid, a->res, sizeof(float) * (size_t)N * C);
  lin_forward(m, &t->mod[M_O], a->mid, a->att, a->lt[M_O], N, 1);                     // mid += att · Wo
}

/* out (N, C) = mid + mlp(norm2(mid)) */
static void mlp_forward(pc_tmodel *m, int l, float *out, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const tlayer *t = &m->L[l];
  tact *a = &m->A[l];
  int C = c->hidden, FF = c->intermediate;
  size_t NF = (size_t)N * FF;
  float eps = (float)c->norm_eps;
  if (c->family == PC_FAM_GPT2) {
    op->layernorm(be, a->h2, a->mid, PW(m, t->ln2_w), PW(m, t->ln2_b), eps, N, C, a->mean2, a->rstd2);
    lin_forward(m, &t->mod[M_GATE], a->f1, a->h2, a->lt[M_GATE], N, 0);              // f1 (N, FF)
    op->copy(be, m->fact, a->f1, sizeof(float) * NF);
    op->gelu(be, m->fact, NF, c->act == PC_ACT_GELU_TANH);
  } else {
    op->rmsnorm(be, a->h2, a->mid, PW(m, t->ln2_w), eps, N, C, C, a->rstd2);
    lin_forward(m, &t->mod[M_GATE], a->f1, a->h2, a->lt[M_GATE], N, 0);              // gate (N, FF)
    lin_forward(m, &t->mod[M_UP], a->f2, a->h2, a->lt[M_UP], N, 0);                  // up (N, FF)
    op->swiglu(be, m->fact, a->f1, a->f2, NF);
  }
  op->copy(be, out, a->mid, sizeof(float) * (size_t)N * C);
  lin_forward(m, &t->mod[M_DOWN], out, m->fact, a->lt[M_DOWN], N, 1);                // out += f · Wdown
}

/* dres holds dLoss/d(layer output); on return dLoss/d(mid). */
static void mlp_backward(pc_tmodel *m, int l, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const tlayer *t = &m->L[l];
  tact *a = &m->A[l];
  int C = c->hidden, FF = c->intermediate;
  size_t NF = (size_t)N * FF;
  if (c->family == PC_FAM_GPT2) {
    op->copy(be, m->fact, a->f1, sizeof(float) * NF);  // recompute gelu(f1), the input of c_proj
    op->gelu(be, m->fact, NF, c->act == PC_ACT_GELU_TANH);
    lin_backward(m, &t->mod[M_DOWN], m->dff1, m->dres, m->fact, a->lt[M_DOWN], N, 0);  // dff1 (N, FF)
    op->gelu_backward(be, m->dff1, a->f1, m->dff1, NF, c->act == PC_ACT_GELU_TANH);
    lin_backward(m, &t->mod[M_GATE], m->dh, m->dff1, a->h2, a->lt[M_GATE], N, 0);      // dh (N, C)
    op->layernorm_backward(be, m->dres, PG(m, t->ln2_w), PG(m, t->ln2_b), m->dh, a->mid, PW(m, t->ln2_w), a->mean2,
                           a->rstd2, N, C, 1);
  } else {
    op->swiglu(be, m->fact, a->f1, a->f2, NF);          // recompute silu(gate) * up
    lin_backward(m, &t->mod[M_DOWN], m->dff1, m->dres, m->fact, a->lt[M_DOWN], N, 0);
    op->swiglu_backward(be, m->dff1, m->dff2, a->f1, a->f2, m->dff1, NF);             // dgate, dup
    lin_backward(m, &t->mod[M_GATE], m->dh, m->dff1, a->h2, a->lt[M_GATE], N, 0);
    lin_backward(m, &t->mod[M_UP], m->dh, m->dff2, a->h2, a->lt[M_UP], N, 1);
    op->rmsnorm_backward(be, m->dres, PG(m, t->ln2_w), m->dh, a->mid, PW(m, t->ln2_w), a->rstd2, N, C, C, 1);
  }
}

/* dres holds dLoss/d(mid); on return dLoss/d(res), the layer's input. */
static void attn_backward(pc_tmodel *m, int l, const pc_batch *bt, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const tlayer *t = &m->L[l];
  tact *a = &m->A[l];
  int C = c->hidden, NH = c->heads, NKV = c->kv_heads, HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
  lin_backward(m, &t->mod[M_O], m->datt, m->dres, a->att, a->lt[M_O], N, 0);           // datt (N, QD)
  if (c->family == PC_FAM_GPT2) {
    op->attention_backward(be, m->dqkv, m->dqkv + C, m->dqkv + 2 * C, m->datt, a->qkv, a->qkv + C, a->qkv + 2 * C,
                           a->att, a->lse, 3 * C, 3 * C, bt, N, NH, NH, HD, 0);
    lin_backward(m, &t->mod[M_Q], m->dh, m->dqkv, a->h1, a->lt[M_Q], N, 0);
    op->layernorm_backward(be, m->dres, PG(m, t->ln1_w), PG(m, t->ln1_b), m->dh, a->res, PW(m, t->ln1_w), a->mean1,
                           a->rstd1, N, C, 1);
  } else {
    float *q = a->qkv, *k = q + (size_t)N * QD, *v = k + (size_t)N * KD;
    float *dq = m->dqkv, *dk = dq + (size_t)N * QD, *dv = dk + (size_t)N * KD;
    op->attention_backward(be, dq, dk, dv, m->datt, q, k, v, a->att, a->lse, QD, KD, bt, N, NH, NKV, HD,
                           c->sliding_window);
    op->rope_backward(be, dq, m->cos_t, m->sin_t, bt, N, NH, HD, QD);
    op->rope_backward(be, dk, m->cos_t, m->sin_t, bt, N, NKV, HD, KD);
    if (c->qk_norm) {
      op->rmsnorm_backward(be, dq, PG(m, t->q_norm), dq, a->qraw, PW(m, t->q_norm), a->qrstd, N * NH, HD, HD, 0);
      op->rmsnorm_backward(be, dk, PG(m, t->k_norm), dk, a->kraw, PW(m, t->k_norm), a->krstd, N * NKV, HD, HD, 0);
    }
    lin_backward(m, &t->mod[M_Q], m->dh, dq, a->h1, a->lt[M_Q], N, 0);
    lin_backward(m, &t->mod[M_K], m->dh, dk, a->h1, a->lt[M_K], N, 1);
    lin_backward(m, &t->mod[M_V], m->dh, dv, a->h1, a->lt[M_V], N, 1);
    op->rmsnorm_backward(be, m->dres, PG(m, t->ln1_w), m->dh, a->res, PW(m, t->ln1_w), a->rstd1, N, C, C, 1);
  }
}

// ---- forward and backward -----------------------------------------------------------------------

static pc_batch batch_of(pc_tmodel *m) {
  return (pc_batch){m->nseq, m->lay.start, m->pos, m->lay.shares ? m->lay.plen : NULL};
}

int pc_tmodel_forward(pc_tmodel *m, const pc_model_seq *seqs, int nseq, double *sum, int *count, char *err,
                      size_t errlen) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  m->have_fwd = 0;
  pc_layout_free(&m->lay);
  if (pc_layout_build(c, seqs, nseq, &m->lay, err, errlen) != 0) return -1;
  m->nseq = nseq;
  size_t N = m->lay.N, M = m->lay.M;
  if (reserve(m, N, M) != 0 || rope_reserve(m, m->lay.maxT) != 0) {
    pc_seterr(err, errlen, "out of memory for the activations of %zu tokens", N);
    return -1;
  }
  if (N) {
    op->upload(be, m->ids, m->lay.ids, N * 4);
    op->upload(be, m->pos, m->lay.pos, N * 4);
  }
  pc_batch bt = batch_of(m);
  int C = c->hidden;
  if (N) {
    op->embedding(be, m->A[0].res, m->ids, PW(m, m->wte), c->learned_pos ? PW(m, m->wpe) : NULL, &bt, (int)N, C);
    for (int l = 0; l < c->layers; l++) {
      attn_forward(m, l, &bt, (int)N);
      mlp_forward(m, l, l + 1 < c->layers ? m->A[l + 1].res : m->res_out, (int)N);
    }
  }
  if (M) {
    op->upload(be, m->rows, m->lay.rows, M * 4);
    op->upload(be, m->targets, m->lay.targets, M * 4);
    op->gather_rows(be, m->xm, m->res_out, m->rows, (int)M, C);                       // xm (M, C)
    if (c->rms_norm) op->rmsnorm(be, m->hm, m->xm, PW(m, m->lnf_w), (float)c->norm_eps, (int)M, C, C, m->rstdf);
    else
      op->layernorm(be, m->hm, m->xm, PW(m, m->lnf_w), PW(m, m->lnf_b), (float)c->norm_eps, (int)M, C, m->meanf,
                    m->rstdf);
    pc_weight head = {PW(m, m->head), NULL, PC_W_OUT_IN};
    op->logprob(be, m->lp, m->hm, &head, m->targets, (int)M, C, c->vocab, m->lse_lp);  // lp (M)
    op->download(be, m->lp_host, m->lp, M * 4);
  }
  size_t k = 0;
  for (int s = 0; s < nseq; s++) {
    int f = seqs[s].score_from < 1 ? 1 : seqs[s].score_from;
    double acc = 0;
    int cnt = 0;
    for (int i = f; i < seqs[s].n; i++, cnt++) acc += m->lp_host[k++];
    sum[s] = acc;
    count[s] = cnt;
  }
  m->have_fwd = 1;
  return 0;
}

int pc_tmodel_backward(pc_tmodel *m, const float *dsum, char *err, size_t errlen) {
  if (!m->have_fwd) { pc_seterr(err, errlen, "backward without a forward pass"); return -1; }
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  size_t N = m->lay.N, M = m->lay.M;
  int C = c->hidden;
  if (!M) return 0;  // nothing scored: no gradient
  // every scored token of a sequence receives the gradient of the sequence's sum
  size_t k = 0;
  for (int s = 0; s < m->nseq; s++)
    for (int i = 0; i < m->lay.cnt[s]; i++) m->dlp_host[k++] = dsum[s];
  op->upload(be, m->dlp, m->dlp_host, M * 4);
  pc_batch bt = batch_of(m);
  pc_weight head = {PW(m, m->head), NULL, PC_W_OUT_IN};
  op->logprob_backward(be, m->dhm, PG(m, m->head), m->hm, &head, m->targets, m->lse_lp, m->dlp, (int)M, C, c->vocab);
  if (c->rms_norm)
    op->rmsnorm_backward(be, m->dxm, PG(m, m->lnf_w), m->dhm, m->xm, PW(m, m->lnf_w), m->rstdf, (int)M, C, C, 0);
  else
    op->layernorm_backward(be, m->dxm, PG(m, m->lnf_w), PG(m, m->lnf_b), m->dhm, m->xm, PW(m, m->lnf_w), m->meanf,
                           m->rstdf, (int)M, C, 0);
  op->zero(be, m->dres, sizeof(float) * N * (size_t)C);
  op->scatter_rows(be, m->dres, m->dxm, m->rows, (int)M, C);                            // dres (N, C)
  for (int l = c->layers - 1; l >= 0; l--) {
    mlp_backward(m, l, (int)N);
    attn_backward(m, l, &bt, (int)N);
  }
  op->embedding_backward(be, PG(m, m->wte), c->learned_pos ? PG(m, m->wpe) : NULL, m->dres, m->ids, &bt, (int)N, C);
  return 0;
}

// ---- writers ------------------------------------------------------------------------------------

/* Host copies of the parameters selected by `want` (lora 1: the LoRA matrices, 0: the model's own
 * weights), merged with their adapters when `merged`. hosts[i] is malloc'd; free with free_hosts. */
static int host_params(pc_tmodel *m, int lora, int merged, pc_st_write_tensor *ts, float **hosts, int *n, char *err,
                       size_t errlen) {
  *n = 0;
  for (int i = 0; i < m->np; i++) {
    pc_param *p = &m->P[i];
    if (p->lora != lora) continue;
    float *h = malloc(sizeof(float) * (p->n ? p->n : 1));
    if (!h) { pc_seterr(err, errlen, "out of memory writing '%s'", p->name); return -1; }
    m->be->ops->download(m->be, h, p->w, sizeof(float) * p->n);
    hosts[*n] = h;
    ts[*n] = (pc_st_write_tensor){p->name, p->ndim, {p->shape[0], p->shape[1]}, h};
    (*n)++;
  }
  if (!merged) return 0;
  // W += scale B A, as score --adapter merges it. The model's own weights come first in P (LoRA
  // matrices are appended after them), so hosts[i] is parameter i's copy.
  for (int l = 0; l < m->cfg.layers; l++)
    for (int k = 0; k < M_COUNT; k++) {
      const lin *L = &m->L[l].mod[k];
      if (L->pw < 0 || L->la < 0) continue;
      float *a = malloc(sizeof(float) * m->P[L->la].n), *b = malloc(sizeof(float) * m->P[L->lb].n);
      if (!a || !b) { free(a); free(b); pc_seterr(err, errlen, "out of memory merging"); return -1; }
      m->be->ops->download(m->be, a, m->P[L->la].w, sizeof(float) * m->P[L->la].n);
      m->be->ops->download(m->be, b, m->P[L->lb].w, sizeof(float) * m->P[L->lb].n);
      pc_lora_apply(hosts[L->pw], L->layout, L->out, L->in, a, b, m->lora_r, (float)m->lora_scale);
      free(a);
      free(b);
    }
  return 0;
}

static int write_params(pc_tmodel *m, const char *path, int lora, int merged, pc_dtype dtype, char *err,
                        size_t errlen) {
  pc_st_write_tensor *ts = calloc((size_t)m->np + 1, sizeof *ts);
  float **hosts = calloc((size_t)m->np + 1, sizeof *hosts);
  int n = 0, rc = -1;
  if (!ts || !hosts) { pc_seterr(err, errlen, "out of memory"); goto done; }
  if (host_params(m, lora, merged, ts, hosts, &n, err, errlen) != 0) goto done;
  rc = pc_st_write(path, ts, n, dtype, err, errlen);
done:
  if (hosts)
    for (int i = 0; i < m->np; i++) free(hosts[i]);
  free(hosts);
  free(ts);
  return rc;
}

int pc_tmodel_save_adapter(pc_tmodel *m, const char *dir, const char *base_model, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  if (write_params(m, path, 1, 0, PC_DT_F32, err, errlen) != 0) return -1;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "peft_type", "LORA");
  cJSON_AddStringToObject(o, "task_type", "CAUSAL_LM");
  cJSON_AddStringToObject(o, "base_model_name_or_path", base_model ? base_model : "");
  cJSON_AddNumberToObject(o, "r", m->lora_r);
  // alpha as a number that reproduces the scale exactly when r divides it (PEFT: scale = alpha / r)
  cJSON_AddNumberToObject(o, "lora_alpha", m->lora_scale * m->lora_r);
  cJSON_AddNumberToObject(o, "lora_dropout", 0.0);
  cJSON *tg = cJSON_AddArrayToObject(o, "target_modules");
  const char *p = m->lora_targets;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t k = e ? (size_t)(e - p) : strlen(p);
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)k, p);
    cJSON_AddItemToArray(tg, cJSON_CreateString(name));
    p += k + (e ? 1 : 0);
  }
  cJSON_AddBoolToObject(o, "fan_in_fan_out", m->cfg.family == PC_FAM_GPT2);
  cJSON_AddStringToObject(o, "bias", "none");
  cJSON_AddBoolToObject(o, "inference_mode", 1);
  cJSON_AddBoolToObject(o, "use_rslora", 0);
  cJSON_AddBoolToObject(o, "use_dora", 0);
  cJSON_AddNullToObject(o, "modules_to_save");
  cJSON_AddBoolToObject(o, "init_lora_weights", 1);
  cJSON_AddNullToObject(o, "layers_to_transform");
  cJSON_AddNullToObject(o, "layers_pattern");
  cJSON_AddObjectToObject(o, "rank_pattern");
  cJSON_AddObjectToObject(o, "alpha_pattern");
  cJSON_AddNullToObject(o, "revision");
  char *txt = cJSON_Print(o);
  cJSON_Delete(o);
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  FILE *f = txt ? fopen(path, "wb") : NULL;
  int ok = f && fputs(txt, f) >= 0 && fputc('\n', f) != EOF;
  if (f && fclose(f) != 0) ok = 0;
  if (!ok) pc_seterr(err, errlen, "%s: cannot write: %s", path, strerror(errno));
  free(txt);
  return ok ? 0 : -1;
}

int pc_tmodel_save_model(pc_tmodel *m, const char *dir, pc_dtype dtype, int merged, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (write_params(m, path, 0, merged, dtype, err, errlen) != 0) return -1;
  pc_config c = m->cfg;
  snprintf(c.torch_dtype, sizeof c.torch_dtype, "%s",
           dtype == PC_DT_BF16 ? "bfloat16" : dtype == PC_DT_F16 ? "float16" : "float32");
  snprintf(path, sizeof path, "%s/config.json", dir);
  return pc_config_write(&c, path, err, errlen);
}

/* Replaces the values of every parameter that `st` holds under the same name (a checkpoint of this
 * run): used by --resume. Returns how many were loaded; -1 on error. */
int pc_tmodel_load_params(pc_tmodel *m, const char *path, int *loaded, char *err, size_t errlen) {
  pc_ckpt *ck = NULL;
  if (pc_ckpt_open_file(path, &ck, err, errlen) != 0) return -1;
  int n = 0, rc = 0;
  for (int i = 0; i < m->np && rc == 0; i++) {
    pc_param *p = &m->P[i];
    const pc_st_tensor *t = pc_ckpt_find(ck, p->name);
    if (!t) continue;
    int64_t dims[2] = {p->shape[0], p->shape[1]};
    float *h = malloc(sizeof(float) * (p->n ? p->n : 1));
    if (!h || pc_tensor_check_shape(t, p->ndim, dims, err, errlen) || pc_tensor_to_f32(t, h, err, errlen)) {
      if (!h) pc_seterr(err, errlen, "out of memory");
      rc = -1;
    } else {
      m->be->ops->upload(m->be, p->w, h, sizeof(float) * p->n);
      n++;
    }
    free(h);
  }
  pc_ckpt_close(ck);
  *loaded = n;
  return rc;
}
