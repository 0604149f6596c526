/* common/progress.c: the progress display of score, train and upload (see progress.h for the formats).
 *
 * The terminal line is rebuilt whole each time and written after a '\r'; when it is shorter than the
 * one before, spaces cover the rest, and it is cut to the terminal's width, since a line that wraps
 * can no longer be redrawn by '\r' (the bar would scroll one row per update). */
#include "progress.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct pc_progress {
  FILE *f;
  int tty;
  int drawn;        // a terminal line is on screen without its '\n'
  size_t last_len;  // its length, to blank what a shorter line leaves behind
  size_t total;
  double t0, last;  // start, and the time of the last print
  char label[32], items[32], unit[32];
  int has_unit;
};

double pc_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void pc_fmt_time(char *b, size_t n, double s) {
  if (!(s >= 0) || s > 359999) { snprintf(b, n, "--:--"); return; }
  int t = (int)(s + 0.5);
  if (t >= 3600) snprintf(b, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  else snprintf(b, n, "%d:%02d", t / 60, t % 60);
}

pc_progress *pc_progress_new(FILE *f, const char *label, const char *items, const char *unit, size_t total) {
  pc_progress *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->f = f;
  p->tty = f && isatty(fileno(f));
  p->total = total;
  p->t0 = p->last = pc_now_s();
  snprintf(p->label, sizeof p->label, "%s", label ? label : "");
  snprintf(p->items, sizeof p->items, "%s", items ? items : "");
  snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
  p->has_unit = unit != NULL;
  return p;
}

// ---- drawing

static int term_cols(FILE *f) {
  struct winsize ws;
  if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
  return 0;  // unknown: no cut
}

static void draw(pc_progress *p, size_t done, double units, const char *extra, double t, int final) {
  double elapsed = t - p->t0;
  double rate = elapsed > 0 ? units / elapsed : 0;
  double eta = p->total && done ? elapsed * (double)(p->total > done ? p->total - done : 0) / (double)done : -1;
  char e[32], el[32], cnt[64], rt[64] = "";
  pc_fmt_time(e, sizeof e, eta);
  pc_fmt_time(el, sizeof el, elapsed);
  if (p->total) snprintf(cnt, sizeof cnt, "%zu/%zu %s", done, p->total, p->items);
  else snprintf(cnt, sizeof cnt, "%zu %s", done, p->items);
  const char *x = extra && *extra ? extra : NULL;
  char line[512];
  if (p->tty) {
    char bar[40] = "";
    if (p->total) {
      int w = 30, fill = done >= p->total ? w : (int)((double)w * (double)done / (double)p->total);
      bar[0] = '[';
      for (int i = 0; i < w; i++) bar[1 + i] = i < fill ? '#' : '.';
      bar[w + 1] = ']';
      bar[w + 2] = ' ';
      bar[w + 3] = 0;
    }
    if (p->has_unit) snprintf(rt, sizeof rt, "  %.0f %s/s", rate, p->unit);
    int n = snprintf(line, sizeof line, "%s %s%s%s  %s%s%s%s%s", p->label, bar, cnt, rt, el,
                     p->total ? "  ETA " : "", p->total ? e : "", x ? "  " : "", x ? x : "");
    size_t len = n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    int cols = term_cols(p->f);
    if (cols && len > (size_t)cols - 1) len = (size_t)cols - 1;
    fputc('\r', p->f);
    fwrite(line, 1, len, p->f);
    for (size_t i = len; i < p->last_len; i++) fputc(' ', p->f);
    p->last_len = len;
    p->drawn = !final;
    if (final) fputc('\n', p->f);
  } else {
    if (p->has_unit) snprintf(rt, sizeof rt, ", %.0f %s/s", rate, p->unit);
    fprintf(p->f, "%s: %s%s, elapsed %s%s%s%s%s\n", p->label, cnt, rt, el, p->total ? ", ETA " : "",
            p->total ? e : "", x ? ", " : "", x ? x : "");
  }
  fflush(p->f);
  p->last = t;
}

// ---- the calls

void pc_progress_update(pc_progress *p, size_t done, double units_done, const char *extra) {
  if (!p || !p->f) return;
  double t = pc_now_s();
  if (t - p->last > (p->tty ? 0.2 : 5.0)) draw(p, done, units_done, extra, t, 0);
}

void pc_progress_break(pc_progress *p) {
  if (!p || !p->f || !p->drawn) return;
  fputc('\n', p->f);
  fflush(p->f);
  p->drawn = 0;
  p->last_len = 0;
}

double pc_progress_end(pc_progress *p, size_t done, double units_done, const char *extra) {
  if (!p) return 0;
  double t = pc_now_s();
  if (p->f) draw(p, done, units_done, extra, t, 1);
  double el = t - p->t0;
  free(p);
  return el;
}

void pc_progress_free(pc_progress *p) {
  if (!p) return;
  pc_progress_break(p);
  free(p);
}
