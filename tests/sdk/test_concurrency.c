/* tests/sdk/test_concurrency.c: many threads on one handle, and several processes on one file.
 * The claim under test: every acknowledged event (a log call that returned PREFCAP_OK) is present in
 * the file exactly once, with pairs derived across writers. */
#include "test.h"
#include "util.h"
#include <pthread.h>
#include <sys/wait.h>

#define THREADS 8
#define PER_THREAD 10000

typedef struct { prefcap_t *pc; int t; int n; int ok; int copies; } worker;

static void *work(void *arg) {
  worker *w = arg;
  char id[64], prompt[96];
  for (int i = 0; i < w->n; i++) {
    snprintf(id, sizeof id, "t%d-%d", w->t, i);
    snprintf(prompt, sizeof prompt, "question %d from thread %d", i, w->t);
    prefcap_generation_t g = {.size = sizeof g, .id = id, .prompt = prompt, .completion = "an answer of a realistic length, more or less",
                              .model = "m1", .user_id = "u", .session_id = id};
    if (prefcap_log_generation(w->pc, &g, NULL) == 0) w->ok++;
    if (i % 10 == 0) {
      prefcap_feedback_t f = {.size = sizeof f, .kind = PREFCAP_FB_COPY, .id = id};
      if (prefcap_log_feedback(w->pc, &f) == 0) w->copies++;
    }
  }
  return NULL;
}

/* queue: the async queue's capacity; a small one makes the producers outrun the writer. */
static void threads_on_one_handle(prefcap_durability_t mode, int per_thread, size_t queue) {
  const char *db = tu_dbpath();
  prefcap_t *pc = tu_open_q(db, mode, queue);
  REQUIRE(pc);
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t] = (worker){pc, t, per_thread, 0, 0};
    pthread_create(&th[t], NULL, work, &w[t]);
  }
  long long ok = 0, copies = 0;
  for (int t = 0; t < THREADS; t++) { pthread_join(th[t], NULL); ok += w[t].ok; copies += w[t].copies; }
  prefcap_flush(pc, -1);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  long long attempted = (long long)THREADS * (per_thread + (per_thread + 9) / 10);
  EXPECTF((long long)k.accepted == ok + copies && (long long)k.dropped == attempted - ok - copies,
          "accepted %llu dropped %llu, attempted %lld", (unsigned long long)k.accepted, (unsigned long long)k.dropped, attempted);
  EXPECT(prefcap_close(pc, -1) == 0);
  /* the drops are in the store's own totals too, where `prefcap stats` reads them */
  EXPECT(tu_query(db, "SELECT ifnull((SELECT value FROM counters WHERE name = 'dropped'), 0)") == (long long)k.dropped);
  long long stored = tu_query(db, "SELECT count(*) FROM generations");
  long long distinct = tu_query(db, "SELECT count(DISTINCT id) FROM generations");
  EXPECTF(stored == ok && distinct == ok, "acknowledged %lld, stored %lld, distinct %lld", ok, stored, distinct);
  if (queue == 0 || queue > (size_t)attempted)
    EXPECTF(ok == (long long)THREADS * per_thread, "acknowledged %lld of %d (a queue this size should not drop)", ok, THREADS * per_thread);
  else
    printf("# small queue (%zu): %llu of %lld events dropped and counted\n", queue, (unsigned long long)k.dropped, attempted);
  EXPECT(tu_query(db, "SELECT count(*) FROM events WHERE type = 'copy'") == copies);
  /* derived at close: a label for every copy whose generation was stored (a small queue drops some) */
  EXPECT(tu_query(db, "SELECT count(*) FROM labels WHERE signal = 'copy'") ==
         tu_query(db, "SELECT count(*) FROM events e JOIN generations g ON g.id = e.gen_id WHERE e.type = 'copy'"));
  EXPECT(tu_integrity_ok(db));
}

static void eight_threads_async(void) { threads_on_one_handle(PREFCAP_ASYNC, PER_THREAD, 1 << 17); }
static void eight_threads_async_small_queue(void) { threads_on_one_handle(PREFCAP_ASYNC, PER_THREAD, 512); }
static void eight_threads_sync(void) { threads_on_one_handle(PREFCAP_SYNC, 300, 0); }

static void four_processes_one_file(void) {
  const char *db = tu_dbpath();
  /* create the store first, so the children race on writes, not on creation (which has its own test
   * in test_crash) */
  prefcap_t *pc0 = tu_open(db, PREFCAP_SYNC);
  REQUIRE(pc0);
  prefcap_close(pc0, -1);
  const int procs = 4, n_async = 5000, n_sync = 400;
  pid_t pids[4];
  for (int p = 0; p < procs; p++) {
    pids[p] = fork();
    REQUIRE(pids[p] >= 0);
    if (pids[p] == 0) {
      prefcap_durability_t mode = p < 2 ? PREFCAP_ASYNC : PREFCAP_SYNC;
      prefcap_t *pc = tu_open(db, mode);
      if (!pc) _exit(10);
      int n = mode == PREFCAP_ASYNC ? n_async : n_sync, bad = 0;
      for (int i = 0; i < n; i++) {
        char id[64], prompt[64];
        snprintf(id, sizeof id, "p%d-%d", p, i);
        snprintf(prompt, sizeof prompt, "prompt %d", i / 8);   /* the same 8 prompts' groups in every process */
        prefcap_generation_t g = {.size = sizeof g, .id = id, .prompt = prompt, .completion = id, .user_id = "u"};
        if (prefcap_log_generation(pc, &g, NULL)) { bad++; fprintf(stderr, "  child %d: %s\n", p, prefcap_errmsg(pc)); }
        if (i % 4 == 0) {
          prefcap_feedback_t f = {.size = sizeof f, .kind = PREFCAP_FB_RATING, .id = id, .rating = (i % 8 == 0) ? 1 : -1};
          if (prefcap_log_feedback(pc, &f)) bad++;
        }
      }
      int rc = prefcap_close(pc, -1);
      _exit(bad ? 11 : rc ? 12 : 0);
    }
  }
  for (int p = 0; p < procs; p++) {
    int st;
    waitpid(pids[p], &st, 0);
    EXPECTF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %d", p, st);
  }
  long long want = 2 * n_async + 2 * n_sync;
  EXPECTF(tu_query(db, "SELECT count(*) FROM generations") == want, "generations %lld, want %lld",
          tu_query(db, "SELECT count(*) FROM generations"), want);
  EXPECT(tu_query(db, "SELECT count(DISTINCT id) FROM generations") == want);
  EXPECT(tu_query(db, "SELECT count(*) FROM events") == want / 4);
  EXPECT(tu_query(db, "SELECT count(*) FROM labels WHERE signal = 'rating'") == want / 4);
  EXPECT(tu_integrity_ok(db));
  /* rating pairs were derived across processes: each prompt group k holds, from every process that
   * reached it, one +1 (i = 8k) and one -1 (i = 8k+4), all from user "u". Groups 0..49 are reached by
   * all 4 processes (4 x 4 pairs), groups 50..624 by the 2 async ones only (2 x 2): 800 + 2300. */
  long long rp = tu_query(db, "SELECT count(*) FROM pairs WHERE signal = 'rating'");
  EXPECTF(rp == 3100, "rating pairs %lld, want 3100", rp);
}

int main(void) {
  RUN(eight_threads_async);
  RUN(eight_threads_async_small_queue);
  RUN(eight_threads_sync);
  RUN(four_processes_one_file);
  return tst_end();
}
