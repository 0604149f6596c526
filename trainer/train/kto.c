/* trainer/train/kto.c: see kto.h. */
#include "train/kto.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

// kl: TRL's (policy_KL_logps - reference_KL_logps).mean().detach().clamp(min=0)
double pc_kto_kl_part(int n, const double *pol_kl, const double *ref_kl) {
  double s = 0;
  for (int i = 0; i < n; i++) s += pol_kl[i] - ref_kl[i];
  return s;
}

double pc_kto_kl(double sum, int nb) {
  double kl = nb ? sum / nb : 0;
  return kl > 0 ? kl : 0;
}

double pc_kto_examples(const pc_kto_params *p, int n, int nb, double kl, double wsum, const double *pol,
                       const double *ref, const signed char *label, const float *w, double *dsum, pc_kto_stats *st) {
  double b = p->beta, loss = 0;
  for (int i = 0; i < n; i++) {
    double r = pol[i] - ref[i], l, d;
    int c = label[i] ? 1 : 0;
    if (c) {  // d/dr of 1 - sigmoid(b (r - kl)) is -b s (1 - s)
      double s = sigmoid(b * (r - kl));
      l = p->desirable_weight * (1 - s);
      d = -p->desirable_weight * b * s * (1 - s);
    } else {  // d/dr of 1 - sigmoid(b (kl - r)) is +b s (1 - s)
      double s = sigmoid(b * (kl - r));
      l = p->undesirable_weight * (1 - s);
      d = p->undesirable_weight * b * s * (1 - s);
    }
    double share = wsum > 0 ? (w ? w[i] : 1) / wsum : 0;  // mean, or sum w l / sum w
    loss += share * l;
    dsum[i] = share * d;
    st->reward[c] += b * r;
    st->logp[c] += pol[i];
    st->count[c]++;
  }
  st->loss += loss * nb;  // the micro-batch's mean times its size, summed over the slices
  st->n += (size_t)n;
  return loss;
}

void pc_kto_stats_print(FILE *f, const pc_kto_stats *s, const char *pre) {
  fprintf(f, "\"%sloss\": %.17g, \"%skl\": %.17g", pre, s->n ? s->loss / (double)s->n : 0, pre,
          s->batches ? s->kl / (double)s->batches : 0);
  static const char *const cls[2] = {"rejected", "chosen"};
  for (int c = 1; c >= 0; c--)
    if (s->count[c])
      fprintf(f, ", \"%srewards/%s\": %.17g, \"%slogps/%s\": %.17g", pre, cls[c], s->reward[c] / (double)s->count[c], pre,
              cls[c], s->logp[c] / (double)s->count[c]);
  if (s->count[0] && s->count[1])
    fprintf(f, ", \"%srewards/margins\": %.17g", pre,
            s->reward[1] / (double)s->count[1] - s->reward[0] / (double)s->count[0]);
  fprintf(f, ", \"%scount/chosen\": %zu, \"%scount/rejected\": %zu", pre, s->count[1], pre, s->count[0]);
}

int pc_kto_kl_seqs(const pc_pair *const *ex, int n, int from, int to, int max_length, int truncation, pc_seq *out) {
  memset(out, 0, sizeof *out * (size_t)(to - from));
  for (int i = from; i < to; i++) {
    const pc_seq *a = &ex[i]->chosen, *b = &ex[(i - 1 + n) % n]->chosen;
    int pl = a->prompt_len, cl = b->n - b->prompt_len;
    pc_seq *o = &out[i - from];
    o->ids = malloc(sizeof(int32_t) * (size_t)(pl + cl > 0 ? pl + cl : 1));
    if (!o->ids) { pc_kto_kl_free(out, to - from); return -1; }
    memcpy(o->ids, a->ids, sizeof(int32_t) * (size_t)pl);
    memcpy(o->ids + pl, b->ids + b->prompt_len, sizeof(int32_t) * (size_t)cl);
    o->n = pl + cl;
    o->prompt_len = pl;
    pc_seq_truncate(o, max_length, truncation);
  }
  return 0;
}

void pc_kto_kl_free(pc_seq *s, int n) {
  for (int i = 0; i < n; i++) {
    free(s[i].ids);
    s[i].ids = NULL;
  }
}

static double round2(double x) { return round(x * 100) / 100; }

int pc_kto_balance_advice(size_t nd, size_t nu, double wd, double wu, char *msg, size_t msglen) {
  msg[0] = 0;
  if (!nd || !nu) {
    snprintf(msg, msglen, "every one of the %zu examples is %s: KTO has no %s example to weigh it against (the run goes "
             "on; the kl term still applies)", nd + nu, nd ? "desirable (label true)" : "undesirable (label false)",
             nd ? "undesirable" : "desirable");
    return 1;
  }
  if (nd == nu) return 0;
  // TRL's bounds (Eq. (8) of the KTO paper), rounded as TRL rounds them
  double dl = round2((double)nu * wu / (double)nd), du = round2((double)nu * wu / (double)nd * 1.33);
  double ul = round2((double)nd * wd / (double)nu / 1.33), uu = round2((double)nd * wd / (double)nu);
  if ((dl <= wd && wd <= du) || (ul <= wu && wu <= uu)) return 0;
  snprintf(msg, msglen, "%zu desirable and %zu undesirable examples, but the weights on their losses are not in the "
           "ideal range (desirable x weight : undesirable x weight in [1, 4/3]); we recommend EITHER --desirable-weight "
           "in [%g, %g] or --undesirable-weight in [%g, %g] (but not both)", nd, nu, dl, du, ul, uu);
  return 1;
}
