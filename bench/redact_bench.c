/* bench/redact_bench.c: capture-time redaction (sdk/redact.c) on inputs built against each scanner
 * (tests/sdk/redact_adversarial.h: one long run shared by many match starts), against the cheapest
 * possible pass over the same bytes (a memchr for '@' and a strlen). A linear redactor stays a
 * constant factor from that baseline at every size; a quadratic one grows with the size, so each
 * input is timed at 1 and 4 MiB and the growth of the ratio is printed too. Results: bench/RESULTS.md. */
#include "redact.h"
#include "../tests/sdk/redact_adversarial.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile size_t sink;

/* best of reps: the machine is shared, and the minimum is the least disturbed run */
static double time_redact(const char *in, size_t n, int reps) {
  double best = 1e9;
  for (int r = 0; r < reps; r++) {
    char *out;
    size_t len;
    double t0 = now_s();
    if (prefcap__redact(in, n, &out, &len)) { fprintf(stderr, "redact failed\n"); exit(1); }
    double t = now_s() - t0;
    sink += len;
    free(out);
    if (t < best) best = t;
  }
  return best;
}

static double time_baseline(const char *in, size_t n, int reps) {
  double best = 1e9;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    const char *p = in;
    size_t hits = 0;
    while ((p = memchr(p, '@', n - (size_t)(p - in)))) { hits++; p++; }
    sink += hits + strlen(in);
    double t = now_s() - t0;
    if (t < best) best = t;
  }
  return best;
}

int main(void) {
  printf("%-22s %12s %12s %10s %14s\n", "input", "1 MiB (ms)", "MiB/s", "x memchr", "4 MiB / 1 MiB");
  double worst_growth = 0;
  for (size_t a = 0; a < REDACT_ADVERSARIES; a++) {
    double t[2], base = 0;
    for (int k = 0; k < 2; k++) {
      size_t n, size = (size_t)(k ? 4 : 1) << 20;
      char *in = redact_adversary_text(&redact_adversaries[a], size, &n);
      if (!in) return 1;
      t[k] = time_redact(in, n, 5);
      if (!k) base = time_baseline(in, n, 20);
      free(in);
    }
    double growth = t[1] / t[0];
    if (growth > worst_growth) worst_growth = growth;
    printf("%-22s %12.2f %12.1f %10.0f %14.2f\n", redact_adversaries[a].name, t[0] * 1e3, 1.0 / t[0],
           t[0] / (base > 0 ? base : 1e-9), growth);
  }
  printf("largest 4 MiB / 1 MiB time ratio: %.2f (linear: about 4; quadratic: about 16)\n", worst_growth);
  return 0;
}
