/* tests/sdk/test_diskfull.c: the disk fills up under a store, then space returns.
 * Expected: a clear error (PREFCAP_EFULL, with the reason), no corruption (integrity_check ok, every
 * acknowledged event present), and logging resumes once there is space again, in both modes; in
 * async mode nothing accepted is lost meanwhile (the writer keeps the batch and retries).
 * Two ways to fill a disk: a real 1 MiB tmpfs (needs root and mount(2): skipped, saying so, where not
 * allowed), and a size-limited file (RLIMIT_FSIZE, in a child process; works everywhere). */
#include "test.h"
#include "util.h"
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/wait.h>

static char text[2048];

static int log_one(prefcap_t *pc, const char *prefix, int i) {
  char id[64];
  snprintf(id, sizeof id, "%s-%d", prefix, i);
  prefcap_generation_t g = {.size = sizeof g, .id = id, .prompt = "fill the disk", .completion = text};
  return prefcap_log_generation(pc, &g, NULL);
}

static long long count_prefix(const char *db, const char *prefix) {
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM generations WHERE id LIKE '%s-%%'", prefix);
  return tu_query(db, sql);
}

// ---- a real, small tmpfs -------------------------------------------------------------------------

static char mnt[600];

static bool mount_tmpfs(const char *size) {
  char cmd[800];
  snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=%s,mode=0700 prefcap-test '%s' 2>/dev/null", size, mnt);
  return system(cmd) == 0;
}

static void grow_tmpfs(void) {
  char cmd[800];
  snprintf(cmd, sizeof cmd, "mount -o remount,size=16m '%s'", mnt);
  if (system(cmd) != 0) fprintf(stderr, "  remount failed\n");
}

static void umount_tmpfs(void) {
  char cmd[800];
  snprintf(cmd, sizeof cmd, "umount '%s'", mnt);
  if (system(cmd) != 0) fprintf(stderr, "  umount failed\n");
}

static void tmpfs_full(prefcap_durability_t mode) {
  snprintf(mnt, sizeof mnt, "%s", tu_tmpdir());
  if (geteuid() != 0 || !mount_tmpfs("1m")) SKIP("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers the path");
  char db[700];
  snprintf(db, sizeof db, "%s/store.db", mnt);
  prefcap_t *pc = tu_open_q(db, mode, 100000);
  if (!pc) { umount_tmpfs(); REQUIRE(pc); }
  int acked = 0, first_fail = -1, rc = 0;
  if (mode == PREFCAP_SYNC) {
    for (int i = 0; i < 5000; i++) {
      rc = log_one(pc, "f", i);
      if (rc) { first_fail = i; break; }
      acked++;
    }
    EXPECTF(rc == PREFCAP_EFULL, "code %d (%s): %s", rc, prefcap_strerror(rc), prefcap_errmsg(pc));
    EXPECTF(strstr(prefcap_errmsg(pc), "full") != NULL, "errmsg: %s", prefcap_errmsg(pc));
    EXPECT(log_one(pc, "f", first_fail) == PREFCAP_EFULL);   /* still full: still a clear error */
    EXPECT(tu_integrity_ok(db));
    EXPECT(count_prefix(db, "f") == acked);
    grow_tmpfs();
    EXPECT(log_one(pc, "f", first_fail) == 0);               /* space is back: logging resumes */
    acked++;
  } else {
    /* the producers never block: the queue takes what the disk cannot, the writer retries */
    for (int i = 0; i < 1500; i++) acked += log_one(pc, "f", i) == 0;
    EXPECT(prefcap_flush(pc, 1500) == PREFCAP_ETIMEDOUT);   /* 3 MB cannot fit in 1 MiB */
    prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
    prefcap_get_counters(pc, &k);
    EXPECTF(k.failed == 0 && k.queued + k.stored < (uint64_t)acked + 1, "failed %llu queued %llu stored %llu",
            (unsigned long long)k.failed, (unsigned long long)k.queued, (unsigned long long)k.stored);
    EXPECT(tu_integrity_ok(db));
    grow_tmpfs();
    EXPECT(prefcap_flush(pc, 10000) == 0);
    prefcap_get_counters(pc, &k);
    EXPECT(k.failed == 0 && k.stored == (uint64_t)acked);
  }
  EXPECT(prefcap_close(pc, -1) == 0);
  EXPECT(tu_integrity_ok(db));
  long long present = count_prefix(db, "f");
  EXPECTF(present == acked, "acknowledged %d, present %lld", acked, present);
  printf("# tmpfs %s: %d events acknowledged, first refusal at event %d\n", mode == PREFCAP_SYNC ? "sync" : "async", acked, first_fail);
  umount_tmpfs();
}

static void tmpfs_full_sync(void) { tmpfs_full(PREFCAP_SYNC); }
static void tmpfs_full_async(void) { tmpfs_full(PREFCAP_ASYNC); }

// ---- a size-limited file -------------------------------------------------------------------------

/* In a child: limit file sizes, log until refused, lift the limit, log again. Exit codes say what
 * went wrong; stdout says how many were acknowledged. */
static void fsize_limit_sync(void) {
  const char *db = tu_dbpath();
  prefcap_t *pc0 = tu_open(db, PREFCAP_SYNC);
  REQUIRE(pc0);
  prefcap_close(pc0, -1);
  int fd[2];
  REQUIRE(pipe(fd) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fd[0]);
    signal(SIGXFSZ, SIG_IGN);   /* a write past the limit fails with EFBIG instead of killing us */
    prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
    if (!pc) _exit(10);
    struct rlimit rl;
    getrlimit(RLIMIT_FSIZE, &rl);
    struct rlimit small = {512 * 1024, rl.rlim_max};
    if (setrlimit(RLIMIT_FSIZE, &small)) _exit(11);
    int acked = 0, rc = 0, i = 0;
    for (; i < 5000; i++) {
      if ((rc = log_one(pc, "z", i))) break;
      acked++;
    }
    if (rc != PREFCAP_EFULL) { fprintf(stderr, "  child: code %d %s: %s\n", rc, prefcap_strerror(rc), prefcap_errmsg(pc)); _exit(12); }
    if (!strstr(prefcap_errmsg(pc), "File too large") && !strstr(prefcap_errmsg(pc), "full")) { fprintf(stderr, "  child: %s\n", prefcap_errmsg(pc)); _exit(13); }
    setrlimit(RLIMIT_FSIZE, &rl);
    if (log_one(pc, "z", i)) _exit(14);
    acked++;
    if (prefcap_close(pc, -1)) _exit(15);
    dprintf(fd[1], "%d\n", acked);
    _exit(0);
  }
  close(fd[1]);
  char buf[32] = {0};
  ssize_t n = read(fd[0], buf, sizeof buf - 1);
  close(fd[0]);
  int st;
  waitpid(pid, &st, 0);
  EXPECTF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  int acked = n > 0 ? atoi(buf) : -1;
  EXPECT(tu_integrity_ok(db));
  EXPECTF(count_prefix(db, "z") == acked, "acknowledged %d present %lld", acked, count_prefix(db, "z"));
}

int main(void) {
  for (size_t i = 0; i < sizeof text - 1; i++) text[i] = 'a' + (char)(i % 26);
  RUN(tmpfs_full_sync);
  RUN(tmpfs_full_async);
  RUN(fsize_limit_sync);
  return tst_end();
}
