/* trainer/train/memplan.h: the run's memory, planned once before anything is allocated: the largest
 * micro-batch the data can make, what the model, its gradients, AdamW's moments, the activations and
 * the backend's own buffers take in each phase of the run (the reference log-probs, then training),
 * the peak, and whether the device has it. A run that cannot fit is refused before it starts, with
 * the bytes it needs and the options that would fit (a smaller batch, --recompute, LoRA).
 *
 * The counts come from the model code itself (pc_model_plan: the same load and the same activation
 * layout as the run, with nothing allocated) and from the backend (mem_info: free memory, its
 * workspaces, its bf16 copies), so a change to either is planned for without touching this file. */
#ifndef PC_MEMPLAN_H
#define PC_MEMPLAN_H
#include <cjson/cJSON.h>
#include <stddef.h>

#include "backend/backend.h"
#include "model/model.h"
#include "text/data.h"
#include "train/trainer.h"

typedef struct {
  size_t max_tokens, max_scored;  /* the largest micro-batch: packed rows, scored rows */
  pc_model_bytes model;           /* the trainable model's counts (training phase) */
  size_t twins;                   /* the backend's copies of the weight matrices (bf16) */
  size_t optimizer;               /* AdamW's two moments */
  size_t workspace;               /* the backend's own buffers, and its bf16 copy of a matmul input */
  size_t reference;               /* the reference phase's bytes (0 when no reference is computed) */
  size_t training;                /* the training phase's bytes */
  size_t peak;                    /* the larger of the two */
  pc_mem_info dev;                /* the device as the backend reported it */
  int dev_known;                  /* mem_info answered */
} pc_memplan;

/* The model options of a run (setup_model's, the plan's: one place). */
pc_model_opts pc_train_model_opts(const pc_train_opts *o, int lora);

/* Plans the run of options o (lora as the trainer decided) on be over pairs[0..n) (training and
 * evaluation pairs: every micro-batch is made of them); ref_phase: whether the reference model runs on
 * the device first. 0: it fits (or the device cannot say); 1: it does not, and msg says how much it
 * needs, what the device has and which options would fit; -1: an error (msg). */
int pc_memplan_make(const pc_train_opts *o, int lora, pc_backend *be, const pc_pair *const *pairs, size_t n,
                    int ref_phase, pc_memplan *plan, char *msg, size_t msglen);

/* One line for the log: the peak and its parts. */
void pc_memplan_describe(const pc_memplan *p, char *buf, size_t len);
/* run.json's "memory". */
cJSON *pc_memplan_json(const pc_memplan *p);

#endif
