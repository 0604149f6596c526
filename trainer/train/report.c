/* trainer/train/report.c: OUT/report.html from OUT/metrics.jsonl (see report.h for the contract).
 *
 * Reading: each line becomes points (step, value) appended to one series per known key, train and eval
 * apart. JSON has no NaN or Infinity, but Python's json module and printf's %g write them, so they are
 * turned into null before cJSON sees the line; null and non-finite numbers are then skipped (a line is
 * drawn through the points around them) and counted.
 *
 * Drawing: each chart takes its x and y ranges from the finite points of its own series, widened to
 * "nice" tick values (1, 2 or 5 times a power of ten); a range of zero width (one point, a constant
 * series) is widened around the value so that the mapping stays well defined. The output is also
 * well-formed XML (every element closed, no named entities) so that strict parsers read it. */
#include "train/report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

// ---- the metrics and the series

// The keys of a train line, in the order of the table; an eval line has the same with "eval_" before.
// kl and the counts are KTO's (a KTO run logs no accuracies: its third chart is the kl estimate).
static const char *const KEYS[] = {"loss",          "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                   "rewards/margins", "logps/chosen", "logps/rejected",   "grad_norm",
                                   "learning_rate", "tokens_per_s",   "epoch",            "kl",
                                   "count/chosen",  "count/rejected"};
enum { K_LOSS, K_CHOSEN, K_REJECTED, K_ACC, K_MARGIN, K_LOGP_C, K_LOGP_R, K_GNORM, K_LR, K_TPS, K_EPOCH, K_KL,
       K_COUNT_C, K_COUNT_R, NKEYS };
#define NSER (2 * NKEYS)  // series s = 2*key + (eval ? 1 : 0)

typedef struct {
  double *x, *y;
  size_t n, cap;
  size_t skipped;  // null / NaN / Inf values seen
} series;

typedef struct {
  series s[NSER];
  size_t lines, train_lines, eval_lines;
} metrics;

static void metrics_free(metrics *m) {
  for (int i = 0; i < NSER; i++) {
    free(m->s[i].x);
    free(m->s[i].y);
  }
}

static int series_add(series *s, double x, double y) {
  while (s->n && s->x[s->n - 1] >= x) s->n--;  // a resumed run logs these steps again: the later lines win
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    double *nx = realloc(s->x, cap * sizeof *nx);
    if (!nx) return -1;
    s->x = nx;
    double *ny = realloc(s->y, cap * sizeof *ny);
    if (!ny) return -1;
    s->y = ny;
    s->cap = cap;
  }
  s->x[s->n] = x;
  s->y[s->n] = y;
  s->n++;
  return 0;
}

// ---- reading metrics.jsonl

static int is_delim(char c) { return !c || c == ',' || c == ']' || c == '}' || c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Copies line to out (room for 2*len+1: "NaN" becomes the longer "null"), with the bare tokens NaN,
 * Infinity and -Infinity outside strings replaced by null. */
static void denan(const char *line, char *out) {
  int in_str = 0;
  static const char *const toks[] = {"-Infinity", "Infinity", "NaN"};
  while (*line) {
    char c = *line;
    if (in_str) {
      *out++ = c;
      line++;
      if (c == '\\' && *line) *out++ = *line++;
      else if (c == '"') in_str = 0;
      continue;
    }
    if (c == '"') in_str = 1;
    int hit = 0;
    for (int t = 0; t < 3 && !hit; t++) {
      size_t l = strlen(toks[t]);
      if (!strncmp(line, toks[t], l) && is_delim(line[l])) {
        memcpy(out, "null", 4);
        out += 4;
        line += l;
        hit = 1;
      }
    }
    if (!hit) *out++ = *line++;
  }
  *out = 0;
}

static int read_metrics(const char *path, metrics *m, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  char *line = NULL, *buf = NULL;
  size_t lcap = 0, bcap = 0;
  ssize_t len;
  int lineno = 0, rc = -1;
  cJSON *j = NULL;
  while ((len = getline(&line, &lcap, f)) >= 0) {
    lineno++;
    if ((size_t)len != strlen(line)) { pc_seterr(err, errlen, "%s:%d: a NUL byte in the line", path, lineno); goto out; }
    if (strspn(line, " \t\r\n") == (size_t)len) continue;
    if (bcap < 2 * (size_t)len + 1) {
      char *nb = realloc(buf, 2 * (size_t)len + 1);
      if (!nb) { pc_seterr(err, errlen, "%s:%d: out of memory", path, lineno); goto out; }
      buf = nb;
      bcap = 2 * (size_t)len + 1;
    }
    denan(line, buf);
    const char *end = NULL;
    j = cJSON_ParseWithOpts(buf, &end, 1);
    if (!j || !cJSON_IsObject(j)) {
      if (j) pc_seterr(err, errlen, "%s:%d: not a JSON object", path, lineno);
      else {
        const char *at = cJSON_GetErrorPtr();
        if (!at || at < buf || at > buf + strlen(buf)) at = buf;
        char near[24];
        snprintf(near, sizeof near, "%s", at);
        near[strcspn(near, "\r\n")] = 0;
        pc_seterr(err, errlen, "%s:%d: bad JSON near '%s'", path, lineno, near);
      }
      goto out;
    }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "step");
    if (!cJSON_IsNumber(st) || !isfinite(st->valuedouble)) {
      pc_seterr(err, errlen, "%s:%d: no \"step\" number", path, lineno);
      goto out;
    }
    double step = st->valuedouble;
    int has_train = 0, has_eval = 0;
    for (int k = 0; k < NKEYS; k++)
      for (int e = 0; e < 2; e++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s", e ? "eval_" : "", KEYS[k]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
        if (!v) continue;
        series *s = &m->s[2 * k + e];
        if (k != K_EPOCH) {
          if (e) has_eval = 1;
          else has_train = 1;
        }
        if (cJSON_IsNull(v) || (cJSON_IsNumber(v) && !isfinite(v->valuedouble))) { s->skipped++; continue; }
        if (!cJSON_IsNumber(v)) { pc_seterr(err, errlen, "%s:%d: \"%s\" is not a number", path, lineno, name); goto out; }
        if (series_add(s, step, v->valuedouble)) { pc_seterr(err, errlen, "%s:%d: out of memory", path, lineno); goto out; }
      }
    m->lines++;
    m->train_lines += has_train;
    m->eval_lines += has_eval;
    cJSON_Delete(j);
    j = NULL;
  }
  if (ferror(f)) { pc_seterr(err, errlen, "%s: read error: %s", path, strerror(errno)); goto out; }
  rc = 0;
out:
  cJSON_Delete(j);
  free(line);
  free(buf);
  fclose(f);
  return rc;
}

// ---- scales and ticks

typedef struct {
  double lo, hi, step;  // the drawn range, widened to multiples of step
  int nticks;
} scale;

static double nice_step(double range, int target) {
  double raw = range / target, mag = pow(10, floor(log10(raw))), r = raw / mag;
  return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

/* A scale covering [mn, mx] (finite, mn <= mx); min_step bounds the tick spacing from below (1 for steps). */
static scale make_scale(double mn, double mx, double min_step) {
  // Zero width, or a width lost in the rounding of the values: widen around the middle.
  double mag = fmax(fabs(mn), fabs(mx));
  if (mx - mn <= mag * 1e-9) {
    double mid = 0.5 * (mn + mx), pad = mag > 0 ? mag * 0.1 : 1;
    if (min_step > 0 && pad < min_step) pad = min_step;
    mn = mid - pad;
    mx = mid + pad;
  }
  scale s;
  s.step = nice_step(mx - mn, 5);
  if (s.step < min_step) s.step = min_step;
  s.lo = floor(mn / s.step) * s.step;
  s.hi = ceil(mx / s.step) * s.step;
  if (s.hi <= s.lo) s.hi = s.lo + s.step;
  s.nticks = (int)floor((s.hi - s.lo) / s.step + 0.5) + 1;
  return s;
}

static void fmt_tick(char *b, size_t n, double v, const scale *s) {
  if (fabs(v) < s->step * 1e-9) v = 0;  // no "-0"
  double big = fmax(fabs(s->lo), fabs(s->hi));
  if (s->step >= 1e-4 && big < 1e7) {
    int dec = s->step >= 1 ? 0 : (int)ceil(-log10(s->step) - 1e-9);
    snprintf(b, n, "%.*f", dec, v);
  } else {
    snprintf(b, n, "%.3g", v);
  }
}

// ---- HTML and SVG

static void put_esc(FILE *f, const char *s) {
  for (; *s; s++) switch (*s) {
      case '&': fputs("&amp;", f); break;
      case '<': fputs("&lt;", f); break;
      case '>': fputs("&gt;", f); break;
      case '"': fputs("&quot;", f); break;
      case '\'': fputs("&#39;", f); break;
      default:
        // control characters are not allowed in XML 1.0; keep tab and newlines
        if ((unsigned char)*s < 0x20 && *s != '\t' && *s != '\n' && *s != '\r') fputc('?', f);
        else fputc(*s, f);
    }
}

enum { W = 560, H = 300, PL = 64, PR = 16, PT = 34, PB = 44 };  // viewBox and plot margins

typedef struct {
  int ser;            // index into metrics.s
  const char *label;  // legend text
  const char *color;
} chart_series;

typedef struct {
  const char *title, *id;
  chart_series s[4];
  int ns;
  int unit_range;  // accuracies: always show [0, 1]
} chart;

static double px_x(const scale *s, double v) { return PL + (v - s->lo) / (s->hi - s->lo) * (W - PL - PR); }
static double px_y(const scale *s, double v) { return PT + (s->hi - v) / (s->hi - s->lo) * (H - PT - PB); }

static void write_chart(FILE *f, const chart *c, const metrics *m) {
  double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
  int any = 0;
  for (int i = 0; i < c->ns; i++) {
    const series *s = &m->s[c->s[i].ser];
    for (size_t k = 0; k < s->n; k++) {
      xmn = fmin(xmn, s->x[k]);
      xmx = fmax(xmx, s->x[k]);
      ymn = fmin(ymn, s->y[k]);
      ymx = fmax(ymx, s->y[k]);
      any = 1;
    }
  }
  if (!any) xmn = 0, xmx = 1, ymn = 0, ymx = 1;
  if (c->unit_range) ymn = fmin(ymn, 0), ymx = fmax(ymx, 1);
  scale sx = make_scale(xmn, xmx, 1), sy = make_scale(ymn, ymx, 0);

  fprintf(f, "<figure id=\"%s\"><figcaption>", c->id);
  put_esc(f, c->title);
  fprintf(f, "</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
          "role=\"img\" aria-label=\"", W, H, W, H);
  put_esc(f, c->title);
  fputs("\" font-size=\"11\">\n", f);
  // grid and tick labels
  fputs("<g class=\"grid\" stroke=\"#e4e4e4\" stroke-width=\"1\">\n", f);
  for (int t = 0; t < sy.nticks; t++) {
    double y = px_y(&sy, sy.lo + t * sy.step);
    fprintf(f, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\"/>\n", PL, y, W - PR, y);
  }
  for (int t = 0; t < sx.nticks; t++) {
    double x = px_x(&sx, sx.lo + t * sx.step);
    fprintf(f, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\"/>\n", x, PT, x, H - PB);
  }
  fputs("</g>\n", f);
  if (any && sy.lo < 0 && sy.hi > 0)
    fprintf(f, "<line class=\"zero\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>\n",
            PL, px_y(&sy, 0), W - PR, px_y(&sy, 0));
  fputs("<g class=\"yticks\" text-anchor=\"end\" fill=\"#444\">\n", f);
  for (int t = 0; t < sy.nticks; t++) {
    double v = sy.lo + t * sy.step;
    char b[48];
    fmt_tick(b, sizeof b, v, &sy);
    fprintf(f, "<text x=\"%d\" y=\"%.2f\" dy=\"0.32em\">%s</text>\n", PL - 6, px_y(&sy, v), b);
  }
  fputs("</g>\n<g class=\"xticks\" text-anchor=\"middle\" fill=\"#444\">\n", f);
  for (int t = 0; t < sx.nticks; t++) {
    double v = sx.lo + t * sx.step;
    char b[48];
    fmt_tick(b, sizeof b, v, &sx);
    fprintf(f, "<text x=\"%.2f\" y=\"%d\">%s</text>\n", px_x(&sx, v), H - PB + 16, b);
  }
  fputs("</g>\n", f);
  fprintf(f, "<path class=\"axes\" d=\"M%d %dV%dH%d\" fill=\"none\" stroke=\"#444\"/>\n", PL, PT, H - PB, W - PR);
  fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#444\">step</text>\n", (PL + W - PR) / 2, H - 8);
  if (!any)
    fprintf(f, "<text class=\"nodata\" x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#999\" font-size=\"14\">no data</text>\n",
            (PL + W - PR) / 2, (PT + H - PB) / 2);

  // the series: a line each; points too for eval (few, and each one matters) and for a lone point
  int lx = PL;  // legend, along the top
  for (int i = 0; i < c->ns; i++) {
    const chart_series *cs = &c->s[i];
    const series *s = &m->s[cs->ser];
    if (!s->n) continue;
    int eval = cs->ser & 1;
    const char *key = KEYS[cs->ser / 2];
    fprintf(f, "<polyline class=\"series %s\" data-key=\"%s%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" "
            "stroke-linejoin=\"round\" points=\"", eval ? "eval" : "train", eval ? "eval_" : "", key, cs->color,
            eval ? "1.5" : "1.6");
    for (size_t k = 0; k < s->n; k++)
      fprintf(f, "%s%.2f,%.2f", k ? " " : "", px_x(&sx, s->x[k]), px_y(&sy, s->y[k]));
    fputs("\"/>\n", f);
    if (eval || s->n == 1) {
      fprintf(f, "<g class=\"points\" data-key=\"%s%s\" fill=\"%s\">\n", eval ? "eval_" : "", key, cs->color);
      for (size_t k = 0; k < s->n; k++)
        fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\"><title>step %.15g: %.6g</title></circle>\n",
                px_x(&sx, s->x[k]), px_y(&sy, s->y[k]), s->x[k], s->y[k]);
      fputs("</g>\n", f);
    }
    fprintf(f, "<g class=\"legend\"><line x1=\"%d\" y1=\"14\" x2=\"%d\" y2=\"14\" stroke=\"%s\" stroke-width=\"2\"/>",
            lx, lx + 18, cs->color);
    if (eval) fprintf(f, "<circle cx=\"%d\" cy=\"14\" r=\"3\" fill=\"%s\"/>", lx + 9, cs->color);
    fprintf(f, "<text x=\"%d\" y=\"14\" dy=\"0.32em\" fill=\"#222\">", lx + 23);
    put_esc(f, cs->label);
    fputs("</text></g>\n", f);
    lx += 23 + 6 * (int)strlen(cs->label) + 16;
  }
  fputs("</svg></figure>\n", f);
}

static const char CSS[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;background:#fff}\n"
    "h1{font-size:1.4em;margin:0 0 4px}\n"
    "p.meta{color:#555;margin:0 0 16px}\n"
    ".charts{display:flex;flex-wrap:wrap;gap:16px}\n"
    "figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:8px}\n"
    "figcaption{font-weight:600;margin-bottom:4px}\n"
    "svg{max-width:100%;height:auto}\n"
    "table{border-collapse:collapse;margin-top:8px}\n"
    "th,td{border:1px solid #ddd;padding:3px 10px;text-align:right;font-variant-numeric:tabular-nums}\n"
    "th:first-child,td:first-child{text-align:left}\n"
    "td.none{color:#aaa}\n";

static void write_cell(FILE *f, const series *s) {
  if (!s->n) { fputs("<td class=\"none\">&#8211;</td><td class=\"none\"></td>", f); return; }
  fprintf(f, "<td>%.6g</td><td>%.15g</td>", s->y[s->n - 1], s->x[s->n - 1]);
}

static int write_html(FILE *f, const char *title, const char *src, const metrics *m) {
  static const char *const C_TRAIN = "#1f77b4", *const C_EVAL = "#ff7f0e", *const C_REJ = "#d62728",
                           *const C_EVAL_REJ = "#9467bd";
  const chart kl_chart = {"KL estimate (KTO)", "kl", {{2 * K_KL, "train", C_TRAIN}, {2 * K_KL + 1, "eval", C_EVAL}}, 2, 0};
  int kto = (m->s[2 * K_KL].n || m->s[2 * K_KL + 1].n) && !m->s[2 * K_ACC].n && !m->s[2 * K_ACC + 1].n;
  const chart charts[4] = {
      {"Loss", "loss", {{2 * K_LOSS, "train", C_TRAIN}, {2 * K_LOSS + 1, "eval", C_EVAL}}, 2, 0},
      {"Rewards",
       "rewards",
       {{2 * K_CHOSEN, "chosen (train)", C_TRAIN},
        {2 * K_REJECTED, "rejected (train)", C_REJ},
        {2 * K_CHOSEN + 1, "chosen (eval)", C_EVAL},
        {2 * K_REJECTED + 1, "rejected (eval)", C_EVAL_REJ}},
       4,
       0},
      {"Reward accuracy", "accuracy", {{2 * K_ACC, "train", C_TRAIN}, {2 * K_ACC + 1, "eval", C_EVAL}}, 2, 1},
      {"Reward margin", "margins", {{2 * K_MARGIN, "train", C_TRAIN}, {2 * K_MARGIN + 1, "eval", C_EVAL}}, 2, 0},
  };
  fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>", f);
  put_esc(f, title);
  fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<h1>", CSS);
  put_esc(f, title);
  fputs("</h1>\n<p class=\"meta\">", f);
  const series *loss = &m->s[2 * K_LOSS], *ep = &m->s[2 * K_EPOCH];
  fprintf(f, "%zu train line(s), %zu eval line(s)", m->train_lines, m->eval_lines);
  if (loss->n) fprintf(f, "; last train step %.15g", loss->x[loss->n - 1]);
  if (ep->n) fprintf(f, ", epoch %.4g", ep->y[ep->n - 1]);
  size_t skipped = 0;
  for (int i = 0; i < NSER; i++) skipped += m->s[i].skipped;
  if (skipped) fprintf(f, "; %zu null, NaN or infinite value(s) not drawn", skipped);
  fputs(". From <code>", f);
  put_esc(f, src);
  fputs("</code>.</p>\n<div class=\"charts\">\n", f);
  for (int i = 0; i < 4; i++) write_chart(f, kto && i == 2 ? &kl_chart : &charts[i], m);
  fputs("</div>\n<h2>Final values</h2>\n<table>\n<thead><tr><th>metric</th><th>train</th><th>at step</th>"
        "<th>eval</th><th>at step</th></tr></thead>\n<tbody>\n", f);
  for (int k = 0; k < NKEYS; k++) {
    if (!m->s[2 * k].n && !m->s[2 * k + 1].n) continue;
    fprintf(f, "<tr><td>%s</td>", KEYS[k]);
    write_cell(f, &m->s[2 * k]);
    write_cell(f, &m->s[2 * k + 1]);
    fputs("</tr>\n", f);
  }
  fputs("</tbody>\n</table>\n</body>\n</html>\n", f);
  return ferror(f) ? -1 : 0;
}

// ---- the entry point

int pc_report_write(const char *metrics_jsonl, const char *html_path, const char *title, char *err, size_t errlen) {
  metrics m;
  memset(&m, 0, sizeof m);
  if (read_metrics(metrics_jsonl, &m, err, errlen)) {
    metrics_free(&m);
    return -1;
  }
  int rc = -1;
  size_t n = strlen(html_path) + 5;
  char *tmp = malloc(n);
  if (!tmp) { pc_seterr(err, errlen, "%s: out of memory", html_path); goto out; }
  snprintf(tmp, n, "%s.tmp", html_path);
  FILE *f = fopen(tmp, "w");
  if (!f) { pc_seterr(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)); goto out; }
  int werr = write_html(f, title ? title : "prefcap-dpo run", metrics_jsonl, &m);
  if (fclose(f) != 0 || werr) {
    pc_seterr(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
    remove(tmp);
    goto out;
  }
  if (rename(tmp, html_path) != 0) {
    pc_seterr(err, errlen, "%s: cannot rename %s over it: %s", html_path, tmp, strerror(errno));
    remove(tmp);
    goto out;
  }
  rc = 0;
out:
  free(tmp);
  metrics_free(&m);
  return rc;
}
