/* trainer/dist/comm_nccl.cu: the nccl engine of comm.h: NVIDIA's collectives on GPU memory, one GPU per
 * rank (the launcher's local rank picks it). NCCL needs its unique id on every rank before it can
 * connect them; rank 0 makes it and broadcasts it over the bootstrap communicator, which is the mpi
 * engine under mpirun/srun or the tcp engine (MASTER_ADDR:MASTER_PORT) under torchrun: so a GPU job
 * needs no MPI installed.
 *
 * Bounded waits: the communicator is created non-blocking (ncclConfig_t.blocking = 0), and every
 * operation is enqueued on this engine's stream and then polled (cudaStreamQuery, and
 * ncclCommGetAsyncError for a failed peer) until it completes or the timeout passes; then the
 * communicator is aborted (ncclCommAbort), which is NCCL's documented way out of a hang. NCCL does not
 * say which peer is missing; the message says so, and the bootstrap engine names a dead peer in the
 * next host-side exchange.
 *
 * Compiled by nvcc where the Makefile found nccl.h; comm_nccl_none.c stands in otherwise. It has not
 * run on this project's GPU-less CI: docs/training.md says how to check it on a GPU machine
 * (build/tests/test_comm with PREFCAP_COMM_NCCL=1). */
#include <cuda_runtime.h>
#include <nccl.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "dist/comm.h"
#include "util/err.h"
}

typedef struct {
  ncclComm_t nc;
  cudaStream_t stream;
  pc_comm *bootstrap;
} nccl_impl;

static ncclDataType_t dtype_of(pc_comm_dtype dt) { return dt == PC_COMM_F64 ? ncclFloat64 : ncclFloat32; }

/* Waits for what was enqueued (and for a non-blocking call's own progress): 0, or -1 with the error. */
static int nccl_wait(pc_comm *c, ncclResult_t enq, const char *what) {
  nccl_impl *m = (nccl_impl *)c->impl;
  if (enq != ncclSuccess && enq != ncclInProgress)
    return pc_comm__fail(c, "nccl %s: %s (%s)", what, ncclGetErrorString(enq), ncclGetLastError(m->nc));
  double deadline = pc_comm__now() + c->timeout_s;
  for (;;) {
    ncclResult_t st = ncclSuccess;
    ncclCommGetAsyncError(m->nc, &st);
    if (st != ncclSuccess && st != ncclInProgress) {
      ncclCommAbort(m->nc);
      m->nc = NULL;
      return pc_comm__fail(c, "nccl %s: a peer failed: %s (%s)", what, ncclGetErrorString(st), ncclGetLastError(NULL));
    }
    if (st == ncclSuccess) {
      cudaError_t q = cudaStreamQuery(m->stream);
      if (q == cudaSuccess) return 0;
      if (q != cudaErrorNotReady) return pc_comm__fail(c, "nccl %s: CUDA: %s", what, cudaGetErrorString(q));
    }
    if (pc_comm__now() > deadline) {
      ncclCommAbort(m->nc);
      m->nc = NULL;
      return pc_comm__fail(c, "nccl %s: not complete within %g s (this is rank %d of %d; NCCL cannot say which rank "
                           "is missing; aborted)", what, c->timeout_s, c->rank, c->size);
    }
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
}

static int nccl_reduce_scatter(pc_comm *c, const void *send, void *recv, size_t count, pc_comm_dtype dt) {
  nccl_impl *m = (nccl_impl *)c->impl;
  return nccl_wait(c, ncclReduceScatter(send, recv, count, dtype_of(dt), ncclSum, m->nc, m->stream), "reduce-scatter");
}

static int nccl_all_gather(pc_comm *c, void *buf, size_t bytes_per_rank) {
  nccl_impl *m = (nccl_impl *)c->impl;
  char *b = (char *)buf;  // in place: NCCL allows sendbuff == recvbuff + rank * sendcount
  return nccl_wait(c, ncclAllGather(b + (size_t)c->rank * bytes_per_rank, b, bytes_per_rank, ncclInt8, m->nc, m->stream),
                   "all-gather");
}

static int nccl_all_reduce(pc_comm *c, void *buf, size_t count, pc_comm_dtype dt) {
  nccl_impl *m = (nccl_impl *)c->impl;
  return nccl_wait(c, ncclAllReduce(buf, buf, count, dtype_of(dt), ncclSum, m->nc, m->stream), "all-reduce");
}

static int nccl_broadcast(pc_comm *c, void *buf, size_t bytes, int root) {
  nccl_impl *m = (nccl_impl *)c->impl;
  return nccl_wait(c, ncclBroadcast(buf, buf, bytes, ncclInt8, root, m->nc, m->stream), "broadcast");
}

static int nccl_barrier(pc_comm *c) {
  nccl_impl *m = (nccl_impl *)c->impl;
  if (cudaStreamSynchronize(m->stream) != cudaSuccess) return pc_comm__fail(c, "nccl barrier: CUDA stream failed");
  if (pc_comm_barrier(m->bootstrap) != 0) return pc_comm__fail(c, "%s", pc_comm_error(m->bootstrap));
  return 0;
}

static void nccl_destroy(pc_comm *c, int failed) {
  nccl_impl *m = (nccl_impl *)c->impl;
  if (m) {
    if (m->nc) {
      if (failed) ncclCommAbort(m->nc);
      else ncclCommDestroy(m->nc);
    }
    if (m->stream) cudaStreamDestroy(m->stream);
    free(m);
  }
  free(c);
}

static const pc_comm_ops NCCL_OPS = {"nccl", NULL, nccl_reduce_scatter, nccl_all_gather, nccl_all_reduce,
                                     nccl_broadcast, nccl_barrier, nccl_destroy};

extern "C" int pc_comm_nccl_available(void) { return 1; }

extern "C" pc_comm *pc_comm_nccl_new(pc_comm *boot, char *err, size_t errlen) {
  pc_comm *c = (pc_comm *)calloc(1, sizeof *c);
  nccl_impl *m = (nccl_impl *)calloc(1, sizeof *m);
  if (!c || !m) { free(c); free(m); pc_seterr(err, errlen, "out of memory"); return NULL; }
  c->ops = &NCCL_OPS;
  c->impl = m;
  c->rank = boot->rank;
  c->size = boot->size;
  c->local_rank = boot->local_rank;
  c->timeout_s = boot->timeout_s;
  c->device_memory = 1;
  m->bootstrap = boot;
  int ndev = 0;
  cudaError_t ce = cudaGetDeviceCount(&ndev);
  if (ce != cudaSuccess || ndev == 0) {
    pc_seterr(err, errlen, "nccl: no GPU (%s)", ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
    nccl_destroy(c, 1);
    return NULL;
  }
  if ((ce = cudaSetDevice(c->local_rank % ndev)) != cudaSuccess ||
      (ce = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess) {
    pc_seterr(err, errlen, "nccl: GPU %d: %s", c->local_rank % ndev, cudaGetErrorString(ce));
    nccl_destroy(c, 1);
    return NULL;
  }
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  ncclResult_t r = ncclSuccess;
  if (c->rank == 0) r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) {
    pc_seterr(err, errlen, "nccl: ncclGetUniqueId: %s", ncclGetErrorString(r));
    nccl_destroy(c, 1);
    return NULL;
  }
  if (pc_comm_broadcast(boot, &id, sizeof id, 0) != 0) {
    pc_seterr(err, errlen, "nccl: sending the unique id: %s", pc_comm_error(boot));
    nccl_destroy(c, 1);
    return NULL;
  }
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;  // so that the setup, too, can be bounded by the timeout
  r = ncclCommInitRankConfig(&m->nc, c->size, id, c->rank, &cfg);
  if (nccl_wait(c, r, "setup") != 0) {
    pc_seterr(err, errlen, "%s", c->err);
    nccl_destroy(c, 1);
    return NULL;
  }
  return c;
}
