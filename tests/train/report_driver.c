/* tests/train/report_driver.c: a thin command over trainer/train/report.c and common/progress.c, so that
 * tests/train/test_report.py can check their output with real parsers and a real pseudo-terminal.
 *
 *   report_driver report METRICS HTML [TITLE]   pc_report_write; the error on stderr, exit 1
 *   report_driver progress TOTAL STEPS [SLEEP]  a progress display on stderr ("train", "steps", "tok"):
 *                                               STEPS updates SLEEP seconds apart (100 tok each, extra
 *                                               "loss L"), a break and a message after the second,
 *                                               then the end
 *   report_driver fmt SECONDS                   pc_fmt_time */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "progress.h"
#include "train/report.h"

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "report")) {
    char err[1024];
    if (pc_report_write(argv[2], argv[3], argc > 4 ? argv[4] : NULL, err, sizeof err)) {
      fprintf(stderr, "report_driver: %s\n", err);
      return 1;
    }
    return 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "progress")) {
    size_t total = strtoul(argv[2], NULL, 10);
    int steps = atoi(argv[3]);
    double sl = argc > 4 ? atof(argv[4]) : 0;
    pc_progress *p = pc_progress_new(stderr, "train", "steps", "tok", total);
    if (!p) return 1;
    for (int i = 1; i <= steps; i++) {
      struct timespec ts = {(time_t)sl, (long)((sl - (double)(time_t)sl) * 1e9)};
      nanosleep(&ts, NULL);
      char extra[64];
      snprintf(extra, sizeof extra, "loss %.4f", 1.0 / i);
      pc_progress_update(p, (size_t)i, 100.0 * i, extra);
      if (i == 2) {
        pc_progress_break(p);
        fprintf(stderr, "eval at step 2\n");
      }
    }
    double el = pc_progress_end(p, (size_t)steps, 100.0 * steps, "done");
    printf("elapsed %.3f\n", el);
    return 0;
  }
  if (argc == 3 && !strcmp(argv[1], "fmt")) {
    char b[32];
    pc_fmt_time(b, sizeof b, atof(argv[2]));
    printf("%s\n", b);
    return 0;
  }
  fprintf(stderr, "usage: report_driver report METRICS HTML [TITLE] | progress TOTAL STEPS [SLEEP] | fmt SECONDS\n");
  return 2;
}
