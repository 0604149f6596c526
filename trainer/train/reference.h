/* trainer/train/reference.h: reference log-probs, the other half of every DPO loss: computed by the one
 * model (model/model.h) loaded frozen, exactly as `prefcap-dpo score` computes them, or read back from
 * a file that `score` wrote (--ref-logps). Also the pair -> two packed sequences step that scoring,
 * the reference and training share, and the line format of `score`'s output.
 *
 * Nothing here prints except through the FILE given (a progress display); errors go to err. */
#ifndef PC_REFERENCE_H
#define PC_REFERENCE_H
#include <stddef.h>
#include <stdio.h>

#include "backend/backend.h"
#include "model/model.h"
#include "text/data.h"

/* A pair as two sequences of one packed batch: chosen, then rejected sharing the chosen one's rows
 * for their common prefix (the prompt, at least). s: 2 slots. */
void pc_pair_seqs(const pc_pair *p, pc_model_seq *s);

/* One line of `score`'s output: the sums in full double precision (%.17g: read back bit for bit). */
void pc_ref_write_line(FILE *f, double chosen, double rejected, int chosen_tokens, int rejected_tokens, int line);

/* Reference sums of pairs[0..n) under the model in model_dir, frozen and without adapter (TRL's
 * precompute_ref_log_probs): out[2i] chosen, out[2i+1] rejected; batch pairs per forward pass, as
 * `score --batch-size` packs them. progress: a stream for the progress display, or NULL. On error
 * *bad (when not NULL) is the index of the first pair of the failed batch (-1 when no pair is at
 * fault). */
int pc_ref_compute(const char *model_dir, pc_backend *be, const pc_pair *const *pairs, size_t n, int batch,
                   double *out, FILE *progress, long *bad, char *err, size_t errlen);

/* Reference sums of pairs[0..n) read from `score` output at path, matched by data line (the file may
 * hold more lines). data_path names the data file in messages. */
int pc_ref_read(const char *path, const char *data_path, const pc_pair *const *pairs, size_t n, double *out, char *err,
                size_t errlen);

#endif
