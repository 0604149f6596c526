/* trainer/dist/zero.h: ZeRO stage 1 (Rajbhandari et al., 2020) for data-parallel training: the
 * optimizer state is split across the ranks instead of replicated.
 *
 * The trainable parameters, in the model's parameter order, form one flat vector of P elements,
 * padded to N shards of S = ceil(P / N) elements; rank r owns elements [r S, min((r + 1) S, P)).
 * After each rank's forward and backward passes over its part of the batch:
 *   1. the gradients are packed flat and reduce-scattered: rank r receives the sum of its shard;
 *   2. the global gradient norm is the all-reduced sum of the shards' squares (clipping scales the
 *      shard alone);
 *   3. each rank runs AdamW (the backend's op, as the single process does) on its shard of the
 *      parameters with its shard of exp_avg and exp_avg_sq: each rank holds 2 S floats of state, 1/N of
 *      the single process's 2 P;
 *   4. the updated shards are all-gathered into every replica's parameters.
 *
 * Checkpoints: rank r writes optimizer-shard-RRRRR-of-NNNNN.safetensors (its exp_avg and exp_avg_sq as
 * flat 1-D tensors) into the checkpoint being written; rank 0 writes zero_index.json (the world size,
 * the shards' ranges and the flat layout: each parameter's name, offset and size) and the rest of the
 * checkpoint. Loading rebuilds the flat state from all the shards (or from a single process's
 * optimizer.safetensors) and takes this rank's slice, so a run resumes with any N, and a single
 * process resumes a sharded checkpoint (pc_zero_load_full).
 *
 * Buffers are backend memory, moved between parameters and the flat vectors by the backend's copy; the
 * data communicator dc works on them directly: pc_zero_new's c itself (mpi/tcp) when the backend's
 * memory is host memory (the CPU backend, the CUDA emulation), NCCL over GPU memory otherwise; the
 * scalars (the norm, agreements) and the checkpoints' host buffers go over c. Errors go to err;
 * nothing prints. */
#ifndef PC_DIST_ZERO_H
#define PC_DIST_ZERO_H
#include <stddef.h>

#include "backend/backend.h"
#include "dist/comm.h"
#include "model/model.h"
#include "train/optim.h"

typedef struct pc_zero pc_zero;

/* The layout of the model's trainable parameters over c's ranks, this rank's state zeroed; AdamW's
 * constants are the single process's (opt_defaults: beta1, beta2, eps, weight decay from pc_adamw_init). */
int pc_zero_new(pc_comm *c, pc_comm *dc, pc_model *m, pc_backend *be, const pc_adamw *opt_defaults, pc_zero **out,
                char *err, size_t errlen);
void pc_zero_free(pc_zero *z);

/* Elements of the flat vector (P) and of this rank's shard (its own range, unpadded). */
size_t pc_zero_flat_size(const pc_zero *z);
size_t pc_zero_shard_size(const pc_zero *z);

/* Steps 1 and 2: gradients reduce-scattered, *norm the global L2 norm. */
int pc_zero_reduce_grads(pc_zero *z, double *norm, char *err, size_t errlen);
/* clip_grad_norm_ on the shard (as pc_clip_grads). */
void pc_zero_clip(pc_zero *z, double norm, double max_norm);
/* Steps 3 and 4: AdamW step t (1-based) at rate lr on the shard, then the parameters all-gathered. */
int pc_zero_step(pc_zero *z, int t, double lr, char *err, size_t errlen);

/* Writes this rank's shard (and on rank 0 the index) into dir, the checkpoint being written. Every
 * rank calls it; it returns 0 on every rank only if every rank succeeded. */
int pc_zero_save(pc_zero *z, const char *dir, char *err, size_t errlen);
/* The whole checkpoint OUT/checkpoint-step of a data-parallel run: the shards, and from rank 0 the
 * parameters, the adapter (lora) and state.json, sealed by train/checkpoint.c's rename. Every rank
 * calls it and gets the same result. */
int pc_zero_checkpoint(pc_zero *z, const char *out, int step, int total_steps, int lora, const char *base_model,
                       char *err, size_t errlen);
/* This rank's state from checkpoint dir: sharded (any N) or a single process's. */
int pc_zero_load(pc_zero *z, const char *dir, char *err, size_t errlen);
/* dir holds a sharded optimizer state (zero_index.json). */
int pc_zero_is_sharded(const char *dir);
/* A single process's optimizer state (exp_avg, exp_avg_sq per parameter) from a sharded checkpoint. */
int pc_zero_load_full(const char *dir, pc_model *m, pc_adamw *opt, char *err, size_t errlen);

#endif
