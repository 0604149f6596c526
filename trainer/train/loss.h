/* trainer/train/loss.h: the preference losses (TRL's dpo_loss: sigmoid, ipo, hinge, robust; CPO's simpo)
 * for one pair, with their gradients with respect to the summed log-probs, and the running means that
 * become the metrics (TRL's names); the list a run's --loss names (TRL's loss_type list with
 * loss_weights: pair losses, TRL's sft term, or KTO alone, whose loss is in train/kto.h).
 * docs/training.md gives the formulas. */
#ifndef PC_LOSS_H
#define PC_LOSS_H
#include <stddef.h>
#include <stdio.h>

typedef enum { PC_LOSS_SIGMOID, PC_LOSS_IPO, PC_LOSS_HINGE, PC_LOSS_ROBUST, PC_LOSS_SIMPO, PC_LOSS_KTO,
               PC_LOSS_SFT } pc_loss_kind;

/* -1 when the name is unknown. */
int pc_loss_from_name(const char *name);

/* A run's loss: --loss "sigmoid,sft" with --loss-weights "1,0.5" ("" = every weight 1): the loss is
 * sum_k weight[k] * loss_k. Pair losses combine with each other and with sft (which needs one: it is a
 * term added to a preference loss); kto stands alone (its examples are not pairs). A name appears once. */
#define PC_LOSS_MAX_TERMS 6
typedef struct {
  int n;
  pc_loss_kind kind[PC_LOSS_MAX_TERMS];
  double weight[PC_LOSS_MAX_TERMS];
} pc_loss_mix;
/* 0, or -1 with the problem in err (naming --loss or --loss-weights). */
int pc_loss_mix_parse(const char *loss, const char *weights, pc_loss_mix *m, char *err, size_t errlen);
/* The index of kind's term, or -1. */
int pc_loss_mix_find(const pc_loss_mix *m, pc_loss_kind kind);
/* The first pair loss (whose rewards the metrics report), or -1 (kto). */
int pc_loss_mix_primary(const pc_loss_mix *m);
/* 1 when some term compares with the reference model (every one but simpo and sft). */
int pc_loss_mix_needs_ref(const pc_loss_mix *m);

typedef struct {
  pc_loss_kind kind;
  double beta, label_smoothing, simpo_gamma;
} pc_loss_params;

typedef struct {
  double loss, reward_chosen, reward_rejected, accuracy;
  double logp_chosen, logp_rejected;   /* policy log-probs (length-normalised for ipo/simpo) */
  double dchosen, drejected;           /* dLoss/d(sum of log-probs) of chosen and rejected */
} pc_pair_loss;

/* One pair. policy_*: summed policy log-probs; ref_*: the reference's; n_*: scored tokens. */
pc_pair_loss pc_loss_pair(const pc_loss_params *lp, double policy_chosen, double policy_rejected, double ref_chosen,
                          double ref_rejected, int n_chosen, int n_rejected);

/* Sums over pairs, for the means the metrics report. */
typedef struct {
  double loss, reward_chosen, reward_rejected, accuracy, logp_chosen, logp_rejected;
  size_t n;
} pc_loss_stats;

void pc_loss_stats_add(pc_loss_stats *s, const pc_pair_loss *p);
/* The means as JSON members with TRL's names, each prefixed by pre ("" or "eval_"). */
void pc_loss_stats_print(FILE *f, const pc_loss_stats *s, const char *pre);

#endif
