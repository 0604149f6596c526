/* bench/sgemm_peak.c: the machine's measured single-precision matrix-multiply rate, the yardstick
 * bench/bench_train.py divides a training step's FLOP/s by ("fraction of sgemm peak").
 *
 * OpenBLAS cblas_sgemm, C = A B with square row-major F32 matrices of each size given, on THREADS
 * OpenBLAS threads; each size is run REPEAT times after one untimed call and the best counts (the
 * cores are shared, so the best run is the closest to what the hardware can do). FLOPs = 2 n^3.
 * usage: sgemm_peak [THREADS [REPEAT [N...]]]   (defaults 2, 5, sizes 1024 2048 4096)
 * Prints one JSON line per size, then {"threads": t, "peak_gflops": best over all sizes}. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int n);  /* OpenBLAS's own; not in every cblas.h */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- one size: best of REPEAT timed calls -------------------------------------------------------

static double best_gflops(int n, int repeat) {
  size_t nn = (size_t)n * n;
  float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
  if (!a || !b || !c) {
    free(a); free(b); free(c);
    return -1;
  }
  // values in [-1, 1): denormals or overflow would measure something other than the multiply units
  unsigned s = 12345;
  for (size_t i = 0; i < nn; i++) {
    s = s * 1103515245u + 12345u;
    a[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    s = s * 1103515245u + 12345u;
    b[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);  // warm-up
  double best = 0;
  for (int r = 0; r < repeat; r++) {
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double g = 2.0 * n * (double)n * n / (now_s() - t0) / 1e9;
    if (g > best) best = g;
  }
  free(a); free(b); free(c);
  return best;
}

// ---- main ---------------------------------------------------------------------------------------

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2, repeat = argc > 2 ? atoi(argv[2]) : 5;
  static const int defaults[] = {1024, 2048, 4096};
  if (threads < 1 || repeat < 1) {
    fprintf(stderr, "usage: sgemm_peak [THREADS [REPEAT [N...]]]\n");
    return 2;
  }
  openblas_set_num_threads(threads);
  int nsizes = argc > 3 ? argc - 3 : 3;
  double peak = 0;
  for (int i = 0; i < nsizes; i++) {
    int n = argc > 3 ? atoi(argv[3 + i]) : defaults[i];
    if (n < 1) {
      fprintf(stderr, "sgemm_peak: bad size %s\n", argv[3 + i]);
      return 2;
    }
    double g = best_gflops(n, repeat);
    if (g < 0) {
      fprintf(stderr, "sgemm_peak: out of memory at n=%d\n", n);
      return 1;
    }
    printf("{\"n\": %d, \"threads\": %d, \"gflops\": %.2f}\n", n, threads, g);
    if (g > peak) peak = g;
  }
  printf("{\"threads\": %d, \"peak_gflops\": %.2f}\n", threads, peak);
  return 0;
}
