/* trainer/train/reference.h: reference log-probs, the other half of every DPO loss: computed by the one
 * model (model/model.h) loaded frozen, exactly as `prefcap-dpo score` computes them, or read back from
 * a file that `score` wrote (--ref-logps), or from the reference cache (train/refcache.h) that an
 * earlier run filled. Also the pair -> two packed sequences step that scoring, the reference and
 * training share, and the line format of `score`'s output.
 *
 * Nothing here prints except through the FILE given (a progress display, the cache's warnings);
 * errors go to err. */
#ifndef PC_REFERENCE_H
#define PC_REFERENCE_H
#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "backend/backend.h"
#include "model/model.h"
#include "text/data.h"
#include "train/refcache.h"

/* A pair as two sequences of one packed batch: chosen, then rejected sharing the chosen one's rows
 * for their common prefix (the prompt, at least). s: 2 slots. */
void pc_pair_seqs(const pc_pair *p, pc_model_seq *s);

/* One line of `score`'s output: the sums in full double precision (%.17g: read back bit for bit). */
void pc_ref_write_line(FILE *f, double chosen, double rejected, int chosen_tokens, int rejected_tokens, int line);

/* Where reference sums come from: the model in model_dir, frozen and without adapter (TRL's
 * precompute_ref_log_probs), loaded only when the cache lacks something. */
typedef struct {
  const char *model_dir;
  pc_backend *be;
  pc_refcache *cache;  /* NULL: no cache (pc_ref_run opens and closes it) */
  int batch;           /* sequences per forward pass (a sequence that shares a prefix travels with the
                          one before it, so a batch may hold one more) */
  FILE *progress;      /* the progress display's stream and the cache's warnings, or NULL */
  size_t computed;     /* out: sequences run through the model (the misses and the group they are in) */
} pc_ref_ctx;

/* Reference sums (and scored-token counts, cnt may be NULL) of seqs[0..n), the batch API: each is
 * looked up in the cache, the missing ones are computed in batches of c->batch sequences and stored
 * in it (pc_refcache_commit is the caller's, once, after its last call). A sequence with
 * shared_prefix > 0 is computed together with the one before it. On error *bad (when not NULL) is the
 * index of the first sequence of the failed batch (-1 when no sequence is at fault). */
int pc_ref_seqs(pc_ref_ctx *c, const pc_model_seq *seqs, size_t n, double *sum, int *cnt, long *bad, char *err,
                size_t errlen);

/* The reference step of a run, for any sequences (pairs through pc_pair_seqs, KTO examples and their
 * KL sequences): pc_ref_seqs through the cache under cache_dir (NULL: no cache), opened for the model
 * c->model_dir with the tokenization dopt on c->be, committed once at the end (c->cache is set and
 * closed here). Says on c->progress how many came from the cache. *info (when info is not NULL)
 * receives run.json's "ref_cache" (the caller's to free): {"enabled", "dir", "model_key",
 * "from_cache", "computed", "damaged", "stored", "write_failed"}, or {"enabled": false, "why"}.
 * n = 0 computes and opens nothing. */
int pc_ref_run(const char *cache_dir, const pc_data_opts *dopt, pc_ref_ctx *c, const pc_model_seq *seqs, size_t n,
               double *sum, long *bad, cJSON **info, char *err, size_t errlen);

/* The cache directory when none is given: $XDG_CACHE_HOME/prefcap, else $HOME/.cache/prefcap. -1 when
 * neither variable is set (or the path does not fit). */
int pc_ref_cache_default_dir(char *buf, size_t n);

/* Reference sums of pairs[0..n) read from `score` output at path, matched by data line (the file may
 * hold more lines). data_path names the data file in messages. */
int pc_ref_read(const char *path, const char *data_path, const pc_pair *const *pairs, size_t n, double *out, char *err,
                size_t errlen);

#endif
