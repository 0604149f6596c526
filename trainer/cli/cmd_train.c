/* trainer/cli/cmd_train.c: `prefcap-dpo train`: DPO fine-tuning (and its variants) of a Hugging Face
 * checkpoint on preference pairs, LoRA or full, with the metrics, outputs and run manifest that
 * docs/training.md describes.
 *
 * The run is a pure function of its inputs (model, data, options, thread count): the data order
 * comes from the seed and the step number alone, and every reduction on the CPU has a fixed order.
 * That is what lets a checkpoint resume to the same result as an uninterrupted run, and lets
 * `--from-manifest` rebuild a run bit for bit. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "text/data.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "util/progress.h"
#include "train/report.h"
#include "text/tokenizer.h"
#include "util/util.h"

#define PROG "prefcap-dpo train"

/* Messages and paths are built into fixed buffers; a path long enough to be cut is also too long to
 * open, so the cut never changes what happens. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

// ---- options ------------------------------------------------------------------------------------

typedef struct {
  char model[4096], data[4096], out[4096], eval_data[4096], ref_logps[4096], init_adapter[4096];
  char loss[16], lora_targets[512], scheduler[16], truncation[16], chat_template[16], device[16];
  double beta, label_smoothing, simpo_gamma, lora_alpha, lr, weight_decay, max_grad_norm, epochs, eval_fraction;
  int lora_r, warmup_steps, batch_size, grad_accum, max_steps, no_shuffle, eval_steps, max_length, save_steps;
  int merge, threads, skip_bad;
  long long seed;
  char dump_tokens[4096], dump_grads[4096];  /* test hooks; not part of the manifest */
} topts;

typedef enum { O_STR, O_INT, O_DBL, O_FLAG, O_LL } otype;
typedef struct {
  const char *name;
  otype t;
  size_t off, size;
  int manifest;  /* recorded in run.json's options (and read back by --from-manifest / --resume) */
  const char *help;
} optdef;

#define F(f) offsetof(topts, f), sizeof(((topts *)0)->f)
static const optdef OPTS[] = {
  {"model", O_STR, F(model), 1, "DIR  Hugging Face model directory (config.json, safetensors, tokenizer.json)"},
  {"data", O_STR, F(data), 1, "FILE  preference JSONL (TRL's standard or conversational format)"},
  {"out", O_STR, F(out), 0, "DIR  output directory (created)"},
  {"loss", O_STR, F(loss), 1, "NAME  sigmoid (DPO), ipo, hinge, robust or simpo [sigmoid]"},
  {"beta", O_DBL, F(beta), 1, "X  DPO beta [0.1; simpo 2.0]"},
  {"label-smoothing", O_DBL, F(label_smoothing), 1, "X  cDPO / robust label smoothing [0]"},
  {"simpo-gamma", O_DBL, F(simpo_gamma), 1, "X  SimPO's target reward margin gamma (TRL's simpo_gamma) [0.5]"},
  {"ref-logps", O_STR, F(ref_logps), 1, "FILE  reference log-probs from `prefcap-dpo score` on the same data"},
  {"lora-r", O_INT, F(lora_r), 1, "N  LoRA rank; 0 = full fine-tune [16]"},
  {"lora-alpha", O_DBL, F(lora_alpha), 1, "X  LoRA alpha (scale alpha/r) [2r]"},
  {"lora-targets", O_STR, F(lora_targets), 1, "LIST  comma-separated module names [attention and MLP projections]"},
  {"init-adapter", O_STR, F(init_adapter), 1, "DIR  start LoRA from this PEFT adapter"},
  {"lr", O_DBL, F(lr), 1, "X  peak learning rate [1e-4 LoRA, 5e-6 full]"},
  {"weight-decay", O_DBL, F(weight_decay), 1, "X  AdamW weight decay, not on biases and norms [0]"},
  {"scheduler", O_STR, F(scheduler), 1, "NAME  constant, linear or cosine [linear]"},
  {"warmup-steps", O_INT, F(warmup_steps), 1, "N  linear warmup steps [0]"},
  {"max-grad-norm", O_DBL, F(max_grad_norm), 1, "X  clip the global gradient norm; 0 = off [1.0]"},
  {"batch-size", O_INT, F(batch_size), 1, "N  pairs per micro-batch [4]"},
  {"grad-accum", O_INT, F(grad_accum), 1, "N  micro-batches per optimizer step [1]"},
  {"epochs", O_DBL, F(epochs), 1, "X  passes over the training pairs [1]"},
  {"max-steps", O_INT, F(max_steps), 1, "N  optimizer steps (overrides --epochs) [0 = from epochs]"},
  {"seed", O_LL, F(seed), 1, "N  shuffling, eval split, LoRA init [42]"},
  {"no-shuffle", O_FLAG, F(no_shuffle), 1, "  pairs in file order"},
  {"eval-data", O_STR, F(eval_data), 1, "FILE  held-out pairs"},
  {"eval-fraction", O_DBL, F(eval_fraction), 1, "X  hold out this fraction of --data instead [0]"},
  {"eval-steps", O_INT, F(eval_steps), 1, "N  evaluate every N steps (and always before and after) [0]"},
  {"max-length", O_INT, F(max_length), 1, "N  TRL's max_length [1024]"},
  {"truncation", O_STR, F(truncation), 1, "MODE  keep_start or keep_end [keep_start]"},
  {"chat-template", O_STR, F(chat_template), 1, "NAME  chatml, qwen3 or llama3 for conversational rows"},
  {"skip-bad", O_FLAG, F(skip_bad), 1, "  skip bad data lines (counted) instead of stopping"},
  {"save-steps", O_INT, F(save_steps), 1, "N  checkpoint every N steps [0 = only on SIGINT/SIGTERM]"},
  {"merge", O_FLAG, F(merge), 1, "  LoRA: also write the merged model to OUT/merged"},
  {"threads", O_INT, F(threads), 0, "N  CPU threads [all cores; the manifest's on --from-manifest/--resume]"},
  {"device", O_STR, F(device), 1, "NAME  cpu, or auto (the GPU once CUDA training exists) [cpu]"},
  {"dump-tokens", O_STR, F(dump_tokens), 0, "FILE  (tests) write the tokenized training pairs"},
  {"dump-grads", O_STR, F(dump_grads), 0, "FILE  (tests) write the first step's gradients (safetensors)"},
};
#undef F
#define NOPTS (sizeof OPTS / sizeof *OPTS)

static void usage(FILE *f) {
  fputs("usage: prefcap-dpo train --model DIR --data FILE --out DIR [options]\n"
        "       prefcap-dpo train --resume OUT [--threads N]\n"
        "       prefcap-dpo train --from-manifest OUT/run.json --out DIR [--threads N]\n"
        "\n"
        "DPO fine-tuning on preference pairs (docs/training.md). Writes OUT/metrics.jsonl (TRL's names, one\n"
        "line per optimizer step), OUT/report.html, OUT/run.json (the manifest that rebuilds the run), and\n"
        "the adapter (LoRA: adapter_config.json + adapter_model.safetensors, PEFT's format) or the model\n"
        "(full fine-tune). SIGINT/SIGTERM save a checkpoint and stop; --resume continues it.\n\n",
        f);
  for (size_t i = 0; i < NOPTS; i++) {
    const char *sp = strchr(OPTS[i].help, ' ');
    fprintf(f, "  --%s %-*.*s %s\n", OPTS[i].name, (int)(22 - strlen(OPTS[i].name)), (int)(sp - OPTS[i].help),
            OPTS[i].help, sp + 2);
  }
}

static void defaults(topts *o) {
  memset(o, 0, sizeof *o);
  strcpy(o->loss, "sigmoid");
  strcpy(o->scheduler, "linear");
  strcpy(o->truncation, "keep_start");
  strcpy(o->device, "cpu");
  o->beta = NAN;
  o->lr = NAN;
  o->lora_alpha = NAN;
  o->simpo_gamma = 0.5;
  o->lora_r = 16;
  o->max_grad_norm = 1.0;
  o->batch_size = 4;
  o->grad_accum = 1;
  o->epochs = 1;
  o->seed = 42;
  o->max_length = 1024;
}

static int set_opt(topts *o, const optdef *d, const char *v) {
  char *p = (char *)o + d->off, *end;
  errno = 0;
  switch (d->t) {
    case O_STR:
      if (strlen(v) >= d->size) { fprintf(stderr, PROG ": --%s: value too long\n", d->name); return -1; }
      strcpy(p, v);
      return 0;
    case O_INT: {
      long x = strtol(v, &end, 10);
      if (errno || *end || end == v || x < 0 || x > INT_MAX) break;
      *(int *)p = (int)x;
      return 0;
    }
    case O_LL: {
      long long x = strtoll(v, &end, 10);
      if (errno || *end || end == v || x < 0 || x > (1ll << 53)) break;
      *(long long *)p = x;
      return 0;
    }
    case O_DBL: {
      double x = strtod(v, &end);
      if (errno || *end || end == v || !isfinite(x) || x < 0) break;
      *(double *)p = x;
      return 0;
    }
    case O_FLAG: *(int *)p = 1; return 0;
  }
  fprintf(stderr, PROG ": --%s wants a non-negative %s, got '%s'\n", d->name,
          d->t == O_DBL ? "number" : "integer", v);
  return -1;
}

static const optdef *find_opt(const char *name) {
  for (size_t i = 0; i < NOPTS; i++)
    if (!strcmp(OPTS[i].name, name)) return &OPTS[i];
  return NULL;
}

/* The options in force as JSON (run.json "options"). */
static cJSON *opts_json(const topts *o) {
  cJSON *j = cJSON_CreateObject();
  for (size_t i = 0; i < NOPTS; i++) {
    const optdef *d = &OPTS[i];
    if (!d->manifest) continue;
    const char *p = (const char *)o + d->off;
    switch (d->t) {
      case O_STR: cJSON_AddStringToObject(j, d->name, p); break;
      case O_INT: cJSON_AddNumberToObject(j, d->name, *(const int *)p); break;
      case O_LL: cJSON_AddNumberToObject(j, d->name, (double)*(const long long *)p); break;
      case O_DBL: cJSON_AddNumberToObject(j, d->name, *(const double *)p); break;
      case O_FLAG: cJSON_AddBoolToObject(j, d->name, *(const int *)p); break;
    }
  }
  return j;
}

static int opts_from_json(topts *o, const cJSON *j, const char *file) {
  for (size_t i = 0; i < NOPTS; i++) {
    const optdef *d = &OPTS[i];
    if (!d->manifest) continue;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, d->name);
    char *p = (char *)o + d->off;
    int ok = 0;
    switch (d->t) {
      case O_STR:
        ok = cJSON_IsString(v) && strlen(v->valuestring) < d->size;
        if (ok) strcpy(p, v->valuestring);
        break;
      case O_INT: ok = cJSON_IsNumber(v); if (ok) *(int *)p = v->valueint; break;
      case O_LL: ok = cJSON_IsNumber(v); if (ok) *(long long *)p = (long long)v->valuedouble; break;
      case O_DBL: ok = cJSON_IsNumber(v); if (ok) *(double *)p = v->valuedouble; break;
      case O_FLAG: ok = cJSON_IsBool(v); if (ok) *(int *)p = cJSON_IsTrue(v); break;
    }
    if (!ok) {
      fprintf(stderr, PROG ": %s: options.%s is missing or of the wrong type\n", file, d->name);
      return -1;
    }
  }
  return 0;
}

typedef enum { L_SIGMOID, L_IPO, L_HINGE, L_ROBUST, L_SIMPO } loss_kind;

static int loss_from_name(const char *s) {
  static const char *n[] = {"sigmoid", "ipo", "hinge", "robust", "simpo"};
  for (int i = 0; i < 5; i++)
    if (!strcmp(s, n[i])) return i;
  return -1;
}

static int check_opts(topts *o) {
  int lk = loss_from_name(o->loss);
  if (lk < 0) { fprintf(stderr, PROG ": --loss '%s' is unknown (sigmoid, ipo, hinge, robust, simpo)\n", o->loss); return -1; }
  if (isnan(o->beta)) o->beta = lk == L_SIMPO ? 2.0 : 0.1;
  if (isnan(o->lr)) o->lr = o->lora_r > 0 || o->init_adapter[0] ? 1e-4 : 5e-6;
  if (isnan(o->lora_alpha)) o->lora_alpha = 2.0 * o->lora_r;
  if (o->beta <= 0) { fprintf(stderr, PROG ": --beta must be > 0\n"); return -1; }
  if (o->label_smoothing >= 0.5) { fprintf(stderr, PROG ": --label-smoothing must be < 0.5\n"); return -1; }
  if (strcmp(o->scheduler, "constant") && strcmp(o->scheduler, "linear") && strcmp(o->scheduler, "cosine")) {
    fprintf(stderr, PROG ": --scheduler '%s' is unknown (constant, linear, cosine)\n", o->scheduler);
    return -1;
  }
  if (pc_data_truncation_from_name(o->truncation) < 0) {
    fprintf(stderr, PROG ": --truncation '%s' is unknown (keep_start, keep_end)\n", o->truncation);
    return -1;
  }
  if (o->batch_size < 1 || o->grad_accum < 1) { fprintf(stderr, PROG ": --batch-size and --grad-accum must be >= 1\n"); return -1; }
  if (o->eval_fraction >= 1) { fprintf(stderr, PROG ": --eval-fraction must be < 1\n"); return -1; }
  if (o->eval_data[0] && o->eval_fraction > 0) { fprintf(stderr, PROG ": give --eval-data or --eval-fraction, not both\n"); return -1; }
  if (lk == L_SIMPO && o->ref_logps[0]) { fprintf(stderr, PROG ": --loss simpo is reference-free; drop --ref-logps\n"); return -1; }
  if (o->merge && o->lora_r == 0 && !o->init_adapter[0]) { fprintf(stderr, PROG ": --merge is for LoRA runs (--lora-r > 0)\n"); return -1; }
  if (!o->model[0] || !o->data[0]) { fprintf(stderr, PROG ": --model and --data are required\n"); return -1; }
  return 0;
}

// ---- small helpers ------------------------------------------------------------------------------

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static void iso_now(char *b, size_t n) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(b, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static cJSON *read_json(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) { snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
  size_t got = b ? fread(b, 1, (size_t)(n > 0 ? n : 0), f) : 0;
  fclose(f);
  if (!b) { snprintf(err, errlen, "out of memory"); return NULL; }
  b[got] = 0;
  cJSON *j = cJSON_Parse(b);
  free(b);
  if (!j) snprintf(err, errlen, "%s: not valid JSON", path);
  return j;
}

static int write_json(const char *path, const cJSON *j) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  char *s = cJSON_Print(j);
  FILE *f = s ? fopen(tmp, "wb") : NULL;
  int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
  if (f && fclose(f) != 0) ok = 0;
  free(s);
  if (ok && rename(tmp, path) != 0) ok = 0;
  return ok ? 0 : -1;
}

static int copy_tokenizer_files(const char *from, const char *to) {
  static const char *names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                "generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt"};
  char a[4200], b[4200];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(a, sizeof a, "%s/%s", from, names[i]);
    snprintf(b, sizeof b, "%s/%s", to, names[i]);
    if (pc_copy_file(a, b) < 0) { fprintf(stderr, PROG ": cannot copy %s to %s: %s\n", a, b, strerror(errno)); return -1; }
  }
  return 0;
}

/* A seeded permutation of 0..n-1 (Fisher-Yates); stream is a label that separates its uses. */
static void permutation(size_t *p, size_t n, uint64_t seed, uint64_t stream) {
  uint64_t s = seed * 0x100000001B3ull ^ (stream + 0x5DEECE66Dull);
  for (size_t i = 0; i < n; i++) p[i] = i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(pc_splitmix64(&s) % i);
    size_t t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
}

// ---- the loss -----------------------------------------------------------------------------------

static double logsig(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double sigm(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

typedef struct {
  double loss, rc, rr, acc, pc, pr;  /* per pair: loss, rewards, accuracy, policy log-probs (normalised for ipo/simpo) */
  double dpc, dpr;                   /* dLoss/d(sum of log-probs) of chosen and rejected */
} pair_out;

/* TRL's dpo_loss / CPO's simpo for one pair. pc, pr: summed policy log-probs; rc, rr: reference;
 * nc, nr: scored tokens. */
static pair_out pair_loss(loss_kind k, const topts *o, double pc, double pr, double rc, double rr, int nc, int nr) {
  pair_out r;
  double wc = 1, wr = 1;
  if (k == L_IPO || k == L_SIMPO) {  // length-normalised log-probs
    wc = 1.0 / (nc > 0 ? nc : 1);
    wr = 1.0 / (nr > 0 ? nr : 1);
  }
  pc *= wc, pr *= wr, rc *= wc, rr *= wr;
  double b = o->beta, e = o->label_smoothing;
  double z = k == L_SIMPO ? (pc - pr) - o->simpo_gamma / b : (pc - pr) - (rc - rr), dz;  // TRL CPO: gamma / beta
  switch (k) {
    case L_IPO:
      r.loss = (z - 1 / (2 * b)) * (z - 1 / (2 * b));
      dz = 2 * (z - 1 / (2 * b));
      break;
    case L_HINGE:
      r.loss = 1 - b * z > 0 ? 1 - b * z : 0;
      dz = 1 - b * z > 0 ? -b : 0;
      break;
    case L_ROBUST:
      r.loss = (-logsig(b * z) * (1 - e) + logsig(-b * z) * e) / (1 - 2 * e);
      dz = (-(1 - e) * b * sigm(-b * z) - e * b * sigm(b * z)) / (1 - 2 * e);
      break;
    default:  // sigmoid, simpo
      r.loss = -logsig(b * z) * (1 - e) - logsig(-b * z) * e;
      dz = -(1 - e) * b * sigm(-b * z) + e * b * sigm(b * z);
      break;
  }
  r.rc = k == L_SIMPO ? b * pc : b * (pc - rc);
  r.rr = k == L_SIMPO ? b * pr : b * (pr - rr);
  r.acc = r.rc > r.rr;
  r.pc = pc;
  r.pr = pr;
  r.dpc = dz * wc;
  r.dpr = -dz * wr;
  return r;
}

typedef struct { double loss, rc, rr, acc, pc, pr; size_t n; } stats;

static void stats_add(stats *s, const pair_out *p) {
  s->loss += p->loss;
  s->rc += p->rc;
  s->rr += p->rr;
  s->acc += p->acc;
  s->pc += p->pc;
  s->pr += p->pr;
  s->n++;
}

static void stats_print(FILE *f, const stats *s, const char *pre) {
  double n = s->n ? (double)s->n : 1;
  fprintf(f, "\"%sloss\": %.17g, \"%srewards/chosen\": %.17g, \"%srewards/rejected\": %.17g, "
          "\"%srewards/accuracies\": %.17g, \"%srewards/margins\": %.17g, \"%slogps/chosen\": %.17g, "
          "\"%slogps/rejected\": %.17g", pre, s->loss / n, pre, s->rc / n, pre, s->rr / n, pre, s->acc / n, pre,
          (s->rc - s->rr) / n, pre, s->pc / n, pre, s->pr / n);
}

// ---- the run ------------------------------------------------------------------------------------

typedef struct {
  topts o;
  loss_kind lk;
  int lora;
  pc_tokenizer *tok;
  pc_dataset ds, eds;        /* the loaded data; eds when --eval-data */
  const pc_pair **train, **eval;
  size_t ntrain, neval;
  double *ref;               /* (2 ntrain) then (2 neval): reference sums (chosen, rejected) */
  pc_backend *be;
  pc_model *m;
  float **adam_m, **adam_v;  /* per parameter, NULL when frozen */
  int total_steps, start_step;
  cJSON *manifest;
  char err[2048];
  FILE *metrics;
  pc_model_seq *seqs;
  double *sums;
  int *cnts;
  float *dsum;
} run;

static void pair_seqs(const pc_pair *p, pc_model_seq *s) {
  int k = 0;  // the rejected sequence reuses the chosen one's rows for their common prefix
  while (k < p->chosen.n && k < p->rejected.n && p->chosen.ids[k] == p->rejected.ids[k]) k++;
  s[0] = (pc_model_seq){p->chosen.ids, p->chosen.n, p->chosen.prompt_len, 0};
  s[1] = (pc_model_seq){p->rejected.ids, p->rejected.n, p->rejected.prompt_len, k};
}

static int load_data(run *R, const char *path, pc_dataset *ds) {
  pc_data_opts dopt = {R->o.max_length, pc_data_truncation_from_name(R->o.truncation), R->o.skip_bad,
                       R->o.chat_template[0] ? R->o.chat_template : NULL};
  if (pc_data_load(path, R->tok, R->o.model, &dopt, ds, R->err, sizeof R->err) != 0) {
    fprintf(stderr, PROG ": %s\n", R->err);
    return -1;
  }
  if (ds->skipped_bad)
    fprintf(stderr, PROG ": %s: skipped %zu bad line(s); the first: %s\n", path, ds->skipped_bad, ds->first_skipped_msg);
  if (ds->dropped_too_long)
    fprintf(stderr, PROG ": %s: dropped %zu pair(s) whose prompt alone reaches --max-length %d (as TRL does)\n", path,
            ds->dropped_too_long, R->o.max_length);
  if (ds->truncated)
    fprintf(stderr, PROG ": %s: truncated %zu pair(s) to --max-length %d (%s)\n", path, ds->truncated,
            R->o.max_length, R->o.truncation);
  if (ds->n == 0) {
    fprintf(stderr, PROG ": %s: no pairs to train on%s\n", path,
            ds->dropped_too_long ? " (every pair was dropped by --max-length)" : "");
    return -1;
  }
  return 0;
}

/* Reference sums from `prefcap-dpo score` output, matched to pairs by their data line. */
static int load_ref_file(run *R) {
  FILE *f = fopen(R->o.ref_logps, "rb");
  if (!f) { fprintf(stderr, PROG ": %s: cannot open: %s\n", R->o.ref_logps, strerror(errno)); return -1; }
  int maxline = 0;
  for (size_t i = 0; i < R->ntrain; i++) maxline = R->train[i]->line > maxline ? R->train[i]->line : maxline;
  double *byline = malloc(sizeof(double) * 2 * (size_t)(maxline + 1));
  char *have = calloc((size_t)maxline + 1, 1);
  char *buf = malloc(1 << 16);
  int rc = -1, ln = 0;
  if (!byline || !have || !buf) { fprintf(stderr, PROG ": out of memory\n"); goto done; }
  while (fgets(buf, 1 << 16, f)) {
    ln++;
    cJSON *j = cJSON_Parse(buf);
    cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "chosen_logps"), *r = cJSON_GetObjectItemCaseSensitive(j, "rejected_logps"),
          *l = cJSON_GetObjectItemCaseSensitive(j, "line");
    if (!cJSON_IsNumber(c) || !cJSON_IsNumber(r) || !cJSON_IsNumber(l)) {
      fprintf(stderr, PROG ": %s:%d: expected {\"chosen_logps\", \"rejected_logps\", \"line\"} as `prefcap-dpo score` "
              "writes\n", R->o.ref_logps, ln);
      cJSON_Delete(j);
      goto done;
    }
    int k = l->valueint;
    if (k >= 0 && k <= maxline) {
      byline[2 * k] = c->valuedouble;
      byline[2 * k + 1] = r->valuedouble;
      have[k] = 1;
    }
    cJSON_Delete(j);
  }
  for (size_t i = 0; i < R->ntrain; i++) {
    int k = R->train[i]->line;
    if (!have[k]) {
      fprintf(stderr, PROG ": %s has no reference log-probs for %s line %d (score the same data file)\n",
              R->o.ref_logps, R->o.data, k);
      goto done;
    }
    R->ref[2 * i] = byline[2 * k];
    R->ref[2 * i + 1] = byline[2 * k + 1];
  }
  rc = 0;
done:
  fclose(f);
  free(byline);
  free(have);
  free(buf);
  return rc;
}

/* Reference sums under the starting model (full) or the base (LoRA): the checkpoint as loaded, with
 * no adapter. Computed once, before training (TRL's precompute_ref_log_probs). */
static int compute_ref(run *R, const pc_pair **pairs, size_t n, double *out) {
  pc_model *base = NULL;
  if (pc_model_load(R->o.model, NULL, R->be, &base, R->err, sizeof R->err) != 0) {  // frozen, no adapter
    fprintf(stderr, PROG ": %s\n", R->err);
    return -1;
  }
  int B = R->o.batch_size, rc = -1;
  pc_progress *pg = pc_progress_new(stderr, "reference", "pairs", "tok", n);
  double tokens = 0;
  for (size_t b = 0; b < n; b += (size_t)B) {
    int nb = n - b < (size_t)B ? (int)(n - b) : B;
    for (int i = 0; i < nb; i++) {
      pair_seqs(pairs[b + (size_t)i], &R->seqs[2 * i]);
      tokens += pairs[b + (size_t)i]->chosen.n + pairs[b + (size_t)i]->rejected.n;
    }
    if (pc_model_forward(base, R->seqs, 2 * nb, 0, out + 2 * b, R->cnts, NULL, R->err, sizeof R->err) != 0) {
      pc_progress_break(pg);
      int ev = pairs + b >= R->eval && R->o.eval_data[0];  // pairs of --eval-data come after the training ones
      fprintf(stderr, PROG ": %s:%d: %s\n", ev ? R->o.eval_data : R->o.data, pairs[b]->line, R->err);
      goto done;
    }
    pc_progress_update(pg, b + (size_t)nb, tokens, NULL);
  }
  pc_progress_end(pg, n, tokens, NULL);
  pg = NULL;
  rc = 0;
done:
  pc_progress_free(pg);
  pc_model_free(base);
  return rc;
}

/* Forward (and, with grads, backward) of pairs[0..nb) with reference sums ref (2 nb); adds to st.
 * scale: the factor of this micro-batch's pairs in the step's mean loss. */
static int run_batch(run *R, const pc_pair **pairs, const double *ref, int nb, int backward, double scale,
                     stats *st, double *tokens) {
  for (int i = 0; i < nb; i++) {
    pair_seqs(pairs[i], &R->seqs[2 * i]);
    *tokens += pairs[i]->chosen.n + pairs[i]->rejected.n;
  }
  if (pc_model_forward(R->m, R->seqs, 2 * nb, backward, R->sums, R->cnts, NULL, R->err, sizeof R->err) != 0) return -1;
  for (int i = 0; i < nb; i++) {
    pair_out p = pair_loss(R->lk, &R->o, R->sums[2 * i], R->sums[2 * i + 1], ref ? ref[2 * i] : 0,
                           ref ? ref[2 * i + 1] : 0, R->cnts[2 * i], R->cnts[2 * i + 1]);
    stats_add(st, &p);
    R->dsum[2 * i] = (float)(p.dpc * scale);
    R->dsum[2 * i + 1] = (float)(p.dpr * scale);
  }
  if (backward && pc_model_backward(R->m, R->dsum, R->err, sizeof R->err) != 0) return -1;
  return 0;
}

static int evaluate(run *R, int step) {
  if (!R->neval) return 0;
  stats st = {0};
  double tokens = 0;
  int B = R->o.batch_size;
  for (size_t b = 0; b < R->neval; b += (size_t)B) {
    int nb = R->neval - b < (size_t)B ? (int)(R->neval - b) : B;
    if (run_batch(R, R->eval + b, R->lk == L_SIMPO ? NULL : R->ref + 2 * (R->ntrain + b), nb, 0, 0, &st, &tokens) != 0) {
      fprintf(stderr, PROG ": evaluation: %s\n", R->err);
      return -1;
    }
  }
  fprintf(R->metrics, "{\"step\": %d, \"epoch\": %.17g, ", step, (double)step * R->o.batch_size * R->o.grad_accum / (double)R->ntrain);
  stats_print(R->metrics, &st, "eval_");
  fprintf(R->metrics, "}\n");
  fflush(R->metrics);
  double n = st.n ? (double)st.n : 1;
  cJSON_Delete(cJSON_DetachItemFromObject(R->manifest, "final_eval"));
  cJSON *fe = cJSON_AddObjectToObject(R->manifest, "final_eval");
  cJSON_AddNumberToObject(fe, "step", step);
  cJSON_AddNumberToObject(fe, "eval_loss", st.loss / n);
  cJSON_AddNumberToObject(fe, "eval_rewards/accuracies", st.acc / n);
  cJSON_AddNumberToObject(fe, "eval_rewards/margins", (st.rc - st.rr) / n);
  return 0;
}

static double lr_at(const topts *o, int k, int T) {
  int W = o->warmup_steps;
  if (k < W) return o->lr * (double)k / (double)(W > 1 ? W : 1);
  double span = (double)(T - W > 1 ? T - W : 1);
  if (!strcmp(o->scheduler, "linear")) return o->lr * fmax(0.0, (double)(T - k) / span);
  if (!strcmp(o->scheduler, "cosine")) return o->lr * fmax(0.0, 0.5 * (1 + cos(M_PI * (double)(k - W) / span)));
  return o->lr;
}

/* The stream of pairs: index i of the run's sequence of pairs → its index in R->train (and R->ref). */
typedef struct { size_t *perm; long epoch; } order;

static size_t train_index(run *R, order *od, size_t i) {
  size_t n = R->ntrain;
  if (R->o.no_shuffle) return i % n;
  long e = (long)(i / n);
  if (e != od->epoch) {
    permutation(od->perm, n, (uint64_t)R->o.seed, 1000 + (uint64_t)e);
    od->epoch = e;
  }
  return od->perm[i % n];
}

// ---- checkpoints --------------------------------------------------------------------------------

static int write_tensors(run *R, const char *path, int what /* 0 params, 1 exp_avg, 2 exp_avg_sq, 3 grads */) {
  int np = pc_model_nparams(R->m), n = 0, rc = -1;
  pc_st_write_tensor *ts = calloc((size_t)np, sizeof *ts);
  float **hosts = calloc((size_t)np, sizeof *hosts);
  char (*names)[220] = calloc((size_t)np, sizeof *names);
  if (!ts || !hosts || !names) goto done;
  static const char *pre[] = {"", "exp_avg.", "exp_avg_sq.", ""};
  for (int i = 0; i < np; i++) {
    pc_param *p = pc_model_param(R->m, i);
    if (!p->g) continue;
    const float *src = what == 0 ? p->w : what == 1 ? R->adam_m[i] : what == 2 ? R->adam_v[i] : p->g;
    hosts[n] = malloc(sizeof(float) * (p->n ? p->n : 1));
    if (!hosts[n]) goto done;
    R->be->ops->download(R->be, hosts[n], src, sizeof(float) * p->n);
    snprintf(names[n], sizeof names[n], "%s%s", pre[what], p->name);
    ts[n] = (pc_st_write_tensor){names[n], p->ndim, {p->shape[0], p->shape[1]}, hosts[n]};
    n++;
  }
  rc = pc_st_write(path, ts, n, PC_DT_F32, R->err, sizeof R->err);
done:
  if (hosts)
    for (int i = 0; i < np; i++) free(hosts[i]);
  free(hosts);
  free(ts);
  free(names);
  if (rc != 0 && !R->err[0]) snprintf(R->err, sizeof R->err, "out of memory writing %s", path);
  return rc;
}

static int save_checkpoint(run *R, int step) {
  char tmp[4200], dir[4200], path[4400];
  snprintf(dir, sizeof dir, "%s/checkpoint-%d", R->o.out, step);
  snprintf(tmp, sizeof tmp, "%s/.checkpoint-%d.tmp", R->o.out, step);
  R->err[0] = 0;
  if (pc_mkdir_p(tmp) != 0) { fprintf(stderr, PROG ": %s: cannot create: %s\n", tmp, strerror(errno)); return -1; }
  snprintf(path, sizeof path, "%s/trainable.safetensors", tmp);
  if (write_tensors(R, path, 0) != 0) goto fail;
  snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
  if (write_tensors(R, path, 1) != 0) goto fail;
  snprintf(path, sizeof path, "%s/optimizer_sq.safetensors", tmp);
  if (write_tensors(R, path, 2) != 0) goto fail;
  if (R->lora && pc_model_save_adapter(R->m, tmp, R->o.model, R->err, sizeof R->err) != 0) goto fail;
  cJSON *st = cJSON_CreateObject();
  cJSON_AddNumberToObject(st, "step", step);
  cJSON_AddNumberToObject(st, "total_steps", R->total_steps);
  snprintf(path, sizeof path, "%s/state.json", tmp);
  int w = write_json(path, st);
  cJSON_Delete(st);
  if (w != 0) { snprintf(R->err, sizeof R->err, "%s: cannot write", path); goto fail; }
  // a checkpoint appears whole or not at all: written aside, then renamed into place
  if (rename(tmp, dir) != 0) {
    snprintf(R->err, sizeof R->err, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    goto fail;
  }
  return 0;
fail:
  fprintf(stderr, PROG ": checkpoint at step %d: %s\n", step, R->err);
  return -1;
}

/* The newest checkpoint-K of dir: K, or 0 when there is none. */
static int latest_checkpoint(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int best = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int k;
    char tail;
    if (sscanf(e->d_name, "checkpoint-%d%c", &k, &tail) == 1 && k > best) best = k;
  }
  closedir(d);
  return best;
}

static int load_checkpoint(run *R, int step) {
  char path[4400];
  int loaded;
  snprintf(path, sizeof path, "%s/checkpoint-%d/trainable.safetensors", R->o.out, step);
  if (pc_model_load_params(R->m, path, &loaded, R->err, sizeof R->err) != 0) goto fail;
  for (int which = 1; which <= 2; which++) {
    snprintf(path, sizeof path, "%s/checkpoint-%d/%s", R->o.out, step,
             which == 1 ? "optimizer.safetensors" : "optimizer_sq.safetensors");
    pc_ckpt *ck = NULL;
    if (pc_ckpt_open_file(path, &ck, R->err, sizeof R->err) != 0) goto fail;
    for (int i = 0; i < pc_model_nparams(R->m); i++) {
      pc_param *p = pc_model_param(R->m, i);
      if (!p->g) continue;
      char name[240];
      snprintf(name, sizeof name, "%s%s", which == 1 ? "exp_avg." : "exp_avg_sq.", p->name);
      const pc_st_tensor *t = pc_ckpt_find(ck, name);
      float *h = malloc(sizeof(float) * (p->n ? p->n : 1));
      if (!t || !h || (size_t)t->numel != p->n || pc_tensor_to_f32(t, h, R->err, sizeof R->err) != 0) {
        if (!R->err[0] || !t) snprintf(R->err, sizeof R->err, "%s: missing or wrong tensor '%s'", path, name);
        free(h);
        pc_ckpt_close(ck);
        goto fail;
      }
      R->be->ops->upload(R->be, which == 1 ? R->adam_m[i] : R->adam_v[i], h, sizeof(float) * p->n);
      free(h);
    }
    pc_ckpt_close(ck);
  }
  return 0;
fail:
  fprintf(stderr, PROG ": resuming from checkpoint-%d: %s\n", step, R->err);
  return -1;
}

/* Keeps the lines of metrics.jsonl up to `step` (what the checkpoint had seen). */
static int truncate_metrics(const char *path, int step) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *o = fopen(tmp, "wb");
  if (!o) { fclose(f); return -1; }
  char line[8192];
  while (fgets(line, sizeof line, f)) {
    int k;
    if (sscanf(line, "{\"step\": %d", &k) == 1 && k <= step && strchr(line, '\n')) fputs(line, o);
  }
  fclose(f);
  if (fclose(o) != 0) return -1;
  return rename(tmp, path);
}

// ---- the manifest -------------------------------------------------------------------------------

static cJSON *file_entry(const char *path) {
  cJSON *j = cJSON_CreateObject();
  char hex[65];
  cJSON_AddStringToObject(j, "path", path);
  if (pc_sha256_file(path, hex) == 0) cJSON_AddStringToObject(j, "sha256", hex);
  else cJSON_AddNullToObject(j, "sha256");
  return j;
}

/* The model's identity: config.json (parsed and hashed), every safetensors file's hash, the
 * tokenizer's hash. */
static cJSON *model_entry(const char *dir) {
  cJSON *j = cJSON_CreateObject();
  char path[4200], e[256];
  cJSON_AddStringToObject(j, "path", dir);
  snprintf(path, sizeof path, "%s/config.json", dir);
  cJSON *cfg = read_json(path, e, sizeof e);
  cJSON_AddItemToObject(j, "config", cfg ? cfg : cJSON_CreateNull());
  cJSON_AddItemToObject(j, "config_file", file_entry(path));
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  cJSON_AddItemToObject(j, "tokenizer", file_entry(path));
  cJSON *w = cJSON_AddArrayToObject(j, "weights");
  struct dirent **list;
  int n = scandir(dir, &list, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    size_t l = strlen(list[i]->d_name);
    if (l > 12 && !strcmp(list[i]->d_name + l - 12, ".safetensors")) {
      snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
      cJSON_AddItemToArray(w, file_entry(path));
    }
    free(list[i]);
  }
  if (n >= 0) free(list);
  return j;
}

static cJSON *data_entry(const char *path, const pc_dataset *ds) {
  cJSON *j = file_entry(path);
  cJSON_AddNumberToObject(j, "pairs", (double)ds->n);
  cJSON_AddNumberToObject(j, "skipped_bad", (double)ds->skipped_bad);
  cJSON_AddNumberToObject(j, "dropped_too_long", (double)ds->dropped_too_long);
  cJSON_AddNumberToObject(j, "truncated", (double)ds->truncated);
  char mp[4200], e[256];
  snprintf(mp, sizeof mp, "%s.manifest.json", path);
  cJSON *em = access(mp, R_OK) == 0 ? read_json(mp, e, sizeof e) : NULL;  // the export's own manifest
  cJSON_AddItemToObject(j, "export_manifest", em ? em : cJSON_CreateNull());
  return j;
}

/* Checks that the inputs a manifest names are still the ones it ran on. */
static int verify_inputs(const cJSON *man, const char *mpath) {
  const char *keys[][2] = {{"data", NULL}, {"eval_data", NULL}, {"ref_logps", NULL}, {"model", "config_file"},
                           {"model", "tokenizer"}};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(man, keys[i][0]);
    if (keys[i][1]) e = cJSON_GetObjectItemCaseSensitive(e, keys[i][1]);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "path"), *h = cJSON_GetObjectItemCaseSensitive(e, "sha256");
    if (!cJSON_IsString(p) || !cJSON_IsString(h)) continue;
    char hex[65];
    if (pc_sha256_file(p->valuestring, hex) != 0) {
      fprintf(stderr, PROG ": %s names %s, which cannot be read: %s\n", mpath, p->valuestring, strerror(errno));
      return -1;
    }
    if (strcmp(hex, h->valuestring)) {
      fprintf(stderr, PROG ": %s has changed since the run in %s (sha256 %s, the manifest says %s)\n", p->valuestring,
              mpath, hex, h->valuestring);
      return -1;
    }
  }
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(man, "model"), "weights"), *e;
  cJSON_ArrayForEach(e, w) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "path"), *h = cJSON_GetObjectItemCaseSensitive(e, "sha256");
    char hex[65];
    if (!cJSON_IsString(p) || !cJSON_IsString(h)) continue;
    if (pc_sha256_file(p->valuestring, hex) != 0 || strcmp(hex, h->valuestring)) {
      fprintf(stderr, PROG ": model weights %s are missing or changed since the run in %s\n", p->valuestring, mpath);
      return -1;
    }
  }
  return 0;
}

static void set_status(run *R, const char *status) {
  char t[32];
  iso_now(t, sizeof t);
  cJSON_Delete(cJSON_DetachItemFromObject(R->manifest, "status"));
  cJSON_AddStringToObject(R->manifest, "status", status);
  if (strcmp(status, "running")) {
    cJSON_Delete(cJSON_DetachItemFromObject(R->manifest, "ended_at"));
    cJSON_AddStringToObject(R->manifest, "ended_at", t);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/run.json", R->o.out);
  if (write_json(path, R->manifest) != 0) fprintf(stderr, PROG ": warning: cannot write %s\n", path);
}

// ---- main ---------------------------------------------------------------------------------------

static int dump_tokens(run *R) {
  FILE *f = fopen(R->o.dump_tokens, "w");
  if (!f) { fprintf(stderr, PROG ": %s: cannot create: %s\n", R->o.dump_tokens, strerror(errno)); return -1; }
  for (size_t i = 0; i < R->ntrain; i++) {
    const pc_pair *p = R->train[i];
    fprintf(f, "{\"index\": %zu, \"line\": %d, \"chosen\": [", i, p->line);
    for (int k = 0; k < p->chosen.n; k++) fprintf(f, "%s%d", k ? ", " : "", p->chosen.ids[k]);
    fprintf(f, "], \"rejected\": [");
    for (int k = 0; k < p->rejected.n; k++) fprintf(f, "%s%d", k ? ", " : "", p->rejected.ids[k]);
    fprintf(f, "], \"chosen_prompt_len\": %d, \"rejected_prompt_len\": %d}\n", p->chosen.prompt_len,
            p->rejected.prompt_len);
  }
  return fclose(f) == 0 ? 0 : -1;
}

static int train_main(run *R, const char *cmdline, int resume) {
  topts *o = &R->o;
  int rc = 1;
  char path[4400];
  R->lk = (loss_kind)loss_from_name(o->loss);
  R->lora = o->lora_r > 0 || o->init_adapter[0];
  // ---- data
  snprintf(path, sizeof path, "%s/tokenizer.json", o->model);
  if (!(R->tok = pc_tok_load(path, R->err, sizeof R->err))) { fprintf(stderr, PROG ": %s\n", R->err); return 1; }
  if (load_data(R, o->data, &R->ds) != 0) return 1;
  if (o->eval_data[0] && load_data(R, o->eval_data, &R->eds) != 0) return 1;
  size_t n = R->ds.n;
  R->train = malloc(sizeof *R->train * (n + R->eds.n + 1));
  R->eval = R->train + n;  // train and eval pairs in one array: train first
  if (!R->train) { fprintf(stderr, PROG ": out of memory\n"); return 1; }
  if (o->eval_fraction > 0) {
    size_t ne = (size_t)llround(o->eval_fraction * (double)n);
    if (ne < 1) ne = 1;
    if (ne >= n) { fprintf(stderr, PROG ": %s: --eval-fraction %g leaves no training pairs of %zu\n", o->data, o->eval_fraction, n); return 1; }
    size_t *perm = malloc(sizeof *perm * n);
    char *is_eval = calloc(n, 1);
    if (!perm || !is_eval) { free(perm); free(is_eval); fprintf(stderr, PROG ": out of memory\n"); return 1; }
    permutation(perm, n, (uint64_t)o->seed, 7);
    for (size_t i = 0; i < ne; i++) is_eval[perm[i]] = 1;
    for (size_t i = 0; i < n; i++)
      if (!is_eval[i]) R->train[R->ntrain++] = &R->ds.pairs[i];
    R->eval = R->train + R->ntrain;
    for (size_t i = 0; i < n; i++)
      if (is_eval[i]) R->eval[R->neval++] = &R->ds.pairs[i];
    free(perm);
    free(is_eval);
  } else {
    for (size_t i = 0; i < n; i++) R->train[R->ntrain++] = &R->ds.pairs[i];
    for (size_t i = 0; i < R->eds.n; i++) R->eval[R->neval++] = &R->eds.pairs[i];
  }
  if (o->dump_tokens[0] && dump_tokens(R) != 0) return 1;
  int P = o->batch_size * o->grad_accum;
  R->total_steps = o->max_steps > 0 ? o->max_steps : (int)ceil(o->epochs * (double)R->ntrain / P);
  if (R->total_steps < 1) R->total_steps = 1;

  // ---- backend, model, reference
  R->be = pc_backend_new(o->device, o->threads, R->err, sizeof R->err);
  if (!R->be) { fprintf(stderr, PROG ": %s\n", R->err); return 1; }
  if ((!R->be->ops->matmul_backward || !R->be->ops->adamw) && !strcmp(o->device, "auto")) {
    // auto: the GPU when it can train, else the CPU (the CUDA backend has the forward ops only, so far)
    R->be->ops->destroy(R->be);
    R->be = pc_backend_new("cpu", o->threads, R->err, sizeof R->err);
    if (!R->be) { fprintf(stderr, PROG ": %s\n", R->err); return 1; }
  }
  if (!R->be->ops->matmul_backward || !R->be->ops->adamw) {  // the CUDA backend has the forward ops only
    fprintf(stderr, PROG ": device '%s': training on %s is not built yet (scoring is); use --device cpu\n", o->device,
            R->be->ops->name);
    return 1;
  }
  int B = o->batch_size;
  R->seqs = malloc(sizeof *R->seqs * 2 * (size_t)B);
  R->sums = malloc(sizeof *R->sums * 2 * (size_t)B);
  R->cnts = malloc(sizeof *R->cnts * 2 * (size_t)B);
  R->dsum = malloc(sizeof *R->dsum * 2 * (size_t)B);
  R->ref = calloc(2 * (R->ntrain + R->neval) + 1, sizeof *R->ref);
  if (!R->seqs || !R->sums || !R->cnts || !R->dsum || !R->ref) { fprintf(stderr, PROG ": out of memory\n"); return 1; }
  if (R->lk != L_SIMPO) {  // R->eval follows R->train in one array, and R->ref likewise: one pass
    if (o->ref_logps[0]) {
      if (load_ref_file(R) != 0 || (R->neval && compute_ref(R, R->eval, R->neval, R->ref + 2 * R->ntrain) != 0)) return 1;
    } else if (compute_ref(R, R->train, R->ntrain + R->neval, R->ref) != 0) {
      return 1;
    }
  }
  pc_model_opts mo = {.trainable = 1, .lora_r = R->lora ? o->lora_r : 0, .lora_alpha = o->lora_alpha,
                      .lora_targets = o->lora_targets[0] ? o->lora_targets : NULL,
                      .init_adapter = o->init_adapter[0] ? o->init_adapter : NULL, .seed = (uint64_t)o->seed};
  if (pc_model_load(o->model, &mo, R->be, &R->m, R->err, sizeof R->err) != 0) {
    fprintf(stderr, PROG ": %s\n", R->err);
    return 1;
  }
  int np = pc_model_nparams(R->m);
  R->adam_m = calloc((size_t)np, sizeof *R->adam_m);
  R->adam_v = calloc((size_t)np, sizeof *R->adam_v);
  if (!R->adam_m || !R->adam_v) { fprintf(stderr, PROG ": out of memory\n"); return 1; }
  for (int i = 0; i < np; i++) {
    pc_param *p = pc_model_param(R->m, i);
    if (!p->g) continue;
    R->adam_m[i] = R->be->ops->alloc(R->be, sizeof(float) * p->n);
    R->adam_v[i] = R->be->ops->alloc(R->be, sizeof(float) * p->n);
    if (!R->adam_m[i] || !R->adam_v[i]) { fprintf(stderr, PROG ": out of memory for the optimizer state\n"); return 1; }
    R->be->ops->zero(R->be, R->adam_m[i], sizeof(float) * p->n);
    R->be->ops->zero(R->be, R->adam_v[i], sizeof(float) * p->n);
  }
  size_t total_params, trainable = pc_model_trainable(R->m, &total_params);

  // ---- the manifest and the metrics file
  snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
  if (resume) {
    R->start_step = latest_checkpoint(o->out);
    if (R->start_step > 0 && load_checkpoint(R, R->start_step) != 0) return 1;
    if (truncate_metrics(path, R->start_step) != 0) { fprintf(stderr, PROG ": %s: cannot rewrite\n", path); return 1; }
    fprintf(stderr, PROG ": resuming %s at step %d of %d\n", o->out, R->start_step, R->total_steps);
  } else {
    char t[32];
    iso_now(t, sizeof t);
    R->manifest = cJSON_CreateObject();
    cJSON_AddStringToObject(R->manifest, "prefcap_version", PREFCAP_VERSION);
    cJSON *b = cJSON_AddObjectToObject(R->manifest, "build");
    cJSON_AddStringToObject(b, "compiler", __VERSION__);
    cJSON_AddStringToObject(b, "flags", PC_BUILD_FLAGS);
    cJSON_AddStringToObject(b, "openblas", openblas_get_config());
    cJSON_AddStringToObject(R->manifest, "command", cmdline);
    cJSON_AddStringToObject(R->manifest, "started_at", t);
    cJSON_AddItemToObject(R->manifest, "model", model_entry(o->model));
    cJSON_AddItemToObject(R->manifest, "data", data_entry(o->data, &R->ds));
    cJSON_AddItemToObject(R->manifest, "eval_data", o->eval_data[0] ? data_entry(o->eval_data, &R->eds) : cJSON_CreateNull());
    cJSON_AddItemToObject(R->manifest, "ref_logps", o->ref_logps[0] ? file_entry(o->ref_logps) : cJSON_CreateNull());
    if (o->init_adapter[0]) {
      snprintf(path, sizeof path, "%s/adapter_model.safetensors", o->init_adapter);
      cJSON_AddItemToObject(R->manifest, "init_adapter", file_entry(path));
    } else {
      cJSON_AddNullToObject(R->manifest, "init_adapter");
    }
    cJSON_AddItemToObject(R->manifest, "options", opts_json(o));
    cJSON_AddNumberToObject(R->manifest, "threads", R->be->threads);
    cJSON_AddNumberToObject(R->manifest, "train_pairs", (double)R->ntrain);
    cJSON_AddNumberToObject(R->manifest, "eval_pairs", (double)R->neval);
    cJSON_AddNumberToObject(R->manifest, "total_steps", R->total_steps);
    cJSON_AddNumberToObject(R->manifest, "trainable_params", (double)trainable);
    cJSON_AddNumberToObject(R->manifest, "total_params", (double)total_params);
    cJSON_AddStringToObject(R->manifest, "lora_targets", R->lora ? pc_model_lora_targets(R->m) : "");
    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
    remove(path);
  }
  set_status(R, "running");
  snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
  R->metrics = fopen(path, "a");
  if (!R->metrics) { fprintf(stderr, PROG ": %s: cannot open: %s\n", path, strerror(errno)); return 1; }
  fprintf(stderr, PROG ": %zu training pairs, %zu eval pairs, %d steps of %d pairs (batch %d x accumulation %d), "
          "%s, %zu of %zu parameters trainable, %d threads\n", R->ntrain, R->neval, R->total_steps, P, B,
          o->grad_accum, R->lora ? "LoRA" : "full fine-tune", trainable, total_params, R->be->threads);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  if (R->start_step == 0 && evaluate(R, 0) != 0) return 1;
  order od = {malloc(sizeof(size_t) * R->ntrain), -1};
  if (!od.perm) { fprintf(stderr, PROG ": out of memory\n"); return 1; }
  pc_progress *pg = pc_progress_new(stderr, "train", "steps", "tok", (size_t)(R->total_steps - R->start_step));
  const pc_pair **mb = malloc(sizeof *mb * (size_t)B);
  double *mbref = malloc(sizeof *mbref * 2 * (size_t)B);
  size_t *idx = malloc(sizeof *idx * (size_t)P);  // the step's pairs, as indices into R->train
  double all_tokens = 0, t_start = pc_now_s();
  int last_saved = R->start_step, step = R->start_step;
  if (!mb || !mbref || !idx) { fprintf(stderr, PROG ": out of memory\n"); goto fail; }
  for (; step < R->total_steps; step++) {
    double t0 = pc_now_s(), tokens = 0;
    stats st = {0};
    pc_model_zero_grad(R->m);
    for (int k = 0; k < P; k++) idx[k] = train_index(R, &od, (size_t)step * P + k);
    for (int j = 0; j < o->grad_accum; j++) {
      for (int b = 0; b < B; b++) {
        size_t t = idx[j * B + b];
        mb[b] = R->train[t];
        mbref[2 * b] = R->ref[2 * t];
        mbref[2 * b + 1] = R->ref[2 * t + 1];
      }
      if (run_batch(R, mb, R->lk == L_SIMPO ? NULL : mbref, B, 1, 1.0 / P, &st, &tokens) != 0) {
        pc_progress_break(pg);
        fprintf(stderr, PROG ": step %d: %s\n", step + 1, R->err);
        goto fail;
      }
    }
    // ---- the optimizer step: norm, NaN check, clipping, AdamW
    double ss = 0;
    for (int i = 0; i < np; i++) {
      pc_param *p = pc_model_param(R->m, i);
      double x = 0;
      if (p->g && R->be->ops->sumsq(R->be, p->g, p->n, &x) != 0) { fprintf(stderr, "sumsq failed\n"); goto fail; }
      ss += x;
    }
    double norm = sqrt(ss), mean_loss = st.loss / (double)st.n;
    if (!isfinite(mean_loss) || !isfinite(norm)) {
      pc_progress_break(pg);
      fprintf(stderr, PROG ": step %d: the %s is %s (data lines", step + 1, isfinite(mean_loss) ? "gradient norm" : "loss",
              isnan(isfinite(mean_loss) ? norm : mean_loss) ? "NaN" : "infinite");
      for (int k = 0; k < P; k++) fprintf(stderr, " %d", R->train[idx[k]]->line);
      fprintf(stderr, "); stopping. Lower --lr, check the data and the model's weights%s\n",
              last_saved ? ", or resume from the last checkpoint" : "");
      set_status(R, "failed");
      goto fail;
    }
    if (o->dump_grads[0] && step == R->start_step) {
      if (write_tensors(R, o->dump_grads, 3) != 0) { fprintf(stderr, PROG ": %s: %s\n", o->dump_grads, R->err); goto fail; }
    }
    if (o->max_grad_norm > 0) {
      double coef = o->max_grad_norm / (norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
      if (coef < 1)
        for (int i = 0; i < np; i++) {
          pc_param *p = pc_model_param(R->m, i);
          if (p->g) R->be->ops->scale(R->be, p->g, p->n, (float)coef);
        }
    }
    double lr = lr_at(o, step, R->total_steps);
    int t = step + 1;
    double b1 = 0.9, b2 = 0.999;
    float step_size = (float)(lr / (1 - pow(b1, t))), bc2 = (float)sqrt(1 - pow(b2, t));
    for (int i = 0; i < np; i++) {
      pc_param *p = pc_model_param(R->m, i);
      if (!p->g) continue;
      R->be->ops->adamw(R->be, p->w, p->g, R->adam_m[i], R->adam_v[i], p->n, (float)lr,
                        p->decay ? (float)o->weight_decay : 0.0f, (float)b1, (float)b2, 1e-8f, step_size, bc2);
    }
    double dt = pc_now_s() - t0;
    all_tokens += tokens;
    fprintf(R->metrics, "{\"step\": %d, \"epoch\": %.17g, ", t, (double)t * P / (double)R->ntrain);
    stats_print(R->metrics, &st, "");
    fprintf(R->metrics, ", \"grad_norm\": %.17g, \"learning_rate\": %.17g, \"tokens_per_s\": %.1f}\n", norm, lr,
            dt > 0 ? tokens / dt : 0);
    fflush(R->metrics);
    cJSON_Delete(cJSON_DetachItemFromObject(R->manifest, "final_metrics"));
    cJSON *fm = cJSON_AddObjectToObject(R->manifest, "final_metrics");
    cJSON_AddNumberToObject(fm, "step", t);
    cJSON_AddNumberToObject(fm, "loss", mean_loss);
    cJSON_AddNumberToObject(fm, "rewards/accuracies", st.acc / (double)st.n);
    cJSON_AddNumberToObject(fm, "rewards/margins", (st.rc - st.rr) / (double)st.n);
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f acc %.2f", mean_loss, st.acc / (double)st.n);
    pc_progress_update(pg, (size_t)(t - R->start_step) , all_tokens, extra);
    if (o->eval_steps > 0 && t % o->eval_steps == 0 && t < R->total_steps) {
      pc_progress_break(pg);
      if (evaluate(R, t) != 0) goto fail;
    }
    if (o->save_steps > 0 && t % o->save_steps == 0 && t < R->total_steps) {
      if (save_checkpoint(R, t) != 0) goto fail;
      last_saved = t;
    }
    if (g_stop) {
      step++;
      break;
    }
  }
  pc_progress_end(pg, (size_t)(step - R->start_step), all_tokens, NULL);
  pg = NULL;
  if (g_stop && step < R->total_steps) {
    if (last_saved != step && save_checkpoint(R, step) != 0) goto fail;
    set_status(R, "interrupted");
    fprintf(stderr, PROG ": stopped by signal %d after step %d of %d; checkpoint %s/checkpoint-%d; continue with "
            "`prefcap-dpo train --resume %s`\n", (int)g_stop, step, R->total_steps, o->out, step, o->out);
    rc = 128 + (int)g_stop;
    goto fail;
  }
  if (evaluate(R, step) != 0) goto fail;

  // ---- outputs
  if (R->lora) {
    if (pc_model_save_adapter(R->m, o->out, o->model, R->err, sizeof R->err) != 0) {
      fprintf(stderr, PROG ": %s\n", R->err);
      goto fail;
    }
    if (o->merge) {
      snprintf(path, sizeof path, "%s/merged", o->out);
      if (pc_mkdir_p(path) != 0 ||
          pc_model_save(R->m, path, pc_model_dtype(R->m), 1, R->err, sizeof R->err) != 0 ||
          copy_tokenizer_files(o->model, path) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", path, R->err[0] ? R->err : strerror(errno));
        goto fail;
      }
    }
  } else if (pc_model_save(R->m, o->out, pc_model_dtype(R->m), 0, R->err, sizeof R->err) != 0 ||
             copy_tokenizer_files(o->model, o->out) != 0) {
    fprintf(stderr, PROG ": %s\n", R->err);
    goto fail;
  }
  fclose(R->metrics);
  R->metrics = NULL;
  char mpath[4400], rpath[4400], title[512];
  snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", o->out);
  snprintf(rpath, sizeof rpath, "%s/report.html", o->out);
  snprintf(title, sizeof title, "%s on %s: %s, %s", o->model, o->data, o->loss, R->lora ? "LoRA" : "full fine-tune");
  if (pc_report_write(mpath, rpath, title, R->err, sizeof R->err) != 0) {
    fprintf(stderr, PROG ": report: %s\n", R->err);
    goto fail;
  }
  set_status(R, "finished");
  double el = pc_now_s() - t_start;
  fprintf(stderr, PROG ": done: %d steps in %.1f s (%.0f tokens/s); outputs in %s (report: %s)\n",
          step - R->start_step, el, el > 0 ? all_tokens / el : 0, o->out, rpath);
  rc = 0;
fail:
  pc_progress_free(pg);
  free(mb);
  free(mbref);
  free(idx);
  free(od.perm);
  if (rc == 1 && R->manifest) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(R->manifest, "status");
    if (cJSON_IsString(s) && !strcmp(s->valuestring, "running")) set_status(R, "failed");
  }
  return rc;
}

static void run_free(run *R) {
  if (R->metrics) fclose(R->metrics);
  if (R->adam_m)
    for (int i = 0; i < pc_model_nparams(R->m); i++) {
      if (R->adam_m[i]) R->be->ops->free(R->be, R->adam_m[i]);
      if (R->adam_v[i]) R->be->ops->free(R->be, R->adam_v[i]);
    }
  free(R->adam_m);
  free(R->adam_v);
  pc_model_free(R->m);
  if (R->be) R->be->ops->destroy(R->be);
  free(R->train);
  free(R->ref);
  free(R->seqs);
  free(R->sums);
  free(R->cnts);
  free(R->dsum);
  pc_data_free(&R->ds);
  pc_data_free(&R->eds);
  pc_tok_free(R->tok);
  cJSON_Delete(R->manifest);
}

int pc_cmd_train(int argc, char **argv) {
  run *R = calloc(1, sizeof *R);
  if (!R) return 1;
  defaults(&R->o);
  const char *resume = NULL, *from = NULL;
  int threads_given = 0, rc = 2;
  char cmdline[8192] = "prefcap-dpo train";
  for (int i = 1; i < argc; i++) {
    size_t u = strlen(cmdline);
    snprintf(cmdline + u, sizeof cmdline - u, " %s", argv[i]);
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); rc = 0; goto done; }
    if (!strcmp(a, "--resume") || !strcmp(a, "--from-manifest")) {
      if (i + 1 >= argc) { fprintf(stderr, PROG ": %s needs a value\n", a); goto done; }
      *(!strcmp(a, "--resume") ? &resume : &from) = argv[++i];
      continue;
    }
    const optdef *d = strncmp(a, "--", 2) == 0 ? find_opt(a + 2) : NULL;
    if (!d) { fprintf(stderr, PROG ": unknown option '%s' (see --help)\n", a); goto done; }
    if (d->t != O_FLAG && i + 1 >= argc) { fprintf(stderr, PROG ": --%s needs a value\n", d->name); goto done; }
    if (set_opt(&R->o, d, d->t == O_FLAG ? "1" : argv[++i]) != 0) goto done;
    threads_given |= !strcmp(d->name, "threads");
  }
  if (resume || from) {
    // the run's own options come from its manifest; only --threads (and --out for a rebuild) may be given
    char mpath[4200];
    if (resume) snprintf(mpath, sizeof mpath, "%s/run.json", resume);
    else snprintf(mpath, sizeof mpath, "%s", from);
    cJSON *man = read_json(mpath, R->err, sizeof R->err);
    if (!man) { fprintf(stderr, PROG ": %s\n", R->err); rc = 1; goto done; }
    topts keep = R->o;
    defaults(&R->o);
    if (opts_from_json(&R->o, cJSON_GetObjectItemCaseSensitive(man, "options"), mpath) != 0 ||
        verify_inputs(man, mpath) != 0) {
      cJSON_Delete(man);
      rc = 1;
      goto done;
    }
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(man, "threads");
    R->o.threads = threads_given ? keep.threads : cJSON_IsNumber(th) ? th->valueint : 0;
    strcpy(R->o.dump_tokens, keep.dump_tokens);
    strcpy(R->o.dump_grads, keep.dump_grads);
    if (resume) {
      snprintf(R->o.out, sizeof R->o.out, "%s", resume);
      R->manifest = man;
      cJSON_Delete(cJSON_DetachItemFromObject(R->manifest, "resumed_at"));
      char t[32];
      iso_now(t, sizeof t);
      cJSON_AddStringToObject(R->manifest, "resumed_at", t);
    } else {
      if (!keep.out[0]) { fprintf(stderr, PROG ": --from-manifest needs --out DIR for the rebuilt run\n"); cJSON_Delete(man); goto done; }
      strcpy(R->o.out, keep.out);
      cJSON_Delete(man);
      fprintf(stderr, PROG ": rebuilding the run of %s into %s (%d threads)\n", mpath, R->o.out, R->o.threads);
    }
  } else if (!R->o.out[0]) {
    fprintf(stderr, PROG ": --out is required\n");
    usage(stderr);
    goto done;
  }
  if (check_opts(&R->o) != 0) goto done;
  if (pc_mkdir_p(R->o.out) != 0) { fprintf(stderr, PROG ": %s: cannot create: %s\n", R->o.out, strerror(errno)); rc = 1; goto done; }
  rc = train_main(R, cmdline, resume != NULL);
done:
  run_free(R);
  free(R);
  return rc;
}
