/* trainer/dist/comm_tcp.c: the tcp engine of comm.h, for torchrun-style launches (RANK, WORLD_SIZE,
 * LOCAL_RANK, MASTER_ADDR, MASTER_PORT) where no MPI runtime starts the processes.
 *
 * Why sockets and not MPI here: Open MPI 4.1 (Debian 12's) cannot join independently started
 * processes: MPI_Comm_connect/accept between singletons fails with "The user has called an operation
 * involving MPI_Connect and/or MPI_Accept that spans multiple invocations of mpirun. This requires the
 * support of the ompi-server tool" (docs/training.md, "Data parallel", has the experiment). Needing
 * ompi-server (and an MPI install) on every pod would defeat the point of this launch, so the smallest
 * honest alternative is the transport alone: TCP connections carrying comm.c's exchanges, the same
 * collectives as the mpi engine run on.
 *
 * Setup (the rendezvous): rank 0 listens on MASTER_PORT; every other rank opens a listener on a free
 * port, connects to MASTER_ADDR:MASTER_PORT (retrying until rank 0 is up, within the timeout) and
 * says hello (its rank, the world size, its port). Rank 0 answers each with the table of addresses
 * (as it saw them) and ports; then rank i connects to each rank 0 < j < i and accepts from each j > i:
 * a full mesh, one connection per pair of ranks. IPv4.
 *
 * Every message starts with a header (magic, the exchange's sequence number, the byte count), so a
 * desynchronised peer is an error, not garbage. A peer that exits or is killed closes its sockets:
 * the next exchange fails at once naming it; one that stops answering fails after the timeout. */
#include "dist/comm.h"
#include "util/err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x70636474u  // "pcdt"

typedef struct {
  uint32_t magic, seq;
  uint64_t bytes;
} msg_header;

typedef struct {
  uint32_t magic;
  int32_t rank, size, port;
} hello;

typedef struct {
  char addr[INET_ADDRSTRLEN];
  int32_t port;
} table_entry;

typedef struct {
  int *fd;       /* (size): the connection to each rank, -1 for this one */
  uint32_t seq;  /* exchanges so far */
} tcp_impl;

// ---- blocking-with-deadline helpers for the setup ------------------------------------------------

static int wait_fd(int fd, short ev, double deadline) {
  for (;;) {
    double left = deadline - pc_comm__now();
    if (left <= 0) return 0;
    struct pollfd p = {fd, ev, 0};
    int r = poll(&p, 1, (int)(left * 1000) + 1);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

/* All of buf, or -1 (errno, or 0 for EOF / ETIMEDOUT for the deadline). */
static int io_all(int fd, void *buf, size_t n, int writing, double deadline) {
  char *b = buf;
  while (n) {
    int w = wait_fd(fd, writing ? POLLOUT : POLLIN, deadline);
    if (w == 0) { errno = ETIMEDOUT; return -1; }
    if (w < 0) return -1;
    ssize_t k = writing ? send(fd, b, n, MSG_NOSIGNAL) : recv(fd, b, n, 0);
    if (k == 0) { errno = 0; return -1; }
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return -1;
    }
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

static void set_socket_opts(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int listen_on(int port, int *bound_port, char *err, size_t errlen) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) { pc_seterr(err, errlen, "socket: %s", strerror(errno)); return -1; }
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  socklen_t al = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
    pc_seterr(err, errlen, "cannot listen on TCP port %d: %s", port, strerror(errno));
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  *bound_port = ntohs(a.sin_port);
  return fd;
}

static int accept_one(int lfd, double deadline, char *peer_addr) {
  for (;;) {
    int w = wait_fd(lfd, POLLIN, deadline);
    if (w <= 0) return -1;
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int fd = accept4(lfd, (struct sockaddr *)&a, &al, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      return -1;
    }
    if (peer_addr) inet_ntop(AF_INET, &a.sin_addr, peer_addr, INET_ADDRSTRLEN);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
  }
}

/* Connects to host:port, retrying while nobody listens yet, until the deadline. */
static int connect_to(const char *host, int port, double deadline, char *err, size_t errlen) {
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  int g = getaddrinfo(host, ps, &hints, &ai);
  if (g != 0) { pc_seterr(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(g)); return -1; }
  int last = 0;
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { last = errno; break; }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(ai);
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      return fd;
    }
    last = errno;
    close(fd);
    if (pc_comm__now() > deadline) break;
    struct timespec ts = {0, 50 * 1000000};  // rank 0 may not be listening yet
    nanosleep(&ts, NULL);
  }
  freeaddrinfo(ai);
  pc_seterr(err, errlen, "cannot connect to %s:%d: %s", host, port, strerror(last));
  return -1;
}

// ---- the exchange ---------------------------------------------------------------------------------

/* One direction of one peer's message: header then payload, tracked by how much has moved. */
typedef struct {
  pc_comm_msg *m;
  msg_header h;
  size_t done;   /* of sizeof h + bytes */
} xfer;

static int step_xfer(xfer *x, int fd, int writing) {
  size_t total = sizeof x->h + x->m->bytes;
  while (x->done < total) {
    char *p;
    size_t n;
    if (x->done < sizeof x->h) { p = (char *)&x->h + x->done; n = sizeof x->h - x->done; }
    else { p = (char *)x->m->buf + (x->done - sizeof x->h); n = total - x->done; }
    ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
    if (k == 0) return -2;  // the peer closed the connection
    if (k < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    x->done += (size_t)k;
  }
  return 1;
}

static int tcp_exchange(pc_comm *c, const pc_comm_msg *sends, int nsend, pc_comm_msg *recvs, int nrecv,
                        const char *what) {
  tcp_impl *t = c->impl;
  uint32_t seq = ++t->seq;
  int n = c->size;
  xfer *sx = calloc((size_t)n, sizeof *sx), *rx = calloc((size_t)n, sizeof *rx);
  struct pollfd *pf = calloc((size_t)n, sizeof *pf);
  int *pr = calloc((size_t)n, sizeof *pr), rc = -1;
  if (!sx || !rx || !pf || !pr) { pc_comm__fail(c, "out of memory"); goto done; }
  // comm.c sends at most one message each way per peer and exchange
  for (int i = 0; i < nsend; i++) {
    sx[sends[i].peer].m = (pc_comm_msg *)&sends[i];
    sx[sends[i].peer].h = (msg_header){MAGIC, seq, sends[i].bytes};
  }
  for (int i = 0; i < nrecv; i++) rx[recvs[i].peer].m = &recvs[i];
  double deadline = pc_comm__now() + c->timeout_s;
  for (;;) {
    int np = 0;
    for (int p = 0; p < n; p++) {
      short ev = 0;
      if (sx[p].m && sx[p].done < sizeof(msg_header) + sx[p].m->bytes) ev |= POLLOUT;
      if (rx[p].m && rx[p].done < sizeof(msg_header) + rx[p].m->bytes) ev |= POLLIN;
      if (ev) { pf[np] = (struct pollfd){t->fd[p], ev, 0}; pr[np++] = p; }
    }
    if (!np) { rc = 0; break; }
    double left = deadline - pc_comm__now();
    if (left <= 0) {
      char who[256] = "";
      size_t w = 0;
      for (int i = 0; i < np && w + 16 < sizeof who; i++)
        w += (size_t)snprintf(who + w, sizeof who - w, "%s%d", w ? ", " : "", pr[i]);
      pc_comm__fail(c, "rank %s did not answer within %g s (%s; this is rank %d of %d, tcp)", who, c->timeout_s, what,
                    c->rank, c->size);
      break;
    }
    int r = poll(pf, (nfds_t)np, (int)(left * 1000) + 1);
    if (r < 0 && errno != EINTR) { pc_comm__fail(c, "poll: %s (%s)", strerror(errno), what); break; }
    int bad = -1, closed = 0;
    for (int i = 0; i < np && r > 0 && bad < 0; i++) {
      int p = pr[i];
      if (!pf[i].revents) continue;
      if ((pf[i].revents & POLLOUT) || (pf[i].revents & (POLLERR | POLLHUP))) {
        if (sx[p].m) {
          int k = step_xfer(&sx[p], t->fd[p], 1);
          if (k < 0) { bad = p; closed = 1; }
        }
      }
      if (bad < 0 && (pf[i].revents & (POLLIN | POLLERR | POLLHUP)) && rx[p].m) {
        int k = step_xfer(&rx[p], t->fd[p], 0);
        if (k < 0) { bad = p; closed = 1; }
        else if (rx[p].done >= sizeof(msg_header) &&
                 (rx[p].h.magic != MAGIC || rx[p].h.seq != seq || rx[p].h.bytes != rx[p].m->bytes)) {
          pc_comm__fail(c, "rank %d is out of step (%s: message %u of %llu bytes, expected %u of %zu)", p, what,
                        rx[p].h.seq, (unsigned long long)rx[p].h.bytes, seq, rx[p].m->bytes);
          bad = p;
        }
      }
    }
    if (bad >= 0) {
      if (closed) {
        // one death cascades (a rank that saw it exits too): name every peer already gone, in rank order,
        // so that the first cause is among them and not only the first socket polled
        char who[256] = "";
        size_t w = 0;
        int gone = 0;
        for (int p = 0; p < n && w + 16 < sizeof who; p++) {
          char b;
          if (p != bad && (p == c->rank || recv(t->fd[p], &b, 1, MSG_PEEK | MSG_DONTWAIT) != 0)) continue;
          w += (size_t)snprintf(who + w, sizeof who - w, "%s%d", w ? ", " : "", p);
          gone++;
        }
        pc_comm__fail(c, "rank%s %s closed %s connection (exited or killed) during %s (this is rank %d of %d, tcp)",
                      gone > 1 ? "s" : "", who, gone > 1 ? "their" : "its", what, c->rank, c->size);
      }
      break;
    }
  }
done:
  free(sx);
  free(rx);
  free(pf);
  free(pr);
  return rc;
}

static void tcp_destroy(pc_comm *c, int failed) {
  tcp_impl *t = c->impl;
  if (t) {
    for (int p = 0; t->fd && p < c->size; p++)
      if (t->fd[p] >= 0) close(t->fd[p]);
    free(t->fd);
    free(t);
  }
  free(c);
}

static const pc_comm_ops TCP_OPS = {.name = "tcp", .exchange = tcp_exchange, .destroy = tcp_destroy};

// ---- the rendezvous -------------------------------------------------------------------------------

static int rendezvous(pc_comm *c, tcp_impl *t, const char *master, int master_port, char *err, size_t errlen) {
  int R = c->rank, N = c->size, port = 0, rc = -1;
  double deadline = pc_comm__now() + c->timeout_s;
  table_entry *tab = calloc((size_t)N, sizeof *tab);
  int lfd = listen_on(R == 0 ? master_port : 0, &port, err, errlen);
  if (!tab || lfd < 0) goto done;
  if (R == 0) {
    // every other rank says hello on the master port; the table goes back once all have
    for (int k = 1; k < N; k++) {
      char addr[INET_ADDRSTRLEN] = "";
      int fd = accept_one(lfd, deadline, addr);
      hello h;
      if (fd < 0 || io_all(fd, &h, sizeof h, 0, deadline) != 0) {
        if (fd >= 0) close(fd);
        pc_seterr(err, errlen, "rendezvous on port %d: %d of %d ranks arrived within %g s", master_port, k, N, c->timeout_s);
        goto done;
      }
      if (h.magic != MAGIC || h.size != N || h.rank < 1 || h.rank >= N || t->fd[h.rank] >= 0) {
        close(fd);
        pc_seterr(err, errlen, "rendezvous on port %d: a peer said rank %d of %d (this is rank 0 of %d; two "
                  "jobs on one MASTER_PORT, or RANK/WORLD_SIZE set wrong)", master_port, h.rank, h.size, N);
        goto done;
      }
      t->fd[h.rank] = fd;
      snprintf(tab[h.rank].addr, sizeof tab[h.rank].addr, "%s", addr);
      tab[h.rank].port = h.port;
    }
    for (int p = 1; p < N; p++)
      if (io_all(t->fd[p], tab, sizeof *tab * (size_t)N, 1, deadline) != 0) {
        pc_seterr(err, errlen, "rendezvous: cannot send the table to rank %d: %s", p, strerror(errno));
        goto done;
      }
  } else {
    int fd = connect_to(master, master_port, deadline, err, errlen);
    if (fd < 0) goto done;
    t->fd[0] = fd;
    hello h = {MAGIC, R, N, port};
    if (io_all(fd, &h, sizeof h, 1, deadline) != 0 || io_all(fd, tab, sizeof *tab * (size_t)N, 0, deadline) != 0) {
      pc_seterr(err, errlen, "rendezvous with rank 0 at %s:%d: %s within %g s", master, master_port,
                errno == ETIMEDOUT ? "not every rank arrived" : errno ? strerror(errno) : "rank 0 closed the connection",
                c->timeout_s);
      goto done;
    }
    // the mesh: connect to the lower ranks, accept the higher ones
    for (int p = 1; p < R; p++) {
      int f = connect_to(tab[p].addr, tab[p].port, deadline, err, errlen);
      if (f < 0) goto done;
      t->fd[p] = f;
      hello me = {MAGIC, R, N, 0};
      if (io_all(f, &me, sizeof me, 1, deadline) != 0) {
        pc_seterr(err, errlen, "rendezvous: cannot reach rank %d at %s:%d", p, tab[p].addr, tab[p].port);
        goto done;
      }
    }
    for (int k = R + 1; k < N; k++) {
      int f = accept_one(lfd, deadline, NULL);
      hello hi;
      if (f < 0 || io_all(f, &hi, sizeof hi, 0, deadline) != 0 || hi.magic != MAGIC || hi.rank <= R || hi.rank >= N ||
          t->fd[hi.rank] >= 0) {
        if (f >= 0) close(f);
        pc_seterr(err, errlen, "rendezvous: the ranks above %d did not all connect within %g s", R, c->timeout_s);
        goto done;
      }
      t->fd[hi.rank] = f;
    }
  }
  for (int p = 0; p < N; p++)
    if (t->fd[p] >= 0) set_socket_opts(t->fd[p]);
  rc = 0;
done:
  if (lfd >= 0) close(lfd);
  free(tab);
  return rc;
}

pc_comm *pc_comm_tcp_new(int rank, int size, int local_rank, const char *master_addr, int master_port,
                         double timeout_s, char *err, size_t errlen) {
  pc_comm *c = calloc(1, sizeof *c);
  tcp_impl *t = calloc(1, sizeof *t);
  if (!c || !t || !(t->fd = malloc(sizeof *t->fd * (size_t)size))) {
    free(c);
    if (t) free(t->fd);
    free(t);
    pc_seterr(err, errlen, "out of memory");
    return NULL;
  }
  for (int p = 0; p < size; p++) t->fd[p] = -1;
  *c = (pc_comm){.ops = &TCP_OPS, .rank = rank, .size = size, .local_rank = local_rank, .timeout_s = timeout_s, .impl = t};
  if (rendezvous(c, t, master_addr, master_port, err, errlen) != 0) {
    tcp_destroy(c, 1);
    return NULL;
  }
  return c;
}
