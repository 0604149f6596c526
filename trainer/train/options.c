/* trainer/train/options.c: see options.h. */
#include "train/options.h"
#include "text/data.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/reference.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PROG "prefcap-dpo train"

#define F(f) offsetof(pc_train_opts, f), sizeof(((pc_train_opts *)0)->f)
static const pc_train_optdef OPTS[] = {
  {"model", PC_OPT_STR, F(model), 1, "DIR  Hugging Face model directory (config.json, safetensors, tokenizer.json)"},
  {"data", PC_OPT_STR, F(data), 1, "FILE  preference JSONL (TRL's standard or conversational format)"},
  {"out", PC_OPT_STR, F(out), 0, "DIR  output directory (created)"},
  {"loss", PC_OPT_STR, F(loss), 1, "NAME  sigmoid (DPO), ipo, hinge, robust, simpo, kto (unpaired --data), or a list "
   "with sft, as sigmoid,sft [sigmoid]"},
  {"loss-weights", PC_OPT_STR, F(loss_weights), 1, "LIST  one weight per --loss term: loss = sum w_k loss_k [1,...]"},
  {"pair-weights", PC_OPT_FLAG, F(pair_weights), 1, "  weigh each row's loss by its 'weight' field: sum w l / sum w [off]"},
  {"desirable-weight", PC_OPT_DBL, F(desirable_weight), 1, "X  KTO: weight of the desirable examples' loss [1]"},
  {"undesirable-weight", PC_OPT_DBL, F(undesirable_weight), 1, "X  KTO: weight of the undesirable examples' loss [1]"},
  {"beta", PC_OPT_DBL, F(beta), 1, "X  DPO beta [0.1; simpo 2.0]"},
  {"label-smoothing", PC_OPT_DBL, F(label_smoothing), 1, "X  cDPO / robust label smoothing [0]"},
  {"simpo-gamma", PC_OPT_DBL, F(simpo_gamma), 1, "X  SimPO's target reward margin gamma (TRL's simpo_gamma) [0.5]"},
  {"ref-logps", PC_OPT_STR, F(ref_logps), 1, "FILE  reference log-probs from `prefcap-dpo score` on the same data"},
  {"ref-cache", PC_OPT_STR, F(ref_cache), 0, "DIR  reference log-prob cache [$XDG_CACHE_HOME/prefcap, else ~/.cache/prefcap]"},
  {"no-ref-cache", PC_OPT_FLAG, F(no_ref_cache), 0, "  compute every reference log-prob; read and write no cache"},
  {"lora-r", PC_OPT_INT, F(lora_r), 1, "N  LoRA rank; 0 = full fine-tune [16]"},
  {"lora-alpha", PC_OPT_DBL, F(lora_alpha), 1, "X  LoRA alpha (scale alpha/r) [2r]"},
  {"lora-targets", PC_OPT_STR, F(lora_targets), 1, "LIST  comma-separated module names [attention and MLP projections]"},
  {"init-adapter", PC_OPT_STR, F(init_adapter), 1, "DIR  start LoRA from this PEFT adapter"},
  {"lr", PC_OPT_DBL, F(lr), 1, "X  peak learning rate [1e-4 LoRA, 5e-6 full]"},
  {"weight-decay", PC_OPT_DBL, F(weight_decay), 1, "X  AdamW weight decay, not on biases and norms [0]"},
  {"scheduler", PC_OPT_STR, F(scheduler), 1, "NAME  constant, linear or cosine [linear]"},
  {"warmup-steps", PC_OPT_INT, F(warmup_steps), 1, "N  linear warmup steps [0]"},
  {"max-grad-norm", PC_OPT_DBL, F(max_grad_norm), 1, "X  clip the global gradient norm; 0 = off [1.0]"},
  {"batch-size", PC_OPT_INT, F(batch_size), 1, "N  pairs per micro-batch [4]"},
  {"grad-accum", PC_OPT_INT, F(grad_accum), 1, "N  micro-batches per optimizer step [1]"},
  {"epochs", PC_OPT_DBL, F(epochs), 1, "X  passes over the training pairs [1]"},
  {"max-steps", PC_OPT_INT, F(max_steps), 1, "N  optimizer steps (overrides --epochs) [0 = from epochs]"},
  {"seed", PC_OPT_LL, F(seed), 1, "N  shuffling, eval split, LoRA init [42]"},
  {"no-shuffle", PC_OPT_FLAG, F(no_shuffle), 1, "  pairs in file order"},
  {"eval-data", PC_OPT_STR, F(eval_data), 1, "FILE  held-out pairs"},
  {"eval-fraction", PC_OPT_DBL, F(eval_fraction), 1, "X  hold out this fraction of --data instead [0]"},
  {"eval-steps", PC_OPT_INT, F(eval_steps), 1, "N  evaluate every N steps (and always before and after) [0]"},
  {"max-length", PC_OPT_INT, F(max_length), 1, "N  TRL's max_length [1024]"},
  {"truncation", PC_OPT_STR, F(truncation), 1, "MODE  keep_start or keep_end [keep_start]"},
  {"chat-template", PC_OPT_STR, F(chat_template), 1, "NAME  chatml, qwen3 or llama3 for conversational rows"},
  {"skip-bad", PC_OPT_FLAG, F(skip_bad), 1, "  skip bad data lines (counted) instead of stopping"},
  {"save-steps", PC_OPT_INT, F(save_steps), 1, "N  checkpoint every N steps [0 = only on SIGINT/SIGTERM]"},
  {"merge", PC_OPT_FLAG, F(merge), 1, "  LoRA: also write the merged model to OUT/merged"},
  {"threads", PC_OPT_INT, F(threads), 0, "N  CPU threads [all cores; the manifest's on --from-manifest/--resume]"},
  {"device", PC_OPT_STR, F(device), 1, "NAME  cpu, cuda, or auto (the GPU when its backend can train, else the CPU) [cpu]"},
  {"recompute", PC_OPT_FLAG, F(recompute), 0, "  keep only each layer's input; recompute the layer in the backward (same results, less memory)"},
  {"dump-tokens", PC_OPT_STR, F(dump_tokens), 0, "FILE  (tests) write the tokenized training pairs"},
  {"dump-grads", PC_OPT_STR, F(dump_grads), 0, "FILE  (tests) write the first step's gradients (safetensors)"},
  {"dump-ref", PC_OPT_STR, F(dump_ref), 0, "FILE  (tests) write the training pairs' reference log-probs as `score` does"},
};
#undef F
#define NOPTS (sizeof OPTS / sizeof *OPTS)

void pc_train_opts_usage(FILE *f) {
  for (size_t i = 0; i < NOPTS; i++) {
    const char *sp = strchr(OPTS[i].help, ' ');
    fprintf(f, "  --%s %-*.*s %s\n", OPTS[i].name, (int)(22 - strlen(OPTS[i].name)), (int)(sp - OPTS[i].help),
            OPTS[i].help, sp + 2);
  }
}

void pc_train_opts_defaults(pc_train_opts *o) {
  memset(o, 0, sizeof *o);
  strcpy(o->loss, "sigmoid");
  strcpy(o->scheduler, "linear");
  strcpy(o->truncation, "keep_start");
  strcpy(o->device, "cpu");
  o->beta = NAN;
  o->lr = NAN;
  o->lora_alpha = NAN;
  o->simpo_gamma = 0.5;
  o->desirable_weight = 1;
  o->undesirable_weight = 1;
  o->lora_r = 16;
  o->max_grad_norm = 1.0;
  o->batch_size = 4;
  o->grad_accum = 1;
  o->epochs = 1;
  o->seed = 42;
  o->max_length = 1024;
}

int pc_train_opts_set(pc_train_opts *o, const pc_train_optdef *d, const char *v) {
  char *p = (char *)o + d->off, *end;
  errno = 0;
  switch (d->t) {
    case PC_OPT_STR:
      if (strlen(v) >= d->size) { fprintf(stderr, PROG ": --%s: value too long\n", d->name); return -1; }
      strcpy(p, v);
      return 0;
    case PC_OPT_INT: {
      long x = strtol(v, &end, 10);
      if (errno || *end || end == v || x < 0 || x > INT_MAX) break;
      *(int *)p = (int)x;
      return 0;
    }
    case PC_OPT_LL: {
      long long x = strtoll(v, &end, 10);
      if (errno || *end || end == v || x < 0 || x > (1ll << 53)) break;
      *(long long *)p = x;
      return 0;
    }
    case PC_OPT_DBL: {
      double x = strtod(v, &end);
      if (errno || *end || end == v || !isfinite(x) || x < 0) break;
      *(double *)p = x;
      return 0;
    }
    case PC_OPT_FLAG: *(int *)p = 1; return 0;
  }
  fprintf(stderr, PROG ": --%s wants a non-negative %s, got '%s'\n", d->name,
          d->t == PC_OPT_DBL ? "number" : "integer", v);
  return -1;
}

const pc_train_optdef *pc_train_opts_find(const char *name) {
  for (size_t i = 0; i < NOPTS; i++)
    if (!strcmp(OPTS[i].name, name)) return &OPTS[i];
  return NULL;
}

cJSON *pc_train_opts_json(const pc_train_opts *o) {
  cJSON *j = cJSON_CreateObject();
  for (size_t i = 0; i < NOPTS; i++) {
    const pc_train_optdef *d = &OPTS[i];
    if (!d->manifest) continue;
    const char *p = (const char *)o + d->off;
    switch (d->t) {
      case PC_OPT_STR: cJSON_AddStringToObject(j, d->name, p); break;
      case PC_OPT_INT: cJSON_AddNumberToObject(j, d->name, *(const int *)p); break;
      case PC_OPT_LL: cJSON_AddNumberToObject(j, d->name, (double)*(const long long *)p); break;
      case PC_OPT_DBL: cJSON_AddNumberToObject(j, d->name, *(const double *)p); break;
      case PC_OPT_FLAG: cJSON_AddBoolToObject(j, d->name, *(const int *)p); break;
    }
  }
  return j;
}

/* Options added after run.json first recorded options: an older manifest lacks them, and the run it
 * rebuilds or resumes had their defaults. */
static int added_later(const char *name) {
  static const char *const names[] = {"loss-weights", "pair-weights", "desirable-weight", "undesirable-weight"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!strcmp(name, names[i])) return 1;
  return 0;
}

int pc_train_opts_from_json(pc_train_opts *o, const cJSON *j, const char *file) {
  for (size_t i = 0; i < NOPTS; i++) {
    const pc_train_optdef *d = &OPTS[i];
    if (!d->manifest) continue;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, d->name);
    char *p = (char *)o + d->off;
    int ok = 0;
    switch (d->t) {
      case PC_OPT_STR:
        ok = cJSON_IsString(v) && strlen(v->valuestring) < d->size;
        if (ok) strcpy(p, v->valuestring);
        break;
      case PC_OPT_INT: ok = cJSON_IsNumber(v); if (ok) *(int *)p = v->valueint; break;
      case PC_OPT_LL: ok = cJSON_IsNumber(v); if (ok) *(long long *)p = (long long)v->valuedouble; break;
      case PC_OPT_DBL: ok = cJSON_IsNumber(v); if (ok) *(double *)p = v->valuedouble; break;
      case PC_OPT_FLAG: ok = cJSON_IsBool(v); if (ok) *(int *)p = cJSON_IsTrue(v); break;
    }
    if (!v && added_later(d->name)) continue;  // a run.json written before the option existed: its default
    if (!ok) {
      fprintf(stderr, PROG ": %s: options.%s is missing or of the wrong type\n", file, d->name);
      return -1;
    }
  }
  return 0;
}

int pc_train_opts_check(pc_train_opts *o) {
  pc_loss_mix mix;
  char why[256];
  if (pc_loss_mix_parse(o->loss, o->loss_weights, &mix, why, sizeof why) != 0) { fprintf(stderr, PROG ": %s\n", why); return -1; }
  int lk = mix.kind[0], kto = lk == PC_LOSS_KTO;
  if (isnan(o->beta)) o->beta = lk == PC_LOSS_SIMPO ? 2.0 : 0.1;
  if (isnan(o->lr)) o->lr = o->lora_r > 0 || o->init_adapter[0] ? 1e-4 : 5e-6;
  if (isnan(o->lora_alpha)) o->lora_alpha = 2.0 * o->lora_r;
  if (o->beta <= 0) { fprintf(stderr, PROG ": --beta must be > 0\n"); return -1; }
  if (o->label_smoothing >= 0.5) { fprintf(stderr, PROG ": --label-smoothing must be < 0.5\n"); return -1; }
  if (pc_schedule_from_name(o->scheduler) < 0) {
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
  if (!pc_loss_mix_needs_ref(&mix) && o->ref_logps[0]) { fprintf(stderr, PROG ": --loss %s is reference-free; drop --ref-logps\n", o->loss); return -1; }
  if (kto && o->dump_ref[0]) { fprintf(stderr, PROG ": --dump-ref writes pairs' reference log-probs; not with --loss kto\n"); return -1; }
  if (kto && o->ref_logps[0]) { fprintf(stderr, PROG ": --ref-logps holds pairs' reference log-probs; --loss kto computes its own\n"); return -1; }
  if (kto && o->batch_size < 2) {
    fprintf(stderr, PROG ": --loss kto needs --batch-size >= 2 (as TRL: with one example per micro-batch the KL estimate "
            "is the example's own log-ratio)\n");
    return -1;
  }
  if (!kto && (o->desirable_weight != 1 || o->undesirable_weight != 1)) {
    fprintf(stderr, PROG ": --desirable-weight and --undesirable-weight are for --loss kto\n");
    return -1;
  }
  if (o->merge && o->lora_r == 0 && !o->init_adapter[0]) { fprintf(stderr, PROG ": --merge is for LoRA runs (--lora-r > 0)\n"); return -1; }
  if (!o->no_ref_cache && !o->ref_cache[0] && pc_ref_cache_default_dir(o->ref_cache, sizeof o->ref_cache) != 0) {
    fprintf(stderr, PROG ": warning: neither XDG_CACHE_HOME nor HOME is set: no reference cache (give --ref-cache DIR)\n");
    o->no_ref_cache = 1;
  }
  if (!o->model[0] || !o->data[0]) { fprintf(stderr, PROG ": --model and --data are required\n"); return -1; }
  return 0;
}
