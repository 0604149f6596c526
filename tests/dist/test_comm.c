/* tests/dist/test_comm.c: the communicator's collectives (trainer/dist/comm.h) on the ranks the
 * environment gives (mpirun, or torchrun-style variables), each against the value it must have: sums
 * of rank-dependent integers, exact in float and double, so any lost, doubled or misplaced block shows.
 * Every rank prints its own PASS/FAIL lines, prefixed by its rank.
 *
 *   test_comm [--timeout S] [--die R] [--stall R]
 *     --die R    rank R exits (as if killed) before the first collective: the others must fail naming it
 *     --stall R  rank R sleeps past the timeout: the others must fail naming it
 * In the fault modes the surviving ranks print "comm error: MESSAGE" and exit 3.
 *
 * PREFCAP_COMM_NCCL=1 (a build with NCCL, on a GPU machine): the same checks on the nccl engine, its
 * buffers in GPU memory, bootstrapped over the environment's engine; one rank per GPU. With one GPU:
 * PREFCAP_COMM=tcp WORLD_SIZE=1 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 PREFCAP_COMM_NCCL=1. */
#include "dist/comm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef PC_HAVE_NCCL
#include <cuda_runtime.h>
#endif

static int failures, R, on_gpu;

// ---- the collectives' buffers: host memory, or GPU memory for nccl ----------------------------------
static void *balloc(size_t n) {
#ifdef PC_HAVE_NCCL
  void *p = NULL;
  if (on_gpu) return cudaMalloc(&p, n) == cudaSuccess ? p : NULL;
#endif
  return malloc(n);
}
static void bfree(void *p) {
#ifdef PC_HAVE_NCCL
  if (on_gpu) { cudaFree(p); return; }
#endif
  free(p);
}
static void put(void *dst, const void *src, size_t n) {  // host -> buffer
#ifdef PC_HAVE_NCCL
  if (on_gpu) { cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice); return; }
#endif
  memcpy(dst, src, n);
}
static void get(void *dst, const void *src, size_t n) {  // buffer -> host
#ifdef PC_HAVE_NCCL
  if (on_gpu) { cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost); return; }
#endif
  memcpy(dst, src, n);
}

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
  pc_comm *boot = NULL;
  if (getenv("PREFCAP_COMM_NCCL")) {  // the nccl engine over the environment's one
    boot = c;
    if (!(c = pc_comm_nccl_new(boot, err, sizeof err))) {
      printf("FAIL comm_nccl_setup: %s\n", err);
      pc_comm_free(boot, 1);
      return 1;
    }
    on_gpu = 1;
  }
  R = c->rank;
  int N = c->size;
  if (R == die) raise(SIGKILL);
  if (R == stall) sleep((unsigned)(timeout * 2 + 2));
  // reduce-scatter: rank r's block b holds r*1000 + b*10 + i; the sum over r is known in closed form
  enum { COUNT = 1000 };
  size_t sbytes = sizeof(float) * COUNT * (size_t)N;
  float *send = malloc(sbytes), recv[COUNT];
  void *dsend = balloc(sbytes), *drecv = balloc(sizeof recv), *dbuf = balloc(sizeof(double) * 3 * (size_t)N);
  for (int b = 0; b < N; b++)
    for (int i = 0; i < COUNT; i++) send[b * COUNT + i] = (float)(R * 1000 + b * 10 + i);
  put(dsend, send, sbytes);
  int rc = pc_comm_reduce_scatter(c, dsend, drecv, COUNT, PC_COMM_F32);
  get(recv, drecv, sizeof recv);
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
  put(dbuf, g, sizeof(double) * 3 * (size_t)N);
  rc = pc_comm_all_gather(c, dbuf, sizeof(double) * 3);
  get(g, dbuf, sizeof(double) * 3 * (size_t)N);
  ok = rc == 0;
  for (int r = 0; r < N && ok; r++)
    for (int k = 0; k < 3; k++) ok &= g[r * 3 + k] == r + 0.25 * k;
  check("all_gather", ok, rc ? pc_comm_error(c) : "wrong block");
  // all-reduce in double and float
  double d[2] = {R + 0.5, 1};
  put(dbuf, d, sizeof d);
  rc = pc_comm_all_reduce(c, dbuf, 2, PC_COMM_F64);
  get(d, dbuf, sizeof d);
  check("all_reduce_f64", rc == 0 && d[0] == N * (N - 1) / 2.0 + 0.5 * N && d[1] == N, rc ? pc_comm_error(c) : "wrong sum");
  float f = (float)(R + 1);
  put(dbuf, &f, sizeof f);
  rc = pc_comm_all_reduce(c, dbuf, 1, PC_COMM_F32);
  get(&f, dbuf, sizeof f);
  check("all_reduce_f32", rc == 0 && f == (float)(N * (N + 1) / 2), rc ? pc_comm_error(c) : "wrong sum");
  // broadcast from the last rank
  int v[4] = {R, R, R, R};
  put(dbuf, v, sizeof v);
  rc = pc_comm_broadcast(c, dbuf, sizeof v, N - 1);
  get(v, dbuf, sizeof v);
  check("broadcast", rc == 0 && v[0] == N - 1 && v[3] == N - 1, rc ? pc_comm_error(c) : "wrong value");
  rc = pc_comm_barrier(c);
  check("barrier", rc == 0, pc_comm_error(c));
  free(send);
  free(g);
  bfree(dsend);
  bfree(drecv);
  bfree(dbuf);
  pc_comm_free(c, failures != 0);
  pc_comm_free(boot, failures != 0);
  return failures ? 1 : 0;
}
