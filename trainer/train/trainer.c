/* trainer/train/trainer.c: see trainer.h. The path of one optimizer step: pairs chosen by the data order
 * (step_pairs), grad_accum micro-batches of batch_size pairs through the model's forward and backward
 * (micro_batch), the gradient norm and the NaN check, clipping, AdamW (train/optim.c), the metrics
 * line. */
#include "train/trainer.h"
#include "backend/backend.h"
#include "dist/comm.h"
#include "dist/zero.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "text/data.h"
#include "text/tokenizer.h"
#include "train/checkpoint.h"
#include "train/kto.h"
#include "train/loss.h"
#include "train/manifest.h"
#include "train/memplan.h"
#include "train/options.h"
#include "train/optim.h"
#include "train/reference.h"
#include "train/report.h"
#include "progress.h"
#include "util/util.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "prefcap-dpo train"

/* Messages and paths are built into fixed buffers; a path long enough to be cut is also too long to
 * open, so the cut never changes what happens. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

static volatile sig_atomic_t g_stop;
void pc_train_request_stop(int sig) { g_stop = sig; }

struct pc_trainer {
  pc_train_opts o;
  pc_loss_params loss;       /* the parameters of every pair loss; kind is set per term */
  pc_loss_mix mix;           /* --loss and --loss-weights */
  int kto;                   /* --loss kto: unpaired examples (label >= 0), see the KTO section */
  pc_kto_params kto_params;
  pc_schedule schedule;
  int lora;                  /* LoRA (--lora-r > 0 or --init-adapter), else a full fine-tune */
  pc_tokenizer *tok;
  pc_dataset data, eval_data;  /* eval_data only with --eval-data */
  const pc_pair **train, **eval;  /* one array: the training pairs, then the evaluation pairs */
  size_t ntrain, neval;
  double *ref;               /* (2 ntrain) then (2 neval): reference sums (chosen, rejected) */
  cJSON *ref_cache;          /* run.json's "ref_cache" (what the reference cache gave), or NULL */
  pc_backend *be;
  pc_model *model;
  pc_adamw opt;
  pc_memplan mem;            /* the run's memory, planned before anything is allocated */
  int total_steps, start_step, step, last_saved;
  cJSON *manifest;
  FILE *metrics;
  pc_progress *progress;
  double all_tokens, t_start;
  char err[2048];
  // ---- the current step's buffers: its pairs, one micro-batch's sequences and results
  size_t *step_pairs;        /* (batch_size * grad_accum) indices into train */
  size_t *perm;              /* the current epoch's order */
  long perm_epoch;
  const pc_pair **mb;
  double *mb_ref;
  pc_model_seq *seqs;
  double *sums;
  int *cnts;
  float *dsum;
  // ---- data parallel (trainer/dist): NULL for one process
  pc_comm *comm;             /* borrowed from the options */
  pc_zero *zero;             /* the sharded optimizer, in place of opt's state */
  pc_comm *dcomm;            /* NCCL for a GPU backend's memory (owned); NULL: comm moves it */
  // ---- KTO (--loss kto): the frozen reference model, run on every micro-batch as TRL runs it
  pc_model *ref_model;
  pc_seq *kl;                /* (batch_size) the micro-batch's KL sequences */
  double *ref_sums;          /* (2 batch_size) reference sums: examples, then KL sequences */
  double *ddsum;             /* (batch_size) dLoss/dsum before the float conversion */
};

/* A step's (or an evaluation's) sums for the metrics: pair losses, or KTO's. */
typedef struct {
  pc_loss_stats p;
  pc_kto_stats k;
} step_stats;

static double mean_loss(const pc_trainer *t, const step_stats *st) {
  return t->kto ? st->k.loss / (double)(st->k.n ? st->k.n : 1) : st->p.loss / (double)(st->p.n ? st->p.n : 1);
}

// ---- data parallel ------------------------------------------------------------------------------
/* With N ranks, each global micro-batch of nb pairs is cut into N contiguous slices (sizes differ by at
 * most one); each rank runs its slice with the single process's loss scale (1 / pairs per step), so the
 * summed gradient is the single process's, and the loss sums below are reduced before anything is
 * logged. Only rank 0 writes outputs. */
static int is_root(const pc_trainer *t) { return !t->comm || t->comm->rank == 0; }

/* This rank's contiguous share [lo, hi) of n items (all of them for one process). */
static void my_share(const pc_trainer *t, size_t n, size_t *lo, size_t *hi) {
  size_t r = t->comm ? (size_t)t->comm->rank : 0, size = t->comm ? (size_t)t->comm->size : 1;
  *lo = n * r / size;
  *hi = n * (r + 1) / size;
}

static void my_slice(const pc_trainer *t, int nb, int *from, int *to) {
  size_t lo, hi;
  my_share(t, (size_t)nb, &lo, &hi);
  *from = (int)lo;
  *to = (int)hi;
}

/* The ranks' loss sums (and token counts) added up on every rank. KTO's kl and micro-batch count are
 * not: every rank computed the same ones (micro_batch_kto). */
static int reduce_stats(pc_trainer *t, step_stats *sst, double *tokens) {
  if (!t->comm) return 0;
  if (t->kto) {
    pc_kto_stats *k = &sst->k;
    double v[9] = {k->loss, k->reward[0], k->reward[1], k->logp[0], k->logp[1], (double)k->count[0], (double)k->count[1],
                   (double)k->n, *tokens};
    if (pc_comm_all_reduce(t->comm, v, 9, PC_COMM_F64) != 0) {
      snprintf(t->err, sizeof t->err, "%s", pc_comm_error(t->comm));
      return -1;
    }
    k->loss = v[0], k->reward[0] = v[1], k->reward[1] = v[2], k->logp[0] = v[3], k->logp[1] = v[4];
    k->count[0] = (size_t)v[5], k->count[1] = (size_t)v[6], k->n = (size_t)v[7], *tokens = v[8];
    return 0;
  }
  pc_loss_stats *st = &sst->p;
  double v[8] = {st->loss, st->reward_chosen, st->reward_rejected, st->accuracy, st->logp_chosen, st->logp_rejected,
                 (double)st->n, *tokens};
  if (pc_comm_all_reduce(t->comm, v, 8, PC_COMM_F64) != 0) {
    snprintf(t->err, sizeof t->err, "%s", pc_comm_error(t->comm));
    return -1;
  }
  *st = (pc_loss_stats){v[0], v[1], v[2], v[3], v[4], v[5], (size_t)v[6]};
  *tokens = v[7];
  return 0;
}

static int pairs_per_step(const pc_trainer *t) { return t->o.batch_size * t->o.grad_accum; }

/* A seeded permutation of 0..n-1 (Fisher-Yates); stream is a label that separates its uses. */
static void permutation(size_t *p, size_t n, uint64_t seed, uint64_t stream) {
  uint64_t s = seed * 0x100000001B3ull ^ (stream + 0x5DEECE66Dull);
  for (size_t i = 0; i < n; i++) p[i] = i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(pc_splitmix64(&s) % i);
    size_t tmp = p[i - 1];
    p[i - 1] = p[j];
    p[j] = tmp;
  }
}

/* Index i of the run's stream of pairs -> its index in train (and ref): epoch e is permutation 1000+e. */
static size_t train_index(pc_trainer *t, size_t i) {
  size_t n = t->ntrain;
  if (t->o.no_shuffle) return i % n;
  long e = (long)(i / n);
  if (e != t->perm_epoch) {
    permutation(t->perm, n, (uint64_t)t->o.seed, 1000 + (uint64_t)e);
    t->perm_epoch = e;
  }
  return t->perm[i % n];
}

// ---- setup --------------------------------------------------------------------------------------

static pc_data_opts data_opts(const pc_trainer *t) {
  return (pc_data_opts){t->o.max_length, pc_data_truncation_from_name(t->o.truncation), t->o.skip_bad,
                        t->o.chat_template[0] ? t->o.chat_template : NULL, t->kto};
}

static int load_data(pc_trainer *t, const char *path, pc_dataset *ds) {
  pc_data_opts dopt = data_opts(t);
  if (pc_data_load(path, t->tok, t->o.model, &dopt, ds, t->err, sizeof t->err) != 0) {
    fprintf(stderr, PROG ": %s\n", t->err);
    return -1;
  }
  if (ds->skipped_bad)
    fprintf(stderr, PROG ": %s: skipped %zu bad line(s); the first: %s\n", path, ds->skipped_bad, ds->first_skipped_msg);
  if (ds->dropped_too_long)
    fprintf(stderr, PROG ": %s: dropped %zu pair(s) whose prompt alone reaches --max-length %d (as TRL does)\n", path,
            ds->dropped_too_long, t->o.max_length);
  if (ds->truncated)
    fprintf(stderr, PROG ": %s: truncated %zu pair(s) to --max-length %d (%s)\n", path, ds->truncated,
            t->o.max_length, t->o.truncation);
  if (ds->n == 0) {
    fprintf(stderr, PROG ": %s: no %s to train on%s\n", path, t->kto ? "examples" : "pairs",
            ds->dropped_too_long ? " (every pair was dropped by --max-length)" : "");
    return -1;
  }
  return 0;
}

/* Training and evaluation pairs: --eval-data, or a seeded --eval-fraction of --data held out. */
static int split_pairs(pc_trainer *t) {
  size_t n = t->data.n;
  t->train = malloc(sizeof *t->train * (n + t->eval_data.n + 1));
  if (!t->train) return -1;
  t->eval = t->train + n;
  if (t->o.eval_fraction <= 0) {
    for (size_t i = 0; i < n; i++) t->train[t->ntrain++] = &t->data.pairs[i];
    for (size_t i = 0; i < t->eval_data.n; i++) t->eval[t->neval++] = &t->eval_data.pairs[i];
    return 0;
  }
  size_t ne = (size_t)llround(t->o.eval_fraction * (double)n);
  if (ne < 1) ne = 1;
  if (ne >= n) {
    fprintf(stderr, PROG ": %s: --eval-fraction %g leaves no training pairs of %zu\n", t->o.data, t->o.eval_fraction, n);
    return 1;
  }
  size_t *perm = malloc(sizeof *perm * n);
  char *is_eval = calloc(n, 1);
  if (!perm || !is_eval) { free(perm); free(is_eval); return -1; }
  permutation(perm, n, (uint64_t)t->o.seed, 7);
  for (size_t i = 0; i < ne; i++) is_eval[perm[i]] = 1;
  for (size_t i = 0; i < n; i++)
    if (!is_eval[i]) t->train[t->ntrain++] = &t->data.pairs[i];
  t->eval = t->train + t->ntrain;
  for (size_t i = 0; i < n; i++)
    if (is_eval[i]) t->eval[t->neval++] = &t->data.pairs[i];
  free(perm);
  free(is_eval);
  return 0;
}

/* --dump-tokens (tests): the tokenized training pairs. */
static int dump_tokens(pc_trainer *t) {
  FILE *f = fopen(t->o.dump_tokens, "w");
  if (!f) { fprintf(stderr, PROG ": %s: cannot create: %s\n", t->o.dump_tokens, strerror(errno)); return -1; }
  for (size_t i = 0; i < t->ntrain; i++) {
    const pc_pair *p = t->train[i];
    fprintf(f, "{\"index\": %zu, \"line\": %d, \"chosen\": [", i, p->line);
    for (int k = 0; k < p->chosen.n; k++) fprintf(f, "%s%d", k ? ", " : "", p->chosen.ids[k]);
    fprintf(f, "], \"rejected\": [");
    for (int k = 0; k < p->rejected.n; k++) fprintf(f, "%s%d", k ? ", " : "", p->rejected.ids[k]);
    fprintf(f, "], \"chosen_prompt_len\": %d, \"rejected_prompt_len\": %d, \"weight\": %.9g", p->chosen.prompt_len,
            p->rejected.prompt_len, (double)p->weight);
    if (p->label >= 0) fprintf(f, ", \"label\": %s", p->label ? "true" : "false");
    fprintf(f, "}\n");
  }
  return fclose(f) == 0 ? 0 : -1;
}

static void kto_balance_warning(pc_trainer *t);

static int setup_data(pc_trainer *t) {
  char path[4400];
  snprintf(path, sizeof path, "%s/tokenizer.json", t->o.model);
  if (!(t->tok = pc_tok_load(path, t->err, sizeof t->err))) { fprintf(stderr, PROG ": %s\n", t->err); return -1; }
  if (load_data(t, t->o.data, &t->data) != 0) return -1;
  if (t->o.eval_data[0] && load_data(t, t->o.eval_data, &t->eval_data) != 0) return -1;
  int rc = split_pairs(t);
  if (rc < 0) fprintf(stderr, PROG ": out of memory\n");
  if (rc != 0) return -1;
  if (t->o.dump_tokens[0] && dump_tokens(t) != 0) return -1;
  if (t->kto) kto_balance_warning(t);
  t->total_steps = t->o.max_steps > 0 ? t->o.max_steps : (int)ceil(t->o.epochs * (double)t->ntrain / pairs_per_step(t));
  if (t->total_steps < 1) t->total_steps = 1;
  return 0;
}

/* The device: --device, where "auto" settles for the CPU when the GPU's backend cannot train. */
static int setup_backend(pc_trainer *t) {
  t->be = pc_backend_new(t->o.device, t->o.threads, t->err, sizeof t->err);
  if (!t->be) { fprintf(stderr, PROG ": %s\n", t->err); return -1; }
  if (!pc_backend_can_train(t->be) && !strcmp(t->o.device, "auto")) {
    t->be->ops->destroy(t->be);
    t->be = pc_backend_new("cpu", t->o.threads, t->err, sizeof t->err);
    if (!t->be) { fprintf(stderr, PROG ": %s\n", t->err); return -1; }
  }
  if (!pc_backend_can_train(t->be)) {
    fprintf(stderr, PROG ": device '%s': training on %s is not built yet (scoring is); use --device cpu\n", t->o.device,
            t->be->ops->name);
    return -1;
  }
  return 0;
}

/* The run's memory, planned before the reference model or the policy takes any: a run that cannot fit
 * stops here, saying what would (train/memplan.h). */
static int setup_memory(pc_trainer *t) {
  char msg[2048];
  int ref_phase = t->loss.kind != PC_LOSS_SIMPO && (!t->o.ref_logps[0] || t->neval);
  int rc = pc_memplan_make(&t->o, t->lora, t->be, t->train, t->ntrain + t->neval, ref_phase, &t->mem, msg, sizeof msg);
  if (rc != 0) {
    fprintf(stderr, PROG ": %s%s\n", rc > 0 ? "not enough memory: " : "", msg);
    return -1;
  }
  pc_memplan_describe(&t->mem, msg, sizeof msg);
  fprintf(stderr, PROG ": memory on %s: %s\n", t->be->ops->name, msg);
  return 0;
}

static int setup_buffers(pc_trainer *t) {
  size_t B = (size_t)t->o.batch_size, per_step = (size_t)pairs_per_step(t);
  t->seqs = malloc(sizeof *t->seqs * 2 * B);
  t->sums = malloc(sizeof *t->sums * 2 * B);
  t->cnts = malloc(sizeof *t->cnts * 2 * B);
  t->dsum = malloc(sizeof *t->dsum * 2 * B);
  t->mb = malloc(sizeof *t->mb * B);
  t->mb_ref = malloc(sizeof *t->mb_ref * 2 * B);
  t->step_pairs = malloc(sizeof *t->step_pairs * per_step);
  t->perm = malloc(sizeof *t->perm * (t->ntrain + 1));
  t->perm_epoch = -1;
  t->ref = calloc(2 * (t->ntrain + t->neval) + 1, sizeof *t->ref);
  t->kl = calloc(B, sizeof *t->kl);
  t->ref_sums = malloc(sizeof *t->ref_sums * 2 * B);
  t->ddsum = malloc(sizeof *t->ddsum * 2 * B);
  if (!t->kl || !t->ref_sums || !t->ddsum) {
    fprintf(stderr, PROG ": out of memory\n");
    return -1;
  }
  if (!t->seqs || !t->sums || !t->cnts || !t->dsum || !t->mb || !t->mb_ref || !t->step_pairs || !t->perm || !t->ref) {
    fprintf(stderr, PROG ": out of memory\n");
    return -1;
  }
  return 0;
}

/* The scored tokens of a sequence, as the model counts them (position 0 is never scored). */
static int scored_tokens(const pc_seq *s) {
  int f = s->prompt_len < 1 ? 1 : s->prompt_len;
  return s->n > f ? s->n - f : 0;
}

/* --dump-ref (tests): the training pairs' reference log-probs, in `score`'s format. */
static int dump_ref(pc_trainer *t) {
  FILE *f = fopen(t->o.dump_ref, "w");
  if (!f) { fprintf(stderr, PROG ": %s: cannot create: %s\n", t->o.dump_ref, strerror(errno)); return -1; }
  for (size_t i = 0; i < t->ntrain; i++)
    pc_ref_write_line(f, t->ref[2 * i], t->ref[2 * i + 1], scored_tokens(&t->train[i]->chosen),
                      scored_tokens(&t->train[i]->rejected), t->train[i]->line);
  return fclose(f) == 0 ? 0 : -1;
}

/* The ranks' shares of the reference pass [lo, hi) of n pairs, summed into every rank's out[0..2n),
 * and run.json's cache figures summed over the ranks. Every rank calls it, a failed one too (failed:
 * its error is printed), so that none waits for a share that will not come: any failure fails all. */
static int share_reference(pc_trainer *t, double *out, size_t n, size_t lo, size_t hi, int failed) {
  static const char *const keys[] = {"from_cache", "computed", "damaged", "stored", "write_failed"};
  double v[6] = {failed};
  const cJSON *c = t->ref_cache;
  for (int k = 0; k < 5; k++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(c, keys[k]);
    v[k + 1] = cJSON_IsNumber(x) ? x->valuedouble : cJSON_IsTrue(x);
  }
  if (pc_comm_all_reduce(t->comm, v, 6, PC_COMM_F64) != 0) {
    fprintf(stderr, PROG ": the reference pass: %s\n", pc_comm_error(t->comm));
    return -1;
  }
  if (v[0] > 0) {
    if (!failed) fprintf(stderr, PROG ": the reference pass failed on %g other rank(s) (their messages say why)\n", v[0]);
    return -1;
  }
  for (size_t i = 0; i < 2 * n; i++)
    if (i < 2 * lo || i >= 2 * hi) out[i] = 0;
  if (pc_comm_all_reduce(t->comm, out, 2 * n, PC_COMM_F64) != 0) {
    fprintf(stderr, PROG ": the reference pass: %s\n", pc_comm_error(t->comm));
    return -1;
  }
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "enabled"))) {  // the whole run's figures
    for (int k = 0; k < 4; k++) cJSON_ReplaceItemInObjectCaseSensitive(t->ref_cache, keys[k], cJSON_CreateNumber(v[k + 1]));
    cJSON_ReplaceItemInObjectCaseSensitive(t->ref_cache, keys[4], cJSON_CreateBool(v[5] > 0));
  }
  return 0;
}

/* Reference sums under the starting model (full) or the base (LoRA): the checkpoint as loaded, frozen,
 * with no adapter, computed once before training (or found in the reference cache); or read from
 * --ref-logps (then only the eval pairs are computed). SimPO has no reference. */
static int setup_reference(pc_trainer *t) {
  if (t->kto) {  // KTO's KL sequences depend on the micro-batch: the reference runs with the policy
    if (pc_model_load(t->o.model, NULL, t->be, &t->ref_model, t->err, sizeof t->err) != 0) {
      fprintf(stderr, PROG ": %s\n", t->err);
      return -1;
    }
    return 0;
  }
  if (!pc_loss_mix_needs_ref(&t->mix)) return 0;
  const pc_pair **from = t->train;
  size_t n = t->ntrain + t->neval;
  if (t->o.ref_logps[0]) {
    if (pc_ref_read(t->o.ref_logps, t->o.data, t->train, t->ntrain, t->ref, t->err, sizeof t->err) != 0) {
      fprintf(stderr, PROG ": %s\n", t->err);
      return -1;
    }
    from = t->eval;
    n = t->neval;
  }
  // With several ranks, each computes a contiguous share of the pairs; the shares are then summed
  // into every rank's array (each holds zeros elsewhere, so every value arrives exactly as computed).
  size_t lo, hi;
  my_share(t, n, &lo, &hi);
  double *out = t->ref + 2 * (size_t)(from - t->train);
  pc_data_opts dopt = data_opts(t);
  pc_ref_ctx rc = {t->o.model, t->be, NULL, 2 * t->o.batch_size, stderr, 0};
  pc_model_seq *seqs = malloc(sizeof *seqs * (2 * (hi - lo) + 1));
  if (!seqs) { fprintf(stderr, PROG ": out of memory\n"); return -1; }
  for (size_t i = lo; i < hi; i++) pc_pair_seqs(from[i], &seqs[2 * (i - lo)]);
  long bad = -1;
  int r = pc_ref_run(t->o.no_ref_cache ? NULL : t->o.ref_cache, &dopt, &rc, seqs, 2 * (hi - lo), out + 2 * lo, &bad,
                     &t->ref_cache, t->err, sizeof t->err);
  free(seqs);
  if (r != 0) {
    if (bad < 0) fprintf(stderr, PROG ": %s\n", t->err);
    else {
      const pc_pair *p = from[lo + (size_t)bad / 2];
      int ev = from + lo + bad / 2 >= t->eval && t->o.eval_data[0];  // pairs of --eval-data come after the training ones
      fprintf(stderr, PROG ": %s:%d: %s\n", ev ? t->o.eval_data : t->o.data, p->line, t->err);
    }
  }
  if (t->comm && t->comm->size > 1 && share_reference(t, out, n, lo, hi, r != 0) != 0) return -1;
  if (r != 0) return -1;
  if (t->o.dump_ref[0] && is_root(t) && dump_ref(t) != 0) return -1;  // every rank has every sum
  return 0;
}

static int setup_model(pc_trainer *t) {
  const pc_train_opts *o = &t->o;
  pc_model_opts mo = pc_train_model_opts(o, t->lora);
  if (pc_model_load(o->model, &mo, t->be, &t->model, t->err, sizeof t->err) != 0 ||
      pc_adamw_init(&t->opt, t->model, t->be, o->weight_decay, t->err, sizeof t->err) != 0 ||
      pc_model_reserve(t->model, t->mem.max_tokens, t->mem.max_scored, 1, t->err, sizeof t->err) != 0) {
    fprintf(stderr, PROG ": %s\n", t->err);
    return -1;
  }
  if (t->comm) {  // ZeRO-1: the optimizer state lives in shards, 1/N on each rank
    pc_mem_info mi;
    t->be->ops->mem_info(t->be, &mi);  // host_memory is set whether or not the device could say its size
    if (!mi.host_memory && !(t->dcomm = pc_comm_nccl_new(t->comm, t->err, sizeof t->err))) {
      fprintf(stderr, PROG ": data parallel on %s moves GPU memory with NCCL: %s\n", t->be->ops->name, t->err);
      return -1;
    }
    if (pc_zero_new(t->comm, t->dcomm, t->model, t->be, &t->opt, &t->zero, t->err, sizeof t->err) != 0) {
      fprintf(stderr, PROG ": %s\n", t->err);
      return -1;
    }
    pc_adamw_free(&t->opt);
    fprintf(stderr, PROG ": rank %d of %d (%s): ZeRO-1 optimizer shard of %zu of %zu trainable parameters\n",
            t->comm->rank, t->comm->size, t->comm->ops->name, pc_zero_shard_size(t->zero), pc_zero_flat_size(t->zero));
  }
  return 0;
}

/* A new run's manifest: what it is made of, before any step. */
static cJSON *new_manifest(pc_trainer *t, const char *cmdline) {
  const pc_train_opts *o = &t->o;
  char now[32], path[4400];
  size_t total, trainable = pc_model_trainable(t->model, &total);
  pc_iso_now(now, sizeof now);
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "prefcap_version", PREFCAP_VERSION);
  cJSON *b = cJSON_AddObjectToObject(m, "build");
  cJSON_AddStringToObject(b, "compiler", __VERSION__);
  cJSON_AddStringToObject(b, "flags", PC_BUILD_FLAGS);
  cJSON_AddStringToObject(b, "openblas", openblas_get_config());
  cJSON_AddStringToObject(m, "command", cmdline);
  cJSON_AddStringToObject(m, "started_at", now);
  cJSON_AddItemToObject(m, "model", pc_manifest_model(o->model));
  cJSON_AddItemToObject(m, "data", pc_manifest_data(o->data, &t->data));
  cJSON_AddItemToObject(m, "eval_data", o->eval_data[0] ? pc_manifest_data(o->eval_data, &t->eval_data) : cJSON_CreateNull());
  cJSON_AddItemToObject(m, "ref_logps", o->ref_logps[0] ? pc_manifest_file(o->ref_logps) : cJSON_CreateNull());
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", o->init_adapter);
  cJSON_AddItemToObject(m, "init_adapter", o->init_adapter[0] ? pc_manifest_file(path) : cJSON_CreateNull());
  cJSON_AddItemToObject(m, "options", pc_train_opts_json(o));
  cJSON_AddNumberToObject(m, "threads", t->be->threads);
  cJSON_AddNumberToObject(m, "train_pairs", (double)t->ntrain);
  cJSON_AddNumberToObject(m, "eval_pairs", (double)t->neval);
  cJSON_AddNumberToObject(m, "total_steps", t->total_steps);
  cJSON_AddNumberToObject(m, "trainable_params", (double)trainable);
  cJSON_AddNumberToObject(m, "total_params", (double)total);
  cJSON_AddStringToObject(m, "lora_targets", t->lora ? pc_model_lora_targets(t->model) : "");
  return m;
}

static void set_status(pc_trainer *t, const char *status) {
  if (!is_root(t)) return;
  if (pc_manifest_set_status(t->manifest, t->o.out, status) != 0)
    fprintf(stderr, PROG ": warning: cannot write %s/run.json\n", t->o.out);
}

/* The parameters and optimizer state of checkpoint-start_step. One process reads its own kind with
 * train/checkpoint.c; a data-parallel run (ZeRO-1) takes its shard of either kind, and one process
 * rebuilds a data-parallel run's state from its shards (dist/zero.h), whatever the number of ranks. */
static int load_checkpoint(pc_trainer *t) {
  char dir[4400], path[4500];
  int loaded;
  snprintf(dir, sizeof dir, "%s/checkpoint-%d", t->o.out, t->start_step);
  if (!t->zero && !pc_zero_is_sharded(dir))
    return pc_checkpoint_load(t->o.out, t->start_step, t->model, &t->opt, t->err, sizeof t->err);
  snprintf(path, sizeof path, "%s/trainable.safetensors", dir);
  if (pc_model_load_params(t->model, path, &loaded, t->err, sizeof t->err) != 0) return -1;
  return t->zero ? pc_zero_load(t->zero, dir, t->err, sizeof t->err)
                 : pc_zero_load_full(dir, t->model, &t->opt, t->err, sizeof t->err);
}

/* The manifest and metrics.jsonl: a new run's, or the resumed run's cut back to its checkpoint. */
static int setup_outputs(pc_trainer *t, const char *cmdline) {
  char path[4400];
  snprintf(path, sizeof path, "%s/metrics.jsonl", t->o.out);
  if (t->manifest) {  // resuming
    t->start_step = pc_checkpoint_latest(t->o.out);
    if (t->start_step > 0 && load_checkpoint(t) != 0) {
      fprintf(stderr, PROG ": resuming from checkpoint-%d: %s\n", t->start_step, t->err);
      return -1;
    }
    if (is_root(t) && pc_metrics_truncate(path, t->start_step) != 0) { fprintf(stderr, PROG ": %s: cannot rewrite\n", path); return -1; }
    fprintf(stderr, PROG ": resuming %s at step %d of %d\n", t->o.out, t->start_step, t->total_steps);
  } else {
    t->manifest = new_manifest(t, cmdline);
    if (is_root(t)) remove(path);
  }
  if (t->ref_cache) {  // this start's (a resumed run's reference comes from the cache too)
    cJSON_Delete(cJSON_DetachItemFromObject(t->manifest, "ref_cache"));
    cJSON_AddItemToObject(t->manifest, "ref_cache", t->ref_cache);
    t->ref_cache = NULL;
  }
  cJSON_Delete(cJSON_DetachItemFromObject(t->manifest, "world_size"));
  cJSON_AddNumberToObject(t->manifest, "world_size", t->comm ? t->comm->size : 1);
  // this run's device and memory plan (a resumed run may run on another device)
  cJSON_Delete(cJSON_DetachItemFromObject(t->manifest, "device"));
  cJSON *dev = cJSON_Parse(t->be->ops->device_json(t->be));
  cJSON_AddItemToObject(t->manifest, "device", dev ? dev : cJSON_CreateNull());
  cJSON_Delete(cJSON_DetachItemFromObject(t->manifest, "memory"));
  cJSON_AddItemToObject(t->manifest, "memory", pc_memplan_json(&t->mem));
  set_status(t, "running");
  t->metrics = fopen(is_root(t) ? path : "/dev/null", "a");  // the other ranks' lines go nowhere
  if (!t->metrics) { fprintf(stderr, PROG ": %s: cannot open: %s\n", path, strerror(errno)); return -1; }
  return 0;
}

static int evaluate(pc_trainer *t, int step);

int pc_train_setup(const pc_train_opts *o, const char *cmdline, cJSON *resume, pc_trainer **out) {
  pc_trainer *t = calloc(1, sizeof *t);
  *out = t;
  if (!t) { cJSON_Delete(resume); fprintf(stderr, PROG ": out of memory\n"); return 1; }
  t->o = *o;
  t->comm = o->comm;
  t->manifest = resume;
  if (pc_loss_mix_parse(o->loss, o->loss_weights, &t->mix, t->err, sizeof t->err) != 0) {
    fprintf(stderr, PROG ": %s\n", t->err);
    return 1;
  }
  t->kto = t->mix.kind[0] == PC_LOSS_KTO;
  t->kto_params = (pc_kto_params){o->beta, o->desirable_weight, o->undesirable_weight};
  t->loss = (pc_loss_params){t->mix.kind[0], o->beta, o->label_smoothing, o->simpo_gamma};
  t->schedule = (pc_schedule)pc_schedule_from_name(o->scheduler);
  t->lora = o->lora_r > 0 || o->init_adapter[0];
  if (setup_data(t) || setup_backend(t) || setup_memory(t) || setup_buffers(t) || setup_reference(t) || setup_model(t) ||
      setup_outputs(t, cmdline))
    return 1;
  size_t total, trainable = pc_model_trainable(t->model, &total);
  const char *rows = t->kto ? "examples" : "pairs";
  if (is_root(t))
    fprintf(stderr, PROG ": %zu training %s, %zu eval %s, %d steps of %d %s (batch %d x accumulation %d), "
            "%s, %zu of %zu parameters trainable, %d threads\n", t->ntrain, rows, t->neval, rows, t->total_steps,
            pairs_per_step(t), rows, o->batch_size, o->grad_accum, t->lora ? "LoRA" : "full fine-tune", trainable, total,
            t->be->threads);
  if (t->start_step == 0 && evaluate(t, 0) != 0) return 1;
  t->step = t->last_saved = t->start_step;
  t->progress = pc_progress_new(is_root(t) ? stderr : NULL, "train", "steps", "tok", (size_t)(t->total_steps - t->start_step));
  t->t_start = pc_now_s();
  return 0;
}

// ---- a step -------------------------------------------------------------------------------------

/* The tokens a chosen completion is scored on (what the model's forward counts: positions from
 * max(prompt_len, 1) to the end), known before the forward so that every rank can normalise by the
 * whole micro-batch's. */
static int chosen_scored(const pc_pair *p) {
  int f = p->chosen.prompt_len < 1 ? 1 : p->chosen.prompt_len;
  return p->chosen.n > f ? p->chosen.n - f : 0;
}

/* Forward (and, with backward, the backward pass) of pairs[0..nb) against reference sums ref (2 nb,
 * NULL when no term needs them); adds to st. scale: this micro-batch's share of the step's loss (1 /
 * grad_accum) divided by nb. The micro-batch's loss is sum_k weight_k loss_k over --loss's terms: each
 * pair term the mean of its per-pair losses (--pair-weights: sum w_i l_i / sum w_i), sft TRL's
 * token-mean cross-entropy of the chosen completions (--pair-weights: each token weighted by its row). */
static int micro_batch(pc_trainer *t, const pc_pair **pairs, const double *ref, int nb, int from, int to,
                       int backward, double scale, step_stats *st, double *tokens) {
  const pc_loss_mix *m = &t->mix;
  // The normalisers are the whole micro-batch's (every rank knows all of its pairs), so that the ranks'
  // slices add up to one process's loss and gradient: nb, sum w, sum w * completion tokens.
  double wsum = 0, wtok = 0, sft = 0, loss = 0;
  for (int i = 0; i < nb; i++) {
    double w = t->o.pair_weights ? pairs[i]->weight : 1;
    wsum += w;
    wtok += w * chosen_scored(pairs[i]);
  }
  int n = to - from;
  for (int j = 0; j < n; j++) {
    pc_pair_seqs(pairs[from + j], &t->seqs[2 * j]);
    *tokens += pairs[from + j]->chosen.n + pairs[from + j]->rejected.n;
  }
  if (pc_model_forward(t->model, t->seqs, 2 * n, backward, t->sums, t->cnts, NULL, t->err, sizeof t->err) != 0)
    return -1;
  int primary = pc_loss_mix_primary(m);
  for (int j = 0; j < n; j++) {
    const pc_pair *pr = pairs[from + j];
    const double *rf = ref ? ref + 2 * (from + j) : NULL;
    double w = t->o.pair_weights ? pr->weight : 1, share = wsum > 0 ? w * nb / wsum : 0, li = 0;
    double dc = 0, dr = 0;
    for (int k = 0; k < m->n; k++) {
      if (m->kind[k] == PC_LOSS_SFT) {  // -(sum_i w_i S_i) / (sum_i w_i n_i): d/dS_i = -w_i / sum w n
        sft += wtok > 0 ? -w * t->sums[2 * j] / wtok : 0;
        dc += wtok > 0 ? m->weight[k] * -w * nb / wtok : 0;
        continue;
      }
      pc_loss_params lp = t->loss;
      lp.kind = m->kind[k];
      pc_pair_loss p = pc_loss_pair(&lp, t->sums[2 * j], t->sums[2 * j + 1], rf ? rf[0] : 0, rf ? rf[1] : 0,
                                    t->cnts[2 * j], t->cnts[2 * j + 1]);
      li += m->weight[k] * p.loss;
      dc += m->weight[k] * share * p.dchosen;
      dr += m->weight[k] * share * p.drejected;
      if (k == primary) {  // the metrics: the first pair loss's rewards and log-probs, unweighted
        p.loss = 0;        // (the loss is the mixture's, added below)
        pc_loss_stats_add(&st->p, &p);
      }
    }
    loss += share * li;  // share sums to nb: the weighted mean times nb, the plain sum without weights
    t->dsum[2 * j] = (float)(dc * scale);
    t->dsum[2 * j + 1] = (float)(dr * scale);
  }
  int s = pc_loss_mix_find(m, PC_LOSS_SFT);
  st->p.loss += loss + (s >= 0 ? m->weight[s] * sft * nb : 0);
  if (backward && pc_model_backward(t->model, t->dsum, t->err, sizeof t->err) != 0) return -1;
  return 0;
}

/* KTO's micro-batch of examples ex[0..nb), this rank's slice [from, to) of it: the reference's sums of
 * the examples and of their KL sequences (the frozen model, no gradient), the policy's of the KL
 * sequences (no gradient), then the policy's of the examples (kept for the backward pass), the loss
 * (train/kto.c) and its backward. With several ranks, the KL sequences' sums are all-reduced for the
 * micro-batch's kl, and the weights' sum is the whole micro-batch's (every rank knows all its
 * examples), so the slices add up to one process's loss and gradient. */
static int micro_batch_kto(pc_trainer *t, const pc_pair **ex, int nb, int from, int to, int backward, double scale,
                           step_stats *st, double *tokens) {
  int n = to - from;
  if (pc_kto_kl_seqs(ex, nb, from, to, t->o.max_length, pc_data_truncation_from_name(t->o.truncation), t->kl) != 0) {
    snprintf(t->err, sizeof t->err, "out of memory");
    return -1;
  }
  for (int j = 0; j < n; j++) {
    const pc_seq *e = &ex[from + j]->chosen, *k = &t->kl[j];
    t->seqs[j] = (pc_model_seq){e->ids, e->n, e->prompt_len, 0};
    t->seqs[n + j] = (pc_model_seq){k->ids, k->n, k->prompt_len, 0};
    *tokens += e->n + k->n;
  }
  int rc = -1;
  double *pol_kl = t->sums + n, wsum = 0;
  signed char label[n + 1];
  float w[n + 1];
  for (int i = 0; i < nb; i++) wsum += t->o.pair_weights ? ex[i]->weight : 1;
  for (int j = 0; j < n; j++) label[j] = ex[from + j]->label, w[j] = ex[from + j]->weight;
  if (n && pc_model_forward(t->ref_model, t->seqs, 2 * n, 0, t->ref_sums, t->cnts, NULL, t->err, sizeof t->err) != 0)
    goto done;
  if (!n) {
    /* an empty slice (fewer examples than ranks) still takes part in the kl's all-reduce */
  } else if (backward) {  // the KL sequences first: a forward keeps only the last pass's activations
    if (pc_model_forward(t->model, t->seqs + n, n, 0, pol_kl, t->cnts + n, NULL, t->err, sizeof t->err) != 0 ||
        pc_model_forward(t->model, t->seqs, n, 1, t->sums, t->cnts, NULL, t->err, sizeof t->err) != 0)
      goto done;
  } else if (pc_model_forward(t->model, t->seqs, 2 * n, 0, t->sums, t->cnts, NULL, t->err, sizeof t->err) != 0) {
    goto done;
  }
  double kl_sum = pc_kto_kl_part(n, pol_kl, t->ref_sums + n);
  if (t->comm && pc_comm_all_reduce(t->comm, &kl_sum, 1, PC_COMM_F64) != 0) {
    snprintf(t->err, sizeof t->err, "%s", pc_comm_error(t->comm));
    goto done;
  }
  double kl = pc_kto_kl(kl_sum, nb);
  pc_kto_examples(&t->kto_params, n, nb, kl, wsum, t->sums, t->ref_sums, label, t->o.pair_weights ? w : NULL, t->ddsum,
                  &st->k);
  st->k.kl += kl;  // the same on every rank: not reduced
  st->k.batches++;
  for (int j = 0; j < n; j++) t->dsum[j] = (float)(t->ddsum[j] * nb * scale);
  if (backward && n && pc_model_backward(t->model, t->dsum, t->err, sizeof t->err) != 0) goto done;
  rc = 0;
done:
  pc_kto_kl_free(t->kl, n);
  return rc;
}

/* TRL's advice when the classes are out of balance for the weights given (and a word when one is
 * empty); the run goes on either way. */
static void kto_balance_warning(pc_trainer *t) {
  size_t nd = 0, nu = 0;
  char msg[512];
  for (size_t i = 0; i < t->ntrain; i++) t->train[i]->label ? nd++ : nu++;
  if (pc_kto_balance_advice(nd, nu, t->o.desirable_weight, t->o.undesirable_weight, msg, sizeof msg))
    fprintf(stderr, PROG ": warning: %s: %s\n", t->o.data, msg);
}

static const double *pair_refs(pc_trainer *t, const double *ref) { return pc_loss_mix_needs_ref(&t->mix) ? ref : NULL; }

/* The loss and metrics over the evaluation pairs, as one line of metrics.jsonl. */
static int evaluate(pc_trainer *t, int step) {
  if (!t->neval) return 0;
  step_stats st = {0};
  double tokens = 0;
  int B = t->o.batch_size;
  for (size_t b = 0; b < t->neval; b += (size_t)B) {
    int nb = t->neval - b < (size_t)B ? (int)(t->neval - b) : B;
    int f, e;  // this rank's slice of the batch (all of it for one process)
    my_slice(t, nb, &f, &e);
    int rc = t->kto ? micro_batch_kto(t, t->eval + b, nb, f, e, 0, 0, &st, &tokens)
                    : micro_batch(t, t->eval + b, pair_refs(t, t->ref + 2 * (t->ntrain + b)), nb, f, e, 0, 0, &st, &tokens);
    if (rc != 0) {
      fprintf(stderr, PROG ": evaluation: %s\n", t->err);
      return -1;
    }
  }
  if (reduce_stats(t, &st, &tokens) != 0) {
    fprintf(stderr, PROG ": evaluation: %s\n", t->err);
    return -1;
  }
  fprintf(t->metrics, "{\"step\": %d, \"epoch\": %.17g, ", step, (double)step * pairs_per_step(t) / (double)t->ntrain);
  if (t->kto) pc_kto_stats_print(t->metrics, &st.k, "eval_");
  else pc_loss_stats_print(t->metrics, &st.p, "eval_");
  fprintf(t->metrics, "}\n");
  fflush(t->metrics);
  double n = st.p.n ? (double)st.p.n : 1;
  cJSON_Delete(cJSON_DetachItemFromObject(t->manifest, "final_eval"));
  cJSON *fe = cJSON_AddObjectToObject(t->manifest, "final_eval");
  cJSON_AddNumberToObject(fe, "step", step);
  cJSON_AddNumberToObject(fe, "eval_loss", mean_loss(t, &st));
  if (t->kto) {
    cJSON_AddNumberToObject(fe, "eval_kl", st.k.kl / (double)(st.k.batches ? st.k.batches : 1));
  } else {
    cJSON_AddNumberToObject(fe, "eval_rewards/accuracies", st.p.accuracy / n);
    cJSON_AddNumberToObject(fe, "eval_rewards/margins", (st.p.reward_chosen - st.p.reward_rejected) / n);
  }
  return 0;
}

/* The step's forward and backward passes: grad_accum micro-batches, gradients summed. */
static int accumulate_gradients(pc_trainer *t, step_stats *st, double *tokens) {
  int B = t->o.batch_size, per_step = pairs_per_step(t);
  pc_model_zero_grad(t->model);
  for (int k = 0; k < per_step; k++) t->step_pairs[k] = train_index(t, (size_t)t->step * per_step + k);
  for (int j = 0; j < t->o.grad_accum; j++) {
    for (int b = 0; b < B; b++) {
      size_t i = t->step_pairs[j * B + b];
      t->mb[b] = t->train[i];
      t->mb_ref[2 * b] = t->ref[2 * i];
      t->mb_ref[2 * b + 1] = t->ref[2 * i + 1];
    }
    int f, e;  // this rank's slice of the micro-batch (all of it for one process)
    my_slice(t, B, &f, &e);
    int rc = t->kto ? micro_batch_kto(t, t->mb, B, f, e, 1, 1.0 / per_step, st, tokens)
                    : micro_batch(t, t->mb, pair_refs(t, t->mb_ref), B, f, e, 1, 1.0 / per_step, st, tokens);
    if (rc != 0) {
      pc_progress_break(t->progress);
      fprintf(stderr, PROG ": step %d: %s\n", t->step + 1, t->err);
      return -1;
    }
  }
  return 0;
}

/* A NaN or infinite loss or gradient norm stops the run, naming the step's data lines. */
static int check_finite(pc_trainer *t, double mean_loss, double norm) {
  if (isfinite(mean_loss) && isfinite(norm)) return 0;
  pc_progress_break(t->progress);
  fprintf(stderr, PROG ": step %d: the %s is %s (data lines", t->step + 1, isfinite(mean_loss) ? "gradient norm" : "loss",
          isnan(isfinite(mean_loss) ? norm : mean_loss) ? "NaN" : "infinite");
  for (int k = 0; k < pairs_per_step(t); k++) fprintf(stderr, " %d", t->train[t->step_pairs[k]]->line);
  fprintf(stderr, "); stopping. Lower --lr, check the data and the model's weights%s\n",
          t->last_saved ? ", or resume from the last checkpoint" : "");
  set_status(t, "failed");
  return -1;
}

/* The step's line of metrics.jsonl, the manifest's final metrics, the progress display. */
static void log_step(pc_trainer *t, const step_stats *st, double norm, double lr, double tokens, double seconds) {
  int step = t->step + 1;
  double n = (double)st->p.n, loss = mean_loss(t, st);
  fprintf(t->metrics, "{\"step\": %d, \"epoch\": %.17g, ", step, (double)step * pairs_per_step(t) / (double)t->ntrain);
  if (t->kto) pc_kto_stats_print(t->metrics, &st->k, "");
  else pc_loss_stats_print(t->metrics, &st->p, "");
  fprintf(t->metrics, ", \"grad_norm\": %.17g, \"learning_rate\": %.17g, \"tokens_per_s\": %.1f}\n", norm, lr,
          seconds > 0 ? tokens / seconds : 0);
  fflush(t->metrics);
  cJSON_Delete(cJSON_DetachItemFromObject(t->manifest, "final_metrics"));
  cJSON *fm = cJSON_AddObjectToObject(t->manifest, "final_metrics");
  cJSON_AddNumberToObject(fm, "step", step);
  cJSON_AddNumberToObject(fm, "loss", loss);
  char extra[96];
  if (t->kto) {
    double kl = st->k.kl / (double)(st->k.batches ? st->k.batches : 1);
    cJSON_AddNumberToObject(fm, "kl", kl);
    snprintf(extra, sizeof extra, "loss %.4f kl %.3g", loss, kl);
  } else {
    cJSON_AddNumberToObject(fm, "rewards/accuracies", st->p.accuracy / n);
    cJSON_AddNumberToObject(fm, "rewards/margins", (st->p.reward_chosen - st->p.reward_rejected) / n);
    snprintf(extra, sizeof extra, "loss %.4f acc %.2f", loss, st->p.accuracy / n);
  }
  pc_progress_update(t->progress, (size_t)(step - t->start_step), t->all_tokens, extra);
}

/* OUT/checkpoint-K: one process's, or a data-parallel run's (every rank calls it: zero.h). */
static int save_checkpoint(pc_trainer *t, int step) {
  if (t->zero)
    return pc_zero_checkpoint(t->zero, t->o.out, step, t->total_steps, t->lora, t->o.model, t->err, sizeof t->err);
  return pc_checkpoint_save(t->o.out, step, t->total_steps, t->model, &t->opt, t->lora, t->o.model, t->err,
                            sizeof t->err);
}

/* A stop requested by a signal: with several ranks, each may have seen it after a different step, so
 * they agree on it (any rank's request stops all) and stop after the same step. */
static int agree_stop(pc_trainer *t) {
  if (!t->comm) return g_stop != 0;
  double v[2] = {g_stop != 0, (double)g_stop};
  if (pc_comm_all_reduce(t->comm, v, 2, PC_COMM_F64) != 0) return 0;  // the next collective reports it
  if (v[0] > 0 && !g_stop) g_stop = SIGTERM;
  return v[0] > 0;
}

int pc_train_step(pc_trainer *t) {
  if (t->step >= t->total_steps) return 1;
  double t0 = pc_now_s(), tokens = 0, norm;
  step_stats st = {0};
  if (accumulate_gradients(t, &st, &tokens) != 0) return -1;
  if ((t->zero ? pc_zero_reduce_grads(t->zero, &norm, t->err, sizeof t->err) : pc_grad_norm(t->model, t->be, &norm, t->err, sizeof t->err)) != 0 ||
      reduce_stats(t, &st, &tokens) != 0) {
    fprintf(stderr, PROG ": step %d: %s\n", t->step + 1, t->err);
    return -1;
  }
  if (check_finite(t, mean_loss(t, &st), norm) != 0) return -1;
  if (t->o.dump_grads[0] && !t->zero && t->step == t->start_step &&
      pc_dump_tensors(t->model, &t->opt, t->o.dump_grads, PC_DUMP_GRADS, t->err, sizeof t->err) != 0) {
    fprintf(stderr, PROG ": %s: %s\n", t->o.dump_grads, t->err);
    return -1;
  }
  double lr = pc_schedule_lr(t->schedule, t->o.lr, t->o.warmup_steps, t->step, t->total_steps);
  if (t->zero) {
    pc_zero_clip(t->zero, norm, t->o.max_grad_norm);
    if (pc_zero_step(t->zero, t->step + 1, lr, t->err, sizeof t->err) != 0) {
      fprintf(stderr, PROG ": step %d: %s\n", t->step + 1, t->err);
      return -1;
    }
  } else {
    pc_clip_grads(t->model, t->be, norm, t->o.max_grad_norm);
    pc_adamw_step(&t->opt, t->step + 1, lr);
  }
  if (t->be->ops->error(t->be)) {  // a device failure in the update: the weights are not sound to save
    pc_progress_break(t->progress);
    fprintf(stderr, PROG ": step %d: backend %s: optimizer: %s\n", t->step + 1, t->be->ops->name, t->be->ops->error(t->be));
    return -1;
  }
  t->all_tokens += tokens;
  log_step(t, &st, norm, lr, tokens, pc_now_s() - t0);
  int done = ++t->step;  // steps done
  if (t->o.eval_steps > 0 && done % t->o.eval_steps == 0 && done < t->total_steps) {
    pc_progress_break(t->progress);
    if (evaluate(t, done) != 0) return -1;
  }
  if (t->o.save_steps > 0 && done % t->o.save_steps == 0 && done < t->total_steps) {
    if (save_checkpoint(t, done) != 0) {
      fprintf(stderr, PROG ": checkpoint at step %d: %s\n", done, t->err);
      return -1;
    }
    t->last_saved = done;
  }
  return agree_stop(t) || done >= t->total_steps ? 1 : 0;
}

// ---- finish -------------------------------------------------------------------------------------

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

/* The adapter (and, with --merge, the merged model) or the fine-tuned model. */
static int write_outputs(pc_trainer *t) {
  const pc_train_opts *o = &t->o;
  char path[4400];
  t->err[0] = 0;
  if (!is_root(t)) return 0;  // the replicas are identical: rank 0 writes
  if (!t->lora) {
    if (pc_model_save(t->model, o->out, pc_model_dtype(t->model), 0, t->err, sizeof t->err) != 0 ||
        copy_tokenizer_files(o->model, o->out) != 0) {
      fprintf(stderr, PROG ": %s\n", t->err);
      return -1;
    }
    return 0;
  }
  if (pc_model_save_adapter(t->model, o->out, o->model, t->err, sizeof t->err) != 0) {
    fprintf(stderr, PROG ": %s\n", t->err);
    return -1;
  }
  if (!o->merge) return 0;
  snprintf(path, sizeof path, "%s/merged", o->out);
  if (pc_mkdir_p(path) != 0 || pc_model_save(t->model, path, pc_model_dtype(t->model), 1, t->err, sizeof t->err) != 0 ||
      copy_tokenizer_files(o->model, path) != 0) {
    fprintf(stderr, PROG ": %s: %s\n", path, t->err[0] ? t->err : strerror(errno));
    return -1;
  }
  return 0;
}

/* A run stopped by a signal: checkpointed, and the way to continue said. */
static int finish_interrupted(pc_trainer *t) {
  int step = t->step;
  if (t->last_saved != step && save_checkpoint(t, step) != 0) {
    fprintf(stderr, PROG ": checkpoint at step %d: %s\n", step, t->err);
    return 1;
  }
  set_status(t, "interrupted");
  fprintf(stderr, PROG ": stopped by signal %d after step %d of %d; checkpoint %s/checkpoint-%d; continue with "
          "`prefcap-dpo train --resume %s`\n", (int)g_stop, step, t->total_steps, t->o.out, step, t->o.out);
  return 128 + (int)g_stop;
}

int pc_train_finish(pc_trainer *t) {
  pc_progress_end(t->progress, (size_t)(t->step - t->start_step), t->all_tokens, NULL);
  t->progress = NULL;
  if (g_stop && t->step < t->total_steps) return finish_interrupted(t);
  if (evaluate(t, t->step) != 0 || write_outputs(t) != 0) return 1;
  fclose(t->metrics);
  t->metrics = NULL;
  char mpath[4400], rpath[4400], title[512];
  snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", t->o.out);
  snprintf(rpath, sizeof rpath, "%s/report.html", t->o.out);
  snprintf(title, sizeof title, "%s on %s: %s, %s", t->o.model, t->o.data, t->o.loss, t->lora ? "LoRA" : "full fine-tune");
  if (is_root(t) && pc_report_write(mpath, rpath, title, t->err, sizeof t->err) != 0) {
    fprintf(stderr, PROG ": report: %s\n", t->err);
    return 1;
  }
  set_status(t, "finished");
  double el = pc_now_s() - t->t_start;
  if (is_root(t))
    fprintf(stderr, PROG ": done: %d steps in %.1f s (%.0f tokens/s); outputs in %s (report: %s)\n",
          t->step - t->start_step, el, el > 0 ? t->all_tokens / el : 0, t->o.out, rpath);
  return 0;
}

void pc_trainer_free(pc_trainer *t) {
  if (!t) return;
  pc_progress_free(t->progress);
  if (t->manifest) {  // a run that ends while "running" failed
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(t->manifest, "status");
    if (cJSON_IsString(s) && !strcmp(s->valuestring, "running")) set_status(t, "failed");
  }
  if (t->metrics) fclose(t->metrics);
  pc_adamw_free(&t->opt);
  pc_zero_free(t->zero);
  pc_comm_free(t->dcomm, 1);  // abort, not destroy: never waits for a peer that may be gone
  pc_model_free(t->model);
  pc_model_free(t->ref_model);
  if (t->be) t->be->ops->destroy(t->be);
  free(t->train);
  free(t->ref);
  cJSON_Delete(t->ref_cache);
  free(t->seqs);
  free(t->sums);
  free(t->cnts);
  free(t->dsum);
  free(t->mb);
  free(t->mb_ref);
  free(t->kl);
  free(t->ref_sums);
  free(t->ddsum);
  free(t->step_pairs);
  free(t->perm);
  pc_data_free(&t->data);
  pc_data_free(&t->eval_data);
  pc_tok_free(t->tok);
  cJSON_Delete(t->manifest);
  free(t);
}
