/* trainer/dist/comm.c: see comm.h. The collectives of the point-to-point engines (mpi, tcp), built on
 * their one exchange primitive, and the choice of engine from the launcher's environment.
 *
 * Every collective here is one or two exchanges in which each rank talks to every other directly
 * (N - 1 sends and N - 1 receives): the volume of a ring, without its N - 1 rounds of latency, which
 * is the better trade for the few ranks of CPU data parallelism. Sums are added in rank order 0..N-1
 * on whichever rank adds them, so every rank ends with bit-identical values. */
#include "dist/comm.h"
#include "util/err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double pc_comm__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int pc_comm__fail(pc_comm *c, const char *fmt, ...) {
  if (!c->broken) {  // the first failure is the cause; later ones are its consequence
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
  }
  c->broken = 1;
  return -1;
}

const char *pc_comm_error(const pc_comm *c) { return c->err[0] ? c->err : "no error"; }

void pc_comm_free(pc_comm *c, int failed) {
  if (c) c->ops->destroy(c, failed || c->broken);
}

static size_t dt_size(pc_comm_dtype dt) { return dt == PC_COMM_F64 ? 8 : 4; }

static int check_usable(pc_comm *c) {
  return c->broken ? pc_comm__fail(c, "%s", c->err) : 0;
}

// ---- collectives on the exchange ----------------------------------------------------------------

/* Adds n elements of src into dst. */
static void add_into(void *dst, const void *src, size_t n, pc_comm_dtype dt) {
  if (dt == PC_COMM_F64) {
    double *d = dst;
    const double *s = src;
    for (size_t i = 0; i < n; i++) d[i] += s[i];
  } else {
    float *d = dst;
    const float *s = src;
    for (size_t i = 0; i < n; i++) d[i] += s[i];
  }
}

/* The sends and receives of one all-to-all round: to and from every other rank. */
typedef struct {
  pc_comm_msg *sends, *recvs;
  int n;
} round_msgs;

static int round_alloc(pc_comm *c, round_msgs *r) {
  r->n = 0;
  r->sends = calloc((size_t)c->size, sizeof *r->sends);
  r->recvs = calloc((size_t)c->size, sizeof *r->recvs);
  if (!r->sends || !r->recvs) {
    free(r->sends);
    free(r->recvs);
    return pc_comm__fail(c, "out of memory");
  }
  return 0;
}

static void round_free(round_msgs *r) {
  free(r->sends);
  free(r->recvs);
}

int pc_comm_reduce_scatter(pc_comm *c, const void *send, void *recv, size_t count, pc_comm_dtype dt) {
  if (check_usable(c)) return -1;
  if (c->ops->reduce_scatter) return c->ops->reduce_scatter(c, send, recv, count, dt);
  size_t bytes = count * dt_size(dt);
  const char *s = send;
  if (c->size == 1) { memcpy(recv, send, bytes); return 0; }
  // every other rank's block for this rank lands in tmp, then the sum in rank order
  char *tmp = malloc(bytes * (size_t)c->size + 1);
  round_msgs r;
  if (!tmp) return pc_comm__fail(c, "out of memory (%zu bytes for a reduce-scatter)", bytes * (size_t)c->size);
  if (round_alloc(c, &r)) { free(tmp); return -1; }
  for (int p = 0; p < c->size; p++) {
    if (p == c->rank) continue;
    r.sends[r.n] = (pc_comm_msg){p, (void *)(s + (size_t)p * bytes), bytes};
    r.recvs[r.n] = (pc_comm_msg){p, tmp + (size_t)p * bytes, bytes};
    r.n++;
  }
  int rc = c->ops->exchange(c, r.sends, r.n, r.recvs, r.n, "reduce-scatter");
  round_free(&r);
  if (rc == 0) {
    memcpy(tmp + (size_t)c->rank * bytes, s + (size_t)c->rank * bytes, bytes);
    memcpy(recv, tmp, bytes);
    for (int p = 1; p < c->size; p++) add_into(recv, tmp + (size_t)p * bytes, count, dt);
  }
  free(tmp);
  return rc;
}

int pc_comm_all_gather(pc_comm *c, void *buf, size_t bytes_per_rank) {
  if (check_usable(c)) return -1;
  if (c->ops->all_gather) return c->ops->all_gather(c, buf, bytes_per_rank);
  if (c->size == 1) return 0;
  char *b = buf;
  round_msgs r;
  if (round_alloc(c, &r)) return -1;
  for (int p = 0; p < c->size; p++) {
    if (p == c->rank) continue;
    r.sends[r.n] = (pc_comm_msg){p, b + (size_t)c->rank * bytes_per_rank, bytes_per_rank};
    r.recvs[r.n] = (pc_comm_msg){p, b + (size_t)p * bytes_per_rank, bytes_per_rank};
    r.n++;
  }
  int rc = c->ops->exchange(c, r.sends, r.n, r.recvs, r.n, "all-gather");
  round_free(&r);
  return rc;
}

int pc_comm_all_reduce(pc_comm *c, void *buf, size_t count, pc_comm_dtype dt) {
  if (check_usable(c)) return -1;
  if (c->ops->all_reduce) return c->ops->all_reduce(c, buf, count, dt);
  if (c->size == 1) return 0;
  // everyone's values to everyone, then each rank adds them in rank order: the same sum everywhere
  size_t bytes = count * dt_size(dt);
  char *all = malloc(bytes * (size_t)c->size + 1);
  if (!all) return pc_comm__fail(c, "out of memory (%zu bytes for an all-reduce)", bytes * (size_t)c->size);
  memcpy(all + (size_t)c->rank * bytes, buf, bytes);
  int rc = pc_comm_all_gather(c, all, bytes);
  if (rc == 0) {
    memcpy(buf, all, bytes);
    for (int p = 1; p < c->size; p++) add_into(buf, all + (size_t)p * bytes, count, dt);
  }
  free(all);
  return rc;
}

int pc_comm_broadcast(pc_comm *c, void *buf, size_t bytes, int root) {
  if (check_usable(c)) return -1;
  if (c->ops->broadcast) return c->ops->broadcast(c, buf, bytes, root);
  if (c->size == 1) return 0;
  if (c->rank != root) {
    pc_comm_msg m = {root, buf, bytes};
    return c->ops->exchange(c, NULL, 0, &m, 1, "broadcast");
  }
  round_msgs r;
  if (round_alloc(c, &r)) return -1;
  for (int p = 0; p < c->size; p++)
    if (p != root) r.sends[r.n++] = (pc_comm_msg){p, buf, bytes};
  int rc = c->ops->exchange(c, r.sends, r.n, NULL, 0, "broadcast");
  round_free(&r);
  return rc;
}

int pc_comm_barrier(pc_comm *c) {
  if (check_usable(c)) return -1;
  if (c->ops->barrier) return c->ops->barrier(c);
  // an all-gather of one byte each: no rank leaves before every rank has arrived
  char *b = calloc((size_t)c->size, 1);
  if (!b) return pc_comm__fail(c, "out of memory");
  int rc = pc_comm_all_gather(c, b, 1);
  free(b);
  return rc;
}

// ---- the engine from the environment --------------------------------------------------------------

static int env_int(const char *name, int *v) {
  const char *s = getenv(name);
  if (!s || !*s) return 0;
  char *end;
  long x = strtol(s, &end, 10);
  if (*end || x < 0 || x > 1 << 20) return -1;
  *v = (int)x;
  return 1;
}

int pc_comm_from_env(double timeout_s, pc_comm **out, char *err, size_t errlen) {
  *out = NULL;
  const char *force = getenv("PREFCAP_COMM");
  int mpi_env = getenv("OMPI_COMM_WORLD_SIZE") || ((getenv("PMIX_RANK") || getenv("PMI_RANK")) && getenv("SLURM_NTASKS"));
  int world = 0, rank = 0, local = 0, port = 0;
  int has_world = env_int("WORLD_SIZE", &world);
  if (force && *force && strcmp(force, "mpi") && strcmp(force, "tcp")) {
    pc_seterr(err, errlen, "PREFCAP_COMM=%s: expected mpi or tcp", force);
    return -1;
  }
  if ((force && !strcmp(force, "mpi")) || (!(force && *force) && mpi_env)) {
    if (!pc_comm_mpi_available()) {
      pc_seterr(err, errlen, "started by an MPI launcher (mpirun/srun), but this prefcap-dpo was built without MPI "
                "(install libopenmpi-dev and rebuild), or launch with torchrun-style variables instead");
      return -1;
    }
    *out = pc_comm_mpi_new(timeout_s, err, errlen);
    return *out ? 0 : -1;
  }
  if (has_world < 0) { pc_seterr(err, errlen, "WORLD_SIZE='%s' is not a process count", getenv("WORLD_SIZE")); return -1; }
  // one process; unless tcp is forced: a world of one (a single GPU's NCCL check needs a bootstrap)
  if (!has_world || (world <= 1 && !(force && !strcmp(force, "tcp")))) return 0;
  if (env_int("RANK", &rank) != 1 || rank >= world) {
    pc_seterr(err, errlen, "WORLD_SIZE=%d needs RANK in 0..%d (got '%s')", world, world - 1,
              getenv("RANK") ? getenv("RANK") : "(unset)");
    return -1;
  }
  if (env_int("LOCAL_RANK", &local) < 0) { pc_seterr(err, errlen, "LOCAL_RANK='%s' is not a number", getenv("LOCAL_RANK")); return -1; }
  const char *addr = getenv("MASTER_ADDR");
  if (!addr || !*addr) { pc_seterr(err, errlen, "WORLD_SIZE=%d needs MASTER_ADDR (rank 0's host)", world); return -1; }
  if (env_int("MASTER_PORT", &port) != 1 || port < 1 || port > 65535) {
    pc_seterr(err, errlen, "WORLD_SIZE=%d needs MASTER_PORT, a TCP port (got '%s')", world,
              getenv("MASTER_PORT") ? getenv("MASTER_PORT") : "(unset)");
    return -1;
  }
  *out = pc_comm_tcp_new(rank, world, local, addr, port, timeout_s, err, errlen);
  return *out ? 0 : -1;
}
