/* trainer/train/kto.h: KTO (Ethayarajh et al. 2024) as TRL's KTOTrainer computes it, for the unpaired
 * examples of `prefcap export --format trl-kto` (text/data.h reads them: the example in a pc_pair's
 * chosen side, label 1 desirable / 0 undesirable):
 *
 *   - the KL sequences of a micro-batch: example i's prompt followed by the completion of example
 *     (i - 1 mod B) of the same micro-batch (TRL's _get_kl_dataset, a +1 shift);
 *   - kl = max(0, mean_i(policy - reference log-prob sum of KL sequence i)), without gradient;
 *   - per example, with r = policy - reference log-prob sum of its completion:
 *       desirable   desirable_weight   * (1 - sigmoid(beta * (r - kl)))
 *       undesirable undesirable_weight * (1 - sigmoid(beta * (kl - r)))
 *     and the micro-batch's loss is their mean (with --pair-weights: sum w_i l_i / sum w_i);
 *   - metrics under TRL's names: loss, kl, rewards/chosen, rewards/rejected (beta * r over each class),
 *     rewards/margins, logps/chosen, logps/rejected, count/chosen, count/rejected.
 *
 * docs/training.md states the formulas and where this departs from TRL. Nothing here prints. */
#ifndef PC_KTO_H
#define PC_KTO_H
#include <stddef.h>
#include <stdio.h>

#include "text/data.h"

typedef struct {
  double beta, desirable_weight, undesirable_weight;
} pc_kto_params;

/* Sums over a step's (or an evaluation's) micro-batches, for the logged means. Index [1] is the
 * desirable ("chosen") class, [0] the undesirable ("rejected") one. */
typedef struct {
  double loss;          /* sum over micro-batches of (examples x the micro-batch's loss) */
  double kl;            /* sum over micro-batches of their kl */
  size_t batches, n;    /* micro-batches, examples */
  double reward[2], logp[2];
  size_t count[2];
} pc_kto_stats;

/* The micro-batch's kl from the sum over all its nb KL sequences of (policy - reference) log-prob
 * sums: max(0, sum / nb). With data parallel ranks, each sums its slice (pc_kto_kl_part) and the parts
 * are all-reduced first, so every rank gets one process's kl. */
double pc_kto_kl_part(int n, const double *pol_kl, const double *ref_kl);
double pc_kto_kl(double sum, int nb);

/* The examples [from, from + n) of a micro-batch of nb: pol/ref their policy/reference log-prob sums,
 * label[i] in {0, 1}, w their weights (NULL: unweighted) and wsum the whole micro-batch's sum of
 * weights (nb without weights), kl the micro-batch's (pc_kto_kl). Writes dsum[i] = d(micro-batch
 * loss)/d pol[i] (kl is a constant) and adds the examples to st (loss, rewards, counts; the caller adds
 * the micro-batch's kl and count once). Returns their part of the micro-batch's loss: the parts of all
 * slices add up to the mean (with weights: sum w l / sum w). */
double pc_kto_examples(const pc_kto_params *p, int n, int nb, double kl, double wsum, const double *pol,
                       const double *ref, const signed char *label, const float *w, double *dsum, pc_kto_stats *st);

/* The means as JSON members with TRL's names, each prefixed by pre ("" or "eval_"); a class with no
 * example in the window has no rewards/logps members (TRL logs none), and then no margin. */
void pc_kto_stats_print(FILE *f, const pc_kto_stats *s, const char *pre);

/* The KL sequences of examples [from, to) of the micro-batch ex[0..n): out[i - from] = ex[i]'s prompt +
 * ex[(i-1+n) % n]'s completion, cut to max_length (0: no limit) as the examples are (PC_TRUNC_*).
 * Allocates out[j].ids; free with pc_kto_kl_free(out, to - from). 0, or -1 when out of memory. */
int pc_kto_kl_seqs(const pc_pair *const *ex, int n, int from, int to, int max_length, int truncation, pc_seq *out);
void pc_kto_kl_free(pc_seq *s, int n);

/* TRL's imbalance advice: with nd desirable and nu undesirable examples, the weighted ratio
 * (nd * desirable_weight) / (nu * undesirable_weight) should lie in [1, 4/3] (TRL's bounds, rounded to
 * 2 decimals as TRL rounds them). Writes the advice (TRL's recommended ranges) or, when one class is
 * empty, says so; returns 1 when msg holds a warning, 0 when the balance is fine. */
int pc_kto_balance_advice(size_t nd, size_t nu, double desirable_weight, double undesirable_weight, char *msg,
                          size_t msglen);

#endif
