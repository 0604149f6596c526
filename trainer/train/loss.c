/* trainer/train/loss.c: see loss.h. */
#include "train/loss.h"

#include <math.h>
#include <string.h>

int pc_loss_from_name(const char *s) {
  static const char *names[] = {"sigmoid", "ipo", "hinge", "robust", "simpo"};
  for (int i = 0; i < 5; i++)
    if (!strcmp(s, names[i])) return i;
  return -1;
}

/* log(sigmoid(x)) and sigmoid(x) without overflow on either side */
static double log_sigmoid(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

pc_pair_loss pc_loss_pair(const pc_loss_params *lp, double pc, double pr, double rc, double rr, int nc, int nr) {
  pc_pair_loss r;
  pc_loss_kind k = lp->kind;
  double wc = 1, wr = 1;
  if (k == PC_LOSS_IPO || k == PC_LOSS_SIMPO) {  // length-normalised log-probs
    wc = 1.0 / (nc > 0 ? nc : 1);
    wr = 1.0 / (nr > 0 ? nr : 1);
  }
  pc *= wc, pr *= wr, rc *= wc, rr *= wr;
  double b = lp->beta, e = lp->label_smoothing;
  // the logit z: the policy's margin over the reference's (SimPO: over gamma / beta, as TRL's CPO)
  double z = k == PC_LOSS_SIMPO ? (pc - pr) - lp->simpo_gamma / b : (pc - pr) - (rc - rr), dz;
  switch (k) {
    case PC_LOSS_IPO:
      r.loss = (z - 1 / (2 * b)) * (z - 1 / (2 * b));
      dz = 2 * (z - 1 / (2 * b));
      break;
    case PC_LOSS_HINGE:
      r.loss = 1 - b * z > 0 ? 1 - b * z : 0;
      dz = 1 - b * z > 0 ? -b : 0;
      break;
    case PC_LOSS_ROBUST:
      r.loss = (-log_sigmoid(b * z) * (1 - e) + log_sigmoid(-b * z) * e) / (1 - 2 * e);
      dz = (-(1 - e) * b * sigmoid(-b * z) - e * b * sigmoid(b * z)) / (1 - 2 * e);
      break;
    default:  // sigmoid, simpo
      r.loss = -log_sigmoid(b * z) * (1 - e) - log_sigmoid(-b * z) * e;
      dz = -(1 - e) * b * sigmoid(-b * z) + e * b * sigmoid(b * z);
      break;
  }
  r.reward_chosen = k == PC_LOSS_SIMPO ? b * pc : b * (pc - rc);
  r.reward_rejected = k == PC_LOSS_SIMPO ? b * pr : b * (pr - rr);
  r.accuracy = r.reward_chosen > r.reward_rejected;
  r.logp_chosen = pc;
  r.logp_rejected = pr;
  r.dchosen = dz * wc;
  r.drejected = -dz * wr;
  return r;
}

void pc_loss_stats_add(pc_loss_stats *s, const pc_pair_loss *p) {
  s->loss += p->loss;
  s->reward_chosen += p->reward_chosen;
  s->reward_rejected += p->reward_rejected;
  s->accuracy += p->accuracy;
  s->logp_chosen += p->logp_chosen;
  s->logp_rejected += p->logp_rejected;
  s->n++;
}

void pc_loss_stats_print(FILE *f, const pc_loss_stats *s, const char *pre) {
  double n = s->n ? (double)s->n : 1;
  fprintf(f, "\"%sloss\": %.17g, \"%srewards/chosen\": %.17g, \"%srewards/rejected\": %.17g, "
          "\"%srewards/accuracies\": %.17g, \"%srewards/margins\": %.17g, \"%slogps/chosen\": %.17g, "
          "\"%slogps/rejected\": %.17g", pre, s->loss / n, pre, s->reward_chosen / n, pre, s->reward_rejected / n, pre,
          s->accuracy / n, pre, (s->reward_chosen - s->reward_rejected) / n, pre, s->logp_chosen / n, pre,
          s->logp_rejected / n);
}
