/* trainer/train/memplan.c: see memplan.h. */
#include "train/memplan.h"
#include "train/loss.h"
#include "train/reference.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Messages are built into fixed buffers; a cut message still says what matters first. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MIB(b) ((double)(b) / 1048576.0)

pc_model_opts pc_train_model_opts(const pc_train_opts *o, int lora) {
  return (pc_model_opts){.trainable = 1, .lora_r = lora ? o->lora_r : 0, .lora_alpha = o->lora_alpha,
                         .lora_targets = o->lora_targets[0] ? o->lora_targets : NULL,
                         .init_adapter = o->init_adapter[0] ? o->init_adapter : NULL, .seed = (uint64_t)o->seed,
                         .recompute = o->recompute};
}

static int desc(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The largest micro-batch of B pairs any order can make: the B largest pairs' rows, and (separately,
 * so an upper bound) the B largest scored counts. Rows as the model packs them (a rejected answer
 * shares its prompt's rows with the chosen one); scored rows as it counts them. */
static int largest_batch(const pc_pair *const *pairs, size_t n, int B, size_t *N, size_t *M) {
  size_t *rows = malloc(sizeof *rows * (n + 1)), *scored = malloc(sizeof *scored * (n + 1));
  if (!rows || !scored) { free(rows); free(scored); return -1; }
  for (size_t i = 0; i < n; i++) {
    pc_model_seq s[2];
    pc_pair_seqs(pairs[i], s);
    rows[i] = (size_t)(s[0].n + s[1].n - s[1].shared_prefix);
    scored[i] = 0;
    for (int k = 0; k < 2; k++) {
      int f = s[k].score_from < 1 ? 1 : s[k].score_from;
      if (s[k].n > f) scored[i] += (size_t)(s[k].n - f);
    }
  }
  qsort(rows, n, sizeof *rows, desc);
  qsort(scored, n, sizeof *scored, desc);
  *N = *M = 0;
  for (size_t i = 0; i < n && i < (size_t)B; i++) {
    *N += rows[i];
    *M += scored[i];
  }
  free(rows);
  free(scored);
  return 0;
}

/* The bytes of a run with options o: both phases and the peak, into p (p->dev already set). */
static int plan_once(const pc_train_opts *o, int lora, const pc_pair *const *pairs, size_t n, int ref_phase,
                     pc_memplan *p, char *err, size_t errlen) {
  size_t N, M;
  if (largest_batch(pairs, n, o->batch_size, &N, &M) != 0) { pc_seterr(err, errlen, "out of memory"); return -1; }
  p->max_tokens = N;
  p->max_scored = M;
  pc_model_opts mo = pc_train_model_opts(o, lora);
  if (pc_model_plan(o->model, &mo, N, M, 1, &p->model, err, errlen) != 0) return -1;
  double extra = p->dev.weight_extra;
  p->twins = (size_t)(extra * (double)p->model.matrix_elems);
  p->optimizer = 2 * p->model.grads;  // exp_avg and exp_avg_sq: a gradient's size each
  p->workspace = p->dev.workspace_bytes + (size_t)(p->dev.input_extra * (double)p->model.matmul_input);
  p->training = p->model.params + p->twins + p->model.grads + p->optimizer + p->model.activations + p->workspace;
  p->reference = 0;
  if (ref_phase) {
    // the frozen reference model, its activations grown batch by batch with a quarter to spare
    pc_model_bytes r;
    if (pc_model_plan(o->model, NULL, N + N / 4, M + M / 4, 0, &r, err, errlen) != 0) return -1;
    p->reference = r.params + (size_t)(extra * (double)r.matrix_elems) + r.activations + p->dev.workspace_bytes +
                   (size_t)(p->dev.input_extra * (double)r.matmul_input);
  }
  p->peak = p->training > p->reference ? p->training : p->reference;
  return 0;
}

/* The options that would fit, appended to msg: for --recompute on or off and (a full fine-tune) LoRA or
 * not, the largest batch, halving from --batch-size, that fits (with the accumulation that keeps the
 * pairs per step when it divides). */
static void suggest(const pc_train_opts *o, int lora, const pc_pair *const *pairs, size_t n, int ref_phase,
                    const pc_memplan *base, char *msg, size_t msglen) {
  char e[512];
  int found = 0;
  for (int to_lora = 0; to_lora <= (lora ? 0 : 1); to_lora++)
    for (int rc = o->recompute; rc <= 1; rc++)
      for (int b = o->batch_size; b >= 1; b /= 2) {
        if (!to_lora && rc == o->recompute && b == o->batch_size) continue;  // the run as asked
        pc_train_opts t = *o;
        t.recompute = rc;
        t.batch_size = b;
        if (to_lora) t.lora_r = 16;
        pc_memplan p = *base;
        if (plan_once(&t, lora || to_lora, pairs, n, ref_phase, &p, e, sizeof e) != 0 || p.peak > base->dev.free_bytes)
          continue;
        char opt[160] = "";
        size_t k = 0;
        if (rc && !o->recompute) k += (size_t)snprintf(opt + k, sizeof opt - k, " --recompute");
        if (b != o->batch_size) {
          k += (size_t)snprintf(opt + k, sizeof opt - k, " --batch-size %d", b);
          if ((o->batch_size * o->grad_accum) % b == 0)
            k += (size_t)snprintf(opt + k, sizeof opt - k, " --grad-accum %d", o->batch_size * o->grad_accum / b);
        }
        if (to_lora) snprintf(opt + k, sizeof opt - k, " --lora-r 16");
        size_t u = strlen(msg);
        snprintf(msg + u, msglen - u, "%s%s (%zu bytes)", found ? ";" : " Options that fit:", opt, p.peak);
        found = 1;
        break;  // the largest batch that fits with these switches
      }
  if (!found) {
    size_t u = strlen(msg);
    snprintf(msg + u, msglen - u, " Not even --batch-size 1 with --recompute%s fits: a device with more memory is "
             "needed.", lora ? "" : " and LoRA");
  }
}

int pc_memplan_make(const pc_train_opts *o, int lora, pc_backend *be, const pc_pair *const *pairs, size_t n,
                    int ref_phase, pc_memplan *plan, char *msg, size_t msglen) {
  memset(plan, 0, sizeof *plan);
  msg[0] = 0;
  plan->dev_known = be->ops->mem_info(be, &plan->dev) == 0;
  if (plan_once(o, lora, pairs, n, ref_phase, plan, msg, msglen) != 0) return -1;
  if (!plan->dev_known || plan->peak <= plan->dev.free_bytes) return 0;
  char d[512];
  pc_memplan_describe(plan, d, sizeof d);
  snprintf(msg, msglen, "device '%s' has %zu bytes (%.1f MiB) free of %zu; this run needs %zu bytes (%.1f MiB): %s.",
           be->ops->name, plan->dev.free_bytes, MIB(plan->dev.free_bytes), plan->dev.total_bytes, plan->peak,
           MIB(plan->peak), d);
  suggest(o, lora, pairs, n, ref_phase, plan, msg, msglen);
  return 1;
}

void pc_memplan_describe(const pc_memplan *p, char *buf, size_t len) {
  snprintf(buf, len, "peak %.1f MiB in %s (weights %.1f, gradients %.1f, AdamW moments %.1f, activations %.1f for up "
           "to %zu tokens per micro-batch, bf16 copies %.1f, workspaces %.1f MiB)%s",
           MIB(p->peak), p->peak == p->training ? "training" : "the reference pass", MIB(p->model.params),
           MIB(p->model.grads), MIB(p->optimizer), MIB(p->model.activations), p->max_tokens, MIB(p->twins),
           MIB(p->workspace), p->dev_known ? "" : "; the device's free memory is unknown");
}

cJSON *pc_memplan_json(const pc_memplan *p) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "peak_bytes", (double)p->peak);
  cJSON_AddNumberToObject(j, "training_bytes", (double)p->training);
  cJSON_AddNumberToObject(j, "reference_bytes", (double)p->reference);
  cJSON_AddNumberToObject(j, "weights_bytes", (double)p->model.params);
  cJSON_AddNumberToObject(j, "gradients_bytes", (double)p->model.grads);
  cJSON_AddNumberToObject(j, "optimizer_bytes", (double)p->optimizer);
  cJSON_AddNumberToObject(j, "activations_bytes", (double)p->model.activations);
  cJSON_AddNumberToObject(j, "weight_copies_bytes", (double)p->twins);
  cJSON_AddNumberToObject(j, "workspace_bytes", (double)p->workspace);
  cJSON_AddNumberToObject(j, "max_tokens_per_micro_batch", (double)p->max_tokens);
  if (p->dev_known) {
    cJSON_AddNumberToObject(j, "device_free_bytes", (double)p->dev.free_bytes);
    cJSON_AddNumberToObject(j, "device_total_bytes", (double)p->dev.total_bytes);
  }
  return j;
}
