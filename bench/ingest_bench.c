/* bench/ingest_bench.c: what the SDK costs a backend, as ratios against a baseline measured in the
 * same run on the same disk:
 *   throughput  N generations through prefcap_log_generation (async, flushed) against the same rows
 *               inserted by one prepared statement in batched transactions into a table of the same
 *               shape (the raw SQLite loop a team would otherwise write); target >= 0.7x
 *   latency     caller-side time of one async log call, p50 / p99 / p99.9 (target p99 <= 5 us), one
 *               thread and four threads at once
 *   derive      pairs derived per second from a realistic feedback mix (reported, no target)
 *   memory      RSS the library adds with the default queue, and the built library's size
 * usage: ingest_bench [N] [DIR]   (N default 200000; DIR default $TMPDIR or /tmp)
 *        INGEST_BENCH_API_ONLY=1 ingest_bench N: the API path alone (for a profiler) */
#include "prefcap.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) { if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0; fclose(f); }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static char prompt[400], completion[800];

static void fill_texts(void) {
  const char *words[] = {"the", "model", "answer", "user", "prompt", "query", "data", "result", "with", "and"};
  size_t n = 0;
  for (int i = 0; n + 10 < sizeof prompt - 1; i++) n += (size_t)snprintf(prompt + n, sizeof prompt - n, "%s ", words[(i * 7) % 10]);
  n = 0;
  for (int i = 0; n + 10 < sizeof completion - 1; i++) n += (size_t)snprintf(completion + n, sizeof completion - n, "%s ", words[(i * 3) % 10]);
}

static void rm_store(const char *path) {
  char p[1100];
  remove(path);
  snprintf(p, sizeof p, "%s-wal", path); remove(p);
  snprintf(p, sizeof p, "%s-shm", path); remove(p);
}

// ---- the raw SQLite baseline ---------------------------------------------------------------------

static double raw_sqlite(const char *path, int n) {
  rm_store(path);
  sqlite3 *db;
  sqlite3_open(path, &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE generations(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
                   " event_id TEXT, ts INTEGER NOT NULL, received INTEGER NOT NULL, user_id TEXT, session_id TEXT,"
                   " model TEXT, model_version TEXT, system TEXT, prompt TEXT, messages TEXT, completion TEXT NOT NULL,"
                   " params TEXT, regenerates TEXT, latency_ms INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER);"
                   "CREATE INDEX generations_regenerates ON generations(regenerates) WHERE regenerates IS NOT NULL;",
               NULL, NULL, NULL);
  sqlite3_stmt *st;
  sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO generations(id, ts, received, user_id, session_id, model, model_version,"
                         " prompt, completion, params, latency_ms) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)", -1, &st, NULL);
  double t0 = now_s();
  char id[32], user[32], session[32];
  for (int i = 0; i < n; i++) {
    if (i % 512 == 0) sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    snprintf(id, sizeof id, "gen-%d", i);
    snprintf(user, sizeof user, "user-%d", i % 1000);
    snprintf(session, sizeof session, "sess-%d", i / 4);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, 1763719200000LL + i);
    sqlite3_bind_int64(st, 3, 1763719200000LL + i);
    sqlite3_bind_text(st, 4, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, session, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, "acme-chat", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, "2026-11-01", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, prompt, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, completion, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, "{\"temperature\":0.7}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, 850);
    sqlite3_step(st);
    sqlite3_reset(st);
    if (i % 512 == 511 || i == n - 1) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  }
  double dt = now_s() - t0;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n / dt;
}

// ---- through the API -----------------------------------------------------------------------------

/* queue 0: the default capacity; block: a full queue makes the producer wait instead of dropping */
static prefcap_t *open_store_b(const char *path, size_t queue, int block) {
  rm_store(path);
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, path);
  if (queue) prefcap_options_set_queue_capacity(o, queue);
  prefcap_options_set_block_when_full(o, block);
  prefcap_t *pc = NULL;
  if (prefcap_open(o, &pc)) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
  prefcap_options_free(o);
  return pc;
}

static prefcap_t *open_store(const char *path, size_t queue) { return open_store_b(path, queue, 0); }

static int log_gen(prefcap_t *pc, int i, const char *regenerates) {
  char id[32], user[32], session[32];
  snprintf(id, sizeof id, "gen-%d", i);
  snprintf(user, sizeof user, "user-%d", i % 1000);
  snprintf(session, sizeof session, "sess-%d", i / 4);
  prefcap_generation_t g = {.size = sizeof g, .id = id, .prompt = prompt, .completion = completion, .model = "acme-chat",
                            .model_version = "2026-11-01", .params_json = "{\"temperature\":0.7}",
                            .user_id = user, .session_id = session, .regenerates = regenerates,
                            .ts_ms = 1763719200000LL + i, .latency_ms = 850};
  return prefcap_log_generation(pc, &g, NULL);
}

/* The producer as fast as it can go, on the default (bounded) queue: it waits when the queue is full,
 * so this is the writer's rate, not a measure of how fast memory can be allocated for a backlog. */
static double api_async(const char *path, int n) {
  prefcap_t *pc = open_store_b(path, 0, 1);
  double t0 = now_s();
  for (int i = 0; i < n; i++) log_gen(pc, i, NULL);
  prefcap_flush(pc, -1);
  double dt = now_s() - t0;
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  if (k.stored != (uint64_t)n) fprintf(stderr, "warning: stored %llu of %d\n", (unsigned long long)k.stored, n);
  prefcap_close(pc, -1);
  return n / dt;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct { prefcap_t *pc; int base, n; double *lat; } lat_job;

static void *lat_worker(void *arg) {
  lat_job *j = arg;
  for (int i = 0; i < j->n; i++) {
    double t0 = now_s();
    log_gen(j->pc, j->base + i, NULL);
    j->lat[i] = now_s() - t0;
    /* a busy backend's pace, not a flood: ~20k events/s per thread, below the writer's rate */
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void latency(const char *path, int threads, int per_thread) {
  prefcap_t *pc = open_store(path, 0);   /* the default queue */
  pthread_t th[8];
  lat_job jobs[8];
  double *all = malloc(sizeof(double) * (size_t)threads * (size_t)per_thread);
  for (int t = 0; t < threads; t++) {
    jobs[t] = (lat_job){pc, t * per_thread, per_thread, all + (size_t)t * per_thread};
    pthread_create(&th[t], NULL, lat_worker, &jobs[t]);
  }
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_get_counters(pc, &k);
  prefcap_close(pc, -1);
  size_t n = (size_t)threads * per_thread;
  qsort(all, n, sizeof *all, cmp_d);
  printf("latency   %d thread(s) x %d calls: p50 %.2f us, p99 %.2f us, p99.9 %.2f us, max %.1f us (dropped %llu)\n",
         threads, per_thread, all[n / 2] * 1e6, all[n * 99 / 100] * 1e6, all[n * 999 / 1000] * 1e6, all[n - 1] * 1e6,
         (unsigned long long)k.dropped);
  free(all);
}

/* A realistic mix: chains of regenerations, copies, edits, ratings, choices. */
static void derive_rate(const char *path, int n) {
  prefcap_t *pc = open_store(path, (size_t)n * 2 + 1);
  char id[32], prev[32];
  for (int i = 0; i < n; i++) {
    snprintf(prev, sizeof prev, "gen-%d", i - 1);
    log_gen(pc, i, (i % 4) ? prev : NULL);
    snprintf(id, sizeof id, "gen-%d", i);
    prefcap_feedback_t f = {.size = sizeof f, .id = id};
    switch (i % 4) {
      case 0: f.kind = PREFCAP_FB_REGENERATE; break;
      case 1: f.kind = PREFCAP_FB_EDIT; f.text = "a shorter, better answer"; break;
      case 2: f.kind = PREFCAP_FB_RATING; f.rating = -1; break;
      case 3: f.kind = PREFCAP_FB_COPY; break;
    }
    prefcap_log_feedback(pc, &f);
  }
  prefcap_flush(pc, -1);
  double t0 = now_s();
  prefcap_derive(pc, 0);
  double dt = now_s() - t0;
  prefcap_close(pc, -1);
  sqlite3 *db;
  sqlite3_stmt *st;
  long long pairs = 0;
  sqlite3_open(path, &db);
  if (!sqlite3_prepare_v2(db, "SELECT count(*) FROM pairs", -1, &st, NULL) && sqlite3_step(st) == SQLITE_ROW) pairs = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  printf("derive    %d events -> %lld pairs in %.2f s: %.0f events/s\n", 2 * n, pairs, dt, 2 * n / dt);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200000;
  const char *dir = argc > 2 ? argv[2] : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  char path[1024];
  snprintf(path, sizeof path, "%s/prefcap-bench-%d.db", dir, (int)getpid());
  fill_texts();
  printf("prefcap %s ingest bench: %d generations of %zu+%zu bytes, store in %s\n", prefcap_version(), n,
         strlen(prompt), strlen(completion), dir);

  if (getenv("INGEST_BENCH_API_ONLY")) {   /* for profiling the API path alone */
    printf("api only: %.0f events/s\n", api_async(path, n));
    rm_store(path);
    return 0;
  }
  long rss0 = rss_kb();
  prefcap_t *pc = open_store(path, 0);
  long rss1 = rss_kb();
  for (int i = 0; i < 20000; i++) log_gen(pc, i, NULL);
  prefcap_flush(pc, -1);
  long rss2 = rss_kb();
  prefcap_close(pc, -1);

  /* interleave the two, best of 3 each, so that disk and cache state are alike for both */
  double raw = 0, api = 0;
  for (int r = 0; r < 3; r++) {
    double a = raw_sqlite(path, n), b = api_async(path, n);
    if (a > raw) raw = a;
    if (b > api) api = b;
  }
  printf("ingest    raw SQLite loop %.0f rows/s, prefcap async %.0f events/s: ratio %.2fx (target >= 0.70x)\n", raw, api, api / raw);
  latency(path, 1, 50000);
  latency(path, 4, 12500);
  derive_rate(path, n / 4);
  printf("memory    RSS +%ld KiB after open (default queue of 65536), +%ld KiB after 20,000 events\n", rss1 - rss0, rss2 - rss0);
  struct stat sa, ss;
  char exe[1024];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 40);
  if (len > 0) {
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    char so[1100], a[1100];
    snprintf(so, sizeof so, "%s/../libprefcap.so", exe);
    snprintf(a, sizeof a, "%s/../libprefcap.a", exe);
    if (!stat(so, &ss) && !stat(a, &sa))
      printf("size      libprefcap.so %lld KiB, libprefcap.a %lld KiB (with debug info; strip for deployment)\n",
             (long long)ss.st_size / 1024, (long long)sa.st_size / 1024);
  }
  rm_store(path);
  return 0;
}
