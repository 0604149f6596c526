/* trainer/train/checkpoint.h: a run's checkpoints (OUT/checkpoint-K: trainable.safetensors,
 * optimizer.safetensors, optimizer_sq.safetensors, the adapter for LoRA, state.json), written aside and
 * renamed into place so that one appears whole or not at all; reading the newest back for --resume; and
 * the tensor dumps the tests read (--dump-grads). Errors go to err; nothing prints. */
#ifndef PC_CHECKPOINT_H
#define PC_CHECKPOINT_H
#include <stddef.h>

#include "model/model.h"
#include "train/optim.h"

/* Which tensors of the trainable parameters to write. */
typedef enum { PC_DUMP_PARAMS, PC_DUMP_EXP_AVG, PC_DUMP_EXP_AVG_SQ, PC_DUMP_GRADS } pc_dump_what;

/* The trainable parameters' values (or optimizer state, or gradients) as one F32 safetensors file. */
int pc_dump_tensors(pc_model *m, const pc_adamw *opt, const char *path, pc_dump_what what, char *err, size_t errlen);

/* OUT/checkpoint-step. lora: also the PEFT adapter (base_model names the model in its config). */
int pc_checkpoint_save(const char *out, int step, int total_steps, pc_model *m, const pc_adamw *opt, int lora,
                       const char *base_model, char *err, size_t errlen);
/* The folder OUT/checkpoint-step is written in before it is sealed. */
void pc_checkpoint_tmpdir(char *buf, size_t n, const char *out, int step);
/* Completes the checkpoint being written in pc_checkpoint_tmpdir (whose optimizer state is there
 * already: pc_checkpoint_save's, or a data-parallel run's shards): the trainable parameters, the
 * adapter, state.json, then the rename into place. */
int pc_checkpoint_seal(const char *out, int step, int total_steps, pc_model *m, pc_backend *be, int lora,
                       const char *base_model, char *err, size_t errlen);
/* The newest checkpoint-K under out: K, or 0 when there is none. */
int pc_checkpoint_latest(const char *out);
/* Loads OUT/checkpoint-step into the model's parameters and the optimizer's state (a data-parallel
 * run's sharded state is dist/zero.h's to read). */
int pc_checkpoint_load(const char *out, int step, pc_model *m, pc_adamw *opt, char *err, size_t errlen);
/* Keeps the lines of metrics.jsonl up to `step` (what the checkpoint had seen). */
int pc_metrics_truncate(const char *path, int step);

#endif
