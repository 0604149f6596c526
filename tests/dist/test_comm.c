/* tests/dist/test_comm.c: the communicator's collectives (trainer/dist/comm.h) on the ranks the
 * environment gives (mpirun, or torchrun-style variables), each against the value it must have: sums
 * of rank-dependent integers, exact in float and double, so any lost, doubled or misplaced block shows.
 * Every rank prints its own PASS/FAIL lines, prefixed by its rank.
 *
 *   test_comm [--timeout S] [--die R] [--stall R]
 *     --die R    rank R exits (as if killed) before the first collective: the others must fail naming it
 *     --stall R  rank R sleeps past the timeout: the others must fail naming it
 * In the fault modes the surviving ranks print "comm error: MESSAGE" and exit 3. */
#include "dist/comm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures, R;

static void check(const char *name, int ok, const char *detail) {
  printf("%s rank%d_%s%s%s\n", ok ? "PASS" : "FAIL", R, name, ok ? "" : ": ", ok ? "" : detail);
  failures += !ok;
}

int main(int argc, char **argv) {
  double timeout = 20;
  int die = -1, stall = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--timeout")) timeout = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--die")) die = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--stall")) stall = atoi(argv[i + 1]);
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  char err[512];
  pc_comm *c;
  if (pc_comm_from_env(timeout, &c, err, sizeof err) != 0 || !c) {
    printf("FAIL comm_setup: %s\n", c ? "" : err[0] ? err : "no multi-process environment");
    return 1;
  }
  R = c->rank;
  int N = c->size;
  if (R == die) raise(SIGKILL);
  if (R == stall) sleep((unsigned)(timeout * 2 + 2));
  // reduce-scatter: rank r's block b holds r*1000 + b*10 + i; the sum over r is known in closed form
  enum { COUNT = 1000 };
  float *send = malloc(sizeof(float) * COUNT * (size_t)N), recv[COUNT];
  for (int b = 0; b < N; b++)
    for (int i = 0; i < COUNT; i++) send[b * COUNT + i] = (float)(R * 1000 + b * 10 + i);
  int rc = pc_comm_reduce_scatter(c, send, recv, COUNT, PC_COMM_F32);
  if (rc != 0) {
    printf("comm error: %s\n", pc_comm_error(c));
    pc_comm_free(c, 1);
    return 3;
  }
  int ok = 1;
  for (int i = 0; i < COUNT; i++) {
    double want = 1000.0 * N * (N - 1) / 2 + (double)N * (R * 10 + i);
    if (recv[i] != (float)want) ok = 0;
  }
  check("reduce_scatter_f32", ok, "a block was lost, doubled or misplaced");
  // all-gather, in place
  double *g = malloc(sizeof(double) * 3 * (size_t)N);
  for (int k = 0; k < 3; k++) g[R * 3 + k] = R + 0.25 * k;
  rc = pc_comm_all_gather(c, g, sizeof(double) * 3);
  ok = rc == 0;
  for (int r = 0; r < N && ok; r++)
    for (int k = 0; k < 3; k++) ok &= g[r * 3 + k] == r + 0.25 * k;
  check("all_gather", ok, rc ? pc_comm_error(c) : "wrong block");
  // all-reduce in double and float
  double d[2] = {R + 0.5, 1};
  rc = pc_comm_all_reduce(c, d, 2, PC_COMM_F64);
  check("all_reduce_f64", rc == 0 && d[0] == N * (N - 1) / 2.0 + 0.5 * N && d[1] == N, rc ? pc_comm_error(c) : "wrong sum");
  float f = (float)(R + 1);
  rc = pc_comm_all_reduce(c, &f, 1, PC_COMM_F32);
  check("all_reduce_f32", rc == 0 && f == (float)(N * (N + 1) / 2), rc ? pc_comm_error(c) : "wrong sum");
  // broadcast from the last rank
  int v[4] = {R, R, R, R};
  rc = pc_comm_broadcast(c, v, sizeof v, N - 1);
  check("broadcast", rc == 0 && v[0] == N - 1 && v[3] == N - 1, rc ? pc_comm_error(c) : "wrong value");
  rc = pc_comm_barrier(c);
  check("barrier", rc == 0, pc_comm_error(c));
  free(send);
  free(g);
  pc_comm_free(c, failures != 0);
  return failures ? 1 : 0;
}
