/* trainer/train/trainer.h: the DPO training run behind `prefcap-dpo train`: setup (data, backend,
 * reference log-probs, the model, the optimizer, the manifest), one optimizer step at a time, and the
 * finish (final evaluation, the adapter or model, the report). docs/training.md describes the run and
 * docs/architecture.md the path of a batch through it.
 *
 * The train/ folder: loss.c (the preference losses), optim.c (AdamW, clipping, schedules),
 * reference.c (reference log-probs), checkpoint.c, manifest.c (run.json), report.c (report.html) and
 * this, trainer.c, which drives them.
 *
 * The run is a pure function of its inputs (model, data, options, thread count): the data order comes
 * from the seed and the step number alone, and every reduction on the CPU has a fixed order. That is
 * what lets a checkpoint resume to the same result as an uninterrupted run, and `--from-manifest`
 * rebuild a run bit for bit. One more input when the reference cache is on (train/refcache.h): a
 * reference sum found there is the one the run that stored it computed, whose batch packing and thread
 * count may have rounded its last float32 bits differently (~1e-7 relative); --no-ref-cache excludes it.
 *
 * This is the command's engine: it reports progress and failures on stderr, prefixed with the
 * command's name, and returns the command's exit status. */
#ifndef PC_TRAINER_H
#define PC_TRAINER_H
#include <cjson/cJSON.h>

/* The options of a run (train/options.c's table names, documents and parses them). */
typedef struct {
  char model[4096], data[4096], out[4096], eval_data[4096], ref_logps[4096], init_adapter[4096];
  char loss[64], lora_targets[512], scheduler[16], truncation[16], chat_template[16], device[16];
  double beta, label_smoothing, simpo_gamma, lora_alpha, lr, weight_decay, max_grad_norm, epochs, eval_fraction;
  int lora_r, warmup_steps, batch_size, grad_accum, max_steps, no_shuffle, eval_steps, max_length, save_steps;
  int merge, threads, skip_bad;
  int recompute;  /* --recompute: not in the manifest's options (it changes memory, not results) */
  long long seed;
  char ref_cache[4096];  /* the reference cache's directory (not in the manifest: a place, not an input) */
  int no_ref_cache;
  // ---- KTO, loss mixtures and signal weights (docs/training.md)
  char loss_weights[128];
  double desirable_weight, undesirable_weight;
  int pair_weights;
  char dump_tokens[4096], dump_grads[4096], dump_ref[4096];  /* test hooks; not part of the manifest */
  struct pc_comm *comm;  /* data parallel (trainer/dist/comm.h): borrowed; NULL for one process */
} pc_train_opts;

typedef struct pc_trainer pc_trainer;

/* Everything before the first step. cmdline is recorded in a new manifest; resume: the run.json of
 * the run being resumed (taken over by the trainer), or NULL. 0, or the exit status (1) on failure
 * (reported); *out is set either way (free it with pc_trainer_free). */
int pc_train_setup(const pc_train_opts *o, const char *cmdline, cJSON *resume, pc_trainer **out);
/* One optimizer step: 0 when more remain, 1 when the run's steps are done or a stop was requested,
 * -1 on failure (reported). */
int pc_train_step(pc_trainer *t);
/* After the last step: the final evaluation and the outputs, or the checkpoint of an interrupted run.
 * Returns the exit status: 0, 1, or 128 + the signal that stopped the run. */
int pc_train_finish(pc_trainer *t);
/* Marks a failed run as such in run.json (after a failed setup or step), then frees. NULL is a no-op. */
void pc_trainer_free(pc_trainer *t);

/* Asks the run to stop after the current step and checkpoint (async-signal-safe: call it from a
 * SIGINT/SIGTERM handler). */
void pc_train_request_stop(int sig);

#endif
