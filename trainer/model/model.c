/* trainer/model/model.c: the one model (model.h): loading through the family tables (families.h),
 * frozen or trainable; LoRA; the forward pass (keeping activations or not) and its backward pass; the
 * writers of adapters, models and checkpoints.
 *
 * Layout follows llm.c's train_gpt2.c: per block a forward and a backward function with the shapes in
 * comments. The batch is packed (N rows = the sum of the sequence lengths, no padding), so every
 * token-wise op runs over exactly the tokens there are; only attention and RoPE look at sequence
 * boundaries. What is cheap to recompute is not kept: attention probabilities (recomputed per tile
 * from the row's log-sum-exp), the MLP's activation output (recomputed from its input). Everything
 * runs through the backend table, so a backend gets scoring and training by implementing its ops. */
#include "model/model.h"
#include "model/families.h"
#include "util/err.h"
#include "util/util.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- structures ---------------------------------------------------------------------------------

/* A linear module: y = x W + b (+ LoRA). */
typedef struct {
  int pw, pb;          /* parameter indices of weight and bias (-1: none); pw -1: slot unused */
  pc_wlayout layout;
  int in, out;
  int la, lb;          /* LoRA A (r, in) and B (out, r) parameter indices, -1 when not adapted */
  char path[160];      /* module path as PEFT names it */
} linear;

typedef struct {
  int p[PC_L_COUNT];   /* parameter index of each per-layer tensor (families.h slots), -1 when absent */
  linear mod[PC_MOD_COUNT];
} layer;

/* What one layer's forward keeps for its backward (pointers into one block). N rows. Without keep,
 * every layer's pointers are the same buffers. */
typedef struct {
  float *res;                  /* (N, C) the layer's input, the residual stream */
  float *h1, *mean1, *rstd1;   /* norm1 output (N, C), its statistics (N) */
  float *qkv;                  /* GPT-2 (N, 3C); Llama family q (N, QD) | k (N, KD) | v (N, KD), after norm and rope */
  float *qraw, *kraw, *qrstd, *krstd;  /* Qwen3: q, k before their norms, and the norms' rstd */
  float *att, *lse;            /* attention output (N, QD), its row log-sum-exps (N, NH) */
  float *mid;                  /* (N, C) residual after attention */
  float *h2, *mean2, *rstd2;   /* norm2 output and statistics */
  float *f1, *f2;              /* GPT-2: c_fc output before GELU (N, FF); Llama: gate, up (N, FF) */
  float *lt[PC_MOD_COUNT];     /* LoRA: (alpha/r) x A^T (N, r) per adapted module */
} activations;

struct pc_model {
  pc_config cfg;
  pc_backend *be;
  int trainable;
  pc_ckpt *ckpt;               /* frozen: kept open, weights may point into its mapping */
  int strip_prefix;            /* the checkpoint lacks the family's optional prefix (bare GPT2Model) */
  pc_param *params;
  int nparams, cap_params;
  int g[PC_G_COUNT];           /* whole-model parameter indices (head == wte when tied), -1 when absent */
  layer *layers;
  // ---- LoRA
  int lora_r;
  double lora_scale;
  char lora_targets[512];
  pc_ckpt *merge;              /* frozen: the adapter being merged during load (NULL after) */
  double merge_scale;
  int merged;
  pc_dtype dtype;
  // ---- RoPE tables (rope_cap, HD/2), backend memory, grown on demand
  double *inv_freq;
  float *cos_t, *sin_t;
  int rope_cap;
  // ---- activations for cap_n rows and cap_m scored rows (backend memory, one block)
  size_t cap_n, cap_m;
  int cap_keep;                /* the block holds every layer's activations and the gradient scratch */
  int recompute;               /* keep only each layer's input; the backward recomputes the layer */
  int plan;                    /* pc_model_plan: shapes only, no backend (be is NULL), nothing read or allocated */
  float *act_block;
  activations *acts;           /* (layers) */
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

const pc_config *pc_model_config(const pc_model *m) { return &m->cfg; }
int pc_model_nparams(const pc_model *m) { return m->nparams; }
pc_param *pc_model_param(pc_model *m, int i) { return &m->params[i]; }
pc_dtype pc_model_dtype(const pc_model *m) { return m->dtype; }
const char *pc_model_lora_targets(const pc_model *m) { return m->lora_targets; }

size_t pc_model_trainable(const pc_model *m, size_t *total) {
  size_t t = 0, all = 0;
  for (int i = 0; i < m->nparams; i++) {
    all += m->params[i].n;
    if (m->params[i].g) t += m->params[i].n;
  }
  if (total) *total = all;
  return t;
}

/* A failed backend op: the backend's own message (which names the op) into err. */
static int backend_failed(pc_model *m, const char *what, char *err, size_t errlen) {
  const char *e = m->be->ops->error(m->be);
  pc_seterr(err, errlen, "backend %s: %s: %s", m->be->ops->name, what, e ? e : "failed");
  return -1;
}

// ---- parameters ---------------------------------------------------------------------------------

/* A new parameter slot; its memory is set by the caller. */
static int new_param(pc_model *m, const char *name, int ndim, int64_t d0, int64_t d1, char *err, size_t errlen) {
  if (m->nparams == m->cap_params) {
    int nc = m->cap_params ? 2 * m->cap_params : 64;
    pc_param *np = realloc(m->params, sizeof *np * (size_t)nc);
    if (!np) { pc_seterr(err, errlen, "out of memory"); return -1; }
    m->params = np;
    m->cap_params = nc;
  }
  pc_param *p = &m->params[m->nparams];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndim = ndim;
  p->shape[0] = d0;
  p->shape[1] = ndim > 1 ? d1 : 1;
  p->n = (size_t)d0 * (size_t)p->shape[1];
  p->decay = ndim > 1;
  return m->nparams++;
}

/* A new parameter with writable backend memory of its own. */
static int new_owned_param(pc_model *m, const char *name, int ndim, int64_t d0, int64_t d1, char *err, size_t errlen) {
  int i = new_param(m, name, ndim, d0, d1, err, errlen);
  if (i < 0) return -1;
  pc_param *p = &m->params[i];
  if (m->plan) return i;
  p->w = m->be->ops->alloc(m->be, p->n * sizeof(float));
  if (!p->w) { pc_seterr(err, errlen, "out of memory for '%s'", name); return -1; }
  p->w_owned = 1;
  return i;
}

static int upload(pc_model *m, void *dst, const void *src, size_t bytes, const char *what, char *err, size_t errlen) {
  if (m->be->ops->upload(m->be, dst, src, bytes) != 0) return backend_failed(m, what, err, errlen);
  return 0;
}

/* A parameter's new values from the host; the backend is told that the weight changed (backend.h:
 * weight_updated; the CUDA backend's bf16 copies of it are remade). */
static int upload_param(pc_model *m, pc_param *p, const float *host, char *err, size_t errlen) {
  if (upload(m, p->w, host, sizeof(float) * p->n, p->name, err, errlen) != 0) return -1;
  m->be->ops->weight_updated(m->be, p->w, p->n);
  return 0;
}

/* W += s B A (nn.Linear, W (out, in)) or its transpose (Conv1D, W (in, out)); A (r, in), B (out, r). */
static void lora_apply(float *w, pc_wlayout layout, int out_f, int in_f, const float *a, const float *b, int r, float s) {
  if (layout == PC_W_OUT_IN)  // W (out, in) += s * B (out, r) A (r, in)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out_f, in_f, r, s, b, r, a, in_f, 1.0f, w, in_f);
  else  // W (in, out) += s * A^T (in, r) B^T (r, out)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, in_f, out_f, r, s, a, in_f, b, r, 1.0f, w, out_f);
}

/* The adapter's lora_A/lora_B for the module at PEFT path `path` (NULL, NULL when it has none). PEFT
 * names modules by their path in the *ForCausalLM model; an adapter of a bare GPT2Model lacks the
 * "transformer." that the table's names carry, so that spelling is tried too. */
static int find_lora(const pc_model *m, pc_ckpt *ad, const char *path, const pc_st_tensor **A, const pc_st_tensor **B,
                     char *ka, size_t kan, char *err, size_t errlen) {
  const char *pre = pc_family_table_of(m->cfg.family)->prefix;
  const char *tries[2] = {path, *pre && !strncmp(path, pre, strlen(pre)) ? path + strlen(pre) : NULL};
  *A = *B = NULL;
  for (int i = 0; i < 2 && tries[i] && !*A; i++) {
    char kb[400];
    snprintf(ka, kan, "base_model.model.%s.lora_A.weight", tries[i]);
    snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", tries[i]);
    *A = pc_ckpt_find(ad, ka);
    *B = pc_ckpt_find(ad, kb);
    if (*A && !*B) { pc_seterr(err, errlen, "%s: has %s but no %s", (*A)->file, ka, kb); return -1; }
  }
  if (!*A) snprintf(ka, kan, "base_model.model.%s.lora_A.weight", path);
  return 0;
}

/* Frozen load with an adapter: merges the module's LoRA into host (rows, cols as stored). */
static int merge_lora(pc_model *m, const char *path, float *host, int64_t rows, int64_t cols, pc_wlayout layout,
                      char *err, size_t errlen) {
  const pc_st_tensor *A, *B;
  char ka[400];
  if (find_lora(m, m->merge, path, &A, &B, ka, sizeof ka, err, errlen) != 0) return -1;
  if (!A) return 0;
  int64_t out_f = layout == PC_W_OUT_IN ? rows : cols, in_f = layout == PC_W_OUT_IN ? cols : rows;
  if (A->ndim != 2 || B->ndim != 2 || A->shape[1] != in_f || B->shape[0] != out_f || B->shape[1] != A->shape[0]) {
    pc_seterr(err, errlen, "%s: LoRA tensors for %s have shapes that do not fit the weight (%lld x %lld)", A->file,
              path, (long long)rows, (long long)cols);
    return -1;
  }
  float *a = malloc(sizeof(float) * (size_t)A->numel), *b = malloc(sizeof(float) * (size_t)B->numel);
  int rc = -1;
  if (!a || !b) pc_seterr(err, errlen, "out of memory merging LoRA");
  else if (!pc_tensor_to_f32(A, a, err, errlen) && !pc_tensor_to_f32(B, b, err, errlen)) {
    lora_apply(host, layout, (int)out_f, (int)in_f, a, b, (int)A->shape[0], (float)m->merge_scale);
    m->merged++;
    rc = 1;
  }
  free(a);
  free(b);
  return rc;
}

/* One checkpoint tensor into a new parameter: trainable, a writable backend copy; frozen, the backend's
 * view of the F32 bytes in the mapping when they can be used as they are (else a float32 host copy,
 * with the adapter merged). path: the module's PEFT path for linear weights (NULL otherwise). */
static int load_tensor(pc_model *m, const pc_st_tensor *t, int ndim, const int64_t *dims, const char *path,
                       pc_wlayout layout, char *err, size_t errlen) {
  if (pc_tensor_check_shape(t, ndim, dims, err, errlen) != 0) return -1;
  if (m->nparams == 0) m->dtype = t->dtype;
  if (m->plan) return new_param(m, t->name, ndim, dims[0], dims[1], err, errlen);
  size_t n = (size_t)t->numel;
  int in_place = !m->trainable && t->dtype == PC_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0;
  if (in_place && m->merge && path) {  // does the adapter touch this module?
    const pc_st_tensor *A, *B;
    char ka[400];
    if (find_lora(m, m->merge, path, &A, &B, ka, sizeof ka, err, errlen) != 0) return -1;
    in_place = A == NULL;
  }
  float *host = NULL;
  if (!in_place) {
    host = malloc(sizeof(float) * (n ? n : 1));
    if (!host) { pc_seterr(err, errlen, "out of memory loading '%s'", t->name); return -1; }
    if (pc_tensor_to_f32(t, host, err, errlen) != 0 ||
        (m->merge && path && merge_lora(m, path, host, dims[0], dims[1], layout, err, errlen) < 0)) {
      free(host);
      return -1;
    }
  }
  int i;
  if (m->trainable) {
    i = new_owned_param(m, t->name, ndim, dims[0], dims[1], err, errlen);
    if (i >= 0 && upload_param(m, &m->params[i], host, err, errlen) != 0) i = -1;
    free(host);
    return i;
  }
  i = new_param(m, t->name, ndim, dims[0], dims[1], err, errlen);
  if (i < 0) { free(host); return -1; }
  pc_param *p = &m->params[i];
  int owned = 0;
  p->w = (float *)m->be->ops->weight(m->be, host ? host : t->data, n, &owned);
  if (!p->w) { free(host); return backend_failed(m, t->name, err, errlen); }
  p->w_owned = owned;
  if (host && owned) free(host);  // the backend made its own copy
  else p->host = host;            // the weight is the host copy itself
  return i;
}

/* Every tensor of the family's table that this config has, into parameters and the slots that name
 * them. */
static int load_weights(pc_model *m, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  const pc_family_table *ft = pc_family_table_of(c->family);
  size_t plen = strlen(ft->prefix);
  char full[256];
  if (plen) {  // a bare checkpoint: names without the prefix
    snprintf(full, sizeof full, "%s", ft->tensors[0].name);
    m->strip_prefix = !pc_ckpt_find(m->ckpt, full) && !strncmp(full, ft->prefix, plen) &&
                      pc_ckpt_find(m->ckpt, full + plen);
  }
  for (int k = 0; k < PC_G_COUNT; k++) m->g[k] = -1;
  for (int l = 0; l < c->layers; l++)
    for (int k = 0; k < PC_L_COUNT; k++) m->layers[l].p[k] = -1;
  for (int ti = 0; ti < ft->count; ti++) {
    const pc_tensor_spec *s = &ft->tensors[ti];
    if (!pc_tensor_present(s, c)) continue;
    int64_t dims[2];
    int ndim = pc_tensor_shape(s, c, dims);
    int linw = s->per_layer && s->slot >= PC_L_W && s->slot < PC_L_B;
    for (int l = 0; l < (s->per_layer ? c->layers : 1); l++) {
      snprintf(full, sizeof full, s->name, l);
      const char *name = m->strip_prefix && !strncmp(full, ft->prefix, plen) ? full + plen : full;
      const pc_st_tensor *t = pc_ckpt_find(m->ckpt, name);
      if (!t) { pc_seterr(err, errlen, "missing tensor '%s' in the checkpoint", name); return -1; }
      char path[160];
      snprintf(path, sizeof path, "%.*s", (int)(strlen(full) - 7), full);  // the module: strip ".weight"
      int i = load_tensor(m, t, ndim, dims, linw ? path : NULL, s->layout, err, errlen);
      if (i < 0) return -1;
      if (!s->per_layer) { m->g[s->slot] = i; continue; }
      layer *L = &m->layers[l];
      L->p[s->slot] = i;
      if (linw) {
        linear *mod = &L->mod[s->slot - PC_L_W];
        mod->layout = s->layout;
        mod->in = (int)(s->layout == PC_W_OUT_IN ? dims[1] : dims[0]);
        mod->out = (int)(s->layout == PC_W_OUT_IN ? dims[0] : dims[1]);
        snprintf(mod->path, sizeof mod->path, "%s", path);
      }
    }
  }
  if (m->g[PC_G_HEAD] < 0) m->g[PC_G_HEAD] = m->g[PC_G_WTE];  // tied
  for (int l = 0; l < c->layers; l++)
    for (int k = 0; k < PC_MOD_COUNT; k++) {
      linear *mod = &m->layers[l].mod[k];
      mod->pw = m->layers[l].p[PC_L_W + k];
      mod->pb = m->layers[l].p[PC_L_B + k];
      mod->la = mod->lb = -1;
    }
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

static int count_lora_modules(const pc_ckpt *ck) {
  int n = 0;
  for (int i = 0; i < pc_ckpt_count(ck); i++) n += strstr(pc_ckpt_at(ck, i)->name, ".lora_A.") != NULL;
  return n;
}

/* A and B of one module: the initial adapter's matrices, or PEFT's initialization (A ~ U(-1/sqrt(in),
 * 1/sqrt(in)), the bound of kaiming_uniform_(a=sqrt(5)); B = 0). */
static int init_lora_pair(pc_model *m, linear *L, const pc_st_tensor *ta, const pc_st_tensor *tb, uint64_t *rng,
                          char *err, size_t errlen) {
  if (m->plan) return 0;
  pc_param *A = &m->params[L->la], *B = &m->params[L->lb];
  float *ha = malloc(sizeof(float) * A->n), *hb = malloc(sizeof(float) * B->n);
  int rc = -1;
  if (!ha || !hb) { pc_seterr(err, errlen, "out of memory"); goto done; }
  if (ta) {
    if (pc_tensor_to_f32(ta, ha, err, errlen) || pc_tensor_to_f32(tb, hb, err, errlen)) goto done;
  } else {
    double bound = 1.0 / sqrt((double)L->in);
    for (size_t i = 0; i < A->n; i++) ha[i] = (float)((pc_rand_unit(rng) * 2.0 - 1.0) * bound);
    memset(hb, 0, sizeof(float) * B->n);
  }
  if (upload_param(m, A, ha, err, errlen) || upload_param(m, B, hb, err, errlen))
    goto done;
  rc = 0;
done:
  free(ha);
  free(hb);
  return rc;
}

/* Adds A and B to every targeted module (or every module the initial adapter adapts). */
static int add_lora(pc_model *m, const pc_model_opts *o, char *err, size_t errlen) {
  const char *targets = o->lora_targets && *o->lora_targets ? o->lora_targets
                                                            : pc_family_table_of(m->cfg.family)->lora_targets;
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
  int matched = 0, rc = -1;
  m->lora_targets[0] = 0;
  for (int l = 0; l < m->cfg.layers; l++)
    for (int k = 0; k < PC_MOD_COUNT; k++) {
      linear *L = &m->layers[l].mod[k];
      if (L->pw < 0) continue;
      const pc_st_tensor *ta = NULL, *tb = NULL;
      char ka[400], kb[420];
      if (init && find_lora(m, init, L->path, &ta, &tb, ka, sizeof ka, err, errlen) != 0) goto done;
      if (init ? !ta : !targeted(L->path, targets)) continue;
      // the PEFT keys this run writes: always the *ForCausalLM path
      snprintf(ka, sizeof ka, "base_model.model.%s.lora_A.weight", L->path);
      snprintf(kb, sizeof kb, "base_model.model.%s.lora_B.weight", L->path);
      const char *leaf = strrchr(L->path, '.') + 1;  // joins the list written to adapter_config.json
      if (!targeted(leaf, m->lora_targets)) {
        size_t u = strlen(m->lora_targets);
        snprintf(m->lora_targets + u, sizeof m->lora_targets - u, "%s%s", u ? "," : "", leaf);
      }
      int64_t da[2] = {r, L->in}, db[2] = {L->out, r};
      if (init && (pc_tensor_check_shape(ta, 2, da, err, errlen) || pc_tensor_check_shape(tb, 2, db, err, errlen)))
        goto done;
      if ((L->la = new_owned_param(m, ka, 2, r, L->in, err, errlen)) < 0) goto done;
      if ((L->lb = new_owned_param(m, kb, 2, L->out, r, err, errlen)) < 0) goto done;
      m->params[L->la].lora = m->params[L->lb].lora = 1;
      if (init_lora_pair(m, L, ta, tb, &rng, err, errlen) != 0) goto done;
      matched++;
    }
  if (init && count_lora_modules(init) != matched) {
    pc_seterr(err, errlen, "%s/adapter_model.safetensors: %d LoRA modules, but only %d match modules of the model",
              o->init_adapter, count_lora_modules(init), matched);
    goto done;
  }
  if (!matched) {
    pc_seterr(err, errlen, "LoRA targets '%s' match no module of this %s model (its modules: %s)", targets,
              m->cfg.model_type, pc_family_table_of(m->cfg.family)->lora_targets);
    goto done;
  }
  rc = 0;
done:
  pc_ckpt_close(init);
  return rc;
}

// ---- loading ------------------------------------------------------------------------------------

static int open_merge_adapter(pc_model *m, const char *dir, char *err, size_t errlen) {
  double r, alpha;
  char path[4096];
  if (pc_adapter_config(dir, &r, &alpha, err, errlen) != 0) return -1;
  m->merge_scale = alpha / r;
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  return pc_ckpt_open_file(path, &m->merge, err, errlen);
}

/* Gradients: everything in a full fine-tune, only the LoRA matrices otherwise. */
static int has_grad(const pc_model *m, const pc_param *p) { return m->lora_r <= 0 || p->lora; }

static int alloc_grads(pc_model *m, char *err, size_t errlen) {
  pc_backend *be = m->be;
  if (m->plan) return 0;
  for (int i = 0; i < m->nparams; i++) {
    pc_param *p = &m->params[i];
    if (!has_grad(m, p)) continue;
    p->g = be->ops->alloc(be, p->n * sizeof(float));
    if (!p->g) { pc_seterr(err, errlen, "out of memory for the gradient of '%s'", p->name); return -1; }
    be->ops->zero(be, p->g, p->n * sizeof(float));
  }
  return 0;
}

static int model_load(const char *dir, const pc_model_opts *opts, pc_backend *be, int plan, pc_model **out, char *err,
                      size_t errlen);

int pc_model_load(const char *dir, const pc_model_opts *opts, pc_backend *be, pc_model **out, char *err,
                  size_t errlen) {
  return model_load(dir, opts, be, 0, out, err, errlen);
}

/* The load without the loading (plan = 1): every shape checked and every parameter counted, through
 * the same code as the real load, so that the plan and the run cannot disagree on what exists. */
static int model_load(const char *dir, const pc_model_opts *opts, pc_backend *be, int plan, pc_model **out, char *err,
                      size_t errlen) {
  static const pc_model_opts frozen = {0};
  const pc_model_opts *o = opts ? opts : &frozen;
  *out = NULL;
  pc_model *m = calloc(1, sizeof *m);
  if (!m) { pc_seterr(err, errlen, "out of memory"); return -1; }
  m->be = be;
  m->plan = plan;
  m->trainable = o->trainable;
  m->recompute = o->trainable && o->recompute;
  char path[4096], e2[1024];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (pc_config_load(path, &m->cfg, err, errlen) != 0) goto fail;
  if (pc_ckpt_open(dir, &m->ckpt, err, errlen) != 0) goto fail;
  if (!o->trainable && o->merge_adapter && open_merge_adapter(m, o->merge_adapter, err, errlen) != 0) goto fail;
  m->layers = calloc((size_t)m->cfg.layers, sizeof *m->layers);
  m->acts = calloc((size_t)m->cfg.layers, sizeof *m->acts);
  m->inv_freq = malloc(sizeof(double) * (size_t)(m->cfg.head_dim / 2 + 1));
  if (!m->layers || !m->acts || !m->inv_freq) { pc_seterr(err, errlen, "out of memory"); goto fail; }
  pc_rope_inv_freq(&m->cfg, m->inv_freq);
  if (load_weights(m, e2, sizeof e2) != 0) {
    // name the directory when the message does not already carry a file
    if (strstr(e2, ".safetensors") || strstr(e2, ".json")) pc_seterr(err, errlen, "%s", e2);
    else pc_seterr(err, errlen, "%s: %s", dir, e2);
    goto fail;
  }
  if (m->merge) {
    if (count_lora_modules(m->merge) != m->merged) {
      pc_seterr(err, errlen, "%s/adapter_model.safetensors: %d LoRA modules, but only %d match weights of the model",
                o->merge_adapter, count_lora_modules(m->merge), m->merged);
      goto fail;
    }
    pc_ckpt_close(m->merge);
    m->merge = NULL;
  }
  if (o->trainable) {
    pc_ckpt_close(m->ckpt);  // every weight is a copy now
    m->ckpt = NULL;
    if ((o->lora_r > 0 || o->init_adapter) && add_lora(m, o, err, errlen) != 0) goto fail;
    if (alloc_grads(m, err, errlen) != 0) goto fail;
  }
  *out = m;
  return 0;
fail:
  pc_model_free(m);
  return -1;
}

static void free_acts(pc_model *m) {
  if (m->act_block) m->be->ops->free(m->be, m->act_block);
  m->act_block = NULL;
  m->cap_n = m->cap_m = 0;
}

void pc_model_free(pc_model *m) {
  if (!m) return;
  pc_backend *be = m->be;
  for (int i = 0; i < m->nparams; i++) {
    if (m->params[i].w_owned) be->ops->free(be, m->params[i].w);
    if (m->params[i].g) be->ops->free(be, m->params[i].g);
    free(m->params[i].host);
  }
  free(m->params);
  free_acts(m);
  if (m->cos_t) be->ops->free(be, m->cos_t);
  if (m->sin_t) be->ops->free(be, m->sin_t);
  free(m->lp_host);
  free(m->layers);
  free(m->acts);
  free(m->inv_freq);
  pc_layout_free(&m->lay);
  pc_ckpt_close(m->merge);
  pc_ckpt_close(m->ckpt);
  free(m);
}

void pc_model_zero_grad(pc_model *m) {
  for (int i = 0; i < m->nparams; i++)
    if (m->params[i].g) m->be->ops->zero(m->be, m->params[i].g, m->params[i].n * sizeof(float));
}

// ---- activations --------------------------------------------------------------------------------

/* One block of backend memory holds the activations and the gradient scratch: carved in order by
 * `take` (a first pass with base NULL measures it). */
typedef struct { char *base; size_t off; } carver;

static float *take(carver *c, size_t nfloats) {
  size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
  float *p = c->base ? (float *)(c->base + c->off) : NULL;
  c->off += bytes;
  return p;
}

static void carve_layer(pc_model *m, carver *cv, activations *a, const layer *L, size_t N) {
  const pc_config *c = &m->cfg;
  size_t C = (size_t)c->hidden, FF = (size_t)c->intermediate, HD = (size_t)c->head_dim;
  size_t NH = (size_t)c->heads, NKV = (size_t)c->kv_heads, QD = NH * HD, KD = NKV * HD, QKV = QD + 2 * KD;
  size_t r = (size_t)(m->lora_r > 0 ? m->lora_r : 1);
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
  for (int k = 0; k < PC_MOD_COUNT; k++) a->lt[k] = L->mod[k].la >= 0 ? take(cv, N * r) : NULL;
}

/* keep: every layer's activations and the backward's scratch; else one layer's, shared by all. With
 * recompute (and keep), one layer's activations shared by all, plus each layer's own input: the
 * backward recomputes a layer from its input just before it needs the layer's activations. */
static void carve(pc_model *m, carver *cv, size_t N, size_t M, int keep) {
  const pc_config *c = &m->cfg;
  size_t C = (size_t)c->hidden, FF = (size_t)c->intermediate, HD = (size_t)c->head_dim;
  size_t QD = (size_t)c->heads * HD, QKV = QD + 2 * (size_t)c->kv_heads * HD;
  size_t r = (size_t)(m->lora_r > 0 ? m->lora_r : 1);
  for (int l = 0; l < c->layers; l++) {
    if (l == 0 || (keep && !m->recompute)) carve_layer(m, cv, &m->acts[l], &m->layers[l], N);
    else {
      m->acts[l] = m->acts[0];
      if (keep) m->acts[l].res = take(cv, N * C);  // recompute: the layer's input is all it keeps
    }
  }
  m->res_out = keep ? take(cv, N * C) : m->acts[0].res;
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
  m->fact = take(cv, N * FF);
  if (!keep) {
    m->dlp = m->dhm = m->dxm = m->dres = m->dh = m->dqkv = m->datt = m->dff1 = m->dff2 = m->dt = NULL;
    return;
  }
  m->dlp = take(cv, M);
  m->dhm = take(cv, M * C);
  m->dxm = take(cv, M * C);
  m->dres = take(cv, N * C);
  m->dh = take(cv, N * C);
  m->dqkv = take(cv, N * QKV);
  m->datt = take(cv, N * QD);
  m->dff1 = take(cv, N * FF);
  m->dff2 = take(cv, N * FF);
  m->dt = take(cv, N * r);
}

/* Buffers for N rows and M scored rows; they only grow, so the steady state allocates nothing. Grown
 * with a quarter to spare (slack), unless the caller knows the largest batch (pc_model_reserve). */
static int reserve(pc_model *m, size_t N, size_t M, int keep, int slack) {
  if (N <= m->cap_n && M <= m->cap_m && (m->cap_keep || !keep)) return 0;
  size_t n = N > m->cap_n ? N + (slack ? N / 4 : 0) : m->cap_n, mm = M > m->cap_m ? M + (slack ? M / 4 : 0) : m->cap_m;
  int k = keep || m->cap_keep;
  free_acts(m);
  carver cv = {NULL, 0};
  carve(m, &cv, n, mm, k);
  m->act_block = m->be->ops->alloc(m->be, cv.off);
  free(m->lp_host);
  m->lp_host = malloc(sizeof(float) * 2 * (mm + 1));
  if (!m->act_block || !m->lp_host) return -1;
  cv = (carver){(char *)m->act_block, 0};
  carve(m, &cv, n, mm, k);
  m->dlp_host = m->lp_host + mm + 1;
  m->cap_n = n;
  m->cap_m = mm;
  m->cap_keep = k;
  return 0;
}

/* cos/sin tables (T, HD/2) for positions 0..T-1, computed in double and rounded once. */
static int rope_reserve(pc_model *m, int T, char *err, size_t errlen) {
  if (!m->cfg.rms_norm || T <= m->rope_cap) return 0;
  int half = m->cfg.head_dim / 2, cap = T + 64;
  size_t n = (size_t)cap * (size_t)half * sizeof(float);
  float *c, *s;
  if (pc_rope_tables(m->inv_freq, half, cap, &c, &s) != 0) { pc_seterr(err, errlen, "out of memory"); return -1; }
  pc_backend *be = m->be;
  if (m->cos_t) be->ops->free(be, m->cos_t);
  if (m->sin_t) be->ops->free(be, m->sin_t);
  m->cos_t = be->ops->alloc(be, n);
  m->sin_t = be->ops->alloc(be, n);
  int rc = 0;
  if (!m->cos_t || !m->sin_t) {
    pc_seterr(err, errlen, "out of memory for RoPE tables");
    rc = -1;
  } else if (upload(m, m->cos_t, c, n, "rope tables", err, errlen) || upload(m, m->sin_t, s, n, "rope tables", err, errlen))
    rc = -1;
  else m->rope_cap = cap;
  free(c);
  free(s);
  return rc;
}

int pc_model_reserve(pc_model *m, size_t N, size_t M, int keep, char *err, size_t errlen) {
  if (keep && !m->trainable) { pc_seterr(err, errlen, "a frozen model has no backward pass"); return -1; }
  if (reserve(m, N, M, keep, 0) != 0) {
    pc_seterr(err, errlen, "out of memory for the activations of %zu tokens", N);
    return -1;
  }
  return 0;
}

/* A backend buffer's bytes as the plan counts them: allocators round up (cudaMalloc to 256 bytes). */
static size_t alloc_bytes(size_t bytes) { return ((bytes ? bytes : 16) + 255) & ~(size_t)255; }

int pc_model_plan(const char *dir, const pc_model_opts *o, size_t N, size_t M, int keep, pc_model_bytes *out,
                  char *err, size_t errlen) {
  pc_model *m = NULL;
  memset(out, 0, sizeof *out);
  if (model_load(dir, o, NULL, 1, &m, err, errlen) != 0) return -1;
  const pc_config *c = &m->cfg;
  for (int i = 0; i < m->nparams; i++) {
    const pc_param *p = &m->params[i];
    out->params += alloc_bytes(p->n * sizeof(float));
    if (p->ndim == 2) out->matrix_elems += p->n;
    if (o && o->trainable && has_grad(m, p)) {
      out->grads += alloc_bytes(p->n * sizeof(float));
      out->trainable += p->n;
    }
  }
  carver cv = {NULL, 0};
  carve(m, &cv, N, M, keep && o && o->trainable);
  // the block, and the RoPE tables for up to N positions (rope_reserve: 64 more)
  out->activations = alloc_bytes(cv.off);
  if (c->rms_norm) out->activations += 2 * alloc_bytes((N + 64) * (size_t)(c->head_dim / 2) * sizeof(float));
  size_t widest = (size_t)c->intermediate, qkv = (size_t)(c->heads + 2 * c->kv_heads) * (size_t)c->head_dim;
  if (qkv > widest) widest = qkv;
  if ((size_t)c->hidden > widest) widest = c->hidden;
  out->matmul_input = N * widest;
  pc_model_free(m);
  return 0;
}

// ---- linear modules with LoRA -------------------------------------------------------------------

static pc_weight weight_of(const pc_model *m, const linear *L) {
  return (pc_weight){m->params[L->pw].w, L->pb >= 0 ? m->params[L->pb].w : NULL, L->layout};
}

/* out (N, out) (= or +=) inp (N, in) · W + b + scale (inp A^T) B^T; t (N, r) keeps scale inp A^T. */
static void linear_forward(pc_model *m, const linear *L, float *out, const float *inp, float *t, int N, int accumulate) {
  const pc_backend_ops *op = m->be->ops;
  pc_weight w = weight_of(m, L);
  op->matmul(m->be, out, inp, &w, N, L->in, L->out, accumulate);
  if (L->la >= 0) {
    pc_weight A = {m->params[L->la].w, NULL, PC_W_OUT_IN}, B = {m->params[L->lb].w, NULL, PC_W_OUT_IN};
    op->matmul(m->be, t, inp, &A, N, L->in, m->lora_r, 0);              // t (N, r)
    op->scale(m->be, t, (size_t)N * (size_t)m->lora_r, (float)m->lora_scale);
    op->matmul(m->be, out, t, &B, N, m->lora_r, L->out, 1);             // out += t B^T
  }
}

/* The backward of linear_forward: dinp (N, in) (= or +=), and the gradients of the trainable ones of
 * W, b, A, B. */
static void linear_backward(pc_model *m, const linear *L, float *dinp, const float *dout, const float *inp,
                            const float *t, int N, int accumulate) {
  const pc_backend_ops *op = m->be->ops;
  pc_weight w = weight_of(m, L);
  op->matmul_backward(m->be, dinp, m->params[L->pw].g, L->pb >= 0 ? m->params[L->pb].g : NULL, dout, inp, &w, N,
                      L->in, L->out, accumulate);
  if (L->la >= 0) {
    pc_weight A = {m->params[L->la].w, NULL, PC_W_OUT_IN}, B = {m->params[L->lb].w, NULL, PC_W_OUT_IN};
    int r = m->lora_r;
    op->matmul_backward(m->be, m->dt, m->params[L->lb].g, NULL, dout, t, &B, N, r, L->out, 0);  // dt = dout B; dB
    op->scale(m->be, m->dt, (size_t)N * (size_t)r, (float)m->lora_scale);
    op->matmul_backward(m->be, dinp, m->params[L->la].g, NULL, m->dt, inp, &A, N, L->in, r, 1);  // dinp += dt A; dA
  }
}

// ---- blocks -------------------------------------------------------------------------------------

/* A parameter's weight or gradient by index; NULL for -1 (absent, or frozen). */
static const float *W(const pc_model *m, int i) { return i >= 0 ? m->params[i].w : NULL; }
static float *G(const pc_model *m, int i) { return i >= 0 ? m->params[i].g : NULL; }

static void copy_unless_same(pc_backend *be, float *dst, const float *src, size_t n) {
  if (dst != src) be->ops->copy(be, dst, src, sizeof(float) * n);
}

/* mid (N, C) = res + attention(norm1(res)): GPT-2's fused c_attn, or the Llama family's q/k/v with
 * biases (Qwen2), per-head q/k RMSNorm (Qwen3), RoPE and grouped-query heads. */
static void attention_forward(pc_model *m, int l, const pc_batch *bt, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const layer *t = &m->layers[l];
  activations *a = &m->acts[l];
  int C = c->hidden, NH = c->heads, NKV = c->kv_heads, HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
  float eps = (float)c->norm_eps;
  if (c->family == PC_FAM_GPT2) {
    op->layernorm(be, a->h1, a->res, W(m, t->p[PC_L_LN1_W]), W(m, t->p[PC_L_LN1_B]), eps, N, C, a->mean1, a->rstd1);
    linear_forward(m, &t->mod[PC_MOD_Q], a->qkv, a->h1, a->lt[PC_MOD_Q], N, 0);          // qkv (N, 3C)
    op->attention(be, a->att, a->qkv, a->qkv + C, a->qkv + 2 * C, 3 * C, 3 * C, bt, N, NH, NH, HD, 0, a->lse);
  } else {
    float *q = a->qkv, *k = q + (size_t)N * QD, *v = k + (size_t)N * KD;
    op->rmsnorm(be, a->h1, a->res, W(m, t->p[PC_L_LN1_W]), eps, N, C, C, a->rstd1);
    linear_forward(m, &t->mod[PC_MOD_Q], c->qk_norm ? a->qraw : q, a->h1, a->lt[PC_MOD_Q], N, 0);  // q (N, NH, HD)
    linear_forward(m, &t->mod[PC_MOD_K], c->qk_norm ? a->kraw : k, a->h1, a->lt[PC_MOD_K], N, 0);  // k (N, NKV, HD)
    linear_forward(m, &t->mod[PC_MOD_V], v, a->h1, a->lt[PC_MOD_V], N, 0);                        // v (N, NKV, HD)
    if (c->qk_norm) {
      op->rmsnorm(be, q, a->qraw, W(m, t->p[PC_L_Q_NORM]), eps, N * NH, HD, HD, a->qrstd);
      op->rmsnorm(be, k, a->kraw, W(m, t->p[PC_L_K_NORM]), eps, N * NKV, HD, HD, a->krstd);
    }
    op->rope(be, q, m->cos_t, m->sin_t, bt, N, NH, HD, QD);
    op->rope(be, k, m->cos_t, m->sin_t, bt, N, NKV, HD, KD);
    op->attention(be, a->att, q, k, v, QD, KD, bt, N, NH, NKV, HD, c->sliding_window, a->lse);  // att (N, QD)
  }
  copy_unless_same(be, a->mid, a->res, (size_t)N * C);
  linear_forward(m, &t->mod[PC_MOD_O], a->mid, a->att, a->lt[PC_MOD_O], N, 1);         // mid += att · Wo
}

/* out (N, C) = mid + mlp(norm2(mid)): GELU MLP (GPT-2) or SwiGLU (Llama family). */
static void mlp_forward(pc_model *m, int l, float *out, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const layer *t = &m->layers[l];
  activations *a = &m->acts[l];
  int C = c->hidden, FF = c->intermediate;
  size_t NF = (size_t)N * FF;
  float eps = (float)c->norm_eps;
  if (c->family == PC_FAM_GPT2) {
    op->layernorm(be, a->h2, a->mid, W(m, t->p[PC_L_LN2_W]), W(m, t->p[PC_L_LN2_B]), eps, N, C, a->mean2, a->rstd2);
    linear_forward(m, &t->mod[PC_MOD_GATE], a->f1, a->h2, a->lt[PC_MOD_GATE], N, 0);   // f1 (N, FF)
    copy_unless_same(be, m->fact, a->f1, NF);                                         // f1 is kept for the backward
    op->gelu(be, m->fact, NF, c->act == PC_ACT_GELU_TANH);
  } else {
    op->rmsnorm(be, a->h2, a->mid, W(m, t->p[PC_L_LN2_W]), eps, N, C, C, a->rstd2);
    linear_forward(m, &t->mod[PC_MOD_GATE], a->f1, a->h2, a->lt[PC_MOD_GATE], N, 0);   // gate (N, FF)
    linear_forward(m, &t->mod[PC_MOD_UP], a->f2, a->h2, a->lt[PC_MOD_UP], N, 0);       // up (N, FF)
    op->swiglu(be, m->fact, a->f1, a->f2, NF);                                        // silu(gate) * up
  }
  copy_unless_same(be, out, a->mid, (size_t)N * C);
  linear_forward(m, &t->mod[PC_MOD_DOWN], out, m->fact, a->lt[PC_MOD_DOWN], N, 1);     // out += f · Wdown
}

/* dres holds dLoss/d(layer output); on return dLoss/d(mid). */
static void mlp_backward(pc_model *m, int l, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const layer *t = &m->layers[l];
  activations *a = &m->acts[l];
  int C = c->hidden, FF = c->intermediate;
  size_t NF = (size_t)N * FF;
  if (c->family == PC_FAM_GPT2) {
    op->copy(be, m->fact, a->f1, sizeof(float) * NF);  // recompute gelu(f1), the input of c_proj
    op->gelu(be, m->fact, NF, c->act == PC_ACT_GELU_TANH);
    linear_backward(m, &t->mod[PC_MOD_DOWN], m->dff1, m->dres, m->fact, a->lt[PC_MOD_DOWN], N, 0);  // dff1 (N, FF)
    op->gelu_backward(be, m->dff1, a->f1, m->dff1, NF, c->act == PC_ACT_GELU_TANH);
    linear_backward(m, &t->mod[PC_MOD_GATE], m->dh, m->dff1, a->h2, a->lt[PC_MOD_GATE], N, 0);      // dh (N, C)
    op->layernorm_backward(be, m->dres, G(m, t->p[PC_L_LN2_W]), G(m, t->p[PC_L_LN2_B]), m->dh, a->mid,
                           W(m, t->p[PC_L_LN2_W]), a->mean2, a->rstd2, N, C, 1);
  } else {
    op->swiglu(be, m->fact, a->f1, a->f2, NF);  // recompute silu(gate) * up
    linear_backward(m, &t->mod[PC_MOD_DOWN], m->dff1, m->dres, m->fact, a->lt[PC_MOD_DOWN], N, 0);
    op->swiglu_backward(be, m->dff1, m->dff2, a->f1, a->f2, m->dff1, NF);                          // dgate, dup
    linear_backward(m, &t->mod[PC_MOD_GATE], m->dh, m->dff1, a->h2, a->lt[PC_MOD_GATE], N, 0);
    linear_backward(m, &t->mod[PC_MOD_UP], m->dh, m->dff2, a->h2, a->lt[PC_MOD_UP], N, 1);
    op->rmsnorm_backward(be, m->dres, G(m, t->p[PC_L_LN2_W]), m->dh, a->mid, W(m, t->p[PC_L_LN2_W]), a->rstd2, N, C,
                         C, 1);
  }
}

/* dres holds dLoss/d(mid); on return dLoss/d(res), the layer's input. */
static void attention_backward(pc_model *m, int l, const pc_batch *bt, int N) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  const layer *t = &m->layers[l];
  activations *a = &m->acts[l];
  int C = c->hidden, NH = c->heads, NKV = c->kv_heads, HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
  linear_backward(m, &t->mod[PC_MOD_O], m->datt, m->dres, a->att, a->lt[PC_MOD_O], N, 0);  // datt (N, QD)
  if (c->family == PC_FAM_GPT2) {
    op->attention_backward(be, m->dqkv, m->dqkv + C, m->dqkv + 2 * C, m->datt, a->qkv, a->qkv + C, a->qkv + 2 * C,
                           a->att, a->lse, 3 * C, 3 * C, bt, N, NH, NH, HD, 0);
    linear_backward(m, &t->mod[PC_MOD_Q], m->dh, m->dqkv, a->h1, a->lt[PC_MOD_Q], N, 0);
    op->layernorm_backward(be, m->dres, G(m, t->p[PC_L_LN1_W]), G(m, t->p[PC_L_LN1_B]), m->dh, a->res,
                           W(m, t->p[PC_L_LN1_W]), a->mean1, a->rstd1, N, C, 1);
  } else {
    float *q = a->qkv, *k = q + (size_t)N * QD, *v = k + (size_t)N * KD;
    float *dq = m->dqkv, *dk = dq + (size_t)N * QD, *dv = dk + (size_t)N * KD;
    op->attention_backward(be, dq, dk, dv, m->datt, q, k, v, a->att, a->lse, QD, KD, bt, N, NH, NKV, HD,
                           c->sliding_window);
    op->rope_backward(be, dq, m->cos_t, m->sin_t, bt, N, NH, HD, QD);
    op->rope_backward(be, dk, m->cos_t, m->sin_t, bt, N, NKV, HD, KD);
    if (c->qk_norm) {
      op->rmsnorm_backward(be, dq, G(m, t->p[PC_L_Q_NORM]), dq, a->qraw, W(m, t->p[PC_L_Q_NORM]), a->qrstd, N * NH, HD,
                           HD, 0);
      op->rmsnorm_backward(be, dk, G(m, t->p[PC_L_K_NORM]), dk, a->kraw, W(m, t->p[PC_L_K_NORM]), a->krstd, N * NKV,
                           HD, HD, 0);
    }
    linear_backward(m, &t->mod[PC_MOD_Q], m->dh, dq, a->h1, a->lt[PC_MOD_Q], N, 0);
    linear_backward(m, &t->mod[PC_MOD_K], m->dh, dk, a->h1, a->lt[PC_MOD_K], N, 1);
    linear_backward(m, &t->mod[PC_MOD_V], m->dh, dv, a->h1, a->lt[PC_MOD_V], N, 1);
    op->rmsnorm_backward(be, m->dres, G(m, t->p[PC_L_LN1_W]), m->dh, a->res, W(m, t->p[PC_L_LN1_W]), a->rstd1, N, C,
                         C, 1);
  }
}

// ---- forward and backward -----------------------------------------------------------------------

static pc_batch batch_of(pc_model *m) {
  return (pc_batch){m->nseq, m->lay.start, m->pos, m->lay.shares ? m->lay.plen : NULL};
}

/* The final norm and the fused LM head + log-softmax, only on the M rows whose next token is scored:
 * lp (M) into m->lp_host. */
static int head_forward(pc_model *m, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  const pc_backend_ops *op = be->ops;
  size_t M = m->lay.M;
  int C = c->hidden;
  if (upload(m, m->rows, m->lay.rows, M * 4, "rows", err, errlen) ||
      upload(m, m->targets, m->lay.targets, M * 4, "targets", err, errlen))
    return -1;
  op->gather_rows(be, m->xm, m->res_out, m->rows, (int)M, C);                        // xm (M, C)
  if (c->rms_norm) op->rmsnorm(be, m->hm, m->xm, W(m, m->g[PC_G_LNF_W]), (float)c->norm_eps, (int)M, C, C, m->rstdf);
  else
    op->layernorm(be, m->hm, m->xm, W(m, m->g[PC_G_LNF_W]), W(m, m->g[PC_G_LNF_B]), (float)c->norm_eps, (int)M, C,
                  m->meanf, m->rstdf);
  pc_weight head = {W(m, m->g[PC_G_HEAD]), NULL, PC_W_OUT_IN};
  op->logprob(be, m->lp, m->hm, &head, m->targets, (int)M, C, c->vocab, m->lse_lp);  // lp (M)
  if (op->download(be, m->lp_host, m->lp, M * 4) != 0) return backend_failed(m, "forward", err, errlen);
  return 0;
}

int pc_model_forward(pc_model *m, const pc_model_seq *seqs, int nseq, int keep, double *sum, int *count,
                     float *tok_logps, char *err, size_t errlen) {
  const pc_config *c = &m->cfg;
  pc_backend *be = m->be;
  m->have_fwd = 0;
  if (keep && !m->trainable) { pc_seterr(err, errlen, "a frozen model has no backward pass"); return -1; }
  pc_layout_free(&m->lay);
  if (pc_layout_build(c, seqs, nseq, &m->lay, err, errlen) != 0) return -1;
  m->nseq = nseq;
  size_t N = m->lay.N, M = m->lay.M;
  if (reserve(m, N, M, keep, 1) != 0) {
    pc_seterr(err, errlen, "out of memory for the activations of %zu tokens", N);
    return -1;
  }
  if (rope_reserve(m, m->lay.maxT, err, errlen) != 0) return -1;
  pc_batch bt = batch_of(m);
  if (N) {
    if (upload(m, m->ids, m->lay.ids, N * 4, "ids", err, errlen) ||
        upload(m, m->pos, m->lay.pos, N * 4, "positions", err, errlen))
      return -1;
    be->ops->embedding(be, m->acts[0].res, m->ids, W(m, m->g[PC_G_WTE]), c->learned_pos ? W(m, m->g[PC_G_WPE]) : NULL,
                       &bt, (int)N, c->hidden);                                       // res (N, C)
    for (int l = 0; l < c->layers; l++) {
      attention_forward(m, l, &bt, (int)N);
      mlp_forward(m, l, l + 1 < c->layers ? m->acts[l + 1].res : m->res_out, (int)N);
    }
  }
  if (M && head_forward(m, err, errlen) != 0) return -1;
  size_t k = 0;
  for (int s = 0; s < nseq; s++) {
    double acc = 0;
    for (int i = 0; i < m->lay.cnt[s]; i++, k++) {
      acc += m->lp_host[k];
      if (tok_logps) tok_logps[k] = m->lp_host[k];
    }
    sum[s] = acc;
    count[s] = m->lay.cnt[s];
  }
  m->have_fwd = keep;
  return 0;
}

int pc_model_backward(pc_model *m, const float *dsum, char *err, size_t errlen) {
  if (!m->have_fwd) { pc_seterr(err, errlen, "backward without a forward pass that kept its activations"); return -1; }
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
  if (upload(m, m->dlp, m->dlp_host, M * 4, "backward", err, errlen) != 0) return -1;
  pc_batch bt = batch_of(m);
  pc_weight head = {W(m, m->g[PC_G_HEAD]), NULL, PC_W_OUT_IN};
  op->logprob_backward(be, m->dhm, G(m, m->g[PC_G_HEAD]), m->hm, &head, m->targets, m->lse_lp, m->dlp, (int)M, C,
                       c->vocab);
  if (c->rms_norm)
    op->rmsnorm_backward(be, m->dxm, G(m, m->g[PC_G_LNF_W]), m->dhm, m->xm, W(m, m->g[PC_G_LNF_W]), m->rstdf, (int)M,
                         C, C, 0);
  else
    op->layernorm_backward(be, m->dxm, G(m, m->g[PC_G_LNF_W]), G(m, m->g[PC_G_LNF_B]), m->dhm, m->xm,
                           W(m, m->g[PC_G_LNF_W]), m->meanf, m->rstdf, (int)M, C, 0);
  op->zero(be, m->dres, sizeof(float) * N * (size_t)C);
  op->scatter_rows(be, m->dres, m->dxm, m->rows, (int)M, C);                          // dres (N, C)
  for (int l = c->layers - 1; l >= 0; l--) {
    if (m->recompute) {  // the layer's activations again, from its kept input: the same ops on the same
      attention_forward(m, l, &bt, (int)N);  // numbers, so the same values as the forward's, bit for bit
      mlp_forward(m, l, m->dh, (int)N);      // its output is not needed: dh is free scratch until mlp_backward
    }
    mlp_backward(m, l, (int)N);
    attention_backward(m, l, &bt, (int)N);
  }
  op->embedding_backward(be, G(m, m->g[PC_G_WTE]), c->learned_pos ? G(m, m->g[PC_G_WPE]) : NULL, m->dres, m->ids, &bt,
                         (int)N, C);
  if (op->error(be)) return backend_failed(m, "backward", err, errlen);
  return 0;
}

// ---- RoPE, adapters' configs ---------------------------------------------------------------------

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
  char *text = pc_read_file(path, NULL, NULL);
  if (!text) { pc_seterr(err, errlen, "%s: cannot read: %s", path, strerror(errno)); return -1; }
  cJSON *o = cJSON_Parse(text);
  free(text);
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

// ---- writers ------------------------------------------------------------------------------------

/* Host copies of the parameters selected by `want` (lora 1: the LoRA matrices, 0: the model's own
 * weights), merged with their adapters when `merged`. hosts[i] is malloc'd; free with free_hosts. */
static int host_params(pc_model *m, int lora, int merged, pc_st_write_tensor *ts, float **hosts, int *n, char *err,
                       size_t errlen) {
  *n = 0;
  for (int i = 0; i < m->nparams; i++) {
    pc_param *p = &m->params[i];
    if (p->lora != lora) continue;
    float *h = malloc(sizeof(float) * (p->n ? p->n : 1));
    if (!h) { pc_seterr(err, errlen, "out of memory writing '%s'", p->name); return -1; }
    hosts[*n] = h;
    if (m->be->ops->download(m->be, h, p->w, sizeof(float) * p->n) != 0) return backend_failed(m, p->name, err, errlen);
    ts[*n] = (pc_st_write_tensor){p->name, p->ndim, {p->shape[0], p->shape[1]}, h};
    (*n)++;
  }
  if (!merged) return 0;
  // W += scale B A, as score --adapter merges it. The model's own weights come first in P (LoRA
  // matrices are appended after them), so hosts[i] is parameter i's copy.
  for (int l = 0; l < m->cfg.layers; l++)
    for (int k = 0; k < PC_MOD_COUNT; k++) {
      const linear *L = &m->layers[l].mod[k];
      if (L->pw < 0 || L->la < 0) continue;
      float *a = malloc(sizeof(float) * m->params[L->la].n), *b = malloc(sizeof(float) * m->params[L->lb].n);
      if (!a || !b) { free(a); free(b); pc_seterr(err, errlen, "out of memory merging"); return -1; }
      if (m->be->ops->download(m->be, a, m->params[L->la].w, sizeof(float) * m->params[L->la].n) != 0 ||
          m->be->ops->download(m->be, b, m->params[L->lb].w, sizeof(float) * m->params[L->lb].n) != 0) {
        free(a);
        free(b);
        return backend_failed(m, "LoRA merge", err, errlen);
      }
      lora_apply(hosts[L->pw], L->layout, L->out, L->in, a, b, m->lora_r, (float)m->lora_scale);
      free(a);
      free(b);
    }
  return 0;
}

static int write_params(pc_model *m, const char *path, int lora, int merged, pc_dtype dtype, char *err,
                        size_t errlen) {
  pc_st_write_tensor *ts = calloc((size_t)m->nparams + 1, sizeof *ts);
  float **hosts = calloc((size_t)m->nparams + 1, sizeof *hosts);
  int n = 0, rc = -1;
  if (!ts || !hosts) { pc_seterr(err, errlen, "out of memory"); goto done; }
  if (host_params(m, lora, merged, ts, hosts, &n, err, errlen) != 0) goto done;
  rc = pc_st_write(path, ts, n, dtype, err, errlen);
done:
  if (hosts)
    for (int i = 0; i < m->nparams; i++) free(hosts[i]);
  free(hosts);
  free(ts);
  return rc;
}

int pc_model_save_adapter(pc_model *m, const char *dir, const char *base_model, char *err, size_t errlen) {
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

int pc_model_save(pc_model *m, const char *dir, pc_dtype dtype, int merged, char *err, size_t errlen) {
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
int pc_model_load_params(pc_model *m, const char *path, int *loaded, char *err, size_t errlen) {
  pc_ckpt *ck = NULL;
  if (pc_ckpt_open_file(path, &ck, err, errlen) != 0) return -1;
  int n = 0, rc = 0;
  for (int i = 0; i < m->nparams && rc == 0; i++) {
    pc_param *p = &m->params[i];
    const pc_st_tensor *t = pc_ckpt_find(ck, p->name);
    if (!t) continue;
    int64_t dims[2] = {p->shape[0], p->shape[1]};
    float *h = malloc(sizeof(float) * (p->n ? p->n : 1));
    if (!h || pc_tensor_check_shape(t, p->ndim, dims, err, errlen) || pc_tensor_to_f32(t, h, err, errlen)) {
      if (!h) pc_seterr(err, errlen, "out of memory");
      rc = -1;
    } else {
      if (upload_param(m, p, h, err, errlen) != 0) rc = -1;
      else n++;
    }
    free(h);
  }
  pc_ckpt_close(ck);
  *loaded = n;
  return rc;
}
