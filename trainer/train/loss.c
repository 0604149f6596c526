/* trainer/train/loss.c: see loss.h. */
#include "train/loss.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[] = {"sigmoid", "ipo", "hinge", "robust", "simpo", "kto", "sft"};

int pc_loss_from_name(const char *s) {
  for (int i = 0; i < (int)(sizeof NAMES / sizeof *NAMES); i++)
    if (!strcmp(s, NAMES[i])) return i;
  return -1;
}

int pc_loss_mix_parse(const char *loss, const char *weights, pc_loss_mix *m, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  char buf[256];
  snprintf(buf, sizeof buf, "%s", loss);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int k = pc_loss_from_name(tok);
    if (k < 0) {
      snprintf(err, errlen, "--loss '%s' is unknown (sigmoid, ipo, hinge, robust, simpo, kto, or a list of pair "
               "losses with sft, as 'sigmoid,sft')", tok);
      return -1;
    }
    if (pc_loss_mix_find(m, (pc_loss_kind)k) >= 0) { snprintf(err, errlen, "--loss names '%s' twice", tok); return -1; }
    if (m->n == PC_LOSS_MAX_TERMS) { snprintf(err, errlen, "--loss: at most %d terms", PC_LOSS_MAX_TERMS); return -1; }
    m->kind[m->n] = (pc_loss_kind)k;
    m->weight[m->n++] = 1;
  }
  if (m->n == 0) { snprintf(err, errlen, "--loss is empty"); return -1; }
  if (pc_loss_mix_find(m, PC_LOSS_KTO) >= 0 && m->n > 1) {
    snprintf(err, errlen, "--loss kto stands alone (its examples are unpaired; the other losses need pairs)");
    return -1;
  }
  if (pc_loss_mix_find(m, PC_LOSS_SFT) >= 0 && pc_loss_mix_primary(m) < 0) {
    snprintf(err, errlen, "--loss sft is a term added to a pair loss: give one with it, as 'sigmoid,sft'");
    return -1;
  }
  if (weights && *weights) {
    snprintf(buf, sizeof buf, "%s", weights);
    int i = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save), i++) {
      char *end;
      errno = 0;
      double w = strtod(tok, &end);
      if (errno || *end || end == tok || !isfinite(w) || w < 0) {
        snprintf(err, errlen, "--loss-weights: '%s' is not a non-negative number", tok);
        return -1;
      }
      if (i >= m->n) { snprintf(err, errlen, "--loss-weights gives more weights than the %d term(s) of --loss", m->n); return -1; }
      m->weight[i] = w;
    }
    if (i != m->n) {
      snprintf(err, errlen, "--loss-weights gives %d weight(s) for the %d term(s) of --loss", i, m->n);
      return -1;
    }
  }
  return 0;
}

int pc_loss_mix_find(const pc_loss_mix *m, pc_loss_kind kind) {
  for (int i = 0; i < m->n; i++)
    if (m->kind[i] == kind) return i;
  return -1;
}

int pc_loss_mix_primary(const pc_loss_mix *m) {
  for (int i = 0; i < m->n; i++)
    if (m->kind[i] != PC_LOSS_SFT && m->kind[i] != PC_LOSS_KTO) return i;
  return -1;
}

int pc_loss_mix_needs_ref(const pc_loss_mix *m) {
  for (int i = 0; i < m->n; i++)
    if (m->kind[i] != PC_LOSS_SIMPO && m->kind[i] != PC_LOSS_SFT) return 1;
  return 0;
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
