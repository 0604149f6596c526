/* tests/sdk/test_crash.c: a child process logging in a loop (tests/sdk/crashchild.c) is killed with
 * SIGKILL at random moments, again and again on the same file, then the file is checked:
 *   sync mode:  every acknowledged event is present, PRAGMA integrity_check is ok;
 *   async mode: every event a flush had confirmed is present; the loss is at most what was queued
 *               (the queue holds 256 events, plus the batch being written), and is reported here.
 * The first kill often lands while the file is being created or migrated: the next run must cope. */
#include "test.h"
#include "util.h"
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>

#define RUNS 25
static const char *child_bin;

typedef struct { int acked, durable, max_queued; } seen;

/* Runs the child for a random 5..150 ms (first run: 0..20 ms), kills it, and parses what it said. */
static int run_and_kill(const char *db, const char *mode, const char *prefix, bool first, unsigned *seed, seen *s) {
  int fd[2];
  if (pipe(fd)) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(fd[1], 1);
    close(fd[0]); close(fd[1]);
    execl(child_bin, child_bin, db, mode, prefix, (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  int ms = first ? rand_r(seed) % 6 : 5 + rand_r(seed) % 145;   /* first: while the file is created and migrated */
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  FILE *f = fdopen(fd[0], "r");
  char line[64];
  *s = (seen){-1, -1, 0};
  int next = 0, ok = 1;
  while (fgets(line, sizeof line, f)) {
    int v;
    if (sscanf(line, "A %d", &v) == 1) { if (v != next) ok = 0; next = v + 1; s->acked = v; }
    else if (sscanf(line, "D %d", &v) == 1) s->durable = v;
    else if (sscanf(line, "Q %d", &v) == 1 && v > s->max_queued) s->max_queued = v;
  }
  fclose(f);
  if (!ok) fprintf(stderr, "  acknowledgements out of order\n");
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? (ok ? 0 : -1) : 1;   /* 1: child ended on its own */
}

static void kill_loop(const char *mode) {
  const char *db = tu_dbpath();
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  fprintf(stderr, "  %s: seed %u\n", mode, seed);
  long long total_acked = 0, total_lost = 0;
  int max_lost = 0, killed_early = 0;
  for (int r = 0; r < RUNS; r++) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "r%d", r);
    seen s = {-1, -1, 0};
    int k = run_and_kill(db, mode, prefix, r < 3, &seed, &s);
    EXPECTF(k == 0, "run %d: the child was not killed mid-work (status %d)", r, k);
    if (s.acked < 0) { killed_early++; }
    if (access(db, F_OK) != 0) {
      /* killed before the file was created: nothing was acknowledged, nothing to check */
      EXPECTF(s.acked < 0, "run %d: %d event(s) acknowledged but no file", r, s.acked + 1);
      continue;
    }
    EXPECTF(tu_integrity_ok(db), "run %d", r);
    char sql[256];
    /* ids are PREFIX-i; acknowledged are i = 0..acked */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM generations WHERE id LIKE '%s-%%' AND CAST(substr(id, %zu) AS INTEGER) <= %d",
             prefix, strlen(prefix) + 2, s.acked);
    long long present = s.acked >= 0 ? tu_query(db, sql) : 0;
    int lost = (s.acked + 1) - (int)present;
    total_acked += s.acked + 1;
    if (!strcmp(mode, "sync")) {
      EXPECTF(lost == 0, "run %d: %d acknowledged event(s) missing of %d", r, lost, s.acked + 1);
    } else {
      snprintf(sql, sizeof sql, "SELECT count(*) FROM generations WHERE id LIKE '%s-%%' AND CAST(substr(id, %zu) AS INTEGER) <= %d",
               prefix, strlen(prefix) + 2, s.durable);
      long long durable_present = s.durable >= 0 ? tu_query(db, sql) : 0;
      EXPECTF(durable_present == s.durable + 1, "run %d: flushed events missing: %lld of %d", r, durable_present, s.durable + 1);
      /* what can be lost: the queue (256) plus one batch being written (512) */
      EXPECTF(lost >= 0 && lost <= 256 + 512, "run %d: lost %d", r, lost);
      total_lost += lost;
      if (lost > max_lost) max_lost = lost;
    }
  }
  /* the store still opens and takes events after all that */
  prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
  EXPECT(pc != NULL);
  prefcap_generation_t g = {.size = sizeof g, .id = "after", .prompt = "p", .completion = "c"};
  EXPECT(pc && prefcap_log_generation(pc, &g, NULL) == 0);
  prefcap_close(pc, -1);
  EXPECT(tu_integrity_ok(db));
  EXPECT(tu_query(db, "SELECT count(*) FROM labels WHERE signal = 'copy'") > 0);
  printf("# %s: %d kills, %lld events acknowledged, %lld lost (at most %d in one kill), %d kill(s) before the first ack\n",
         mode, RUNS, total_acked, total_lost, max_lost, killed_early);
}

static void sigkill_sync(void) { kill_loop("sync"); }
static void sigkill_async(void) { kill_loop("async"); }

int main(int argc, char **argv) {
  static char path[1024];
  snprintf(path, sizeof path, "%s", argv[0]);
  char *slash = strrchr(path, '/');
  strcpy(slash ? slash + 1 : path, "crashchild");
  child_bin = path;
  if (access(child_bin, X_OK)) { fprintf(stderr, "missing %s\n", child_bin); return 1; }
  (void)argc;
  RUN(sigkill_sync);
  RUN(sigkill_async);
  return tst_end();
}
