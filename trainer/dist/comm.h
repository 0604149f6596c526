/* trainer/dist/comm.h: the communicator of data-parallel training: N processes (ranks), one model
 * replica each, exchanging gradients, parameters and metrics. One interface, three engines:
 *
 *   mpi   Open MPI's point-to-point (Isend/Irecv), for CPU processes started by `mpirun` or Slurm's
 *         `srun` (comm_mpi.c; built where mpicc was found)
 *   tcp   plain sockets, a full mesh set up through a rendezvous at MASTER_ADDR:MASTER_PORT, for
 *         torchrun-style launches (RANK, WORLD_SIZE, ...) with no MPI runtime (comm_tcp.c)
 *   nccl  NVIDIA's collectives on GPU memory, its unique id broadcast over one of the two above
 *         (comm_nccl.cu; built where nvcc and nccl.h were found)
 *
 * mpi and tcp provide one primitive, an exchange (post a set of sends and receives to peers and wait
 * for all of them), and comm.c builds every collective on it in a fixed order: each rank sums the
 * contributions in rank order 0..N-1, so every rank gets bit-identical results and a run is
 * reproducible for a given world size. nccl implements the collectives itself.
 *
 * Failure: every operation is bounded by the timeout given at creation. A peer that closed its
 * connection or did not answer in time makes the operation return -1 with pc_comm_error() naming it
 * ("rank 1 did not answer within 10 s (reduce-scatter)"). After a failure the communicator is broken:
 * the caller stops and frees it with pc_comm_free(c, 1), which does not wait for the peers.
 *
 * Buffers are host memory for mpi and tcp, device memory for nccl (pc_comm_device_memory says which).
 * Nothing here prints or exits. Not thread-safe: one thread drives a communicator. */
#ifndef PC_DIST_COMM_H
#define PC_DIST_COMM_H
#include <stddef.h>

typedef struct pc_comm pc_comm;

typedef enum { PC_COMM_F32 = 0, PC_COMM_F64 = 1 } pc_comm_dtype;

/* One send or receive of an exchange: bytes to or from peer. */
typedef struct {
  int peer;
  void *buf;
  size_t bytes;
} pc_comm_msg;

/* The engine's table (one per implementation). exchange is the point-to-point primitive (mpi, tcp);
 * an engine with its own collectives (nccl) sets the collective slots, which comm.c calls instead. */
typedef struct {
  const char *name;
  int (*exchange)(pc_comm *c, const pc_comm_msg *sends, int nsend, pc_comm_msg *recvs, int nrecv, const char *what);
  int (*reduce_scatter)(pc_comm *c, const void *send, void *recv, size_t count, pc_comm_dtype dt);
  int (*all_gather)(pc_comm *c, void *buf, size_t bytes_per_rank);
  int (*all_reduce)(pc_comm *c, void *buf, size_t count, pc_comm_dtype dt);
  int (*broadcast)(pc_comm *c, void *buf, size_t bytes, int root);
  int (*barrier)(pc_comm *c);
  void (*destroy)(pc_comm *c, int failed);
} pc_comm_ops;

struct pc_comm {
  const pc_comm_ops *ops;
  int rank, size, local_rank;
  double timeout_s;       /* every operation's bound */
  int device_memory;      /* buffers are GPU memory (nccl) */
  int broken;             /* an operation failed: later ones fail at once */
  char err[512];
  void *impl;
};

/* The communicator the environment asks for, or *out = NULL for a single process:
 *   OMPI_COMM_WORLD_SIZE (mpirun), or PMIX_RANK / PMI_RANK with SLURM_NTASKS (srun --mpi=pmix)  -> mpi
 *   WORLD_SIZE > 1 with RANK, MASTER_ADDR, MASTER_PORT (torchrun, a Kubernetes job)             -> tcp
 * PREFCAP_COMM=mpi|tcp forces one. timeout_s bounds setup and every operation. 0 or -1 (err set). */
int pc_comm_from_env(double timeout_s, pc_comm **out, char *err, size_t errlen);

/* The engines (each sets err and returns NULL on failure). */
pc_comm *pc_comm_mpi_new(double timeout_s, char *err, size_t errlen);
int pc_comm_mpi_available(void);  /* built with MPI */
pc_comm *pc_comm_tcp_new(int rank, int size, int local_rank, const char *master_addr, int master_port,
                         double timeout_s, char *err, size_t errlen);
/* NCCL over the GPU local_rank (cudaSetDevice), its unique id broadcast by rank 0 over bootstrap
 * (mpi or tcp: borrowed, and kept for the caller's host-side needs). */
pc_comm *pc_comm_nccl_new(pc_comm *bootstrap, char *err, size_t errlen);
int pc_comm_nccl_available(void);

/* failed: after an error, do not wait for the peers (MPI is not finalized). NULL is a no-op. */
void pc_comm_free(pc_comm *c, int failed);
const char *pc_comm_error(const pc_comm *c);
static inline int pc_comm_device_memory(const pc_comm *c) { return c->device_memory; }

// ---- collectives: 0, or -1 with pc_comm_error set. Every rank calls each one, in the same order. ----

/* recv (count) = the sum over ranks of send[rank * count .. (rank + 1) * count): send holds size *
 * count elements, recv is this rank's block. */
int pc_comm_reduce_scatter(pc_comm *c, const void *send, void *recv, size_t count, pc_comm_dtype dt);
/* buf holds size blocks of bytes_per_rank; this rank's block (at rank * bytes_per_rank) is sent to
 * every other rank, whose blocks arrive in place. */
int pc_comm_all_gather(pc_comm *c, void *buf, size_t bytes_per_rank);
/* buf = the sum over ranks of buf, on every rank (meant for small buffers: metrics, norms). */
int pc_comm_all_reduce(pc_comm *c, void *buf, size_t count, pc_comm_dtype dt);
int pc_comm_broadcast(pc_comm *c, void *buf, size_t bytes, int root);
int pc_comm_barrier(pc_comm *c);

// ---- for the engines -------------------------------------------------------------------------------
/* The error message and the broken mark: returns -1. */
int pc_comm__fail(pc_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double pc_comm__now(void);

#endif
