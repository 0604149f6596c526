/* trainer/cli/cmd_init.c: `prefcap-dpo init`: a small randomly initialised model in Hugging Face layout
 * (config.json, model.safetensors, the tokenizer files), for demos, tests and benchmarks.
 *
 * Initialisation follows transformers' _init_weights: normal(0, 0.02) for linear and embedding
 * weights (GPT-2's c_proj scaled by 1/sqrt(2 n_layer)), ones for norm weights, zeros for biases. The
 * generator is seeded (--seed), so the same options give the same bytes. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "model/config.h"
#include "model/families.h"
#include "text/data.h"
#include "model/safetensors.h"
#include "util/util.h"
#include "text/tokenizer.h"

static void usage(FILE *f) {
  fputs("usage: prefcap-dpo init --family F --tokenizer DIR --out DIR [options]\n"
        "\n"
        "Writes a randomly initialised model: OUT/config.json, OUT/model.safetensors and the tokenizer\n"
        "files of DIR (tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat templates).\n"
        "The vocabulary is the tokenizer's (max id + 1) rounded up to a multiple of 64.\n"
        "\n"
        "  --family F         gpt2, llama, mistral, qwen2 or qwen3\n"
        "  --tokenizer DIR    directory holding tokenizer.json (and tokenizer_config.json)\n"
        "  --out DIR          output directory (created; files in it are overwritten)\n"
        "  --hidden N         hidden size (default 64)\n"
        "  --layers N         layers (default 2)\n"
        "  --heads N          attention heads (default 4)\n"
        "  --kv-heads N       key/value heads, Llama family (default: --heads)\n"
        "  --head-dim N       per-head size, Llama family (default hidden/heads)\n"
        "  --intermediate N   MLP width (default 4*hidden for gpt2, else 8*hidden/3 rounded up to 32)\n"
        "  --max-positions N  positions (default 1024 for gpt2, 4096 otherwise)\n"
        "  --untied           a separate lm_head (default: tied to the embeddings)\n"
        "  --seed S           random seed (default 0)\n"
        "  --dtype D          f32 (default), bf16 or f16\n", f);
}

// ---- a seeded normal generator (splitmix64, util.h, + Box-Muller) ------------------------------------------

static void fill_normal(float *x, size_t n, double std, uint64_t *s) {
  for (size_t i = 0; i < n; i += 2) {
    double u1 = pc_rand_unit(s), u2 = pc_rand_unit(s), r = sqrt(-2.0 * log(u1));
    x[i] = (float)(std * r * cos(2 * M_PI * u2));
    if (i + 1 < n) x[i + 1] = (float)(std * r * sin(2 * M_PI * u2));
  }
}

// ---- the tensor list ------------------------------------------------------------------------------

typedef struct {
  pc_st_write_tensor *t;
  int n, cap;
  uint64_t seed;
  int bad;
} tlist;

enum { INIT_NORMAL, INIT_ONES, INIT_ZEROS };

static void add(tlist *L, int kind, double std, int64_t d0, int64_t d1, const char *fmt, int layer) {
  if (L->bad) return;
  if (L->n == L->cap) {
    L->cap = L->cap ? 2 * L->cap : 64;
    pc_st_write_tensor *nt = realloc(L->t, sizeof *nt * (size_t)L->cap);
    if (!nt) { L->bad = 1; return; }
    L->t = nt;
  }
  char name[256];
  snprintf(name, sizeof name, fmt, layer);
  size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
  float *x = malloc(sizeof(float) * n);
  char *nm = strdup(name);
  if (!x || !nm) { free(x); free(nm); L->bad = 1; return; }
  if (kind == INIT_NORMAL) fill_normal(x, n, std, &L->seed);
  else for (size_t i = 0; i < n; i++) x[i] = kind == INIT_ONES ? 1.0f : 0.0f;
  pc_st_write_tensor *t = &L->t[L->n++];
  memset(t, 0, sizeof *t);
  t->name = nm;
  t->ndim = d1 ? 2 : 1;
  t->shape[0] = d0;
  t->shape[1] = d1;
  t->data = x;
}

/* Every tensor the family's table (model/families.h) gives this config, in checkpoint order, drawn in
 * that order from the seeded generator. */
static void build(tlist *L, const pc_config *c) {
  const double s = 0.02, resid = s / sqrt(2.0 * c->layers);
  const pc_family_table *ft = pc_family_table_of(c->family);
  for (int i = 0; i < ft->count; i++) {
    const pc_tensor_spec *t = &ft->tensors[i];
    if (!pc_tensor_present(t, c)) continue;
    int64_t d[2];
    pc_tensor_shape(t, c, d);
    int kind = t->init == PC_INIT_ONES ? INIT_ONES : t->init == PC_INIT_ZEROS ? INIT_ZEROS : INIT_NORMAL;
    for (int l = 0; l < (t->per_layer ? c->layers : 1); l++)
      add(L, kind, t->init == PC_INIT_NORMAL_RESID ? resid : s, d[0], d[1], t->name, l);
  }
}

static int parse_int(const char *opt, const char *s, int lo, int *out) {
  if (pc_parse_int(s, lo, out) == 0) return 0;
  fprintf(stderr, "prefcap-dpo init: %s wants an integer >= %d, got '%s'\n", opt, lo, s);
  return -1;
}

int pc_cmd_init(int argc, char **argv) {
  const char *family = NULL, *tokdir = NULL, *outdir = NULL, *dtype_s = "f32";
  int hidden = 64, layers = 2, heads = 4, kv_heads = 0, head_dim = 0, inter = 0, max_pos = 0, seed = 0, untied = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "prefcap-dpo init: %s needs a value\n", a); return 2; } i++; } while (0)
#define INTOPT(name, var, lo) else if (!strcmp(a, name)) { NEEDV(); if (parse_int(a, v, lo, &var)) return 2; }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--family")) { NEEDV(); family = v; }
    else if (!strcmp(a, "--tokenizer")) { NEEDV(); tokdir = v; }
    else if (!strcmp(a, "--out")) { NEEDV(); outdir = v; }
    else if (!strcmp(a, "--dtype")) { NEEDV(); dtype_s = v; }
    else if (!strcmp(a, "--untied")) untied = 1;
    INTOPT("--hidden", hidden, 1) INTOPT("--layers", layers, 1) INTOPT("--heads", heads, 1)
    INTOPT("--kv-heads", kv_heads, 1) INTOPT("--head-dim", head_dim, 2) INTOPT("--intermediate", inter, 1)
    INTOPT("--max-positions", max_pos, 1) INTOPT("--seed", seed, 0)
    else { fprintf(stderr, "prefcap-dpo init: unknown option '%s'\n", a); usage(stderr); return 2; }
#undef INTOPT
#undef NEEDV
  }
  if (!family || !tokdir || !outdir) {
    fprintf(stderr, "prefcap-dpo init: --family, --tokenizer and --out are required\n");
    usage(stderr);
    return 2;
  }
  pc_family fam;
  if (pc_family_from_name(family, &fam) != 0) {
    fprintf(stderr, "prefcap-dpo init: --family '%s' is not one of gpt2, llama, mistral, qwen2, qwen3\n", family);
    return 2;
  }
  pc_dtype dt;
  if (!strcmp(dtype_s, "f32")) dt = PC_DT_F32;
  else if (!strcmp(dtype_s, "bf16")) dt = PC_DT_BF16;
  else if (!strcmp(dtype_s, "f16")) dt = PC_DT_F16;
  else { fprintf(stderr, "prefcap-dpo init: --dtype is f32, bf16 or f16, not '%s'\n", dtype_s); return 2; }

  char err[2048], path[4096], dst[4096];
  snprintf(path, sizeof path, "%s/tokenizer.json", tokdir);
  pc_tokenizer *tok = pc_tok_load(path, err, sizeof err);
  if (!tok) { fprintf(stderr, "prefcap-dpo init: %s\n", err); return 1; }
  pc_config c;
  pc_config_defaults(&c, fam);
  c.vocab = (int)((pc_tok_vocab_size(tok) + 63) / 64 * 64);
  c.hidden = hidden;
  c.layers = layers;
  c.heads = heads;
  c.kv_heads = fam == PC_FAM_GPT2 ? heads : (kv_heads ? kv_heads : heads);
  c.head_dim = fam == PC_FAM_GPT2 || !head_dim ? hidden / heads : head_dim;
  c.intermediate = inter ? inter : fam == PC_FAM_GPT2 ? 4 * hidden : (8 * hidden / 3 + 31) / 32 * 32;
  c.max_pos = max_pos ? max_pos : fam == PC_FAM_GPT2 ? 1024 : 4096;
  c.tie_embeddings = !untied;
  c.sliding_window = 0;
  snprintf(c.torch_dtype, sizeof c.torch_dtype, "%s", dt == PC_DT_F32 ? "float32" : dt == PC_DT_BF16 ? "bfloat16" : "float16");
  if (fam == PC_FAM_GPT2 && hidden % heads) { fprintf(stderr, "prefcap-dpo init: --hidden must be a multiple of --heads\n"); pc_tok_free(tok); return 2; }
  if (heads % c.kv_heads) { fprintf(stderr, "prefcap-dpo init: --heads must be a multiple of --kv-heads\n"); pc_tok_free(tok); return 2; }
  if (c.head_dim < 2 || c.head_dim % 2) { fprintf(stderr, "prefcap-dpo init: the head size (%d) must be even\n", c.head_dim); pc_tok_free(tok); return 2; }
  // bos/eos ids from tokenizer_config.json when it names them
  pc_tokcfg tc;
  memset(&tc, 0, sizeof tc);
  if (pc_tokcfg_load(tokdir, &tc, err, sizeof err) == 0) {
    if (tc.eos_token) c.eos_id = pc_tok_token_to_id(tok, tc.eos_token);
    if (tc.bos_token) c.bos_id = pc_tok_token_to_id(tok, tc.bos_token);
    else c.bos_id = fam == PC_FAM_GPT2 ? c.eos_id : -1;
  }
  pc_tokcfg_free(&tc);
  pc_tok_free(tok);

  if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "prefcap-dpo init: %s: cannot create: %s\n", outdir, strerror(errno));
    return 1;
  }
  int rc = 1;
  tlist L = {NULL, 0, 0, (uint64_t)seed * 0x9e3779b97f4a7c15ull + 1, 0};
  build(&L, &c);
  if (L.bad) { fprintf(stderr, "prefcap-dpo init: out of memory\n"); goto done; }
  snprintf(path, sizeof path, "%s/config.json", outdir);
  if (pc_config_write(&c, path, err, sizeof err) != 0) { fprintf(stderr, "prefcap-dpo init: %s\n", err); goto done; }
  snprintf(path, sizeof path, "%s/model.safetensors", outdir);
  if (pc_st_write(path, L.t, L.n, dt, err, sizeof err) != 0) { fprintf(stderr, "prefcap-dpo init: %s\n", err); goto done; }
  static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                "chat_template.jinja", "chat_template.json", "generation_config.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(path, sizeof path, "%s/%s", tokdir, files[i]);
    snprintf(dst, sizeof dst, "%s/%s", outdir, files[i]);
    if (pc_copy_file(path, dst) < 0) { fprintf(stderr, "prefcap-dpo init: cannot copy %s to %s: %s\n", path, dst, strerror(errno)); goto done; }
  }
  size_t params = 0;
  for (int i = 0; i < L.n; i++) params += (size_t)L.t[i].shape[0] * (size_t)(L.t[i].ndim == 2 ? L.t[i].shape[1] : 1);
  fprintf(stderr, "init: wrote %s (%s, %zu parameters, %s, vocab %d, hidden %d, %d layers, %d heads / %d kv)\n", outdir,
          family, params, dtype_s, c.vocab, c.hidden, c.layers, c.heads, c.kv_heads);
  rc = 0;
done:
  for (int i = 0; i < L.n; i++) { free((void *)L.t[i].name); free((void *)L.t[i].data); }
  free(L.t);
  return rc;
}
