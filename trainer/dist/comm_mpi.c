/* trainer/dist/comm_mpi.c: the mpi engine of comm.h: Open MPI's nonblocking point-to-point calls under
 * comm.c's collectives, for processes started by `mpirun -np N` or Slurm's `srun --mpi=pmix`.
 *
 * Why not MPI_Allreduce and friends: a blocking collective cannot be bounded by a timeout, and when it
 * hangs nobody can say which rank is missing. Here each exchange posts its Isend/Irecv and tests them
 * until they complete or --comm-timeout passes; then the ranks whose messages never came are named.
 * A rank that dies is noticed by mpirun itself, which ends the job (and says which rank died).
 *
 * Built with mpicc's flags where the Makefile found them (PC_HAVE_MPI); otherwise the stubs at the
 * bottom say that MPI was not built. */
#include "dist/comm.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PC_HAVE_MPI
#include <mpi.h>
#include <time.h>

/* MPI counts are ints: larger messages go as several pieces of at most this many bytes (the pieces
 * of one message between two ranks arrive in order: MPI's non-overtaking rule). */
#define PIECE ((size_t)1 << 30)
#define TAG 17

typedef struct {
  MPI_Comm world;
  MPI_Request *reqs;
  int *peer_of, *is_recv;   /* per request: the peer, and whether it is a receive */
  int cap;
  int finalize;             /* we called MPI_Init, so we finalize */
} mpi_impl;

static int reserve(pc_comm *c, mpi_impl *m, int n) {
  if (n <= m->cap) return 0;
  MPI_Request *r = realloc(m->reqs, sizeof *r * (size_t)n);
  if (r) m->reqs = r;
  int *p = realloc(m->peer_of, sizeof *p * (size_t)n);
  if (p) m->peer_of = p;
  int *q = realloc(m->is_recv, sizeof *q * (size_t)n);
  if (q) m->is_recv = q;
  if (!r || !p || !q) return pc_comm__fail(c, "out of memory");
  m->cap = n;
  return 0;
}

static size_t pieces(size_t bytes) { return bytes ? (bytes + PIECE - 1) / PIECE : 1; }

static int post(pc_comm *c, mpi_impl *m, const pc_comm_msg *msg, int recv, int *n) {
  size_t np = pieces(msg->bytes);
  for (size_t k = 0; k < np; k++) {
    size_t off = k * PIECE, len = msg->bytes - off < PIECE ? msg->bytes - off : PIECE;
    char *b = (char *)msg->buf + off;
    int rc = recv ? MPI_Irecv(b, (int)len, MPI_BYTE, msg->peer, TAG, m->world, &m->reqs[*n])
                  : MPI_Isend(b, (int)len, MPI_BYTE, msg->peer, TAG, m->world, &m->reqs[*n]);
    if (rc != MPI_SUCCESS) {
      char es[MPI_MAX_ERROR_STRING];
      int el = 0;
      MPI_Error_string(rc, es, &el);
      return pc_comm__fail(c, "MPI_%s to rank %d failed: %s", recv ? "Irecv" : "Isend", msg->peer, es);
    }
    m->peer_of[*n] = msg->peer;
    m->is_recv[*n] = recv;
    (*n)++;
  }
  return 0;
}

static int mpi_exchange(pc_comm *c, const pc_comm_msg *sends, int nsend, pc_comm_msg *recvs, int nrecv,
                        const char *what) {
  mpi_impl *m = c->impl;
  int total = 0, n = 0;
  for (int i = 0; i < nsend; i++) total += (int)pieces(sends[i].bytes);
  for (int i = 0; i < nrecv; i++) total += (int)pieces(recvs[i].bytes);
  if (reserve(c, m, total)) return -1;
  for (int i = 0; i < nrecv; i++)
    if (post(c, m, &recvs[i], 1, &n)) return -1;
  for (int i = 0; i < nsend; i++)
    if (post(c, m, &sends[i], 0, &n)) return -1;
  double deadline = pc_comm__now() + c->timeout_s;
  long nap_ns = 20000;
  for (;;) {
    int done = 0;
    if (MPI_Testall(n, m->reqs, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
      return pc_comm__fail(c, "MPI_Testall failed in %s", what);
    if (done) return 0;
    if (pc_comm__now() > deadline) break;
    // the other ranks may be seconds away (a slower rank, a checkpoint): wait without taking a core
    struct timespec ts = {0, nap_ns};
    nanosleep(&ts, NULL);
    if (nap_ns < 1000000) nap_ns *= 2;
  }
  // name the ranks whose messages are still outstanding (a receive not arrived is the telling one)
  char who[256] = "";
  size_t w = 0;
  char *named = calloc((size_t)c->size, 1);
  for (int i = 0; i < n && named; i++) {
    int flag = 0;
    MPI_Test(&m->reqs[i], &flag, MPI_STATUS_IGNORE);
    if (flag || !m->is_recv[i] || named[m->peer_of[i]] || w + 16 >= sizeof who) continue;
    named[m->peer_of[i]] = 1;
    w += (size_t)snprintf(who + w, sizeof who - w, "%s%d", w ? ", " : "", m->peer_of[i]);
  }
  free(named);
  // the receives still posted would write into the caller's buffers if a message came late: withdrawn
  for (int i = 0; i < n; i++)
    if (m->is_recv[i] && m->reqs[i] != MPI_REQUEST_NULL) {
      MPI_Cancel(&m->reqs[i]);
      MPI_Request_free(&m->reqs[i]);
    }
  return pc_comm__fail(c, "rank %s did not answer within %g s (%s; this is rank %d of %d, mpi)", w ? who : "?",
                       c->timeout_s, what, c->rank, c->size);
}

static void mpi_destroy(pc_comm *c, int failed) {
  mpi_impl *m = c->impl;
  if (m) {
    // after a failure the requests still pending would make MPI_Finalize wait for the lost rank: the
    // process leaves without it, and mpirun ends the job
    if (!failed) {
      MPI_Comm_free(&m->world);
      if (m->finalize) MPI_Finalize();
    }
    free(m->reqs);
    free(m->peer_of);
    free(m->is_recv);
    free(m);
  }
  free(c);
}

static const pc_comm_ops MPI_OPS = {.name = "mpi", .exchange = mpi_exchange, .destroy = mpi_destroy};

int pc_comm_mpi_available(void) { return 1; }

pc_comm *pc_comm_mpi_new(double timeout_s, char *err, size_t errlen) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
    pc_seterr(err, errlen, "MPI_Init failed");
    return NULL;
  }
  pc_comm *c = calloc(1, sizeof *c);
  mpi_impl *m = calloc(1, sizeof *m);
  if (!c || !m) { free(c); free(m); pc_seterr(err, errlen, "out of memory"); return NULL; }
  c->ops = &MPI_OPS;
  c->impl = m;
  c->timeout_s = timeout_s;
  m->finalize = !inited;
  MPI_Comm_dup(MPI_COMM_WORLD, &m->world);
  MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);  // errors come back as codes, never abort here
  MPI_Comm_rank(m->world, &c->rank);
  MPI_Comm_size(m->world, &c->size);
  const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (!lr) lr = getenv("SLURM_LOCALID");
  c->local_rank = lr ? atoi(lr) : 0;
  return c;
}

#else  // built without MPI

int pc_comm_mpi_available(void) { return 0; }

pc_comm *pc_comm_mpi_new(double timeout_s, char *err, size_t errlen) {
  pc_seterr(err, errlen, "this prefcap-dpo was built without MPI (install libopenmpi-dev and rebuild)");
  return NULL;
}

#endif
